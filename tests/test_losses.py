"""EMKD's losses against direct, loop-based transcriptions of their equations."""
import math

import pytest
import torch
import torch.nn.functional as F

from emkd_lib import losses

N, M, B, D, P, V, A = 3, 2, 4, 6, 5, 7, 4


def rand(*shape, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_(grad)


def cos(a, b):
    return (a @ b) / (a.norm() * b.norm())


# ---- masked item prediction and attribute prediction ----------------------

def test_masked_item_prediction_is_summed_over_networks_and_weighted_over_positions():
    logits, targets = rand(N, P, V), torch.tensor([0, 3, 6, 2, 2])
    weights = torch.tensor([0.5, 0.5, 1 / 3, 1 / 3, 1 / 3], dtype=torch.float64)
    for w in (None, weights):
        expected = 0.0
        for n in range(N):
            for p in range(P):
                wp = 1 / P if w is None else w[p]
                expected += -wp * torch.log_softmax(logits[n, p], -1)[targets[p]]
        torch.testing.assert_close(losses.masked_item_prediction_loss(logits, targets, w), expected)


def test_masked_item_prediction_gradient_is_autograds_through_cross_entropy():
    """The hand-written gradient (``_ItemCrossEntropy``) against autograd
    through ``F.cross_entropy``: the loss bit for bit, the gradient to within
    rounding, in fp64, fp32 and under CPU bf16 autocast (computed in fp32
    there, the gradient returned in the logits' bf16)."""
    targets, weights = torch.tensor([0, 3, 6, 2, 2]), torch.linspace(0.1, 0.5, P, dtype=torch.float64)

    def direct(z, w):
        n, p, v = z.shape
        return (F.cross_entropy(z.reshape(n * p, v), targets.repeat(n), reduction="none").view(n, p) * w).sum()

    for dtype in (torch.float64, torch.float32):
        logits = rand(N, P, V).to(dtype).requires_grad_()
        for w in (weights.to(dtype), None):
            loss = losses.masked_item_prediction_loss(logits, targets, w)
            expected = direct(logits, w if w is not None else torch.full((P,), 1 / P, dtype=dtype))
            assert torch.equal(loss, expected)
            ours, = torch.autograd.grad(0.7 * loss, logits)
            theirs, = torch.autograd.grad(0.7 * expected, logits)
            torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-12)
            assert not torch.equal(ours, torch.zeros_like(ours))
    logits = rand(N, P, V).to(torch.bfloat16).requires_grad_()
    with torch.autocast("cpu", torch.bfloat16):
        loss = losses.masked_item_prediction_loss(logits, targets, weights)
        expected = direct(logits, weights.float())
    assert loss.dtype == torch.float32 and torch.equal(loss, expected)
    ours, = torch.autograd.grad(loss, logits)
    theirs, = torch.autograd.grad(expected, logits)
    assert ours.dtype == torch.bfloat16
    torch.testing.assert_close(ours, theirs)
    # with no gradient asked for, the same value
    with torch.no_grad():
        assert torch.equal(losses.masked_item_prediction_loss(logits.float(), targets, weights),
                           direct(logits.float(), weights.float()))


def test_masked_item_prediction_refuses_targets_outside_the_catalogue():
    """A negative target would index the last column from the end and give a
    plausible loss; one past the catalogue an index error deep in autograd."""
    logits = rand(N, P, V)
    for bad, shown in ((-1, "from -1 to 6"), (V, f"from 0 to {V}")):
        targets = torch.tensor([0, 3, 6, 2, bad]) if bad >= 0 else torch.tensor([bad, 3, 6, 2, 2])
        with pytest.raises(ValueError, match=rf"masked_item_prediction_loss: targets must lie in \[0, {V}\), "
                                             rf"got values {shown}"):
            losses.masked_item_prediction_loss(logits, targets)


def test_attribute_prediction_is_mean_bce_summed_over_networks():
    logits = rand(N, P, A)
    targets = (rand(P, A, seed=1) > 0).double()
    expected = 0.0
    for n in range(N):
        total = 0.0
        for p in range(P):
            for a in range(A):
                prob = torch.sigmoid(logits[n, p, a])
                y = targets[p, a]
                total += -(y * torch.log(prob) + (1 - y) * torch.log(1 - prob))
        expected += total / (P * A)
    torch.testing.assert_close(losses.attribute_prediction_loss(logits, targets), expected)


