#!/usr/bin/env bash
# A result that lands after a session's last commit lives only in this work
# tree, which the next session does not get back (it is laid anew); the
# cache under ~/.cache often survives. This copies every uncommitted result
# record (.json and its .npz) of results/ there every 30 s, and --restore
# copies them back into a fresh work tree without overwriting anything:
#   scripts/mirror_results.sh &           # queue.sh starts it; one per machine
#   scripts/mirror_results.sh --restore   # at a session's start, then commit
set -uo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
pending=${EMKD_CACHE_DIR:-$HOME/.cache/emkd-book}/results-pending
mkdir -p "$pending"
if [ "${1:-}" = "--restore" ]; then
  [ -d "$pending/results" ] && cp -rn "$pending/results/." "$repo/results/"
  git -C "$repo" status --short -- results
  exit 0
fi
exec 9>"$pending/.lock"
flock -n 9 || exit 0   # another queue's mirror is already copying
while true; do
  git -C "$repo" ls-files --others --exclude-standard -- results | grep -E '\.(json|npz)$' |
    while IFS= read -r path; do
      [ -e "$pending/$path" ] && continue
      mkdir -p "$pending/$(dirname "$path")"
      # through a temporary name: a copy cut short by the session's end is never restored
      cp "$repo/$path" "$pending/$path.part" && mv "$pending/$path.part" "$pending/$path"
    done
  sleep 30
done
