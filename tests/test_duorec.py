"""DuoRec: its contrastive terms against loops, seeded same-target positives,
the terms of each contrast mode, and the method end to end."""
import math

import numpy as np
import pytest
import torch

from emkd_lib.augment import numpy_rng
from emkd_lib.batching import pad_left
from emkd_lib.config import DataConfig, RunConfig, TrainConfig
from emkd_lib.data import leave_one_out
from emkd_lib.methods import build_method
from emkd_lib.methods.baselines import next_item_loss
from emkd_lib.methods.duorec import (DuoRecParams, SameTargetIndex, duorec_contrastive_terms, duorec_loss,
                                     same_target_positives)
from emkd_lib.models.encoders import TransformerConfig
from emkd_lib.profiles import profile_config
from emkd_lib.train import fit

import helpers
from functools import partial

B, D = 5, 4


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def info_nce_loop(zi, zj, tau, cos=False):
    """The DuoRec code's info_nce + CrossEntropyLoss, one anchor at a time:
    logits [positive, the 2N - 2 others], label 0."""
    if cos:
        zi, zj = (torch.nn.functional.normalize(t, dim=-1) for t in (zi, zj))
    n = zi.shape[0]
    z = torch.cat([zi, zj])
    total = 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        logits = [(z[i] @ z[pos]).item() / tau] + [(z[i] @ z[k]).item() / tau for k in range(2 * n)
                                                   if k not in (i, pos)]
        total += -logits[0] + math.log(sum(math.exp(v) for v in logits))
    return total / (2 * n)


@pytest.mark.parametrize("contrast, expected", [("us_x", {"scl"}), ("us", {"ucl", "scl"}), ("un", {"ucl"}),
                                                ("su", {"scl"})])
@pytest.mark.parametrize("similarity", ["dot", "cos"])
def test_contrastive_terms_against_loops(contrast, expected, similarity):
    h, h2, hs = rand(B, D), rand(B, D, seed=1), rand(B, D, seed=2)
    params = DuoRecParams(contrast=contrast, similarity=similarity, tau=0.6)
    terms = duorec_contrastive_terms(h, h2, hs, params)
    assert set(terms) == expected
    cos = similarity == "cos"
    if "ucl" in expected:
        assert math.isclose(terms["ucl"].item(), info_nce_loop(h, h2, 0.6, cos), rel_tol=1e-10)
    anchor = h2 if contrast == "us_x" else h
    assert math.isclose(terms["scl"].item() if "scl" in terms else 0.0,
                        info_nce_loop(anchor, hs, 0.6, cos) if "scl" in expected else 0.0, rel_tol=1e-10)


def test_zero_weights_remove_terms():
    assert DuoRecParams(lam_sem=0.0).active_terms() == set()
    assert DuoRecParams(contrast="us", lam=0.0).active_terms() == {"scl"}
    with pytest.raises(ValueError, match="contrast"):
        DuoRecParams(contrast="xx")


# ---- same-target positives ------------------------------------------------------

WINDOWS = [np.array(w) for w in ([1, 2, 3], [4, 3], [5, 6, 3], [7, 8], [9, 8], [1, 2, 3], [2, 6], [11, 12, 13])]


def test_same_target_positives_from_the_training_set_are_seeded_and_never_the_row_itself():
    index = SameTargetIndex(WINDOWS)
    windows = torch.from_numpy(pad_left([WINDOWS[0], WINDOWS[3], WINDOWS[6], WINDOWS[7]]))
    draws = []
    for seed in range(40):
        pos, found = same_target_positives(windows, numpy_rng(torch.Generator().manual_seed(seed)), index)
        again, _ = same_target_positives(windows, numpy_rng(torch.Generator().manual_seed(seed)), index)
        assert all(np.array_equal(a, b) for a, b in zip(pos, again))          # seeded
        assert found.tolist() == [True, True, False, False]
        # target 3: [4, 3] or [5, 6, 3] (never [1, 2, 3], the row's own content, kept twice)
        assert any(np.array_equal(pos[0], p) for p in ([4], [5, 6]))
        assert np.array_equal(pos[1], [9])                                   # target 8: [9, 8] only
        assert np.array_equal(pos[2], [2]) and np.array_equal(pos[3], [11, 12])  # none: its own input
        draws.append(tuple(pos[0]))
    assert set(draws) == {(4,), (5, 6)}                                      # both candidates drawn


def test_same_target_positives_from_the_batch():
    windows = torch.from_numpy(pad_left([WINDOWS[i] for i in (0, 1, 2, 3, 4, 6)]))
    seen = set()
    for seed in range(30):
        pos, found = same_target_positives(windows, np.random.default_rng(seed))
        assert found.tolist() == [True, True, True, True, True, False]
        assert np.array_equal(pos[3], [9]) and np.array_equal(pos[4], [7]) and np.array_equal(pos[5], [2])
        assert not np.array_equal(pos[0], [1, 2])
        seen.add(tuple(pos[0]))
    assert seen == {(4,), (5, 6)}


# ---- the method ------------------------------------------------------------------

successor_dataset = partial(helpers.successor_dataset, variable_lengths=True)


def config(dropout=0.0, **params):
    return RunConfig(dataset="successor", method="duorec", profile="cpu",
                     encoder_config=TransformerConfig(hidden=32, n_blocks=1, n_heads=1, dropout=dropout),
                     params=DuoRecParams(**params), data=DataConfig(max_len=10))