# ---- contrastive learning ---------------------------------------------------

def infonce_direct(anchor, positives, bank, tau, include_self=False):
    """Eq. 12 for one network (pair): mean over u, m of
    -log(e^{g(a,p)/tau} / (e^{g(a,p)/tau} + sum_{k != u} e^{g(a,b_k)/tau}))."""
    Mv, Bv = positives.shape[:2]
    total = 0.0
    for u in range(Bv):
        negatives = sum(torch.exp(cos(anchor[u], bank[k]) / tau) for k in range(Bv) if k != u or include_self)
        for m in range(Mv):
            pos = torch.exp(cos(anchor[u], positives[m, u]) / tau)
            total += -torch.log(pos / (pos + negatives))
    return total / (Bv * Mv)


def one_logsumexp_direct(anchor, positives, bank, tau):
    """-log(sum_m e^{p_m} / (sum_m e^{p_m} + sum_{k != u} e^{n_k})), mean over u."""
    Mv, Bv = positives.shape[:2]
    total = 0.0
    for u in range(Bv):
        pos = sum(torch.exp(cos(anchor[u], positives[m, u]) / tau) for m in range(Mv))
        neg = sum(torch.exp(cos(anchor[u], bank[k]) / tau) for k in range(Bv) if k != u)
        total += -torch.log(pos / (pos + neg))
    return total / Bv


def public_code_direct(anchor, positives, bank, tau):
    """hw-du/EMKD trainers/bert.py ICL/CCL: in-batch similarity matrix with its
    diagonal multiplied by zero, logsumexp of positives as the numerator."""
    Bv = anchor.shape[0]
    a = anchor / anchor.norm(dim=-1, keepdim=True)
    b = bank / bank.norm(dim=-1, keepdim=True)
    in_batch = (a @ b.T) / tau * (1 - torch.eye(Bv, dtype=a.dtype))
    pos = torch.stack([F.cosine_similarity(anchor, p, dim=-1) / tau for p in positives], 1)
    return torch.sum(-torch.logsumexp(pos, -1) + torch.logsumexp(in_batch, -1)) / Bv


def printed_direct(anchor, positives, bank, tau):
    """Eq. 12 as printed, for one network (pair): mean over u, m of
    -log(e^{g(a,p_m)/tau} / sum_{k != u} e^{g(a,b_k)/tau})."""
    Mv, Bv = positives.shape[:2]
    total = 0.0
    for u in range(Bv):
        negatives = sum(torch.exp(cos(anchor[u], bank[k]) / tau) for k in range(Bv) if k != u)
        for m in range(Mv):
            total += -torch.log(torch.exp(cos(anchor[u], positives[m, u]) / tau) / negatives)
    return total / (Bv * Mv)


@pytest.mark.parametrize("tau", [0.3, 1.0])
def test_the_default_contrastive_loss_is_eq_12_as_printed(tau):
    anchor, positives, bank = rand(B, D), rand(M, B, D, seed=1), rand(B, D, seed=2)
    got = losses.contrastive_loss(anchor, positives, bank, tau)
    torch.testing.assert_close(got, printed_direct(anchor, positives, bank, tau))
    # the check can fail: standard InfoNCE puts the positive in the denominator
    assert not torch.isclose(got, infonce_direct(anchor, positives, bank, tau))


@pytest.mark.parametrize("tau", [0.3, 1.0])
def test_contrastive_loss_matches_infonce_and_excludes_the_anchors_own_sequence(tau):
    anchor, positives, bank = rand(B, D), rand(M, B, D, seed=1), rand(B, D, seed=2)
    got = losses.contrastive_loss(anchor, positives, bank, tau, denominator="positive-and-negatives")
    torch.testing.assert_close(got, infonce_direct(anchor, positives, bank, tau))
    # the check can fail: counting the anchor's own sequence as a negative differs
    assert not torch.isclose(got, infonce_direct(anchor, positives, bank, tau, include_self=True))


@pytest.mark.parametrize("tau", [0.3, 1.0])
def test_one_logsumexp_and_public_code_variants_match_their_direct_forms(tau):
    anchor, positives, bank = rand(B, D), rand(M, B, D, seed=1), rand(B, D, seed=2)
    one = losses.contrastive_loss(anchor, positives, bank, tau, positives_in_one_logsumexp=True,
                                  denominator="positive-and-negatives")
    torch.testing.assert_close(one, one_logsumexp_direct(anchor, positives, bank, tau))
    code = losses.contrastive_loss(anchor, positives, bank, tau, positives_in_one_logsumexp=True,
                                   denominator="negatives-and-self")
    torch.testing.assert_close(code, public_code_direct(anchor, positives, bank, tau))
    assert not torch.isclose(one, code)


