#!/usr/bin/env bash
# Run a long campaign command from a clean, pinned copy of the code, so that a
# run's provenance names a commit even while the checkout keeps changing:
#   scripts/campaign.sh grid baselines --profile cpu --shard 0/2
#   CAMPAIGN_COMMIT=$(git rev-parse HEAD) nohup bash -c 'scripts/campaign.sh A; scripts/campaign.sh B' &
# The copy is a detached git worktree of HEAD under $EMKD_CACHE_DIR (default
# ~/.cache/emkd-book/campaign/<commit>); results go to this checkout's store
# (or $EMKD_RESULTS_DIR), checkpoints to $EMKD_CACHE_DIR, so a rerun of the
# same command resumes. Refuses to start from uncommitted library code.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
# CAMPAIGN_COMMIT pins a commit for a chain of commands started now and run
# later (the checkout may be mid-edit by then); default: HEAD, which must
# have no uncommitted library changes.
if [ -n "${CAMPAIGN_COMMIT:-}" ]; then
  commit=$(git rev-parse --verify "$CAMPAIGN_COMMIT^{commit}")
else
  if [ -n "$(git status --porcelain -- emkd_lib)" ]; then
    echo "campaign: emkd_lib/ has uncommitted changes; commit them first (results would be flagged +dirty)" >&2
    exit 2
  fi
  commit=$(git rev-parse HEAD)
fi
cache=${EMKD_CACHE_DIR:-$HOME/.cache/emkd-book}
tree=$cache/campaign/$commit
mkdir -p "$cache/campaign"
# Chains started together race to create the same worktree: one creates it
# under the lock, the others find it.
(
  flock 9
  if [ ! -d "$tree" ]; then
    git worktree add --detach "$tree" "$commit" >/dev/null
  fi
) 9>"$cache/campaign/.lock"
export PYTHONPATH=$tree EMKD_RESULTS_DIR=${EMKD_RESULTS_DIR:-$repo/results}
cd "$tree"
exec "$repo/.venv/bin/python" -m emkd_lib --threads "${THREADS:-1}" "$@"
