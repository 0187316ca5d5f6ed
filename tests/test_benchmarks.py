"""The benchmark scripts run end to end on the smoke profile (two batches),
so that a change of emkd_lib's API breaks a test, not a later measurement.
Nothing here looks at a timing."""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from emkd_lib import losses, settings
from emkd_lib.data import dataset_spec, resolve_dataset_dir
from emkd_lib.methods import baselines
from emkd_lib.methods import emkd as emkd_method

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(autouse=True)
def _beauty_mirror(tmp_path, monkeypatch):
    try:
        resolve_dataset_dir(dataset_spec("beauty"), settings.current().data_dir, download=False)
    except FileNotFoundError:
        pytest.skip("offline mirror for beauty not available")
    monkeypatch.setenv("EMKD_CACHE_DIR", str(tmp_path / "emkd-cache"))


@pytest.fixture
def scripts(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("train_throughput"), importlib.import_module("step_profile")


def test_train_throughput_smoke(scripts, capsys):
    throughput, _ = scripts
    results = throughput.main(["--dataset", "beauty", "--profile", "smoke", "--methods", "sasrec", "emkd",
                               "--max-batches", "2", "--loop", "both", "--peak-size", "256", "--peak-repeats", "2",
                               "--malloc-default"])
    out = capsys.readouterr().out
    assert "measured fp32 matmul peak" in out and "bf16: " in out and "cpu model" in out
    assert [r["method"] for r in results] == ["sasrec", "emkd"]
    assert all(r["sequences_per_s"] > 0 and r["useful_flops"] > 0 for r in results)
    emkd = results[1]
    assert emkd["loop_same_seconds"] > 0 and emkd["loop_bert4rec_seconds"] > 0
    assert "batched ensemble speed-up" in out


def test_forward_macs_counts_every_emkd_term(scripts):
    import numpy as np

    throughput, _ = scripts
    config = throughput.profile_config("cpu", "beauty", "emkd")
    lengths = np.full(256, 15)
    full = throughput.forward_macs(config, 12101, 637, lengths)
    no_extras = throughput.forward_macs(config.replace(params__ap=False, params__icl=False, params__ccl=False),
                                        12101, 637, lengths)
    assert full > no_extras > 0
    b4r = throughput.forward_macs(config.replace(params__output_layer="bert4rec"), 12101, 637, lengths)
    assert b4r > full  # the projection head's d^2 per scored position


def test_step_profile_smoke(scripts, capsys):
    _, step_profile = scripts
    originals = (losses.distillation_loss, emkd_method.cloze_mask, baselines.cloze_mask)
    results = step_profile.main(["--dataset", "beauty", "--profile", "smoke", "--methods", "emkd", "sasrec",
                                 "--max-batches", "2", "--malloc-default"])
    out = capsys.readouterr().out
    assert "total (profiled)" in out
    emkd, sasrec = results
    for part in ("embedding", "attention", "ffn", "logits", "kd", "ap", "contrastive", "backward", "optimizer"):
        assert emkd["parts_ms"].get(part, 0) > 0, part
    for part in ("attention", "ffn", "logits", "ce", "backward"):
        assert sasrec["parts_ms"].get(part, 0) > 0, part
    assert "kd" not in sasrec["parts_ms"]
    assert abs(sum(emkd["parts_ms"].values()) - emkd["total_ms"]) < 1e-6
    # the labels are gone once the profile is done
    assert (losses.distillation_loss, emkd_method.cloze_mask, baselines.cloze_mask) == originals
