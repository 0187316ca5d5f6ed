#!/usr/bin/env bash
# Train a stored run again, at the commit that stored it, into a second store,
# and compare the two bit for bit:
#   scripts/rerun.sh results/ml-100k-odmt/sasrec-cpu-seed0-d1d69ecf647c4797.json [/tmp/emkd-rerun]
# A later commit may draw its random numbers otherwise without changing what a
# run computes (the CPU dropout masks did, at 6516295), so the check runs the
# run's own command at the run's own commit (scripts/campaign.sh pins it), on
# the same machine type as its provenance names. Exit 0: every rank and
# analysis array identical; 1: something differs (compare names it).
set -euo pipefail
record=${1:?usage: scripts/rerun.sh results/<dataset>/<run>.json [second store]}
store=${2:-/tmp/emkd-rerun}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ -f "$record" ] || { echo "rerun: no such record: $record" >&2; exit 2; }
# commit, command and machine from the record; a run without a command is an
# ensemble of stored members, evaluated, not trained
read -r commit machine command < <(python3 - "$record" <<'EOF'
import json, sys
p = json.load(open(sys.argv[1]))["provenance"]
if "command" not in p:
    sys.exit(f"rerun: {sys.argv[1]} has no training command (an ensemble: rerun its members)")
if p["commit"].endswith("+dirty"):
    sys.exit(f"rerun: {sys.argv[1]} was trained from uncommitted code ({p['commit']}); it cannot be rerun")
print(p["commit"], p["machine"].replace(" ", "_"), p["command"].removeprefix("python -m emkd_lib "))
EOF
)
echo "rerun: $command"
echo "rerun: at $commit, into $store (stored on ${machine//_/ })"
threads=$(sed -n 's/.*torch_threads_\([0-9]*\).*/\1/p' <<<"$machine")
mkdir -p "$store"
# shellcheck disable=SC2086  # the stored command is words
EMKD_RESULTS_DIR=$store CAMPAIGN_COMMIT=$commit THREADS=${threads:-1} "$repo/scripts/campaign.sh" $command
# the book's other runs are only in the first store: not named
status=0
out=$("$repo/.venv/bin/python" -m emkd_lib compare "$repo/results" "$store") || status=$?
grep -vF "(only in $repo/results)" <<<"$out" || true
exit $status
