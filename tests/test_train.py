"""The training loop: early stopping after min_steps, every loss term in the
history, the epoch hook, checkpoints."""

import numpy as np
import pytest
import torch
from torch import nn

from emkd_lib import train as train_module
from emkd_lib.config import DataConfig, RunConfig, TrainConfig
from emkd_lib.data import leave_one_out
from emkd_lib.methods import Recipe, build_method
from emkd_lib.methods.baselines import with_padding_column
from emkd_lib.methods.emkd import EMKDParams
from emkd_lib.models.encoders import TransformerConfig
from emkd_lib.train import fit

import helpers
from functools import partial

N_ITEMS = 20


successor_dataset = partial(helpers.successor_dataset, n_users=40, n_items=N_ITEMS, n_attributes=3)


class Constant(nn.Module):
    """A model that learns (its loss falls) but whose scores never change, so
    validation NDCG@10 improves once, at the first evaluation, and never again."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(3))


def constant_recipe(**changes):
    scores = torch.linspace(1.0, 0.0, N_ITEMS)
    return Recipe(make_examples=lambda seqs: list(seqs),
                  loss=lambda model, ids, gen: {"loss": (model.w ** 2).sum(), "other": torch.tensor(float(len(ids)))},
                  score=lambda model, ids: with_padding_column(scores.expand(len(ids), N_ITEMS).clone()),
                  eval_max_len=8, **changes)


def fit_constant(train, **kwargs):
    split = leave_one_out(successor_dataset().sequences)  # 40 users: 4 steps an epoch at batch size 10
    return fit(Constant(), constant_recipe(**kwargs.pop("recipe", {})), split, train, seed=0, device="cpu",
               progress=False, **kwargs)


def expected_stop(steps_per_epoch, min_steps, patience, epochs):
    """Epoch 1 improves; every later evaluation counts once the steps reach min_steps."""
    counted = 0
    for epoch in range(2, epochs + 1):
        if epoch * steps_per_epoch >= min_steps:
            counted += 1
            if counted == patience:
                return epoch
    return epochs


@pytest.mark.parametrize("min_steps,patience", [(0, 2), (10, 2), (30, 1), (30, 3), (1000, 2)])
def test_early_stopping_counts_evaluations_only_after_min_steps(min_steps, patience):
    result = fit_constant(TrainConfig(epochs=12, batch_size=10, patience=patience, min_steps=min_steps))
    steps = result.history[0]["steps"]
    assert steps == 4
    stop = expected_stop(steps, min_steps, patience, 12)
    assert len(result.history) == stop
    assert [h["epoch"] for h in result.history] == list(range(1, stop + 1))
    assert [h["steps"] for h in result.history] == [steps * e for e in range(1, stop + 1)]
    assert result.best_epoch == 1
    assert result.stopped_by == ("epoch cap" if stop == 12 and min_steps == 1000 else "patience")
    if result.stopped_by == "patience":
        # the stopping evaluation is the patience-th counted one, after min_steps
        counted = [h for h in result.history[1:] if h["steps"] >= min_steps]
        assert len(counted) == patience and result.steps >= min_steps


class EpochScored(nn.Module):
    """Scores each user's true next item first only while its buffer says
    epoch 2: validation peaks at epoch 2, and only that epoch's state scores
    the test split perfectly."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(3))
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))


def test_the_test_split_is_scored_with_the_best_epochs_weights():
    from emkd_lib.evaluation import metrics_from_ranks
    model = EpochScored()

    def score(m, ids):
        scores = torch.linspace(1.0, 0.0, N_ITEMS).expand(len(ids), N_ITEMS).clone()
        if int(m.epoch) == 2:
            scores[torch.arange(len(ids)), ids[:, -1] % N_ITEMS] = 2.0   # item last % N + 1 (helpers)
        return with_padding_column(scores)

    recipe = Recipe(make_examples=lambda seqs: list(seqs), loss=lambda m, ids, gen: {"loss": (m.w ** 2).sum()},
                    score=score, eval_max_len=8, on_epoch_start=lambda epoch: model.epoch.fill_(epoch))
    result = fit(model, recipe, leave_one_out(successor_dataset().sequences),
                 TrainConfig(epochs=8, batch_size=10, patience=2), seed=0, device="cpu", progress=False)
    assert result.best_epoch == 2 and len(result.history) == 4 and int(model.epoch) == 2
    assert [h["valid_ndcg10"] == 1.0 for h in result.history] == [False, True, False, False]
    assert result.valid_metrics == metrics_from_ranks(result.valid_ranks)
    assert result.valid_metrics["NDCG@10"] == result.history[1]["valid_ndcg10"]
    assert result.test_metrics == metrics_from_ranks(result.test_ranks)
    assert result.test_metrics["NDCG@10"] == 1.0   # the last epoch's state would score below 1