def test_negatives_and_self_denominator_per_positive():
    anchor, positives, bank, tau = rand(B, D), rand(M, B, D, seed=1), rand(B, D, seed=2), 0.5
    expected = 0.0
    for u in range(B):
        neg = 1.0 + sum(torch.exp(cos(anchor[u], bank[k]) / tau) for k in range(B) if k != u)
        for m in range(M):
            expected += -torch.log(torch.exp(cos(anchor[u], positives[m, u]) / tau) / neg)
    got = losses.contrastive_loss(anchor, positives, bank, tau, denominator="negatives-and-self")
    torch.testing.assert_close(got, expected / (B * M))


# Each form of Eq. 12/14's term and its direct loop: the printed one (the
# default), standard InfoNCE, one logsumexp over the positives, the public code's.
FORMS = {"printed": (False, "negatives", printed_direct),
         "infonce": (False, "positive-and-negatives", infonce_direct),
         "one logsumexp": (True, "positive-and-negatives", one_logsumexp_direct),
         "public code": (True, "negatives-and-self", public_code_direct)}


@pytest.mark.parametrize("form", FORMS)
def test_intra_network_loss_sums_networks(form):
    one_lse, denominator, direct = FORMS[form]
    h_orig, h_views, tau = rand(N, B, D), rand(N, M, B, D, seed=1), 0.3
    expected = sum(direct(h_orig[n], h_views[n], h_orig[n], tau) for n in range(N))
    got = losses.intra_network_contrastive_loss(h_orig, h_views, tau, positives_in_one_logsumexp=one_lse,
                                                denominator=denominator)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("form", FORMS)
def test_cross_network_loss_runs_over_ordered_pairs(form):
    one_lse, denominator, direct = FORMS[form]
    h_orig, h_views, tau = rand(N, B, D), rand(N, M, B, D, seed=1), 0.3
    # anchor from x, positives and negatives from y
    expected = sum(direct(h_orig[x], h_views[y], h_orig[y], tau)
                   for x in range(N) for y in range(N) if x != y)
    got = losses.cross_network_contrastive_loss(h_orig, h_views, tau, positives_in_one_logsumexp=one_lse,
                                                denominator=denominator)
    torch.testing.assert_close(got, expected)


def test_contrastive_gradients_match_the_direct_form():
    h_orig, h_views = rand(2, B, D, grad=True), rand(2, M, B, D, seed=1, grad=True)
    loss = (losses.intra_network_contrastive_loss(h_orig, h_views, 0.3)
            + losses.cross_network_contrastive_loss(h_orig, h_views, 0.3))
    got = torch.autograd.grad(loss, (h_orig, h_views))
    direct = sum(printed_direct(h_orig[x], h_views[y], h_orig[y], 0.3) for x in range(2) for y in range(2))
    expected = torch.autograd.grad(direct, (h_orig, h_views))
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)


def test_contrastive_loss_with_a_single_sequence_is_finite():
    """A batch of one has no negatives (the last batch of an epoch can be that small)."""
    h_orig, h_views = rand(2, 1, D, grad=True), rand(2, M, 1, D, seed=1, grad=True)
    for one, denominator in [(o, d) for o in (False, True) for d in losses.CONTRASTIVE_DENOMINATORS]:
        loss = (losses.intra_network_contrastive_loss(h_orig, h_views, 0.3, one, denominator)
                + losses.cross_network_contrastive_loss(h_orig, h_views, 0.3, one, denominator))
        grads = torch.autograd.grad(loss, (h_orig, h_views))
        assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads)


