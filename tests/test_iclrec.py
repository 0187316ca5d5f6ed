"""ICLRec: seeded K-means, the intent contrastive loss against loops, the
once-per-epoch clustering hook, and the method end to end."""
import dataclasses
import math

import numpy as np
import pytest
import torch

from emkd_lib import losses
from emkd_lib.batching import pad_left
from emkd_lib.clustering import kmeans
from emkd_lib.config import DataConfig, RunConfig, TrainConfig
from emkd_lib.data import leave_one_out
from emkd_lib.methods import build_method, iclrec
from emkd_lib.methods.baselines import next_item_loss
from emkd_lib.methods.iclrec import ICLRecParams, Intents, iclrec_loss, sequence_representation
from emkd_lib.models.encoders import TransformerConfig
from emkd_lib.profiles import profile_config
from emkd_lib.train import fit

import helpers
from functools import partial

B, D = 6, 5


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---- K-means -----------------------------------------------------------------

def test_kmeans_is_a_function_of_the_points_and_the_seed():
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(c, 0.3, (40, 3)) for c in (-3, 0, 3)])
    c1, a1 = kmeans(points, 3, seed=7)
    c2, a2 = kmeans(torch.from_numpy(points).float(), 3, seed=7)
    torch.testing.assert_close(c1, c2, atol=1e-5, rtol=0)
    assert torch.equal(a1, a2) and c1.shape == (3, 3) and a1.dtype == torch.int64
    # three separated blobs: each blob is one cluster, whatever the seed
    for seed in (0, 1, 2):
        _, a = kmeans(points, 3, seed=seed)
        assert all(len(set(a[i * 40:(i + 1) * 40].tolist())) == 1 for i in range(3))
        assert len(set(a.tolist())) == 3
    # fewer points than clusters: every point is its own centroid
    c, a = kmeans(points[:2], 5, seed=0)
    assert c.shape == (2, 3) and sorted(a.tolist()) == [0, 1]
    with pytest.raises(ValueError, match=r"^points must be a non-empty \(N, d\) matrix, got shape \(0, 3\)$"):
        kmeans(np.zeros((0, 3)), 2, seed=0)


# ---- losses against loops ------------------------------------------------------

def nce_loop(a, b, tau, labels=None):
    """The ICLRec code's NCELoss, one anchor at a time."""
    n = a.shape[0]
    z = torch.cat([a, b])
    total = 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        den = 0.0
        for k in range(2 * n):
            if k == i:
                continue
            if k != pos and labels is not None and labels[i % n] == labels[k % n]:
                continue
            den += math.exp((z[i] @ z[k]).item() / tau)
        total += -math.log(math.exp((z[i] @ z[pos]).item() / tau) / den)
    return total / (2 * n)


@pytest.mark.parametrize("de_noise", [False, True])
def test_intent_loss_against_a_loop(de_noise):
    v1, v2 = rand(B, D), rand(B, D, seed=1)
    centroids = torch.nn.functional.normalize(rand(3, D, seed=2), dim=1)
    ids = torch.tensor([0, 2, 2, 1, 0, 2])
    c = centroids[ids]                                   # shared centroids: rows 1, 2, 5 and 0, 4
    tau = 0.7
    labels = ids if de_noise else None
    expected = 0.5 * (nce_loop(v1, c, tau, labels) + nce_loop(v2, c, tau, labels))
    got = losses.iclrec_intent_loss(v1, v2, c, tau, labels)
    assert math.isclose(got.item(), expected, rel_tol=1e-10)
    if not de_noise:
        torch.testing.assert_close(losses.iclrec_nce_loss(v1, c, tau), losses.nt_xent_loss(v1, c, tau))


def test_the_intent_is_the_nearest_raw_centroid_and_the_positive_its_normalised_copy():
    intents = Intents()
    intents.set(torch.tensor([[10.0, 0.0], [0.0, 1.0]]))
    ids, c = intents.query(torch.tensor([[6.0, 0.0], [4.0, 0.5], [0.0, 3.0]]))
    assert ids.tolist() == [0, 1, 1]       # L2 to the raw centroids, not the cosine
    torch.testing.assert_close(c, torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]))