def test_the_epoch_hook_is_called_with_each_epoch_before_it_runs():
    calls = []
    result = fit_constant(TrainConfig(epochs=4, batch_size=10, patience=10),
                          recipe={"on_epoch_start": lambda epoch: calls.append((epoch, len(calls)))})
    assert [epoch for epoch, _ in calls] == [1, 2, 3, 4] and len(result.history) == 4
    calls.clear()
    fit_constant(TrainConfig(epochs=10, batch_size=10, patience=2),
                 recipe={"on_epoch_start": lambda epoch: calls.append((epoch, len(calls)))})
    assert [epoch for epoch, _ in calls] == [1, 2, 3]  # stopped by patience after epoch 3


def test_the_history_holds_every_named_term_of_a_recipe():
    result = fit_constant(TrainConfig(epochs=2, batch_size=15, patience=10))
    for h in result.history:
        assert {"epoch", "loss", "other", "valid_ndcg10", "steps", "train_seconds", "eval_seconds",
                "wall_seconds"} <= set(h)
        # "other" is each batch's size: 40 windows in batches of 15, 15 and 10, averaged over the batches
        assert h["other"] == pytest.approx(40 / 3, rel=1e-6)
    assert result.history[1]["loss"] < result.history[0]["loss"]


def emkd_config(**params):
    return RunConfig(dataset="successor", method="emkd", profile="smoke", encoder="bert4rec",
                     encoder_config=TransformerConfig(hidden=8, n_blocks=1, n_heads=1),
                     params=EMKDParams(n_views=2, **params), data=DataConfig(max_len=8))


@pytest.mark.parametrize("params,terms", [
    (dict(n_networks=2), {"mip", "kd", "icl", "ccl", "ap"}),
    (dict(n_networks=2, ap=False), {"mip", "kd", "icl", "ccl"}),
    (dict(n_networks=1), {"mip", "icl", "ap"}),
    (dict(n_networks=2, icl=False, ccl=False, kd=False), {"mip", "ap"}),
])
def test_the_history_holds_every_active_emkd_term_per_epoch(params, terms):
    dataset = successor_dataset()
    config = emkd_config(**params)
    assert config.params.active_terms(config.params.n_networks, True) == terms
    torch.manual_seed(0)
    model, recipe = build_method(config, dataset)
    result = fit(model, recipe, leave_one_out(dataset.sequences), TrainConfig(epochs=2, batch_size=16, patience=5),
                 seed=0, device="cpu", progress=False)
    assert len(result.history) == 2
    for h in result.history:
        logged = set(h) - {"epoch", "valid_ndcg10", "steps", "train_seconds", "eval_seconds", "wall_seconds"}
        assert logged == terms | {"loss"}
        assert all(np.isfinite(h[t]) for t in logged)
        # every batch's "loss" is Eq. 19 of its terms, so their epoch means are too
        p = config.params
        weight = {"mip": 1.0, "ap": 1.0, "icl": p.lam, "ccl": p.lam, "kd": p.mu}
        assert h["loss"] == pytest.approx(sum(weight[t] * h[t] for t in terms), rel=1e-5)


def test_stop_after_epoch_leaves_a_checkpoint_and_a_resume_continues_from_it(tmp_path):
    checkpoint = tmp_path / "run.pt"
    train = TrainConfig(epochs=4, batch_size=10, patience=10)
    with pytest.raises(InterruptedError, match="stopped after epoch 2"):
        fit_constant(train, checkpoint=checkpoint, stop_after_epoch=2)
    assert checkpoint.exists()
    resumed = fit_constant(train, checkpoint=checkpoint)
    whole = fit_constant(train)
    assert resumed.resumed_from_epoch == 3 and whole.resumed_from_epoch == 0
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]
    assert resumed.steps == whole.steps == 16
    np.testing.assert_array_equal(resumed.test_ranks, whole.test_ranks)