def test_contrastive_loss_of_a_batch_of_one_has_its_documented_value():
    """With no in-batch negative: the printed ratio and standard InfoNCE contrast nothing (0, no
    gradient); the public code's e^0 self term leaves -p/tau per positive, or -logsumexp_m p/tau."""
    positive = torch.tensor([[0.5], [-0.2]], requires_grad=True)     # (M=2, B=1)
    negative = torch.tensor([[0.9]])                                 # (B, B): only the anchor itself
    f = losses.contrastive_loss_from_similarities
    for denominator in ("negatives", "positive-and-negatives"):
        for one in (False, True):
            loss = f(positive, negative, 0.5, one, denominator)
            (grad,) = torch.autograd.grad(loss, positive)
            assert loss.item() == 0.0 and torch.count_nonzero(grad) == 0, (denominator, one)
    per_positive = f(positive, negative, 0.5, False, "negatives-and-self")
    torch.testing.assert_close(per_positive, torch.tensor(-(0.5 - 0.2) / 0.5 / 2))
    one_logsumexp = f(positive, negative, 0.5, True, "negatives-and-self")
    torch.testing.assert_close(one_logsumexp, -torch.log(torch.exp(torch.tensor(1.0)) + torch.exp(torch.tensor(-0.4))))


# ---- knowledge distillation -------------------------------------------------

def kd_direct(logits, T, detach_teacher=False, symmetric=False, weights=None):
    n_nets, n_pos = logits.shape[:2]
    total = 0.0
    for x in range(n_nets):
        for y in range(n_nets):
            if x == y or (symmetric and x < y):
                continue
            pairs = [(x, y), (y, x)] if symmetric else [(x, y)]
            for student, teacher in pairs:
                for p in range(n_pos):
                    t_logits = logits[teacher, p].detach() if detach_teacher else logits[teacher, p]
                    q_t = torch.softmax(t_logits / T, -1)
                    q_s = torch.softmax(logits[student, p] / T, -1)
                    kl = (q_t * (torch.log(q_t) - torch.log(q_s))).sum()
                    w = 1 / n_pos if weights is None else weights[p]
                    total = total + w * kl * (0.5 if symmetric else 1.0)
    return total


@pytest.mark.parametrize("T", [0.3, 2.0])
@pytest.mark.parametrize("detach,symmetric", [(False, False), (True, False), (True, True)])
def test_distillation_matches_eq_16_18_values_and_gradients(T, detach, symmetric):
    logits = rand(N, P, V, grad=True)
    weights = torch.linspace(0.1, 0.5, P, dtype=torch.float64)
    for w in (None, weights):
        got = losses.distillation_loss(logits, T, detach_teacher=detach, symmetric=symmetric, weights=w)
        expected = kd_direct(logits, T, detach, symmetric, w)
        torch.testing.assert_close(got, expected)
        torch.testing.assert_close(torch.autograd.grad(got, logits)[0], torch.autograd.grad(expected, logits)[0])


