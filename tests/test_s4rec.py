"""S^4Rec: its layers, its loss terms against loops over users, and the method end to end."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from emkd_lib import losses
from emkd_lib.batching import pad_left
from emkd_lib.config import DataConfig, RunConfig, TrainConfig
from emkd_lib.data import leave_one_out
from emkd_lib.data.splits import split_users_by_length
from emkd_lib.methods import build_method
from emkd_lib.methods.baselines import next_item_loss
from emkd_lib.methods.s4rec import (TABLE3_ABLATIONS, S4RecParams, decode_head_labels, label_windows,
                                    s4rec_loss)
from emkd_lib.models.encoders import TransformerConfig
from emkd_lib.models.layers import GradientReversal, Prototypes, grad_reverse
from emkd_lib.profiles import profile_config
from emkd_lib.train import fit
from emkd_lib.typed import from_dict

import helpers
from functools import partial

B, K, D = 5, 4, 6


def rand(*shape, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_(grad)


# ---- layers -----------------------------------------------------------------

def test_gradient_reversal_is_identity_forward_and_minus_gamma_backward():
    x = rand(3, 4, grad=True)
    w = rand(3, 4, seed=1)
    y = grad_reverse(x, 0.7)
    torch.testing.assert_close(y, x)
    (y * w).sum().backward()
    torch.testing.assert_close(x.grad, -0.7 * w)
    # gradcheck-style: the analytic Jacobian (from backward) is -gamma times
    # the numerical one (finite differences of the identity forward)
    x2 = rand(2, 3, seed=2)
    analytic = torch.autograd.functional.jacobian(lambda t: GradientReversal.apply(t, 1.5), x2).reshape(6, 6)
    h = 1e-6
    numerical = torch.stack([(GradientReversal.apply(x2 + h * e.view(2, 3), 1.5)
                              - GradientReversal.apply(x2 - h * e.view(2, 3), 1.5)).flatten() / (2 * h)
                             for e in torch.eye(6, dtype=torch.float64)], 1)
    torch.testing.assert_close(numerical, torch.eye(6, dtype=torch.float64))
    torch.testing.assert_close(analytic, -1.5 * numerical)
    z = rand(2, 3, grad=True)
    assert torch.autograd.grad(grad_reverse(z, 0.0).sum(), z)[0].abs().sum() == 0   # gamma 0: no gradient


def test_the_classifier_descends_and_the_encoder_ascends_the_adversarial_loss():
    z = rand(4, 3, grad=True)
    W = rand(2, 3, seed=1, grad=True)
    labels = torch.tensor([0, 1, 1, 0])
    losses.head_tail_adversarial_loss(grad_reverse(z, 2.0) @ W.T, labels).backward()
    z_ref, W_ref = z.detach().clone().requires_grad_(), W.detach().clone().requires_grad_()
    F.cross_entropy(z_ref @ W_ref.T, labels).backward()
    torch.testing.assert_close(W.grad, W_ref.grad)
    torch.testing.assert_close(z.grad, -2.0 * z_ref.grad)


def test_prototypes_are_normalised_on_use_and_trainable():
    protos = Prototypes(K, D)
    mu = protos()
    assert mu.shape == (K, D)
    torch.testing.assert_close(mu.norm(dim=1), torch.ones(K))
    mu.sum().backward()
    assert protos.weight.grad is not None
    with pytest.raises(ValueError, match=rf"^need n_prototypes >= 1 and dim >= 1, got 0, {D}$"):
        Prototypes(0, D)


# ---- losses against loops -----------------------------------------------------

def test_clustering_loss_is_cross_entropy_with_detached_targets():
    scores, q = rand(B, K, grad=True), torch.softmax(rand(B, K, seed=1), 1).requires_grad_()
    tau = 0.3
    expected = 0.0
    for u in range(B):
        p = [math.exp(scores[u, k].item() / tau) for k in range(K)]
        expected -= sum(q[u, k].item() * math.log(p[k] / sum(p)) for k in range(K))
    loss = losses.clustering_loss(scores, q, tau)
    assert math.isclose(loss.item(), expected / B, rel_tol=1e-10)
    loss.backward()
    assert q.grad is None and scores.grad is not None


@pytest.mark.parametrize("with_prototypes", [False, True])
@pytest.mark.parametrize("with_positive", [False, True])
def test_intent_contrastive_loss_is_eq_13_14(with_prototypes, with_positive):
    a, p, mu = rand(B, D), rand(B, D, seed=1), rand(K, D, seed=2)
    h = torch.tensor([0, 3, 3, 1, 2])
    tau = 0.5
    expected = 0.0
    for u in range(B):
        num = math.exp((a[u] @ p[u]).item() / tau)
        den = sum(math.exp((a[u] @ p[n]).item() / tau) for n in range(B) if n != u)
        if with_prototypes:
            den += sum(math.exp((a[u] @ mu[k]).item() / tau) for k in range(K) if k != h[u])
        if with_positive:
            den += num
        expected += -math.log(num / den)
    got = losses.intent_contrastive_loss(a, p, tau, mu if with_prototypes else None,
                                         h if with_prototypes else None, with_positive)
    assert math.isclose(got.item(), expected / B, rel_tol=1e-10)


def test_intent_contrastive_loss_of_a_batch_of_one():
    a = rand(1, D, grad=True)
    assert losses.intent_contrastive_loss(a, a, 0.5).item() == 0.0
    with pytest.raises(ValueError, match="assigned prototype"):
        losses.intent_contrastive_loss(a, a, 0.5, rand(K, D))


def test_cluster_distillation_is_kl_over_features_from_the_prototype():
    z, mu = rand(B, D, grad=True), rand(B, D, seed=1, grad=True)
    tau = 0.4
    expected = 0.0
    for u in range(B):
        et = torch.softmax(mu[u].detach() / tau, 0)
        es = torch.softmax(z[u].detach() / tau, 0)
        expected += sum((et[i] * math.log(et[i] / es[i])).item() for i in range(D))
    got = losses.cluster_distillation_loss(z, mu, tau)
    assert math.isclose(got.item(), expected / B, rel_tol=1e-10)
    got.backward()
    assert mu.grad is None and z.grad is not None
    losses.cluster_distillation_loss(z, mu, tau, detach_teacher=False).backward()
    assert mu.grad is not None


def test_adversarial_loss_is_eq_17():
    logits, labels = rand(B, 2), torch.tensor([1, 0, 0, 1, 0])
    expected = sum(-logits[u, labels[u]].item() + math.log(sum(math.exp(logits[u, i].item()) for i in range(2)))
                   for u in range(B)) / B
    assert math.isclose(losses.head_tail_adversarial_loss(logits, labels).item(), expected, rel_tol=1e-10)


# ---- head/tail labels in the windows ------------------------------------------

def test_windows_carry_the_head_label_of_their_user():
    seqs = [np.arange(1, n + 1) for n in (3, 12, 5, 20, 4, 8, 2, 9, 30, 6)]
    data = DataConfig(max_len=6, windows="tail", window_step=1)
    labelled = label_windows(seqs, data, 0.2)
    plain = data.examples(seqs, window=6)
    assert len(labelled) == len(plain)
    head = split_users_by_length(seqs, 0.2)
    owners = [u for u, s in enumerate(seqs) for _ in data.examples([s], window=6)]
    for w, p, u in zip(labelled, plain, owners):
        assert (np.abs(w) == p).all() and ((w < 0).all() if head[u] else (w > 0).all())
    assert sum(head) == 2 and {u for u, h in enumerate(head) if h} == {3, 8}
    batch = torch.from_numpy(pad_left(labelled[:7]))
    windows, is_head = decode_head_labels(batch)
    assert (windows >= 0).all() and torch.equal(is_head, torch.tensor([bool(head[u]) for u in owners[:7]]))
    assert all(np.shares_memory(w, s) for w, u in zip(labelled, owners) if not head[u] for s in [seqs[u]])


# ---- the method ------------------------------------------------------------------

successor_dataset = partial(helpers.successor_dataset, variable_lengths=True)


def config(method="s4rec", **params):
    from emkd_lib.methods.cl4srec import CL4SRecParams
    typed = (S4RecParams(n_prototypes=8, **params) if method == "s4rec" else CL4SRecParams(**params))
    return RunConfig(dataset="successor", method=method, profile="cpu",
                     encoder_config=TransformerConfig(hidden=32, n_blocks=1, n_heads=1, dropout=0.0),
                     params=typed, data=DataConfig(max_len=10))


def labelled_batch(recipe, split, n=16):
    return torch.from_numpy(pad_left(recipe.make_examples(split.train)[:n]))


def eval_model_and_batch():
    """An S^4Rec model in eval mode (no dropout: repeated passes agree) and a labelled batch."""
    dataset = successor_dataset()
    split = leave_one_out(dataset.sequences)
    torch.manual_seed(0)
    model, recipe = build_method(config(), dataset)
    model.eval()
    return model, labelled_batch(recipe, split)


def test_sr_term_is_the_next_item_loss_of_the_baseline():
    model, ids = eval_model_and_batch()
    terms = s4rec_loss(model, ids, torch.Generator().manual_seed(0), S4RecParams(n_prototypes=8))
    torch.testing.assert_close(terms["sr"], next_item_loss(model, ids.abs()))
    assert set(terms) == {"loss", "sr", "clust", "scl", "csd", "adv"}


@pytest.mark.parametrize("intent_from,scl_with_positive", [("p", False), ("q", True)])
def test_every_term_and_the_total_recomputed_from_the_models_own_passes(intent_from, scl_with_positive):
    """Eq. 6-18 on one batch, each term written out user by user from
    separate forward passes of the original and of the two views (replayed
    from the same generator), with distinct weights so that each one must
    reach its own term."""
    from emkd_lib.augment import augment_batch
    from emkd_lib.clustering import sinkhorn
    dataset = successor_dataset()
    split = leave_one_out(dataset.sequences)
    torch.manual_seed(0)
    weights = dict(alpha=0.2, beta1=0.3, beta2=0.5, lam=0.7, tau1=0.4, tau2=0.6, tau3=0.8,
                   intent_from=intent_from, scl_with_positive=scl_with_positive)
    params = S4RecParams(n_prototypes=8, **weights)
    model, recipe = build_method(config(**weights), dataset)
    model.eval()
    ids = labelled_batch(recipe, split)
    terms = {k: v.detach() for k, v in s4rec_loss(model, ids, torch.Generator().manual_seed(3), params).items()}

    windows, head = ids.abs(), ids[:, -1] < 0
    inputs = windows[:, :-1]
    pool = inputs[inputs > 0].numpy()
    views = augment_batch(inputs, torch.Generator().manual_seed(3), params.operator_names, model.max_len,
                          mask_token=model.mask_token, gamma=params.mask_gamma, crop_delta=params.crop_delta,
                          crop_form=params.crop_form, reorder_delta=params.reorder_delta, pool=pool,
                          insert_rate=params.insert_rate)
    with torch.no_grad():
        z0, z1, z2 = (F.normalize(model(x)[:, -1], dim=-1) for x in (inputs, *views))   # Eq. 6, one pass each
        mu = F.normalize(model.prototypes.weight, dim=-1)
        logits = model.head_tail(z0)                   # GRL is the identity forward
    n = len(ids)
    q = sinkhorn(z0 @ mu.T, params.sinkhorn_epsilon, params.sinkhorn_iters)
    h = (q if intent_from == "q" else z0 @ mu.T).argmax(1)     # h(u): p's argmax, or Sinkhorn's
    assert intent_from == "p" or not torch.equal(h, (z0 @ mu.T).argmax(1))   # the choice matters here
    clust = -sum(float((q[u] * torch.log_softmax(z0[u] @ mu.T / 0.4, 0)).sum()) for u in range(n)) / n

    def scl(a, p):   # Eq. 13-14: -log(e^{a_u p_u / tau2} / (sum_{v != u} e^{a_u p_v / tau2} + sum_{k != h(u)} e^{a_u mu_k / tau2}))
        total = 0.0
        for u in range(n):
            below = sum(math.exp(float(a[u] @ p[v]) / 0.6) for v in range(n) if v != u)
            below += sum(math.exp(float(a[u] @ mu[k]) / 0.6) for k in range(len(mu)) if k != h[u])
            below += math.exp(float(a[u] @ p[u]) / 0.6) if scl_with_positive else 0.0
            total += -math.log(math.exp(float(a[u] @ p[u]) / 0.6) / below)
        return total / n

    def csd(z):      # Eq. 15-16: KL(softmax(mu_h(u) / tau3) || softmax(z_u / tau3)) over the features
        total = 0.0
        for u in range(n):
            t, s_ = torch.softmax(mu[h[u]] / 0.8, 0), torch.softmax(z[u] / 0.8, 0)
            total += float((t * (t.log() - s_.log())).sum())
        return total / n

    adv = -sum(float(torch.log_softmax(logits[u], 0)[int(head[u])]) for u in range(n)) / n
    sr = float(next_item_loss(model, windows).detach())
    expected = {"sr": sr, "clust": clust, "scl": scl(z1, z2) + scl(z0, z1), "csd": csd(z1) + csd(z2), "adv": adv}
    for name, value in expected.items():
        assert float(terms[name]) == pytest.approx(value, rel=1e-4, abs=1e-5), name
    total = sr + 0.2 * clust + 0.3 * expected["scl"] + 0.5 * expected["csd"] + 0.7 * adv
    assert float(terms["loss"]) == pytest.approx(total, rel=1e-4)


def test_the_teacher_and_reversal_options_change_only_gradients_as_named():
    """``csd_detach_teacher=False`` lets Eq. 16 train the prototypes; ``grl_gamma``
    scales the reversed gradient that reaches the encoder from Eq. 17 (the
    classifier's own gradient unchanged); neither changes a value."""
    model, ids = eval_model_and_batch()
    encoder_weight = model.encoder.item_embedding.weight

    def grads(term, **change):
        model.zero_grad()
        terms = s4rec_loss(model, ids, torch.Generator().manual_seed(3), S4RecParams(n_prototypes=8, **change))
        terms[term].backward()
        return terms[term].detach(), {name: None if p.grad is None else p.grad.clone()
                                      for name, p in (("prototypes", model.prototypes.weight),
                                                      ("classifier", model.head_tail.weight),
                                                      ("encoder", encoder_weight))}

    detached, kept = grads("csd"), grads("csd", csd_detach_teacher=False)
    assert detached[0] == kept[0]
    assert detached[1]["prototypes"] is None or not detached[1]["prototypes"].any()
    assert kept[1]["prototypes"].abs().sum() > 0
    one, half = grads("adv", grl_gamma=1.0), grads("adv", grl_gamma=0.5)
    assert one[0] == half[0]
    torch.testing.assert_close(half[1]["classifier"], one[1]["classifier"])
    torch.testing.assert_close(half[1]["encoder"], 0.5 * one[1]["encoder"])
    assert one[1]["encoder"].abs().sum() > 0


def test_the_recipe_refuses_to_augment_before_it_has_the_item_pool():
    dataset = successor_dataset()
    split = leave_one_out(dataset.sequences)
    model, recipe = build_method(config(), dataset)
    batch = torch.from_numpy(pad_left(build_method(config(), dataset)[1].make_examples(split.train)[:8]))
    with pytest.raises(RuntimeError, match="^S\\^4Rec's insert operator needs the item pool built by Recipe.make_examples$"):
        recipe.loss(model, batch, torch.Generator().manual_seed(0))
    recipe.make_examples(split.train)
    assert torch.isfinite(recipe.loss(model, batch, torch.Generator().manual_seed(0))["loss"])


@pytest.mark.parametrize("row, absent", [
    ("SR only", {"clust", "scl", "csd", "adv"}), ("SR+CSD", {"clust", "adv"}), ("SR+CSD+GR", {"clust"}),
    ("S4Rec w/o CSD", {"scl", "csd"}), ("S4Rec w/o GR", {"adv"}), ("S4Rec", set())])
def test_ablation_switches_remove_their_terms(row, absent):
    dataset = successor_dataset()
    split = leave_one_out(dataset.sequences)
    cfg = config().replace(**TABLE3_ABLATIONS[row])
    torch.manual_seed(0)
    model, recipe = build_method(cfg, dataset)
    terms = recipe.loss(model, labelled_batch(recipe, split), torch.Generator().manual_seed(0))
    assert set(terms) == {"loss", "sr", "clust", "scl", "csd", "adv"} - absent
    terms["loss"].backward()
    assert (model.head_tail.weight.grad is not None) == ("adv" not in absent)


def test_a_zero_weight_removes_its_term_and_unknown_params_raise():
    assert S4RecParams(alpha=0.0).active_terms() == {"scl", "csd", "adv"}
    with pytest.raises(ValueError, match="unknown key"):
        profile_config("smoke", "beauty", "s4rec", params__beta3=0.1)
    with pytest.raises(ValueError, match="unknown key"):
        from_dict(S4RecParams, {"kappa": 1})
    with pytest.raises(ValueError, match="operators"):
        S4RecParams(operators="mask,shuffle")
    with pytest.raises(ValueError, match="tau1 must be > 0"):
        S4RecParams(tau1=0.0)


def test_the_adversary_only_sees_the_head_label():
    """Flipping every label changes only the adversarial term."""
    dataset = successor_dataset()
    split = leave_one_out(dataset.sequences)
    torch.manual_seed(0)
    model, recipe = build_method(config(), dataset)
    model.eval()
    ids = labelled_batch(recipe, split, n=40)
    params = S4RecParams(n_prototypes=8)
    a = s4rec_loss(model, ids, torch.Generator().manual_seed(1), params)
    flipped = torch.where(ids[:, -1:] < 0, ids.abs(), -ids)
    b = s4rec_loss(model, flipped, torch.Generator().manual_seed(1), params)
    for name in ("sr", "clust", "scl", "csd"):
        torch.testing.assert_close(a[name], b[name])
    assert not torch.allclose(a["adv"], b["adv"])


def test_profiles_build():
    dataset = successor_dataset()
    for profile in ("smoke", "cpu", "paper"):
        cfg = profile_config(profile, "beauty", "s4rec")
        assert cfg.method == "s4rec" and cfg.encoder == "sasrec"
    paper, cpu = profile_config("paper", "beauty", "s4rec"), profile_config("cpu", "beauty", "s4rec")
    assert (paper.data.max_len, paper.train.batch_size, paper.encoder_config.dropout, paper.params.n_prototypes,
            paper.encoder_config.hidden) == (50, 512, 0.5, 128, 64)
    assert (paper.params.alpha, paper.params.beta1, paper.params.beta2, paper.params.lam) == (0.01, 0.1, 0.1, 1.0)
    assert cpu.data.max_len == 15 and cpu.train.batch_size == 512
    model, recipe = build_method(profile_config("smoke", "beauty", "s4rec"), dataset)
    assert model.prototypes.n_prototypes == 16


@pytest.mark.parametrize("method", ["s4rec", "cl4srec"])
def test_method_learns_a_deterministic_successor(method):
    dataset = successor_dataset()
    split = leave_one_out(dataset.sequences)
    cfg = config(method)
    torch.manual_seed(0)
    model, recipe = build_method(cfg, dataset)
    result = fit(model, recipe, split, TrainConfig(epochs=20, batch_size=32, lr=5e-3, patience=20), seed=0,
                 device="cpu", progress=False)
    assert result.test_metrics["HR@5"] > 0.9
    expected = {"loss", "sr", "clust", "scl", "csd", "adv"} if method == "s4rec" else {"loss", "sr", "cl"}
    assert expected <= set(result.history[0])
    assert all(np.isfinite(h["loss"]) for h in result.history)
