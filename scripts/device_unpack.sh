#!/usr/bin/env bash
# What scripts/device_check.sh sent back, put where the book reads it:
#   scripts/device_unpack.sh <folder the device tool's files landed in> [tag]
# Stored runs (json + npz) go into results/, next to the CPU ones (their
# provenance names the GPU); each benchmark output and the checks become
# benchmarks/measured-<date>-<tag>-<name>.txt; the histories of runs the lease
# cut short, benchmarks/measured-<date>-<tag>-unfinished-runs.json.
set -euo pipefail
src=$1; tag=${2:-gpu}; day=$(date -u +%Y-%m-%d)
here=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
tar -xzf "$src/store.tar.gz" -C "$tmp"
(cd "$tmp/store" && find . -name '*.json' -o -name '*.npz') | while read -r f; do
    mkdir -p "$here/results/$(dirname "$f")"; cp "$tmp/store/$f" "$here/results/$f"; echo "results/${f#./}"
done
for name in throughput step_profile public_pattern checks; do
    [ -f "$src/$name.txt" ] && cp "$src/$name.txt" "$here/benchmarks/measured-$day-$tag-${name//_/-}.txt" \
        && echo "benchmarks/measured-$day-$tag-${name//_/-}.txt"
done
[ -f "$tmp/logs/unfinished.json" ] && cp "$tmp/logs/unfinished.json" "$here/benchmarks/measured-$day-$tag-unfinished-runs.json" \
    && echo "benchmarks/measured-$day-$tag-unfinished-runs.json"