def test_distillation_over_several_chunks_of_positions_matches_eq_16_18():
    rows = losses.KD_CHUNK_POSITIONS
    logits = rand(3, 2 * rows + 11, 7, grad=True)        # two whole chunks and a partial one
    weights = torch.linspace(0.1, 0.5, logits.shape[1], dtype=torch.float64)
    for detach in (False, True):
        got = losses.distillation_loss(logits, 0.7, detach_teacher=detach, weights=weights)
        expected = kd_direct(logits, 0.7, detach, weights=weights)
        torch.testing.assert_close(got, expected)
        torch.testing.assert_close(torch.autograd.grad(got, logits)[0], torch.autograd.grad(expected, logits)[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("detach", [False, True])
def test_distillation_in_chunks_is_bitwise_the_whole_tensor_computation(dtype, detach):
    # Shapes whose element counts leave scalar tails in the vector loops (101 items,
    # 75 positions): the chunking must not move an element into or out of a tail.
    generator = torch.Generator().manual_seed(3)
    base = (torch.randn(3, 75, 101, generator=generator) * 3).to(dtype)
    weights = torch.rand(75, generator=generator).to(dtype)
    results = []
    for rows in (losses.KD_CHUNK_POSITIONS, 10**9):   # chunked; one chunk (the whole tensor)
        logits = base.clone().requires_grad_()
        with torch.autocast("cpu", torch.bfloat16, enabled=dtype == torch.bfloat16):
            loss = losses._MutualKL.apply(logits, weights, 0.5, detach, rows)
        loss.backward()
        results.append((loss.detach(), logits.grad))
    (loss_a, grad_a), (loss_b, grad_b) = results
    assert torch.equal(loss_a, loss_b) and torch.equal(grad_a, grad_b)


def test_distillation_refuses_a_second_backward_pass_over_its_consumed_gradient():
    logits = rand(2, 5, 4, grad=True)
    loss = losses.distillation_loss(logits, 1.0)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
    empty = rand(2, 0, 4, grad=True)
    assert losses.distillation_loss(empty, 1.0).item() == 0.0


def test_detaching_the_teacher_changes_the_gradient():
    logits = rand(2, P, V, grad=True)
    free = torch.autograd.grad(losses.distillation_loss(logits, 1.0), logits)[0]
    detached = torch.autograd.grad(losses.distillation_loss(logits, 1.0, detach_teacher=True), logits)[0]
    assert not torch.allclose(free, detached)


def test_distillation_of_identical_networks_is_zero():
    logits = rand(1, P, V).expand(N, P, V)
    assert losses.distillation_loss(logits, 1.0).abs() < 1e-12
    assert math.isclose(losses.distillation_loss(rand(N, P, V), 1.0).item(),
                        kd_direct(rand(N, P, V), 1.0).item(), rel_tol=1e-9)


@pytest.mark.parametrize("chunk", [1, 2, P, 64])
@pytest.mark.parametrize("detach", [False, True])
@pytest.mark.parametrize("symmetric", [False, True])
def test_chunked_item_losses_equal_the_unfused_mip_and_kd_in_value_and_gradient(chunk, detach, symmetric):
    """Eq. 5-7 + 16-18 fused with the output layer, any chunking: the same
    numbers and gradients as the logits, MIP and KD formed separately."""
    d, T = 4, 0.7
    projected, weight, bias = rand(N, P, d, seed=1, grad=True), rand(N, V, d, seed=2, grad=True), rand(N, V, seed=3,
                                                                                                   grad=True)
    targets = torch.tensor([0, 3, 6, 3, 1])
    weights = torch.linspace(0.1, 0.5, P, dtype=torch.float64)
    logits = torch.baddbmm(bias[:, None, :], projected, weight.transpose(1, 2))
    expected_mip = losses.masked_item_prediction_loss(logits, targets, weights)
    expected_kd = kd_direct(logits, T, detach, symmetric, weights)
    mip, kd = losses.chunked_item_losses(projected, weight, bias, targets, weights, T, detach_teacher=detach,
                                         symmetric=symmetric, chunk=chunk)
    torch.testing.assert_close(mip, expected_mip)
    torch.testing.assert_close(kd, expected_kd)
    inputs = (projected, weight, bias)
    for a, b in zip(torch.autograd.grad(0.3 * mip + 2.0 * kd, inputs),
                    torch.autograd.grad(0.3 * expected_mip + 2.0 * expected_kd, inputs)):
        torch.testing.assert_close(a, b)
    mip_only, no_kd = losses.chunked_item_losses(projected, weight, bias, targets, None, T, with_kd=False,
                                                 chunk=chunk)
    assert no_kd.item() == 0.0
    expected_mip = losses.masked_item_prediction_loss(
        torch.baddbmm(bias[:, None, :], projected, weight.transpose(1, 2)), targets)
    torch.testing.assert_close(mip_only, expected_mip)
    torch.testing.assert_close(torch.autograd.grad(mip_only, projected)[0],
                               torch.autograd.grad(expected_mip, projected)[0])


def test_chunked_item_losses_keep_no_logits_for_the_backward_pass():
    projected, weight, bias = rand(N, 40, 4, grad=True), rand(N, 500, 4, grad=True), rand(N, 500, grad=True)
    targets = torch.arange(40)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        losses.chunked_item_losses(projected, weight, bias, targets, None, 1.0, chunk=8)
    assert max(saved) < N * 40 * 500 / 4   # nothing the size of the (N, P, V) logits is kept
    with pytest.raises(ValueError, match="chunk must be an int >= 1"):
        losses.chunked_item_losses(projected, weight, bias, targets, None, 1.0, chunk=0)


def test_cpu_autocast_upcasts_the_item_cross_entropy_but_not_the_distillation_softmaxes():
    # What the book says of the bf16 EMKD runs (book/emkd.md, chapter 10).
    logits = rand(3, 40, 9).to(torch.bfloat16)
    targets = torch.arange(40) % 9
    with torch.autocast("cpu", torch.bfloat16):
        assert losses.masked_item_prediction_loss(logits, targets).dtype == torch.float32
        q, f, kl = losses._mutual_kl_parts(logits, 1.0)
    assert q.dtype == f.dtype == kl.dtype == torch.bfloat16
