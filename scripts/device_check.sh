#!/usr/bin/env bash
# One lease of a GPU machine, as one command: the CUDA and DDP paths, the
# paper-profile benchmarks, and the paper-profile runs that fit the time left.
#
# Before the call, here (the data mirror beside the checkout does not travel):
#   mkdir -p .device-data && cp -r ../shared/data/beauty .device-data/
#   grep -qx '/.device-data/' .git/info/exclude || echo /.device-data/ >> .git/info/exclude
# What travels is limited to 64 MiB, and the committed results alone are near that: move
# aside the results folders no queued run reads until `git ls-files -z | xargs -0 du -cb | tail -1`
# (plus .device-data) is under it, e.g. `mv results/*-odmt ../device-hold/`, and back after the call.
# The call, from a clean, committed tree (the copy has no .git; the commit is told):
#   run(command="EMKD_CODE_COMMIT=<sha> bash scripts/device_check.sh", carry=[".device-data"], timeout_s=600)
# Afterwards, here: `scripts/device_unpack.sh <files_at>` puts the stored runs into
# results/ and the benchmark outputs under benchmarks/.
#
# Environment: OUT (where the outputs go; default ./device-out), EMKD_DATA_DIR
# (default ./.device-data: the datasets copied into the checkout, since only
# the checkout travels), DEVICE_BUDGET_S (seconds this script may take in all,
# default 540), DEVICE_PROFILE (default paper; smoke tries the script itself
# on any machine in a minute), DEVICE_GRID and DEVICE_SHARDS (phase 4), PY
# (default python3); DEVICE_GRID_PROFILE (default cpu) the grid's profile.
#
# Phases, each bounded by `timeout` so that one failure costs only its own time:
#   1. the machine and an import of the library;
#   2. benchmarks on an otherwise idle GPU (train_throughput, step_profile,
#      public_pattern at the profile's settings);
#   3. checks, small runs in fresh processes: a seed gives bit-identical ranks
#      on CUDA (SASRec and EMKD twice each); one model under DDP on CUDA
#      (NCCL, one rank);
#   4. the profile's runs on Beauty (SASRec, BERT4Rec, EMKD), side by side on
#      the one GPU until the budget ends; a run that finishes is stored like
#      any result, one that does not leaves its per-epoch history.
# Everything comes back in at most 8 files under $OUT (the device tool's limit).
set -u
START=$(date +%s)
OUT=${OUT:-$PWD/device-out}
PY=${PY:-python3}
PROFILE=${DEVICE_PROFILE:-paper}
BUDGET=${DEVICE_BUDGET_S:-540}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export EMKD_DATA_DIR=${EMKD_DATA_DIR:-$PWD/.device-data}
export EMKD_RESULTS_DIR=/tmp/emkd-device/store
export EMKD_CACHE_DIR=/tmp/emkd-device/cache
WORK=/tmp/emkd-device
mkdir -p "$OUT" "$WORK/logs" "$EMKD_RESULTS_DIR" "$EMKD_CACHE_DIR"
elapsed() { echo $(($(date +%s) - START)); }
left() { echo $((BUDGET - $(elapsed))); }
say() { echo "== [$(elapsed) s] $*"; }
# Progress bars as lines, without the per-batch bar.
bars() { tr '\r' '\n' | grep -v '^batches' | grep -v '^\s*$'; }

say "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | head -3
lscpu 2>/dev/null | grep -E '^(Model name|CPU\(s\))' | head -2
echo "commit: ${EMKD_CODE_COMMIT:-unset}"
$PY - <<'EOF' || { echo "FATAL: the library does not import here"; exit 3; }
import numpy, torch
import emkd_lib
from emkd_lib.store import code_commit
print(f"torch {torch.__version__}, numpy {numpy.__version__}, cuda {torch.cuda.is_available()}, "
      f"devices {torch.cuda.device_count()}, recorded commit {code_commit()}")
EOF
DEV=cpu; $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" && DEV=cuda
BATCHES=30; [ "$PROFILE" = smoke ] && BATCHES=3
PEAK=8192; [ $DEV = cpu ] && PEAK=1024   # the peak matmul: seconds on a GPU, minutes at 8192 on a CPU

say "benchmarks ($PROFILE profile, $DEV)"
timeout 150 $PY benchmarks/train_throughput.py --dataset beauty --profile "$PROFILE" --device $DEV \
    --methods sasrec bert4rec emkd --max-batches $BATCHES --autocast bf16 --loop same --peak-size $PEAK \
    > "$OUT/throughput.txt" 2>&1; echo "train_throughput rc=$?"; tail -n 30 "$OUT/throughput.txt"
timeout 90 $PY benchmarks/step_profile.py --dataset beauty --profile "$PROFILE" --device $DEV --methods emkd sasrec \
    --max-batches 10 --memory > "$OUT/step_profile.txt" 2>&1; echo "step_profile rc=$?"; tail -n 40 "$OUT/step_profile.txt"
timeout 90 $PY benchmarks/public_pattern.py --dataset beauty --profile "$PROFILE" --device $DEV --batches 5 \
    > "$OUT/public_pattern.txt" 2>&1; echo "public_pattern rc=$?"; tail -n 15 "$OUT/public_pattern.txt"

