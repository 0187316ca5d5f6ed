"""A run's result is a function of its config: the same smoke run in two fresh
processes gives bitwise-equal per-user ranks, and a run interrupted after an
epoch and resumed from its checkpoint in another process ends exactly where
an uninterrupted one does."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emkd_lib import store
from helpers import offline_data_root

DATA_DIR = offline_data_root()
REPO = Path(__file__).resolve().parent.parent
TIMING = {"train_seconds", "eval_seconds", "wall_seconds"}

# The runs need the data; the seeding test below does not.
needs_beauty = pytest.mark.skipif(DATA_DIR is None,
                                  reason="the Beauty dataset is not available offline ($EMKD_DATA_DIR or the default places)")


def environment(results: Path, cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMKD_")}
    env.update(EMKD_DATA_DIR=str(DATA_DIR), EMKD_RESULTS_DIR=str(results), EMKD_CACHE_DIR=str(cache),
               PYTHONHASHSEED="random")
    return env


def python(args: list[str], results: Path, cache: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *args], cwd=REPO, env=environment(results, cache),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def only_record(results: Path) -> tuple[dict, dict]:
    (path,) = sorted(results.glob("beauty/*.json"))
    return store.read_record(path), store.read_sidecar(path)


@needs_beauty
# Besides torch's generators: S^4Rec's and CL4SRec's numpy augmentations, ICLRec's
# K-means (scikit-learn), DuoRec's same-target positives.
@pytest.mark.parametrize("method", ["sasrec", "emkd", "s4rec", "iclrec", "cl4srec", "duorec"])
def test_the_same_smoke_run_in_two_fresh_processes_is_bitwise_equal(method, tmp_path):
    outcomes = []
    for name in ("a", "b"):
        python(["-m", "emkd_lib", "--threads", "1", "run", "--profile", "smoke", "--dataset", "beauty",
                "--method", method, "--device", "cpu"], tmp_path / name / "results", tmp_path / name / "cache")
        outcomes.append(only_record(tmp_path / name / "results"))
    (a, a_arrays), (b, b_arrays) = outcomes
    assert a["key"] == b["key"]
    assert a["valid_metrics"] == b["valid_metrics"] and a["test_metrics"] == b["test_metrics"]
    assert a["best_epoch"] == b["best_epoch"]
    assert set(a_arrays) == set(b_arrays)
    for name in a_arrays:   # ranks, and the stored embeddings of the figures' user sample
        assert np.array_equal(a_arrays[name], b_arrays[name]), name
    if method == "sasrec":
        assert {"analysis_users", "analysis_embeddings"} <= set(a_arrays)
    assert [{k: v for k, v in h.items() if k not in TIMING} for h in a["history"]] == \
        [{k: v for k, v in h.items() if k not in TIMING} for h in b["history"]]


RUN = """
import json, sys
from emkd_lib.profiles import profile_config
from emkd_lib.runs import execute
import torch
torch.set_num_threads(1)
method, stop = sys.argv[1], (int(sys.argv[2]) if len(sys.argv) > 2 else None)
config = profile_config("smoke", "beauty", method, train__epochs=4, train__patience=4)
try:
    result = execute(config, device="cpu", progress=False, stop_after_epoch=stop)
except InterruptedError as err:
    print(json.dumps({"interrupted": str(err)}))
else:
    print(json.dumps({"key": result.key, "flags": result.flags}))
