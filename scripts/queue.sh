#!/usr/bin/env bash
# The cpu campaign's remaining work as two queues, one per core, in the order
# that completes issues soonest. Every step is a grid (or an ensemble
# evaluation) that skips stored runs and resumes checkpointed ones, so the
# same command continues where the last session stopped:
#   export EMKD_DATA_DIR=/work/shared/data CAMPAIGN_COMMIT=$(git rev-parse HEAD)
#   nohup setsid scripts/queue.sh A > ~/.cache/emkd-book/logs/queueA.log 2>&1 &
#   nohup setsid scripts/queue.sh B > ~/.cache/emkd-book/logs/queueB.log 2>&1 &
#   scripts/queue.sh --plan A      # what the queue would run, with prices
# and, while queue A's list is the longer one, a third, light queue beside them:
#   nohup setsid scripts/queue.sh C > ~/.cache/emkd-book/logs/queueC.log 2>&1 &
# Each queue also starts scripts/mirror_results.sh (one per machine): finished
# results are copied to ~/.cache as they land; a later session restores them
# with scripts/mirror_results.sh --restore.
# A queue first resumes every run of its steps that has a checkpoint (grid
# --checkpointed-only), in the steps' order, then runs the steps.
# Within a queue the shorter runs come first: a session can end without its
# checkpoints surviving (the machine is not always handed back), and a run
# that finishes inside one session is never lost.
# Queue A holds the EMKD runs: one holds about 10 GB of memory, so two at once
# would not fit a 24 GiB machine. Queue B holds the single-model and
# S^4Rec-family runs, then takes Figure 4's small EMKD runs, so that neither
# core idles while queue A's list is the longer one. Queue C, light, first
# trains chapter 05's last batch-order control (one SASRec run), then takes
# from queue A the EMKD runs
# small enough to train beside it (all of Figure 4, on a 3,000-user sample: 2-6 GB,
# where queue A's full-data runs peak at 7-12 GB): a third process on two cores slows
# A and B by about a third while it runs, but queue A holds the longest
# list, so its work is done sooner. Each step runs through scripts/campaign.sh (a pinned,
# clean copy of the code; one thread). A failed step is reported and the queue
# goes on: a run another process holds is skipped by its grid, and an ensemble
# whose members are not all stored yet is evaluated by a later pass or by
# chapter 02 itself.
set -uo pipefail
# The whole script is one function, parsed before it runs: a queue that runs for
# hours is not disturbed when the checkout's copy of this file is edited.