say "checks (smoke profile, fresh processes)"
check_run() {  # name method extra-args...
    local name=$1 method=$2; shift 2
    EMKD_RESULTS_DIR=$WORK/check-$name EMKD_CACHE_DIR=$WORK/check-cache-$name timeout 150 \
        $PY -m emkd_lib --threads 2 run --profile smoke --dataset beauty --method "$method" --device $DEV "$@" \
        > "$WORK/logs/check-$name.log" 2>&1
    echo "check $name rc=$?"
}
for m in sasrec emkd; do check_run "$m-a" $m & check_run "$m-b" $m & done
[ $DEV = cuda ] && { check_run emkd-ddp1 emkd --ddp 1 & }
wait
{ for m in sasrec emkd; do
    echo "-- $m twice, seed 0, fresh processes on $DEV"
    $PY -m emkd_lib compare "$WORK/check-$m-a" "$WORK/check-$m-b"
  done
  if [ -d "$WORK/check-emkd-ddp1" ]; then
    echo "-- emkd --ddp 1 (NCCL) against one process"
    $PY -m emkd_lib compare "$WORK/check-emkd-ddp1" "$WORK/check-emkd-a"
    grep -h '"ddp_world_size"' "$WORK"/check-emkd-ddp1/*/*.json   # the record says it ran under DDP
  fi; } > "$OUT/checks.txt" 2>&1
cat "$OUT/checks.txt"
grep -h -i -E "warn|error" "$WORK"/logs/check-*.log | sort | uniq -c | head -20

RUN_S=$(( $(left) - 30 ))
say "runs ($PROFILE profile on Beauty, side by side, $RUN_S s)"
[ "$RUN_S" -gt 20 ] || { echo "no time left for runs"; RUN_S=0; }
for m in sasrec bert4rec emkd; do
    [ "$RUN_S" -gt 0 ] || break
    ( timeout $RUN_S $PY -m emkd_lib --threads 4 run --profile "$PROFILE" --dataset beauty --method $m --device $DEV \
        2>&1 | bars > "$WORK/logs/run-$m.log"; echo "run $m finished at $(elapsed) s" ) &
done
# DEVICE_GRID (e.g. "emkd-fidelity --datasets beauty"): also a campaign grid of the
# cpu profile, its missing runs shared by DEVICE_SHARDS processes on the same GPU
# (the store keys runs by config and data, not machine; each run's provenance
# names the GPU). A run the budget cuts short is lost with the machine.
if [ -n "${DEVICE_GRID:-}" ] && [ "$RUN_S" -gt 0 ]; then
    K=${DEVICE_SHARDS:-4}
    # The grid sees the committed results (what travelled), so it trains only what is missing.
    mkdir -p "$WORK/grid-store"; cp -r results/. "$WORK/grid-store/" 2>/dev/null; touch "$WORK/grid-marker"
    for i in $(seq 0 $((K - 1))); do
        ( EMKD_RESULTS_DIR=$WORK/grid-store timeout $RUN_S $PY -m emkd_lib --threads 2 grid $DEVICE_GRID --profile ${DEVICE_GRID_PROFILE:-cpu} --device $DEV --shard $i/$K \
            2>&1 | bars > "$WORK/logs/grid-$i.log"; echo "grid shard $i/$K finished at $(elapsed) s" ) &
    done
fi
wait
for m in sasrec bert4rec emkd; do echo "-- $m"; tail -n 4 "$WORK/logs/run-$m.log"; done
for f in "$WORK"/logs/grid-*.log; do [ -f "$f" ] && { echo "-- $f"; tail -n 3 "$f"; }; done
[ -f "$WORK/grid-marker" ] && (cd "$WORK/grid-store" && find . -newer ../grid-marker \( -name '*.json' -o -name '*.npz' \) \
    -exec cp --parents {} "$EMKD_RESULTS_DIR/" \;)

say "packing"
$PY - "$EMKD_CACHE_DIR" "$WORK/logs/unfinished.json" "$EMKD_RESULTS_DIR" <<'EOF'
import json, sys
from pathlib import Path
import torch
unfinished = {}
stored = {p.stem.rsplit("-", 1)[-1] for p in Path(sys.argv[3]).rglob("*.json")}
for ckpt in (Path(sys.argv[1]) / "checkpoints").rglob("*.pt"):
    if ckpt.stem.split(".")[0] in stored:   # <key>.pt or <key>.ddpN.pt of a run that finished
        continue
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
    except Exception as err:  # a checkpoint cut off mid-write
        unfinished[ckpt.stem] = {"error": str(err)}; continue
    unfinished[ckpt.stem] = {k: state.get(k) for k in ("epoch", "best_epoch", "best_score", "since_best",
                                                      "train_seconds", "eval_seconds", "steps", "history")}
Path(sys.argv[2]).write_text(json.dumps(unfinished, indent=1, default=float))
print(f"{len(unfinished)} unfinished runs' histories")
EOF
tar -czf "$OUT/store.tar.gz" --exclude="*.pt" -C "$WORK" store logs 2>&1
ls -la "$OUT"
say "done"