def built(cfg):
    dataset = successor_dataset()
    split = leave_one_out(dataset.sequences)
    torch.manual_seed(0)
    model, recipe = build_method(cfg, dataset)
    examples = recipe.make_examples(split.train)
    return model, recipe, split, torch.from_numpy(pad_left(examples[:24]))


@pytest.mark.parametrize("contrast", ["us_x", "us", "un", "su"])
def test_the_method_terms_are_the_losses_of_its_passes(contrast):
    """Without dropout every pass is deterministic: recompute each term from
    separate forward passes, with the positives drawn from the same seed."""
    model, recipe, _, ids = built(config(contrast=contrast))
    model.eval()
    params = DuoRecParams(contrast=contrast)
    terms = recipe.loss(model, ids, torch.Generator().manual_seed(5))
    assert set(terms) == {"loss", "sr"} | params.active_terms()
    torch.testing.assert_close(terms["sr"], next_item_loss(model, ids))
    torch.testing.assert_close(terms["loss"], terms["sr"] + sum(0.1 * terms[t] for t in params.active_terms()))
    inputs = ids[:, :-1]
    with torch.no_grad():
        h = model(inputs)[:, -1]
        if "scl" in terms:
            index = SameTargetIndex(recipe.make_examples(leave_one_out(successor_dataset().sequences).train))
            pos, found = same_target_positives(ids, numpy_rng(torch.Generator().manual_seed(5)), index)
            assert found.sum() > len(found) // 2     # most rows have one; the others are their own
            hs = model(torch.from_numpy(pad_left(pos)))[:, -1]
            assert math.isclose(terms["scl"].item(), info_nce_loop(h.double(), hs.double(), 1.0), rel_tol=1e-4)
    if "ucl" in terms:
        assert math.isclose(terms["ucl"].item(), info_nce_loop(h.double(), h.double(), 1.0), rel_tol=1e-4)


def test_two_passes_differ_by_dropout_only_in_train_mode():
    model, recipe, _, ids = built(config(dropout=0.3, contrast="un"))
    model.eval()
    a = recipe.loss(model, ids, torch.Generator().manual_seed(0))
    with torch.no_grad():
        h = model(ids[:, :-1])[:, -1]
    assert math.isclose(a["ucl"].item(), info_nce_loop(h.double(), h.double(), 1.0), rel_tol=1e-4)
    model.train()
    torch.manual_seed(1)
    b = recipe.loss(model, ids, torch.Generator().manual_seed(0))
    assert not math.isclose(b["ucl"].item(), a["ucl"].item(), rel_tol=1e-3)


def test_positives_from_the_training_set_need_the_examples():
    model, _, _, ids = built(config())
    with pytest.raises(RuntimeError, match="make_examples"):
        duorec_loss(model, ids, torch.Generator().manual_seed(0), DuoRecParams(), index=None)
    terms = duorec_loss(model, ids, torch.Generator().manual_seed(0), DuoRecParams(positives_from="batch"))
    assert set(terms) == {"loss", "sr", "scl"}


def test_profiles():
    with pytest.raises(ValueError, match="unknown key"):
        profile_config("smoke", "beauty", "duorec", params__lmd=0.1)
    paper = profile_config("paper", "beauty", "duorec")
    assert (paper.data.max_len, paper.train.batch_size, paper.encoder_config.dropout, paper.encoder_config.n_blocks,
            paper.encoder_config.n_heads, paper.params.contrast, paper.params.tau) == (50, 256, 0.5, 2, 2, "us_x", 1.0)
    cpu = profile_config("cpu", "beauty", "duorec")
    assert cpu.data.max_len == 15 and cpu.encoder_config.dropout == 0.5
    assert profile_config("smoke", "beauty", "duorec").encoder == "sasrec"


def test_duorec_learns_a_deterministic_successor():
    model, recipe, split, _ = built(config(dropout=0.1))
    result = fit(model, recipe, split, TrainConfig(epochs=20, batch_size=32, lr=5e-3, patience=20), seed=0,
                 device="cpu", progress=False)
    assert result.test_metrics["HR@5"] > 0.9
    assert {"loss", "sr", "scl"} <= set(result.history[0])
    assert all(np.isfinite(h["loss"]) for h in result.history)


def test_a_resumed_fit_ends_as_an_uninterrupted_one(tmp_path):
    """Positives follow the run's generator, dropout torch's: both resume."""
    settings = TrainConfig(epochs=4, batch_size=32, lr=5e-3, patience=4)
    model, recipe, split, _ = built(config(dropout=0.1))
    whole = fit(model, recipe, split, settings, seed=0, device="cpu", progress=False)
    checkpoint = tmp_path / "run.pt"
    model, recipe, split, _ = built(config(dropout=0.1))
    with pytest.raises(InterruptedError):
        fit(model, recipe, split, settings, seed=0, device="cpu", progress=False, checkpoint=checkpoint,
            stop_after_epoch=2)
    model, recipe, split, _ = built(config(dropout=0.1))
    resumed = fit(model, recipe, split, settings, seed=0, device="cpu", progress=False, checkpoint=checkpoint)
    assert resumed.resumed_from_epoch == 3
    terms = ("loss", "sr", "scl", "valid_ndcg10")
    assert [[h[k] for k in terms] for h in resumed.history] == [[h[k] for k in terms] for h in whole.history]