@pytest.mark.parametrize("content, problem", [
    (b"garbage\n", "is unreadable (ValueError: invalid literal"),
    (None, "is not a training checkpoint (no 'epoch')"),          # a file of weights, not a checkpoint
    ("other model", "holds another model's weights"),
    # a CUDA run's generator state (16 bytes) where a CPU generator's is expected
    ("other device", "holds the random state of a run on another kind of device"),
    ("past the cap", "has trained 5 epochs, past this run's cap of 4"),
])
def test_a_corrupt_or_foreign_checkpoint_is_one_error_naming_it_and_is_kept(tmp_path, content, problem):
    checkpoint = tmp_path / "run.pt"
    train = TrainConfig(epochs=4, batch_size=10, patience=10)
    if content is None:
        torch.save({"w": torch.ones(3)}, checkpoint)
    elif isinstance(content, str):
        with pytest.raises(InterruptedError):
            fit_constant(train, checkpoint=checkpoint, stop_after_epoch=1)
        state = torch.load(checkpoint, weights_only=False)
        if content == "other model":
            state["model"] = {"v": torch.ones(2)}
        elif content == "other device":
            state["rng"]["generator"] = torch.zeros(16, dtype=torch.uint8)
        else:
            state["epoch"] = 5
        torch.save(state, checkpoint)
    else:
        checkpoint.write_bytes(content)
    before = checkpoint.read_bytes()
    with pytest.raises(ValueError) as error:
        fit_constant(train, checkpoint=checkpoint)
    message = str(error.value)
    assert message.startswith(f"checkpoint {checkpoint} ") and problem in message, message
    assert message.endswith("delete it to train the run from its first epoch") and "\n" not in message
    assert checkpoint.read_bytes() == before


def test_a_run_killed_after_its_stopping_epoch_resumes_to_the_same_stop(tmp_path, monkeypatch):
    """The checkpoint of the epoch at which patience ran out is written before
    the loop ends; a process killed right then must not train further on resume."""
    checkpoint = tmp_path / "run.pt"
    train = TrainConfig(epochs=10, batch_size=10, patience=2)
    whole = fit_constant(train)
    assert whole.stopped_by == "patience" and len(whole.history) == 3
    real, writes = train_module.atomic_write, []

    def killed_after_third(path, write):
        real(path, write)
        writes.append(path)
        if len(writes) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "atomic_write", killed_after_third)
    with pytest.raises(KeyboardInterrupt):
        fit_constant(train, checkpoint=checkpoint)
    monkeypatch.setattr(train_module, "atomic_write", real)
    resumed = fit_constant(train, checkpoint=checkpoint)
    assert len(resumed.history) == len(whole.history)
    assert resumed.stopped_by == "patience"


def test_training_batches_hold_every_example_once_in_either_order():
    from emkd_lib.batching import training_batches
    lengths = np.array([1, 5, 2, 5, 3, 1, 4, 2, 5, 3])
    for order in ("length-buckets", "shuffled"):
        batches = training_batches(lengths, 4, order, np.random.default_rng(0))
        assert sorted(np.concatenate(batches).tolist()) == list(range(10))
        assert sorted(len(b) for b in batches) == [2, 4, 4]
    # length buckets: consecutive runs of the windows sorted by length, so no two batches' lengths interleave
    spans = sorted((lengths[b].min(), lengths[b].max()) for b in training_batches(lengths, 4, "length-buckets",
                                                                                  np.random.default_rng(0)))
    assert all(high <= low for (_, high), (low, _) in zip(spans, spans[1:]))
    # shuffled: one random permutation of the examples, cut in order
    shuffled = training_batches(lengths, 4, "shuffled", np.random.default_rng(7))
    assert np.array_equal(np.concatenate(shuffled), np.random.default_rng(7).permutation(10))
    with pytest.raises(ValueError, match="batch order must be one of"):
        training_batches(lengths, 4, "sorted", np.random.default_rng(0))
    with pytest.raises(ValueError, match="batch_order"):
        TrainConfig(batch_order="random")
