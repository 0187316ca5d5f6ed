"""One model over several processes (``distributed``, ``run --ddp N``), on
the CPU with gloo: two processes train the parameters one process trains
(the ranks' shares of a batch are unequal, and one batch leaves a rank
without a row: the loss weighting is what makes it hold),
an EMKD ensemble trains and resumes from an interruption to the bits of an
uninterrupted run, and what cannot run is a one-line error first."""
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from emkd_lib import __main__ as cli
from emkd_lib import distributed, runs
from emkd_lib import settings as settings_module
from emkd_lib.methods import build_method
from emkd_lib.profiles import profile_config
from helpers import offline_data_root

DATA_DIR = offline_data_root()
TIMING = {"train_seconds", "eval_seconds", "wall_seconds"}

pytestmark = pytest.mark.skipif(DATA_DIR is None or not torch.distributed.is_gloo_available(),
                                reason="needs the Beauty dataset offline ($EMKD_DATA_DIR or the default places) and torch with gloo")


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("EMKD_DATA_DIR", str(DATA_DIR))
    monkeypatch.setenv("EMKD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("EMKD_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("EMKD_ALLOW_DIRTY", "1")  # the checkout under test may have uncommitted changes
    monkeypatch.setenv("EMKD_KEEP_FREED_MEMORY", "0")
    return tmp_path


def settings_at(root: Path, name: str):
    return dataclasses.replace(settings_module.current(), results_dir=root / name / "results",
                               cache_dir=root / name / "cache")


def weights(result) -> dict:
    return torch.load(result.path.with_suffix(".pt"))


@pytest.mark.parametrize("reduction", ["positions", "windows"])
def test_two_processes_train_the_parameters_of_one(env, reduction):
    # No dropout: the objective is then a mean of independent per-position
    # (or, weighing windows equally, per-window) terms.
    config = profile_config("smoke", "beauty", "sasrec", data__max_users=44, train__epochs=1,
                            train__batch_size=16, encoder_config__hidden=8, encoder_config__dropout=0.0,
                            params__loss_reduction=reduction)
    dataset, split = runs.run_data(config)
    lengths = [len(e) for e in build_method(config, dataset)[1].make_examples(split.train)]
    # Rows of many lengths: the ranks' shares of a batch carry unequal numbers
    # of positions. And a last batch of one row, for rank 0 alone.
    assert len(set(lengths)) > 1 and len(lengths) % 16 == 1

    single = runs.execute(config, device="cpu", progress=False, settings=settings_at(env, "single"))
    ddp = distributed.launch(config, 2, "cpu", settings=settings_at(env, "ddp"), threads=1, progress=False)
    assert ddp.key == single.key and ddp.provenance["ddp_world_size"] == 2
    assert ddp.provenance["command"].endswith(" --ddp 2")
    a, b = weights(single), weights(ddp)
    assert sorted(a) == sorted(b)
    difference = max((a[k] - b[k]).abs().max().item() for k in a)
    assert difference < 1e-5, difference
    assert ddp.history[0]["loss"] == pytest.approx(single.history[0]["loss"], rel=1e-5)
    assert ddp.history[0]["steps"] == single.history[0]["steps"] == -(-len(lengths) // 16)


def test_an_emkd_ensemble_resumes_to_the_bits_of_an_uninterrupted_ddp_run(env):
    config = profile_config("smoke", "beauty", "emkd", data__max_users=40, train__epochs=2, train__patience=2,
                            train__batch_size=16, encoder_config__hidden=8, params__n_networks=2)
    interrupted = settings_at(env, "resumed")
    with pytest.raises(Exception, match="stopped after epoch 1"):
        distributed.launch(config, 2, "cpu", settings=interrupted, threads=1, progress=False, stop_after_epoch=1)
    key = runs.key_of(config, interrupted)
    assert [p.name for p in interrupted.checkpoint_dir.iterdir()] == [f"{key}.ddp2.pt"]
    assert not runs.path_of(config, interrupted).exists()

    resumed = distributed.launch(config, 2, "cpu", settings=interrupted, threads=1, progress=False)
    whole = distributed.launch(config, 2, "cpu", settings=settings_at(env, "whole"), threads=1, progress=False)
    assert resumed.flags["resumed_from_epoch"] == 2 and whole.flags["resumed_from_epoch"] == 0
    assert not list(interrupted.checkpoint_dir.iterdir()), "the finished run removes its checkpoint"
    for split in ("test_ranks", "valid_ranks"):
        assert np.array_equal(resumed.ranks()[split], whole.ranks()[split]), split
    assert resumed.test_metrics == whole.test_metrics
    loss_terms = [k for k in whole.history[0] if k not in TIMING]
    assert {"loss", "mip", "kd", "icl", "ccl", "ap"} <= set(loss_terms)
    assert [{k: h[k] for k in loss_terms} for h in resumed.history] == \
        [{k: h[k] for k in loss_terms} for h in whole.history]
    assert all(np.isfinite(h["loss"]) for h in whole.history)
    # the N networks are one module, their weights stacked: the stored weights hold both
    assert weights(whole)["item_embedding.weight"].shape[0] == 2


@pytest.mark.parametrize("argv,message", [
    (["--ddp", "3"], "--ddp 3: train.batch_size 128 is not divisible by 3"),
    (["--ddp", "0"], "--ddp takes a number of processes >= 1, got 0"),
    (["--ddp", "2", "--device", "cuda:1"], "--ddp puts rank r on cuda:r; give --device cuda, not cuda:1"),
    (["--ddp", "2", "--device", "mps"], "--ddp trains on cpu or cuda, not mps"),
])
def test_what_cannot_run_is_one_line_before_any_process_starts(env, capsys, monkeypatch, argv, message):
    monkeypatch.setattr(torch.multiprocessing, "spawn", lambda *a, **k: pytest.fail("must not start"))
    # as on a machine with two GPUs, so that the device itself is not what is refused
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert cli.main(["run", "--profile", "smoke", "--dataset", "beauty", "--method", "sasrec", *argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"emkd_lib: error: {message}"), lines