def test_mean_representation_skips_padding():
    hidden = rand(2, 4, 3)
    ids = torch.tensor([[0, 0, 5, 6], [1, 2, 3, 4]])
    rep = sequence_representation(hidden, ids)
    torch.testing.assert_close(rep[0], hidden[0, 2:].mean(0))
    torch.testing.assert_close(rep[1], hidden[1].mean(0))
    torch.testing.assert_close(sequence_representation(hidden, ids, "last"), hidden[:, -1])


# ---- the method ------------------------------------------------------------------

successor_dataset = partial(helpers.successor_dataset, variable_lengths=True)


def config(seed=0, **params):
    return RunConfig(dataset="successor", method="iclrec", profile="cpu", seed=seed,
                     encoder_config=TransformerConfig(hidden=32, n_blocks=1, n_heads=1, dropout=0.0),
                     params=ICLRecParams(n_intents=8, **params), data=DataConfig(max_len=10),
                     train=TrainConfig(batch_size=32))


def batch(recipe, split, n=16):
    return torch.from_numpy(pad_left(recipe.make_examples(split.train)[:n]))


def build(cfg, dataset):
    torch.manual_seed(0)
    return build_method(cfg, dataset)


def test_the_hook_clusters_every_training_sequence_reproducibly():
    dataset = successor_dataset()
    model, recipe = build(config(), dataset)
    calls = []
    original = iclrec.kmeans

    def spy(points, k, seed, *args):
        calls.append((points.shape, k, seed))
        return original(points, k, seed, *args)

    iclrec.kmeans, saved = spy, iclrec.kmeans
    try:
        model.train()
        recipe.on_epoch_start(1)
        assert model.training                                   # the mode is restored
        model2, recipe2 = build(config(), dataset)
        recipe2.on_epoch_start(1)
    finally:
        iclrec.kmeans = saved
    n_users = sum(len(s) >= 2 for s in leave_one_out(dataset.sequences).train)
    assert calls == [(torch.Size([n_users, 32]), 8, 0)] * 2     # all users, K, the run's seed
    intents1, intents2 = model.intents, model2.intents
    torch.testing.assert_close(intents1.centroids, intents2.centroids)
    torch.testing.assert_close(intents1.normalised.norm(dim=1), torch.ones(8))


def test_terms_weights_and_switches():
    dataset = successor_dataset()
    split = leave_one_out(dataset.sequences)
    model, recipe = build(config(), dataset)
    model.eval()
    ids = batch(recipe, split)
    with pytest.raises(RuntimeError, match="on_epoch_start"):
        recipe.loss(model, ids, torch.Generator().manual_seed(0))
    recipe.on_epoch_start(1)
    terms = recipe.loss(model, ids, torch.Generator().manual_seed(0))
    assert set(terms) == {"loss", "sr", "scl", "icl"}
    torch.testing.assert_close(terms["sr"], next_item_loss(model, ids))
    torch.testing.assert_close(terms["loss"], terms["sr"] + 0.1 * terms["scl"] + 0.1 * terms["icl"])
    for change, present in (({"icl": False}, {"scl"}), ({"lambda_scl": 0.0}, {"icl"}),
                            ({"scl": False, "icl": False}, set())):
        params = ICLRecParams(n_intents=8, **change)
        got = iclrec_loss(model, ids, torch.Generator().manual_seed(0), params, model.intents)
        assert set(got) == {"loss", "sr"} | present
    # warm-up: no clustering and no intent term in the first epoch
    model, recipe = build(config(warm_up_epochs=1), dataset)
    recipe.on_epoch_start(1)
    assert model.intents.centroids is None
    assert set(recipe.loss(model, ids, torch.Generator().manual_seed(0))) == {"loss", "sr", "scl"}
    recipe.on_epoch_start(2)
    assert set(recipe.loss(model, ids, torch.Generator().manual_seed(0))) == {"loss", "sr", "scl", "icl"}