main() {
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  plan=
  if [ "${1:-}" = "--plan" ]; then plan=1; shift; fi
  queue=${1:?usage: scripts/queue.sh [--plan] A|B|C}
  profile=${PROFILE:-cpu}

  # Table 1 on one dataset: each method's seeds 0-2, then at once the ensemble
  # of seeds 1 and 2, while their weights (not committed) are still on this machine.
  ensembles() {
    for method in gru4rec caser sasrec; do
      echo "grid ensembles --datasets $1 --methods $method"
      echo "ensemble --profile $profile --dataset $1 --method $method --seeds 1 2"
    done
  }

  case $queue in
    A) steps=("grid emkd-sensitivity"           # Figure 3 (5 epochs a point)
              "grid emkd-main --datasets toys"  # Table 3
              "grid emkd-spread"                # EMKD seeds 1-2 on Beauty
              "grid emkd-ablations"             # Table 4
              "grid emkd-fidelity"              # chapter 03's departures
              "grid emkd-main --datasets ml-1m"
              "grid emkd-encoders") ;;          # Figure 4, the longest
    B) steps=("grid s4rec-main --datasets toys --methods s4rec"   # S^4Rec Table 2
              "grid baselines --datasets ml-1m --methods sasrec bert4rec"  # EMKD Table 3
              "grid baselines --datasets ml-1m"
              "$(ensembles toys)"                 # EMKD Table 1
              "$(ensembles ml-1m)"
              "grid s4rec-main --datasets toys"   # ICLRec, DuoRec: 2-3 hours each
              # the shortest runs first: a run finished inside one session is never lost
              "grid s4rec-main --datasets ml-1m --methods s4rec"
              "grid s4rec-settings"               # SASRec's loss in S^4Rec's settings on ML-1M (chapter 05)
              "grid s4rec-main --datasets sports --methods s4rec"
              "grid s4rec-main --datasets ml-1m --methods duorec"
              "grid s4rec-main --datasets ml-1m --methods cl4srec"
              "grid s4rec-patience --datasets toys"  # CL4SRec and DuoRec with patience 20 (chapter 05)
              "grid s4rec-main --datasets sports --methods duorec"
              "grid s4rec-batch-order"            # S^4Rec, ICLRec, SASRec on Beauty, shuffled batches: a
                                                  # control (chapter 05: Table 2 keeps length buckets)
              "grid s4rec-equal-weights"          # SASRec shuffled, windows weighed equally: the control's control
              "grid s4rec-main --datasets ml-1m"  # ICLRec on ML-1M
              "grid s4rec-main --datasets sports"  # ICLRec on Sports: 5-6 hours, more than one session
              # then queue A's Figure 4 runs from the other end (each queue skips what the other holds):
              # on a 3,000-user sample they fit beside an EMKD run of queue A. N = 2 first, so that every
              # encoder has an ensemble beside it alone before any has three networks (chapter 04's
              # order); then SASRec's (about 2 CPU-hours each) before the patience checks (3-7 each),
              # which finish only where a machine is handed back between sessions: the shortest runs first
              "grid emkd-encoders --networks 1 2"
              "grid emkd-encoders --networks 3 4 --methods sasrec"
              "grid s4rec-patience"               # the other still-rising baselines with patience 20
              "grid emkd-encoders --networks 3 4") ;;
    C) steps=("grid s4rec-equal-weights"             # one SASRec run, also last in queue B
              "grid emkd-encoders --networks 1 2"    # Figure 4 on its 3,000-user sample; queue A
              "grid emkd-encoders --networks 3 4") ;;  # skips what C holds, C what A holds
    *) echo "queue.sh: unknown queue '$queue' (A: EMKD runs, B: the others, C: light runs beside them)" >&2; exit 2 ;;
  esac

  # The EMKD runs (every "grid emkd-*" step) train under bf16 autocast (their
  # profiles' train.precision), but a CPU without bf16 matmul units (AVX2 only:
  # no AVX512-BF16, no AMX) runs bf16 through a slow fallback, an epoch several
  # times as long as in fp32 (chapter 10), and most machines the campaign draws are such
  # CPUs. So the runs still missing train in fp32 on every machine (grid
  # --precision fp32 keeps each run stored or checkpointed at its own
  # precision, bf16, and trains the others in fp32): one rule for the
  # campaign's last EMKD runs whatever CPU a session draws, and no bf16 run
  # trained beside an fp32 twin already stored. Only the grids whose chapters
  # read a run at bf16, else its fp32 twin (studies.emkd.budget_results: the
  # fidelity table, Figure 4: studies.FALLBACK_GRIDS, the list the budget
  # reads too) take the flag, at studies.emkd.FALLBACK_PRECISION; the others
  # are complete in bf16. Both are read from this checkout when the queue
  # starts, not from CAMPAIGN_COMMIT.
  read -r precision fallback < <("$repo/.venv/bin/python" -c "from emkd_lib.studies import FALLBACK_GRIDS, emkd
print(emkd.FALLBACK_PRECISION, *FALLBACK_GRIDS)") && [ -n "${fallback:-}" ] ||
    { echo "queue.sh: could not read studies.FALLBACK_GRIDS and FALLBACK_PRECISION from $repo" >&2; exit 1; }
  for i in "${!steps[@]}"; do
    for name in $fallback; do
      case ${steps[$i]} in "grid $name"|"grid $name "*) steps[$i]="${steps[$i]} --precision $precision" ;; esac
    done
  done

  # First resume, in the queue's order, every run a session left half done (a
  # checkpoint outlives its session only where the machine is handed back):
  # work already paid for comes before anything new.
  if [ -z "$plan" ]; then
    resume=()
    while IFS= read -r step; do   # a step of several lines (ensembles) is several steps
      case $step in grid*) resume+=("$step --checkpointed-only") ;; esac
    done < <(printf '%s\n' "${steps[@]}")
    steps=("${resume[@]}" "${steps[@]}")
  fi

  # results that land after the session's last commit survive in ~/.cache
  [ -n "$plan" ] || { "$repo/scripts/mirror_results.sh" & }
  while IFS= read -r step; do
    [ -n "$step" ] || continue
    case $step in grid*) step="$step --profile $profile" ;; esac
    if [ -n "$plan" ]; then
      case $step in grid*) echo "== $step"; "$repo/.venv/bin/python" -m emkd_lib $step --plan | tail -n 1 ;;
                    *) echo "== $step" ;; esac
      continue
    fi
    echo "== $(date -u +%FT%TZ) $step"
    # shellcheck disable=SC2086  # a step is words
    "$repo/scripts/campaign.sh" $step || echo "== step failed (exit $?): $step"
  done < <(printf '%s\n' "${steps[@]}")
}
main "$@"; exit $?