"""


def last_json_line(done):
    return json.loads(done.stdout.strip().splitlines()[-1])


# EMKD only: it draws from every generator a resume must restore (batch order,
# masks, dropout) and logs every loss term; a second method would double the time.
@needs_beauty
@pytest.mark.parametrize("method", ["emkd"])
def test_a_resumed_run_ends_where_an_uninterrupted_one_does(method, tmp_path):
    resumed_results, resumed_cache = tmp_path / "resumed" / "results", tmp_path / "resumed" / "cache"
    first = last_json_line(python(["-c", RUN, method, "2"], resumed_results, resumed_cache))
    assert "stopped after epoch 2" in first["interrupted"]
    checkpoints = list((resumed_cache / "checkpoints").glob("*.pt"))
    assert len(checkpoints) == 1, "the interrupted run leaves its checkpoint"
    assert not resumed_results.exists() or not any(resumed_results.rglob("*.json")), "and no result"

    second = last_json_line(python(["-c", RUN, method], resumed_results, resumed_cache))
    assert second["flags"]["resumed_from_epoch"] == 3
    # stopped by its cap (4 epochs, patience 4), the run moves its checkpoint to the capped slot
    assert second["flags"]["stopped_by"] == "epoch cap"
    assert checkpoints[0].name == f"{second['key']}.pt" and not checkpoints[0].exists()
    assert len(list((resumed_cache / "checkpoints" / "capped").glob("*.pt"))) == 1

    whole_results, whole_cache = tmp_path / "whole" / "results", tmp_path / "whole" / "cache"
    third = last_json_line(python(["-c", RUN, method], whole_results, whole_cache))
    assert third["flags"]["resumed_from_epoch"] == 0 and third["key"] == second["key"]
    # resumed by the same code: one commit trained every epoch, as in the uninterrupted run
    assert len(second["flags"]["trained_by_commits"]) == 1
    assert second["flags"]["trained_by_commits"] == third["flags"]["trained_by_commits"]
    assert not any((whole_cache / "checkpoints").glob("*.pt"))
    assert len(list((whole_cache / "checkpoints" / "capped").glob("*.pt"))) == 1

    (resumed, resumed_arrays), (whole, whole_arrays) = only_record(resumed_results), only_record(whole_results)
    for split in ("test_ranks", "valid_ranks"):
        assert np.array_equal(resumed_arrays[split], whole_arrays[split]), split
    assert resumed["valid_metrics"] == whole["valid_metrics"] and resumed["test_metrics"] == whole["test_metrics"]
    assert resumed["best_epoch"] == whole["best_epoch"]
    assert len(resumed["history"]) == len(whole["history"]) == 4
    # each epoch says which machine trained it, as it says which commit did
    assert {row["machine"] for row in resumed["history"]} == {resumed["provenance"]["machine"]}
    loss_terms = [k for k in whole["history"][0] if k not in TIMING]
    assert "loss" in loss_terms and (method != "emkd" or {"mip", "ap", "icl", "ccl", "kd"} <= set(loss_terms))
    for r, w in zip(resumed["history"], whole["history"]):
        assert {k: r[k] for k in loss_terms} == {k: w[k] for k in loss_terms}


CAPPED_RUN = """
import json, sys
import torch
torch.set_num_threads(1)
from emkd_lib.profiles import profile_config
from emkd_lib.runs import execute
config = profile_config("smoke", "beauty", "sasrec", train__epochs=int(sys.argv[1]), train__patience=10)
result = execute(config, device="cpu", progress=False)
print(json.dumps({"key": result.key, "flags": result.flags}))
"""


def record_of(results: Path, key: str) -> tuple[dict, dict]:
    (path,) = sorted(results.glob(f"beauty/*{key}.json"))
    return store.read_record(path), store.read_sidecar(path)


@needs_beauty
def test_a_run_with_a_higher_cap_continues_the_capped_run_and_ends_where_a_fresh_one_does(tmp_path):
    """A run stopped by its epoch cap keeps its last checkpoint; the same run
    with a higher cap trains on from it, and ends bit for bit where a fresh
    run with that cap ends."""
    results, cache = tmp_path / "continued" / "results", tmp_path / "continued" / "cache"
    capped = last_json_line(python(["-c", CAPPED_RUN, "2"], results, cache))
    assert capped["flags"]["stopped_by"] == "epoch cap"
    assert not (cache / "checkpoints" / f"{capped['key']}.pt").exists()
    assert len(list((cache / "checkpoints" / "capped").glob("*.pt"))) == 1, "the capped run keeps its checkpoint"
    continued = last_json_line(python(["-c", CAPPED_RUN, "4"], results, cache))
    assert continued["flags"]["resumed_from_epoch"] == 3, "it trains on from the capped run's epoch 2"

    fresh_results, fresh_cache = tmp_path / "fresh" / "results", tmp_path / "fresh" / "cache"
    fresh = last_json_line(python(["-c", CAPPED_RUN, "4"], fresh_results, fresh_cache))
    assert fresh["key"] == continued["key"] and fresh["flags"]["resumed_from_epoch"] == 0
    (a, a_arrays), (b, b_arrays) = record_of(results, continued["key"]), record_of(fresh_results, fresh["key"])
    for split in ("test_ranks", "valid_ranks"):
        assert np.array_equal(a_arrays[split], b_arrays[split]), split
    assert a["test_metrics"] == b["test_metrics"] and a["best_epoch"] == b["best_epoch"]
    assert [{k: v for k, v in row.items() if k not in TIMING} for row in a["history"]] == \
        [{k: v for k, v in row.items() if k not in TIMING} for row in b["history"]]
    # the continued run, capped in turn, leaves its own last checkpoint in the slot, for a cap higher still
    from emkd_lib.train import checkpoint_summary
    (kept,) = (cache / "checkpoints" / "capped").glob("*.pt")
    assert checkpoint_summary(kept)["epoch"] == 4
    # a lower cap than the slot's trains from epoch 1, and the slot keeps the furthest run
    lower = last_json_line(python(["-c", CAPPED_RUN, "3"], results, cache))
    assert lower["flags"]["resumed_from_epoch"] == 0 and lower["flags"]["stopped_by"] == "epoch cap"
    assert [checkpoint_summary(p)["epoch"] for p in (cache / "checkpoints" / "capped").glob("*.pt")] == [4]
    assert not any((cache / "checkpoints").glob("*.pt"))
    # a checkpoint that has trained past its run's cap is refused, not stored as a run of that cap
    shutil.copy(kept, cache / "checkpoints" / kept.name)   # the slot's name is the key of the cap-1 run
    refused = subprocess.run([sys.executable, "-c", CAPPED_RUN, "1"], cwd=REPO, env=environment(results, cache),
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "has trained 4 epochs, past this run's cap of 1" in refused.stderr


def test_seeding_for_cuda_asks_for_deterministic_kernels_and_leaves_the_cpu_path_alone(monkeypatch):
    import torch
    from emkd_lib.train import seed_everything
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        seed_everything(0, torch.device("cpu"))
        assert not torch.are_deterministic_algorithms_enabled()
        assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
        seed_everything(0, torch.device("cuda"))   # a device, not a GPU: nothing is allocated
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