def test_the_intent_term_is_the_loss_of_the_views_and_the_centroids():
    """Recompute L_ICL from the model's own pass, the intents queried by hand."""
    dataset = successor_dataset()
    split = leave_one_out(dataset.sequences)
    model, recipe = build(config(), dataset)
    model.eval()
    recipe.on_epoch_start(1)
    intents = model.intents
    ids = batch(recipe, split, n=12)
    terms = recipe.loss(model, ids, torch.Generator().manual_seed(3))
    from emkd_lib.augment import augment_batch
    inputs = ids[:, :-1]
    v1, v2 = augment_batch(inputs, torch.Generator().manual_seed(3), ("crop", "mask", "reorder"), model.max_len,
                           mask_token=model.mask_token, gamma=0.7, crop_delta=0.8, crop_form="contiguous",
                           reorder_delta=0.2)
    with torch.no_grad():
        orig = sequence_representation(model(inputs), inputs)
        h1, h2 = model(v1), model(v2)
        m1, m2 = sequence_representation(h1, v1), sequence_representation(h2, v2)
    nearest = torch.stack([((intents.centroids - o) ** 2).sum(1).argmin() for o in orig])
    c = torch.nn.functional.normalize(intents.centroids, dim=1)[nearest]
    expected = 0.5 * (nce_loop(m1.double(), c.double(), 1.0) + nce_loop(m2.double(), c.double(), 1.0))
    assert math.isclose(terms["icl"].item(), expected, rel_tol=1e-4)
    # and L_SCL: NT-Xent between the two views' last-position states, by a loop over the 2B anchors
    z = torch.cat([h1[:, -1], h2[:, -1]]).double()
    B = len(inputs)
    anchors = [-(z[i] @ z[(i + B) % (2 * B)] - torch.logsumexp(torch.stack([z[i] @ z[k] for k in range(2 * B) if k != i]), 0))
               for i in range(2 * B)]
    assert math.isclose(terms["scl"].item(), torch.stack(anchors).mean().item(), rel_tol=1e-4)


def test_params_and_profiles():
    with pytest.raises(ValueError, match="unknown key"):
        profile_config("smoke", "beauty", "iclrec", params__n_clusters=8)
    with pytest.raises(ValueError, match="representation"):
        ICLRecParams(representation="sum")
    paper = profile_config("paper", "beauty", "iclrec")
    assert (paper.data.max_len, paper.train.batch_size, paper.encoder_config.dropout, paper.encoder_config.n_blocks,
            paper.params.n_intents, paper.params.lambda_scl, paper.params.lambda_icl) == (50, 256, 0.5, 1, 256,
                                                                                           0.1, 0.1)
    assert profile_config("paper", "ml-1m", "iclrec").params.lambda_scl == 0.0       # IntentCL on ML-1M
    cpu = profile_config("cpu", "beauty", "iclrec")
    assert cpu.data.max_len == 15 and cpu.encoder_config.n_blocks == 2 and cpu.params.n_intents == 256
    assert profile_config("smoke", "beauty", "iclrec").params.n_intents == 16


def test_iclrec_learns_a_deterministic_successor_and_clusters_once_per_epoch():
    dataset = successor_dataset()
    split = leave_one_out(dataset.sequences)
    model, recipe = build(config(), dataset)
    epochs = []
    counted = dataclasses.replace(recipe, on_epoch_start=lambda e: (epochs.append(e), recipe.on_epoch_start(e)))
    result = fit(model, counted, split, TrainConfig(epochs=20, batch_size=32, lr=5e-3, patience=20), seed=0,
                 device="cpu", progress=False)
    assert epochs == list(range(1, len(result.history) + 1))
    assert result.test_metrics["HR@5"] > 0.9
    assert {"loss", "sr", "scl", "icl"} <= set(result.history[0])
    assert all(np.isfinite(h["loss"]) for h in result.history)


def test_a_resumed_fit_clusters_and_ends_as_an_uninterrupted_one(tmp_path):
    """The intents depend on the weights and the run's seed only, so the hook
    of a resumed run reproduces the uninterrupted run's clustering."""
    dataset = successor_dataset()
    split = leave_one_out(dataset.sequences)
    settings = TrainConfig(epochs=4, batch_size=32, lr=5e-3, patience=4)
    model, recipe = build(config(), dataset)
    whole = fit(model, recipe, split, settings, seed=0, device="cpu", progress=False)
    checkpoint = tmp_path / "run.pt"
    model, recipe = build(config(), dataset)
    with pytest.raises(InterruptedError):
        fit(model, recipe, split, settings, seed=0, device="cpu", progress=False, checkpoint=checkpoint,
            stop_after_epoch=2)
    model, recipe = build(config(), dataset)
    resumed = fit(model, recipe, split, settings, seed=0, device="cpu", progress=False, checkpoint=checkpoint)
    assert resumed.resumed_from_epoch == 3
    terms = ("loss", "sr", "scl", "icl", "valid_ndcg10")
    assert [[h[k] for k in terms] for h in resumed.history] == [[h[k] for k in terms] for h in whole.history]
