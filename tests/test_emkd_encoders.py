"""EMKD with GRU4Rec, Caser or SASRec as its parallel networks (Figure 4)."""
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from emkd_lib import methods
from emkd_lib.batching import pad_left
from emkd_lib.data import leave_one_out
from emkd_lib.encoders import build_encoder
from emkd_lib.ensemble import EncoderEnsemble
from emkd_lib.experiments import ENCODER_SWEEP_USERS, RunConfig, emkd_encoder_grid, profile_config
from emkd_lib.methods import (EMKDParams, combine_emkd_terms, emkd_next_item_loss_terms, emkd_next_item_recipe,
                              ensemble_last_position_scores)
from emkd_lib.train import TrainSettings, fit

N_ITEMS, MAX_LEN, HIDDEN = 25, 10, 16
ENCODERS = ["gru4rec", "caser", "sasrec"]


def windows():
    return torch.tensor(pad_left([np.array([3, 4, 5, 6]), np.array([1, 2, 3, 4, 5, 25, 7, 8]),
                                  np.array([9, 9, 2, 25])]))


def tiny(encoder, n=2, attrs=True, seed=0):
    torch.manual_seed(seed)
    attributes = torch.rand(N_ITEMS + 1, 4, generator=torch.Generator().manual_seed(1)) < 0.5 if attrs else None
    return EncoderEnsemble(encoder, n, N_ITEMS, MAX_LEN, item_attributes=attributes, hidden=HIDDEN,
                           n_blocks=1, n_heads=1, dropout=0.0).eval()


@pytest.mark.parametrize("encoder", ENCODERS)
def test_mask_token_is_an_input_row_and_never_scored(encoder):
    net = build_encoder(encoder, N_ITEMS, MAX_LEN, hidden=HIDDEN, n_extra_tokens=1)
    assert net.item_embedding.num_embeddings == N_ITEMS + 2
    hidden = net(torch.tensor([[0, 3, N_ITEMS + 1, 5]]))
    assert net.logits(hidden).shape == (1, 4, N_ITEMS)
    plain = build_encoder(encoder, N_ITEMS, MAX_LEN, hidden=HIDDEN)
    assert plain.item_embedding.num_embeddings == N_ITEMS + 1  # baselines unchanged


