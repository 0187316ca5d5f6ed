#!/usr/bin/env bash
# The GPU checks of the performance issue, as one prepared command for a lent
# device machine (the `device` tool; a session has about 15 minutes of it):
#   1. the CUDA path is deterministic: a smoke EMKD run twice, per-user ranks compared bitwise;
#   2. the DDP path on CUDA: the same smoke run with --ddp 1;
#   3. the paper-profile EMKD step and epoch throughput (benchmarks/*.py --device cuda);
#   4. what of the paper profile fits the time left: SASRec, then EMKD on Beauty, stored like any result.
# Before the call, here (the data mirror beside the checkout does not travel):
#   mkdir -p .device-data && cp -r ../shared/data/beauty .device-data/ && grep -qx '/.device-data/' .git/info/exclude || echo /.device-data/ >> .git/info/exclude
# The call: run(command="bash scripts/device_check.sh", carry=[".device-data"], timeout_s=590)
# Afterwards, here: copy what came back under results/ into the store and commit it (json + npz).
# On a machine without CUDA it runs the same steps on the CPU with tiny budgets (DEVICE=cpu BUDGET_S=60), to check the script.
set -uo pipefail
DEVICE=${DEVICE:-cuda}
BUDGET_S=${BUDGET_S:-540}          # wall seconds for the whole script; step 4 gets what is left
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
scratch=$(mktemp -d)               # what need not come back ($OUT takes at most 8 files)
start=$(date +%s)
left() { echo $(( BUDGET_S - ($(date +%s) - start) )); }
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD EMKD_DATA_DIR=${EMKD_DATA_DIR:-$PWD/.device-data}
export EMKD_RESULTS_DIR=$OUT/results EMKD_CACHE_DIR=${EMKD_CACHE_DIR:-/tmp/emkd-cache}
PY=${PY:-python3}
log=$OUT/device-check.txt
say() { echo "== $*" | tee -a "$log"; }

say "machine: $(nproc) cores; $($PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "")')"
smoke=(run --profile smoke --dataset beauty --method emkd --seed 0 --device "$DEVICE")

say "1. determinism on $DEVICE: the same smoke EMKD run twice, ranks compared bitwise"
EMKD_RESULTS_DIR=$scratch/det-a $PY -m emkd_lib "${smoke[@]}" 2>&1 | tail -2 | tee -a "$log"
EMKD_RESULTS_DIR=$scratch/det-b $PY -m emkd_lib "${smoke[@]}" 2>&1 | tail -2 | tee -a "$log"
$PY - "$scratch/det-a" "$scratch/det-b" <<'EOF' 2>&1 | tee -a "$log"
import sys
from pathlib import Path
import numpy as np
a, b = (sorted(Path(d).rglob("*.npz")) for d in sys.argv[1:])
same = bool(a) and len(a) == len(b) and all(np.array_equal(np.load(x)[k], np.load(y)[k])
                                            for x, y in zip(a, b) for k in np.load(x).files)
print(f"bit-identical ranks over {len(a)} result(s): {same}")
EOF

say "2. DDP on $DEVICE: the smoke run with --ddp 1"
EMKD_RESULTS_DIR=$scratch/ddp timeout 120 $PY -m emkd_lib "${smoke[@]}" --ddp 1 --force 2>&1 | tail -2 | tee -a "$log"

say "3. paper-profile throughput on $DEVICE"
batches=$([ "$DEVICE" = cpu ] && echo 2 || echo 30)
timeout 150 $PY benchmarks/train_throughput.py --profile paper --methods sasrec emkd --device "$DEVICE" \
  --max-batches "$batches" --loop none 2>&1 | tee "$OUT/throughput-paper-$DEVICE.txt" | tail -8 | tee -a "$log"
timeout 120 $PY benchmarks/step_profile.py --profile paper --methods emkd --device "$DEVICE" --warmup 2 --steps 3 \
  2>&1 | tee "$OUT/profile-paper-$DEVICE.txt" | tail -4 | tee -a "$log"

say "4. paper-profile runs in the $(left) s left, stored under results/ (a run cut short leaves its checkpoint, not a result)"
for method in sasrec emkd; do
  [ "$(left)" -gt 30 ] || break
  timeout "$(( $(left) - 15 ))" $PY -m emkd_lib run --profile paper --dataset beauty --method "$method" --seed 0 \
    --device "$DEVICE" 2>&1 | tail -3 | tee -a "$log"
done
find "$OUT/results" -name '*.pt' -delete 2>/dev/null   # the weights stay behind: 8 files come back
say "done in $(( $(date +%s) - start )) s; results: $(find "$OUT/results" -name '*.json' 2>/dev/null | wc -l)"
