"""EMKD with GRU4Rec, Caser or SASRec as its parallel networks (Figure 4)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from emkd_lib.batching import pad_left
from emkd_lib.config import DataConfig, RunConfig, TrainConfig
from emkd_lib.data import leave_one_out
from emkd_lib.methods import build_method
from emkd_lib.methods.baselines import cloze_mask
from emkd_lib.methods.emkd import (EMKDParams, combine_emkd_terms, emkd_next_item_loss_terms,
                                   ensemble_last_position_scores)
from emkd_lib.models.encoders import CaserConfig, GRU4RecConfig, TransformerConfig, build_encoder
from emkd_lib.models.ensemble import EncoderEnsemble
from emkd_lib.profiles import profile_config
from emkd_lib.studies.emkd import BUDGET_PRECISION, ENCODER_SWEEP_USERS, encoder_grid
from emkd_lib.train import fit

import helpers
from functools import partial

N_ITEMS, MAX_LEN, HIDDEN = 25, 10, 16
ENCODERS = ["gru4rec", "caser", "sasrec"]


def windows():
    return torch.tensor(pad_left([np.array([3, 4, 5, 6]), np.array([1, 2, 3, 4, 5, 25, 7, 8]),
                                  np.array([9, 9, 2, 25])]))


def config_of(encoder, hidden=HIDDEN):
    return {"sasrec": TransformerConfig(hidden=hidden, n_blocks=1, n_heads=1, dropout=0.0),
            "gru4rec": GRU4RecConfig(hidden=hidden, dropout=0.0),
            "caser": CaserConfig(hidden=hidden, dropout=0.0)}[encoder]


def tiny(encoder, n=2, attrs=True, seed=0):
    torch.manual_seed(seed)
    attributes = torch.rand(N_ITEMS + 1, 4, generator=torch.Generator().manual_seed(1)) < 0.5 if attrs else None
    return EncoderEnsemble(encoder, n, N_ITEMS, MAX_LEN, config=config_of(encoder), item_attributes=attributes).eval()


@pytest.mark.parametrize("encoder", ENCODERS)
def test_mask_token_is_an_input_row_and_never_scored(encoder):
    net = build_encoder(encoder, N_ITEMS, MAX_LEN, config_of(encoder), n_extra_tokens=1)
    assert net.item_embedding.num_embeddings == N_ITEMS + 2
    hidden = net(torch.tensor([[0, 3, N_ITEMS + 1, 5]]))
    assert net.logits(hidden).shape == (1, 4, N_ITEMS)
    plain = build_encoder(encoder, N_ITEMS, MAX_LEN, config_of(encoder))
    assert plain.item_embedding.num_embeddings == N_ITEMS + 1  # baselines unchanged


@pytest.mark.parametrize("encoder", ENCODERS)
def test_ensemble_scores_are_each_networks_own_bit_for_bit(encoder):
    """One batched product over the stacked output layers gives each
    network's ``logits`` of its own states, and the same gradients, bit for
    bit: a run's scores and its training do not depend on which is used.
    At a run's sizes (hundreds of positions, a catalogue of thousands): below
    some 400 multiply-adds per product torch's batched product takes another
    kernel, whose sums may round differently."""
    n_items, n = 3000, 3
    torch.manual_seed(0)
    model = EncoderEnsemble(encoder, n, n_items, MAX_LEN, config=config_of(encoder, hidden=32))
    if encoder == "caser":   # a bias that is not zero, so that adding it is checked too
        for network in model.networks:
            torch.nn.init.normal_(network.output_bias)
    hidden = torch.randn(n, 300, 32, requires_grad=True)
    upstream = torch.randn(n, 300, n_items)

    batched = model.logits(hidden)
    batched.backward(upstream)
    batched_grads = [hidden.grad] + [p.grad for p in model.parameters() if p.grad is not None]
    hidden.grad = None
    model.zero_grad(set_to_none=True)
    looped = torch.stack([network.logits(h) for network, h in zip(model.networks, hidden)])
    looped.backward(upstream)
    looped_grads = [hidden.grad] + [p.grad for p in model.parameters() if p.grad is not None]

    assert batched.shape == (n, 300, n_items)
    assert torch.equal(batched, looped)
    assert len(batched_grads) == len(looped_grads) >= 1 + n
    assert all(torch.equal(a, b) for a, b in zip(batched_grads, looped_grads))
    # any leading shape: the last positions of a batch, (N, B, d)
    torch.testing.assert_close(model.logits(hidden[:, :5].detach()), looped[:, :5].detach(), rtol=0, atol=0)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_item_terms_are_next_item_losses_on_the_views(encoder):
    """"mip" is each network's next-item cross entropy on each masked view
    (mean over the view's positions, summed over views and networks); KD
    distils those next-item distributions between every ordered pair."""
    model, w, M = tiny(encoder, n=2), windows(), 2
    params = EMKDParams(n_networks=2, n_views=M, kd_temperature=2.0, mask_prob=0.3)
    terms = emkd_next_item_loss_terms(model, w, torch.Generator().manual_seed(3), params)
    assert set(terms) == {"mip", "ap", "icl", "ccl", "kd"}

    inputs, targets = w[:, :-1], w[:, 1:]
    views, _ = cloze_mask(inputs.repeat(M, 1), 0.3, N_ITEMS + 1, N_ITEMS, torch.Generator().manual_seed(3))
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
def test_contrastive_and_attribute_terms_are_eq_8_to_15_on_each_networks_own_passes(encoder):
    """ICL, CCL (Eq. 12-15 as printed: only the in-batch negatives below each
    positive) and AP (Eq. 8-11) written out user by user from each network's
    separate passes over the original inputs and the replayed masked views."""
    model, w, M, tau = tiny(encoder, n=2), windows(), 2, 0.5
    params = EMKDParams(n_networks=2, n_views=M, tau=tau, mask_prob=0.3)
    terms = emkd_next_item_loss_terms(model, w, torch.Generator().manual_seed(5), params)
    inputs = w[:, :-1]
    views, _ = cloze_mask(inputs.repeat(M, 1), 0.3, N_ITEMS + 1, N_ITEMS, torch.Generator().manual_seed(5))
    real, B = inputs > 0, inputs.shape[0]
    with torch.no_grad():
        # each network's hidden matrices, padding rows zeroed, flattened: (B, T d)
        orig = [(net(inputs) * real[..., None]).flatten(1) for net in model.networks]
        view = [[(net(views[m * B:(m + 1) * B]) * real[..., None]).flatten(1) for m in range(M)]
                for net in model.networks]
        hidden = torch.stack([net(inputs) for net in model.networks])
        head = model.attribute_head   # Eq. 8 before the sigmoid, network by network
        attribute_logits = torch.stack([hidden[n][real] @ head.weight[n].T + head.bias[n]
                                        for n in range(len(model.networks))])

    def cos(a, b):
        return float(F.cosine_similarity(a, b, dim=0))

    def printed(anchor, positives, bank):   # mean over u and m of -log(e^{g(a_u, p_mu)/tau} / sum_{k != u} e^{g(a_u, b_k)/tau})
        total = 0.0
        for u in range(B):
            below = sum(math.exp(cos(anchor[u], bank[k]) / tau) for k in range(B) if k != u)
            total += sum(-math.log(math.exp(cos(anchor[u], p[u]) / tau) / below) for p in positives)
        return total / (B * M)

    icl = sum(printed(orig[n], view[n], orig[n]) for n in range(2))
    ccl = sum(printed(orig[x], view[y], orig[y]) for x in range(2) for y in range(2) if x != y)
    targets = model.item_attributes[inputs[real]].float()
    ap = sum(float(F.binary_cross_entropy_with_logits(attribute_logits[n], targets)) for n in range(2))
    assert terms["icl"].item() == pytest.approx(icl, rel=1e-4)
    assert terms["ccl"].item() == pytest.approx(ccl, rel=1e-4)
    assert terms["ap"].item() == pytest.approx(ap, rel=1e-5)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_independent_networks_get_no_gradient_from_each_other(encoder):
    def grad_of_network_0(params, perturb):
        model = tiny(encoder, n=2)
        if perturb:
            with torch.no_grad():
                for p in model.networks[1].parameters():
                    p.add_(torch.randn_like(p) * 0.5)
        terms = emkd_next_item_loss_terms(model, windows(), torch.Generator().manual_seed(3), params)
        loss = combine_emkd_terms(terms, params)
        return torch.autograd.grad(loss, model.networks[0].item_embedding.weight)[0]

    independent = EMKDParams(n_networks=2, n_views=2, icl=False, ccl=False, kd=False, mask_prob=0.3)
    torch.testing.assert_close(grad_of_network_0(independent, False), grad_of_network_0(independent, True))
    coupled = EMKDParams(n_networks=2, n_views=2, icl=False, ccl=False, mu=1.0, mask_prob=0.3)
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


def test_emkd_runs_on_every_encoder_but_an_unknown_one():
    for encoder in ("bert4rec", *ENCODERS):
        assert profile_config("smoke", "beauty", "emkd", encoder=encoder).encoder == encoder
    with pytest.raises(ValueError, match="method 'emkd' runs on encoders .* not 'transformer'"):
        RunConfig(dataset="beauty", method="emkd", profile="cpu", encoder="transformer")
    with pytest.raises(ValueError, match="method 'sasrec' runs on encoders .* not 'gru4rec'"):
        profile_config("cpu", "beauty", "sasrec", encoder="gru4rec")


def test_profile_and_grid_take_the_encoders_own_settings():
    for encoder in ENCODERS:
        mine, theirs = profile_config("cpu", "beauty", "emkd", encoder=encoder), profile_config("cpu", "beauty", encoder)
        assert mine.encoder_config == theirs.encoder_config and mine.data == theirs.data
        assert type(mine.encoder_config) is type(config_of(encoder))
        assert mine.train == theirs.train
        assert mine.params.n_views == 2
        assert mine.label() == f"emkd-{encoder}-cpu-seed0"
    grid = encoder_grid("cpu")
    configs = list(grid.values())
    assert len(configs) == 12
    encoders = ("sasrec", "gru4rec", "caser")
    # N = 1: the encoder alone, on the same users, at the same precision as the EMKD points
    assert configs[:3] == [profile_config("cpu", "beauty", e, data__max_users=ENCODER_SWEEP_USERS["cpu"],
                                          train__precision=BUDGET_PRECISION["cpu"]) for e in encoders]
    assert {c.train.precision for c in configs} == {BUDGET_PRECISION["cpu"]}
    assert [(c.method, c.encoder, c.params.n_networks) for c in configs[3:]] == \
        [("emkd", e, n) for n in (2, 3, 4) for e in encoders]
    assert list(grid) == [("beauty", e, n, 0) for n in (1, 2, 3, 4) for e in encoders]
    assert {c.data.max_users for c in configs} == {ENCODER_SWEEP_USERS["cpu"]}
    assert len(encoder_grid("cpu", methods=("gru4rec",))) == 4
    assert len(encoder_grid("cpu", methods=("gru4rec",), networks=(2, 3))) == 2
    assert {c.data.max_users for c in encoder_grid("paper").values()} == {None}


successor_dataset = partial(helpers.successor_dataset, n_attributes=3)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_emkd_on_each_encoder_learns_a_deterministic_successor(encoder):
    dataset = successor_dataset()
    split = leave_one_out(dataset.sequences)
    config = RunConfig(dataset="successor", method="emkd", profile="cpu", encoder=encoder,
                       encoder_config=config_of(encoder, hidden=32),
                       params=EMKDParams(n_networks=2, n_views=2, tau=0.5, lam=0.1, mu=0.1, mask_prob=0.2),
                       data=DataConfig(max_len=10))
    torch.manual_seed(0)
    model, recipe = build_method(config, dataset)
    assert isinstance(model, EncoderEnsemble) and model.encoder == encoder
    assert model.item_attributes.shape == (21, 3) and model.attribute_head is not None
    assert recipe.eval_max_len == 9
    result = fit(model, recipe, split, TrainConfig(epochs=25, batch_size=32, lr=5e-3, patience=25), seed=0,
                 device="cpu", progress=False)
    assert result.test_metrics["HR@5"] > 0.9
    assert {"loss", "mip", "ap", "icl", "ccl", "kd"} <= set(result.history[0])