@pytest.mark.parametrize("encoder", ENCODERS)
def test_item_terms_are_next_item_losses_on_the_views(encoder):
    """"mip" is each network's next-item cross entropy on each masked view
    (mean over the view's positions, summed over views and networks); KD
    distils those next-item distributions between every ordered pair."""
    model, w, M = tiny(encoder, n=2), windows(), 2
    params = EMKDParams(n_networks=2, n_views=M, kd_temperature=2.0)
    terms = emkd_next_item_loss_terms(model, w, torch.Generator().manual_seed(3), params, mask_prob=0.3)
    assert set(terms) == {"mip", "ap", "icl", "ccl", "kd"}

    inputs, targets = w[:, :-1], w[:, 1:]
    views, _ = methods.cloze_mask(inputs.repeat(M, 1), 0.3, N_ITEMS + 1, N_ITEMS, torch.Generator().manual_seed(3))
    real, B = inputs > 0, inputs.shape[0]
    mip = kd = 0.0
    for m in range(M):
        v = views[m * B:(m + 1) * B]
        logits = [net.logits(net(v)[real]) for net in model.networks]
        for n in range(2):
            mip += F.cross_entropy(logits[n], targets[real] - 1)
            kd += F.kl_div(torch.log_softmax(logits[n] / 2.0, -1), torch.log_softmax(logits[1 - n] / 2.0, -1),
                           log_target=True, reduction="batchmean")
    torch.testing.assert_close(terms["mip"], mip, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(terms["kd"], kd, atol=1e-6, rtol=1e-4)
    assert ((views != inputs.repeat(M, 1)) & (inputs.repeat(M, 1) == 0)).sum() == 0  # padding is never masked


@pytest.mark.parametrize("encoder", ENCODERS)
def test_independent_networks_get_no_gradient_from_each_other(encoder):
    def grad_of_network_0(params, perturb):
        model = tiny(encoder, n=2)
        if perturb:
            with torch.no_grad():
                for p in model.networks[1].parameters():
                    p.add_(torch.randn_like(p) * 0.5)
        terms = emkd_next_item_loss_terms(model, windows(), torch.Generator().manual_seed(3), params, 0.3)
        loss = combine_emkd_terms(terms, params)
        return torch.autograd.grad(loss, model.networks[0].item_embedding.weight)[0]

    independent = EMKDParams(n_networks=2, n_views=2, icl=False, ccl=False, kd=False)
    torch.testing.assert_close(grad_of_network_0(independent, False), grad_of_network_0(independent, True))
    coupled = EMKDParams(n_networks=2, n_views=2, icl=False, ccl=False, mu=1.0)
    assert not torch.allclose(grad_of_network_0(coupled, False), grad_of_network_0(coupled, True))


def test_ensemble_scores_are_the_mean_of_each_networks_last_position_logits():
    model, ids = tiny("sasrec", n=3), windows()[:, :-1]
    scores = ensemble_last_position_scores(model, ids)
    expected = torch.stack([net.logits(net(ids)[:, -1]) for net in model.networks]).mean(0)
    assert torch.isinf(scores[:, 0]).all()
    torch.testing.assert_close(scores[:, 1:], expected)


def test_bad_encoder_or_network_count_is_a_clear_error():
    with pytest.raises(ValueError, match="EMKD on BERT4Rec is EnsembleBERT4Rec"):
        EncoderEnsemble("bert4rec", 2, N_ITEMS, MAX_LEN)
    with pytest.raises(ValueError, match="n_networks must be >= 1"):
        EncoderEnsemble("sasrec", 0, N_ITEMS, MAX_LEN)
    with pytest.raises(ValueError, match="unknown method 'emkd-bert4rec'"):
        RunConfig(dataset="beauty", method="emkd-bert4rec", profile="cpu")


def test_profile_and_grid_take_the_encoders_own_settings():
    for encoder in ENCODERS:
        mine, theirs = profile_config("cpu", "beauty", f"emkd-{encoder}"), profile_config("cpu", "beauty", encoder)
        assert (mine.hidden, mine.max_len, mine.n_heads, mine.dropout, mine.epochs) == \
            (theirs.hidden, theirs.max_len, theirs.n_heads, theirs.dropout, theirs.epochs)
        assert EMKDParams.from_params(mine.params).n_views == 2
    grid = emkd_encoder_grid("cpu")
    encoders = ("sasrec", "gru4rec", "caser")
    assert grid[:3] == [dataclasses.replace(profile_config("cpu", "beauty", e), max_users=ENCODER_SWEEP_USERS["cpu"])
                        for e in encoders]  # N = 1: the encoder alone, on the same users
    assert [(c.method, dict(c.params)["n_networks"]) for c in grid[3:12]] == \
        [(f"emkd-{e}", n) for n in (2, 3, 4) for e in encoders]  # then the reruns without early stopping
    assert {c.max_users for c in grid} == {ENCODER_SWEEP_USERS["cpu"]}


@pytest.mark.parametrize("encoder", ENCODERS)
def test_emkd_on_each_encoder_learns_a_deterministic_successor(encoder):
    rng = np.random.default_rng(0)
    n_items, length = 20, 8
    seqs = [((s + np.arange(length)) % n_items + 1).astype(np.int64) for s in rng.integers(0, n_items, 120)]
    split = leave_one_out(seqs)
    torch.manual_seed(0)
    model = EncoderEnsemble(encoder, 2, n_items, 10, item_attributes=torch.rand(n_items + 1, 3) < 0.5,
                            hidden=32, n_blocks=1, n_heads=1, dropout=0.0)
    recipe = emkd_next_item_recipe(10, None, 0.2, EMKDParams(n_networks=2, n_views=2, tau=0.5, lam=0.1, mu=0.1))
    result = fit(model, recipe, split, TrainSettings(epochs=25, batch_size=32, lr=5e-3, patience=25, seed=0),
                 progress=False)
    assert result.test_metrics["HR@5"] > 0.9
