"""The training losses of the three papers and their baselines as plain
functions on tensors, one section per paper: EMKD (Du et al., 2023) first,
then S^4Rec and CL4SRec, ICLRec and DuoRec, ODMT (each section's header names
its paper; ``book/<paper>.md`` carries the equations).

Equation numbers in EMKD's section are those of its paper and of ``book/emkd.md``. Shapes:
N networks, M masked views, B sequences in the batch, P scored positions,
V items, A attributes, D = T * d the length of a flattened hidden matrix.

Reductions. The paper writes every loss as a sum over users and positions
(Eq. 5-7, 10-11, 13, 15, 18); summed, a loss grows with the batch and the
number of masked items, which would make the weights lambda and mu meaningless
across datasets. These functions take means where the paper sums over data
(positions, users, views of a contrastive loss, attributes) and keep the sums
over networks, network pairs and, through the position weights the EMKD recipe
passes, over views of the per-position losses. That is also what the authors'
public code computes (``CrossEntropyLoss`` / ``BCEWithLogitsLoss`` means,
``kl_div(reduction='batchmean')``, contrastive sums divided by B), and what its
lambda = 0.01, mu = 0.001 were tuned with.

Everything is vectorized over networks, views and batch: no Python loop over
users, views or network pairs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .models.ensemble import average_logits


def _check_shape(function: str, name: str, tensor: torch.Tensor, expected) -> None:
    """A mis-shaped argument is an error naming it: broadcasting would
    otherwise turn it into a plausible-looking wrong loss."""
    if tuple(tensor.shape) != tuple(expected):
        raise ValueError(f"{function}: {name} has shape {tuple(tensor.shape)}, expected {tuple(expected)}")


def _check_targets(function: str, targets: torch.Tensor, n_classes: int) -> None:
    """Targets outside [0, n_classes) are an error: indexing with a negative
    target would silently read the last column (``F.cross_entropy`` refuses it)."""
    if not targets.numel():
        return
    low, high = (int(t) for t in torch.aminmax(targets))   # one pass (and one device sync)
    if low < 0 or high >= n_classes:
        raise ValueError(f"{function}: targets must lie in [0, {n_classes}), got values from {low} to {high}")


def _position_weights(weights: torch.Tensor | None, n_positions: int, dtype: torch.dtype,
                      device: torch.device, function: str) -> torch.Tensor:
    if weights is None:
        return torch.full((n_positions,), 1.0 / max(n_positions, 1), dtype=dtype, device=device)
    _check_shape(function, "weights", weights, (n_positions,))
    return weights.to(dtype)


def _at_least_fp32(dtype: torch.dtype) -> torch.dtype:
    """The dtype the item losses compute in: fp64 stays, anything else is fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def masked_item_prediction_loss(logits: torch.Tensor, targets: torch.Tensor,
                                weights: torch.Tensor | None = None) -> torch.Tensor:
    """Masked item prediction, Eq. 5-7.

    ``logits`` (N, P, V): each network's scores at the masked positions only;
    ``targets`` (P,): the original items there, as column indices (item id - 1).
    Returns ``sum_n sum_p weights[p] * CE(logits[n, p], targets[p])``.
    ``weights`` defaults to 1/P (mean over positions, summed over networks);
    the EMKD recipe passes 1 / (masked positions of the position's view), i.e.
    the mean over each view's masked positions, summed over views and networks
    (Eq. 6-7 with the paper's sum over positions replaced by a mean).
    Computed in fp32 at least, also under autocast (as autocast computes
    ``F.cross_entropy``), with a hand-written gradient (``_ItemCrossEntropy``).
    """
    N, P, V = logits.shape
    _check_shape("masked_item_prediction_loss", "targets", targets, (P,))
    _check_targets("masked_item_prediction_loss", targets, V)
    weights = _position_weights(weights, P, _at_least_fp32(logits.dtype), logits.device,
                                "masked_item_prediction_loss")
    return _ItemCrossEntropy.apply(logits, targets, weights)


class _ItemCrossEntropy(torch.autograd.Function):
    """sum_n sum_p w_p CE(z^n_p, t_p), whose gradient by the logits is
    w_p (softmax(z^n_p) - onehot(t_p)).

    Autograd through ``F.cross_entropy`` runs nll_loss's backward (a zero
    (N P, V) tensor, filled, then scattered into) and then log_softmax's (a
    further pass over two such tensors): on CPU as long as the rest of the
    loss. Here the forward pass forms the gradient from the log-softmax it
    already holds and the backward pass scales it in place. The loss is bit
    for bit ``F.cross_entropy``'s, the gradient autograd's to within rounding
    (tests/test_losses.py).
    """

    @staticmethod
    def forward(ctx, logits, targets, weights):
        N, P, V = logits.shape
        ctx.dtype = logits.dtype
        with torch.autocast(logits.device.type, enabled=False):
            log_p = F.log_softmax(logits.to(weights.dtype), dim=-1)
            at_target = (slice(None), torch.arange(P, device=logits.device), targets)
            ce = -log_p[at_target]                                   # F.cross_entropy's values
            gradient = None
            if ctx.needs_input_grad[0]:
                # exp of the log-softmax, as autograd's log_softmax backward forms it
                # (on CPU torch.softmax is several times slower than log_softmax)
                gradient = log_p.exp_()
                gradient[at_target] -= 1.0
        ctx.save_for_backward(gradient, weights)
        return (ce * weights).sum()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        gradient, weights = ctx.saved_tensors
        # In place: no second (N, P, V) tensor (a second backward is refused by
        # autograd's version check of the saved tensor).
        gradient *= (grad * weights)[None, :, None]
        return gradient.to(ctx.dtype), None, None


def attribute_prediction_loss(attribute_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Attribute prediction, Eq. 8-11.

    ``attribute_logits`` (N, P, A): each network's classifier (Eq. 9, before the
    sigmoid) on its hidden states of the original sequences (Eq. 8) at P
    positions; ``targets`` (P, A): the 0/1 multi-hot attributes of the items
    there (Eq. 10's y). Binary cross entropy (Eq. 10), averaged over positions AND attributes (the public code's
    ``BCEWithLogitsLoss()``; the paper's sum over a catalogue of ~1000
    attributes would dwarf the item loss), summed over networks (Eq. 11).
    """
    _check_shape("attribute_prediction_loss", "targets", targets, attribute_logits.shape[1:])
    bce = F.binary_cross_entropy_with_logits(attribute_logits, targets.expand_as(attribute_logits),
                                             reduction="none")
    return bce.mean(dim=(1, 2)).sum()


CONTRASTIVE_DENOMINATORS = ("negatives", "positive-and-negatives", "negatives-and-self")


def contrastive_loss_from_similarities(positive: torch.Tensor, negative: torch.Tensor, tau: float,
                                       positives_in_one_logsumexp: bool = False,
                                       denominator: str = "negatives") -> torch.Tensor:
    """The shared contrastive form of Eq. 12 and Eq. 14, on cosine similarities.

    ``positive`` (..., M, B): g(anchor_u, positive_{m,u});
    ``negative`` (..., B, B): g(anchor_u, bank_k). Entry (u, u) of ``negative``
    is the anchor's own sequence: negatives are k != u.
    Returns (...,): for every leading index, the mean over u (and m) of

    - ``denominator="negatives"`` (default, Eq. 12 / 14 as printed), one term
      per positive with only the in-batch negatives below it:
      ``-log( e^{p_um/tau} / sum_{k != u} e^{n_uk/tau} )`` (it can be negative;
      0 for a batch of one, which has no negatives);
    - ``"positive-and-negatives"``: standard InfoNCE, the positive also in the
      denominator, ``-log( e^{p_um/tau} / (e^{p_um/tau} + sum_{k != u} e^{n_uk/tau}) )``;
    - ``"negatives-and-self"`` (public code): ``sum_{k != u} e^{n_uk/tau} + e^0``,
      the e^0 being the anchor's self-similarity, which the code multiplies by
      zero instead of removing;
    - ``positives_in_one_logsumexp`` (public code): the M positives share one
      numerator ``sum_m e^{p_um/tau}`` (with ``"positive-and-negatives"`` they
      also share the denominator), averaged over u only. With
      ``"negatives-and-self"`` this is exactly the code's ``ICL``/``CCL``.
    """
    if denominator not in CONTRASTIVE_DENOMINATORS:
        raise ValueError(f"denominator must be one of {CONTRASTIVE_DENOMINATORS}, got {denominator!r}")
    B = negative.shape[-1]
    pos, neg = positive / tau, negative / tau
    if B == 1 and denominator == "negatives":
        # No in-batch negatives (a last batch of one): the printed ratio is
        # undefined, and there is nothing to contrast; a zero that keeps the graph.
        return (pos * 0).sum(dim=(-2, -1))
    off_diagonal = ~torch.eye(B, dtype=torch.bool, device=neg.device)
    others = neg[..., off_diagonal].view(*neg.shape[:-2], B, B - 1)   # row u: k != u
    if denominator == "negatives-and-self":
        others = torch.cat([others, others.new_zeros(*others.shape[:-1], 1)], -1)
    lse_others = others.logsumexp(-1)                                   # (..., B); -inf when B == 1
    with_positive = denominator == "positive-and-negatives"
    if positives_in_one_logsumexp:
        lse_pos = pos.logsumexp(-2)                                     # (..., B)
        below = torch.logaddexp(lse_pos, lse_others) if with_positive else lse_others
        return (below - lse_pos).mean(-1)
    lse_others = lse_others.unsqueeze(-2)                               # (..., 1, B)
    below = torch.logaddexp(pos, lse_others) if with_positive else lse_others.expand_as(pos)
    return (below - pos).mean(dim=(-2, -1))


def _pairwise_cosine(anchor: torch.Tensor, positives: torch.Tensor, bank: torch.Tensor,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities anchor-positive (..., M, B) and anchor-bank (..., B, B)."""
    a, p, b = (F.normalize(t, dim=-1) for t in (anchor, positives, bank))
    return torch.einsum("...ud,...mud->...mu", a, p), a @ b.transpose(-1, -2)


def contrastive_loss(anchor: torch.Tensor, positives: torch.Tensor, negatives_bank: torch.Tensor,
                     tau: float, positives_in_one_logsumexp: bool = False,
                     denominator: str = "negatives") -> torch.Tensor:
    """Eq. 12 / 14 on representations: anchor (..., B, D), positives (..., M, B, D),
    negatives_bank (..., B, D) whose row u (the anchor's own sequence) is
    excluded from anchor u's negatives. Cosine similarity g, temperature tau.
    Returns (...,), the mean over u and m (see ``contrastive_loss_from_similarities``)."""
    pos, neg = _pairwise_cosine(anchor, positives, negatives_bank)
    return contrastive_loss_from_similarities(pos, neg, tau, positives_in_one_logsumexp,
                                              denominator)


def intra_network_contrastive_loss(h_orig: torch.Tensor, h_views: torch.Tensor, tau: float,
                                   positives_in_one_logsumexp: bool = False,
                                   denominator: str = "negatives") -> torch.Tensor:
    """Intra-network contrastive learning (ICL), Eq. 12-13.

    ``h_orig`` (N, B, D): flattened hidden matrices H^n(s_u) of the original
    sequences (the anchors, and the negatives H^n(s_k), k != u);
    ``h_views`` (N, M, B, D): H^n(s_u^m) of the masked views (the positives).
    Mean over users and views, summed over networks.
    """
    return contrastive_loss(h_orig, h_views, h_orig, tau, positives_in_one_logsumexp,
                            denominator).sum()


def cross_network_contrastive_loss(h_orig: torch.Tensor, h_views: torch.Tensor, tau: float,
                                   positives_in_one_logsumexp: bool = False,
                                   denominator: str = "negatives") -> torch.Tensor:
    """Cross-network contrastive learning (CCL), Eq. 14-15.

    For every ordered pair x != y: anchor H^x(s_u), positives H^y(s_u^m),
    negatives H^y(s_k), k != u. Same shapes and reduction as ICL; summed over
    the N(N - 1) ordered pairs. The similarities of all (x, y) come from two
    einsums; the x == y blocks (ICL's) are dropped.
    """
    N = h_orig.shape[0]
    a, p = F.normalize(h_orig, dim=-1), F.normalize(h_views, dim=-1)
    x, y = (~torch.eye(N, dtype=torch.bool, device=a.device)).nonzero(as_tuple=True)
    pos = torch.einsum("xud,ymud->xymu", a, p)[x, y]                   # (N(N-1), M, B)
    neg = torch.einsum("xud,ykd->xyuk", a, a)[x, y]                    # (N(N-1), B, B)
    return contrastive_loss_from_similarities(pos, neg, tau, positives_in_one_logsumexp,
                                              denominator).sum()


def distillation_loss(logits: torch.Tensor, temperature: float, detach_teacher: bool = False,
                      symmetric: bool = False, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Knowledge distillation between the networks, Eq. 16-18.

    ``logits`` (N, P, V) at the masked positions. With q^n = softmax(z^n / T)
    (Eq. 16), network x (student) learns from network y (teacher) through
    KL(q^y || q^x) (Eq. 17), summed over all ordered pairs x != y (Eq. 18) and
    over positions with ``weights`` (default 1/P: the mean over positions, like
    ``kl_div(reduction='batchmean')``). No T^2 factor: neither the paper nor
    the code scales by it.

    - ``detach_teacher``: q^y carries no gradient (the paper's default: it does).
    - ``symmetric``: each unordered pair once, 1/2 [KL(q^x||q^y) + KL(q^y||q^x)],
      i.e. half the ordered sum; the public code uses it with ``detach_teacher``.
    """
    N, P, _ = logits.shape
    weights = _position_weights(weights, P, logits.dtype, logits.device, "distillation_loss")
    # Chunks pay on a CPU's caches; on a GPU each chunk is a dozen kernel launches.
    rows = KD_CHUNK_POSITIONS if logits.device.type == "cpu" else max(P, 1)
    loss = _MutualKL.apply(logits, weights, float(temperature), bool(detach_teacher), rows)
    return 0.5 * loss if symmetric else loss


# Positions per chunk of ``_MutualKL``: a multiple of 32 keeps every chunk a
# whole number of the widest SIMD vectors (32 bf16 lanes under AVX-512), so no
# element meets a vector loop's scalar tail that it would not meet unchunked,
# and the chunked values are bitwise the unchunked ones (tests/test_losses.py).
KD_CHUNK_POSITIONS = 32


class _MutualKL(torch.autograd.Function):
    """sum_p w_p sum_{x != y} KL(q^y_p || q^x_p) with a hand-written gradient.

    The (N, P, V) logits are the largest tensors of a step; autograd through
    the plain formula runs some twenty passes over them and took as long as
    the rest of the loss on CPU. Here: forward
        f^y = N log q^y - sum_x log q^x,   KL_y = <q^y, f^y> = sum_{x != y} KL(q^y || q^x),
    and, differentiating (with Q = sum_x q^x), for the logits z^n of network n
        as student: (1/T) sum_{y != n} (q^n - q^y) = (1/T) (N q^n - Q),
        as teacher: (1/T) q^n * (f^n - <q^n, f^n>)   (absent when detached).
    The forward pass goes ``rows`` positions at a time and forms each chunk's
    gradient while its q and f are still in cache, keeping only that gradient
    (one (N, P, V) tensor instead of q and f); the values are bit for bit
    those of the whole-tensor passes. The backward pass scales it by the
    incoming gradient, the weights and 1/T.
    Checked against autograd through a loop over pairs in tests/test_losses.py.
    """

    @staticmethod
    def forward(ctx, logits, weights, temperature, detach_teacher, rows=KD_CHUNK_POSITIONS):
        N, P, V = logits.shape
        kl = gradient = None
        for start in range(0, P, rows):
            chunk = slice(start, start + rows)
            q, f, kl_chunk = _mutual_kl_parts(logits[:, chunk], temperature)
            if kl is None:
                kl = kl_chunk.new_empty((N, P))
                gradient = q.new_empty((N, P, V)) if ctx.needs_input_grad[0] else None
            kl[:, chunk] = kl_chunk
            if gradient is not None:   # formed in its place: no chunk-sized copy
                _mutual_kl_logit_gradient(q, f, kl_chunk, detach_teacher, out=gradient[:, chunk])
        if kl is None:  # no positions
            kl = logits.new_zeros((N, P))
        ctx.save_for_backward(gradient, weights)
        ctx.temperature = temperature
        return (kl * weights).sum()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        g, weights = ctx.saved_tensors
        if g is None:  # no positions
            return None, None, None, None, None
        # In place: no second (N, P, V) tensor. A second backward pass (retain_graph)
        # is refused by autograd's version check of the saved tensor.
        g *= (grad * weights / ctx.temperature)[:, None]
        return g, None, None, None, None


def _mutual_kl_parts(logits: torch.Tensor, temperature: float):
    """``_MutualKL``'s forward on (N, P, V) logits: q, f and KL_y (N, P)."""
    log_q = F.log_softmax(logits / temperature, dim=-1)
    f = torch.add(-log_q.sum(0), log_q, alpha=logits.shape[0])
    q = log_q.exp_()                                            # log_q is not needed any more
    return q, f, torch.linalg.vecdot(q, f)


def _mutual_kl_logit_gradient(q, f, kl, detach_teacher: bool, out: torch.Tensor | None = None) -> torch.Tensor:
    """``_MutualKL``'s gradient by the logits, before the 1/T and position
    weights; written into ``out`` (a view of q's shape) where given."""
    g = torch.add(-q.sum(0), q, alpha=q.shape[0], out=out)      # student side
    if not detach_teacher:
        g += q * (f - kl[..., None])                            # teacher side
    return g


def chunked_item_losses(projected: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, targets: torch.Tensor,
                        weights: torch.Tensor | None, temperature: float, *, detach_teacher: bool = False,
                        symmetric: bool = False, with_kd: bool = True,
                        chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 5-7 and Eq. 16-18 fused with the output layer, ``chunk`` positions
    at a time: ``(masked_item_prediction_loss(z, targets, weights),
    distillation_loss(z, temperature, detach_teacher, symmetric, weights))`` for
    the logits ``z = projected @ weight^T + bias`` (Eq. 5), never holding
    the (N, P, V) logits: each chunk's are formed, used and freed, and formed
    again in the backward pass. Memory: a few (N, chunk, V) tensors instead
    of some five (N, P, V) ones kept from the forward to the backward pass.

    ``projected`` (N, P, d), ``weight`` (N, V, d), ``bias`` (N, V), ``targets``
    (P,) column indices, ``weights`` (P,) (default 1/P). ``with_kd=False``
    returns a zero KD. The same values as the unfused losses up to the order
    of the floating-point sums (tests/test_losses.py); computed in fp32 with
    autocast off (at least fp32).
    """
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an int >= 1, got {chunk!r}")
    dtype = _at_least_fp32(projected.dtype)
    N, P, _ = projected.shape
    _check_shape("chunked_item_losses", "targets", targets, (P,))
    _check_shape("chunked_item_losses", "bias", bias, weight.shape[:2])
    weights = _position_weights(weights, P, dtype, projected.device, "chunked_item_losses")
    mip, kd = _ChunkedItemLosses.apply(projected, weight, bias, targets, weights, float(temperature),
                                       bool(detach_teacher), bool(with_kd), chunk)
    return mip, 0.5 * kd if symmetric else kd


class _ChunkedItemLosses(torch.autograd.Function):
    """``chunked_item_losses``' forward and hand-written backward.

    The gradient with respect to a chunk's logits is the sum of
        MIP: w_p (softmax(z_p) - onehot(target_p))   per network,
        KD:  ``_MutualKL``'s gradient (student side, and teacher side unless detached),
    after which the output layer's gradients are two batched matmuls.
    """

    @staticmethod
    def _logits(projected, weight, bias, chunk):
        return torch.baddbmm(bias[:, None, :], projected[:, chunk], weight.transpose(1, 2))

    @staticmethod
    def forward(ctx, projected, weight, bias, targets, weights, temperature, detach_teacher, with_kd, chunk):
        ctx.dtypes = (projected.dtype, weight.dtype, bias.dtype)
        with torch.autocast(projected.device.type, enabled=False):
            projected, weight, bias = (t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
                                       for t in (projected, weight, bias))
            N, P, _ = projected.shape
            mip, kd = projected.new_zeros(()), projected.new_zeros(())
            for start in range(0, P, chunk):
                rows = slice(start, start + chunk)
                z = _ChunkedItemLosses._logits(projected, weight, bias, rows)       # (N, c, V)
                w = weights[rows]
                ce = F.cross_entropy(z.flatten(0, 1), targets[rows].repeat(N), reduction="none")
                mip = mip + (ce.view(N, -1) * w).sum()
                if with_kd:
                    kd = kd + (_mutual_kl_parts(z, temperature)[2] * w).sum()
        ctx.save_for_backward(projected, weight, bias, targets, weights)
        ctx.temperature, ctx.detach_teacher, ctx.with_kd, ctx.chunk = temperature, detach_teacher, with_kd, chunk
        return mip, kd

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_mip, grad_kd):
        projected, weight, bias, targets, weights = ctx.saved_tensors
        T, P = ctx.temperature, projected.shape[1]
        grad_projected = torch.empty_like(projected)
        grad_weight, grad_bias = torch.zeros_like(weight), torch.zeros_like(bias)
        with torch.autocast(projected.device.type, enabled=False):
            for start in range(0, P, ctx.chunk):
                rows = slice(start, start + ctx.chunk)
                z = _ChunkedItemLosses._logits(projected, weight, bias, rows)
                w = weights[rows]
                g = torch.softmax(z, dim=-1)
                g[:, torch.arange(z.shape[1], device=z.device), targets[rows]] -= 1.0
                g *= (grad_mip * w)[None, :, None]
                if ctx.with_kd:
                    g_kd = _mutual_kl_logit_gradient(*_mutual_kl_parts(z, T), ctx.detach_teacher)
                    g += g_kd * (grad_kd * w / T)[None, :, None]
                grad_projected[:, rows] = torch.bmm(g, weight)
                grad_weight.baddbmm_(g.transpose(1, 2), projected[:, rows])
                grad_bias += g.sum(1)
        grads = (g.to(dtype) for g, dtype in zip((grad_projected, grad_weight, grad_bias), ctx.dtypes))
        return *grads, None, None, None, None, None, None


# ---- S^4Rec (online clustering, cluster-aware self-distillation) and CL4SRec ----
#
# Equation numbers are S^4Rec's. Shapes: B sequences, K prototypes, d the
# hidden size. Every term is a MEAN over the B users of the batch (the paper
# sums over users; see the reductions note at the top of this module).


def clustering_loss(scores: torch.Tensor, targets: torch.Tensor, tau: float) -> torch.Tensor:
    """L_Clust, Eq. 7-8: ``-sum_k q_u^k log p_u^k`` with ``p_u = softmax(scores_u / tau1)``.

    ``scores`` (B, K): ``z_u mu_k^T`` (Eq. 7); gradient flows to the encoder
    and the prototypes (the paper minimises Eq. 8 in both). ``targets`` (B, K):
    the Sinkhorn targets q_u (rows summing to 1), DETACHED here whatever the
    caller passes. Mean over users."""
    _check_shape("clustering_loss", "targets", targets, scores.shape)
    return -(targets.detach() * F.log_softmax(scores / tau, dim=-1)).sum(-1).mean()


def intent_contrastive_loss(anchor: torch.Tensor, positive: torch.Tensor, tau: float,
                            prototypes: torch.Tensor | None = None, assigned: torch.Tensor | None = None,
                            with_positive: bool = False) -> torch.Tensor:
    """One L_SCL(a, p) of Eq. 13, with the intent negatives of Eq. 14.

    ``anchor``, ``positive`` (B, d): ``a_u``, ``p_u``; similarities are dot
    products (the printed ``z z^T``; pass normalised vectors for cosines).
    For user u: ``-log( e^{a_u p_u / tau2} / D_u )`` with

    - ``D_u = sum_{n != u} e^{a_u p_n / tau2}``: the in-batch negatives are the
      OTHER users' positives (Eq. 13; the positive itself is not in D_u as
      printed, so the loss can be negative; ``with_positive`` adds it: InfoNCE);
    - with ``prototypes`` (K, d) and ``assigned`` (B,) = h(u):
      ``+ sum_{k' != h(u)} e^{a_u mu_k' / tau2}`` (Eq. 14).

    No side is detached (the printed loss; the prototypes receive gradient
    from their negative terms). Mean over users; a batch of one without
    prototypes has no negatives and gives a zero that keeps the graph."""
    B = anchor.shape[0]
    pair = anchor @ positive.T / tau                                   # (B, B)
    pos = pair.diagonal()
    others = pair.masked_fill(torch.eye(B, dtype=torch.bool, device=pair.device), float("-inf"))
    if prototypes is not None:
        if assigned is None:
            raise ValueError("intent negatives need the assigned prototype h(u) of each user")
        to_protos = anchor @ prototypes.T / tau                        # (B, K)
        own = F.one_hot(assigned, prototypes.shape[0]).bool()
        others = torch.cat([others, to_protos.masked_fill(own, float("-inf"))], 1)
    if others.shape[1] == 1 and prototypes is None and not with_positive:
        return (pos * 0).sum()
    if with_positive:
        others = torch.cat([others, pos[:, None]], 1)
    return (others.logsumexp(1) - pos).mean()


def cluster_distillation_loss(student: torch.Tensor, teacher: torch.Tensor, tau: float,
                              detach_teacher: bool = True) -> torch.Tensor:
    """One L_CKD(mu_h(u), z_u) of Eq. 15-16: ``KL(e_t || e_s)`` over the d FEATURE dimensions.

    ``teacher`` (B, d): the assigned intent mu_h(u) of each user;
    ``student`` (B, d): the sequence (view) representation z_u. Eq. 15:
    ``e_t = softmax(mu_h(u) / tau3)``, ``e_s = softmax(z_u / tau3)`` over the
    features; Eq. 16: ``sum_i e_t^i log(e_t^i / e_s^i)``, mean over users.
    ``detach_teacher``: the prototype is a teacher and gets no gradient from
    this term (the paper does not say; distillation's convention, and the
    prototypes are trained by L_Clust and L_SCL). No tau^2 factor."""
    _check_shape("cluster_distillation_loss", "teacher", teacher, student.shape)
    if detach_teacher:
        teacher = teacher.detach()
    log_t = F.log_softmax(teacher / tau, dim=-1)
    log_s = F.log_softmax(student / tau, dim=-1)
    return (log_t.exp() * (log_t - log_s)).sum(-1).mean()


def head_tail_adversarial_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_Adv, Eq. 17: ``-c_hat[c] + log sum_i exp(c_hat[i])``, mean over users.

    ``logits`` (B, 2): ``c_hat = W GRL(z_u)``, the classifier's output on the
    gradient-reversed representation (``models.layers.grad_reverse``): this
    plain cross entropy trains the classifier to find the class and, through
    the reversal, the encoder to hide it. ``labels`` (B,): 1 head, 0 tail."""
    _check_shape("head_tail_adversarial_loss", "labels", labels, logits.shape[:1])
    return F.cross_entropy(logits, labels.long())


def nt_xent_loss(first: torch.Tensor, second: torch.Tensor, tau: float) -> torch.Tensor:
    """CL4SRec's contrastive loss (NT-Xent) between two views (B, d) each.

    Each of the 2B representations is an anchor; its positive is the other
    view of the same sequence; the 2B - 2 representations of the other
    sequences (both views) are its negatives, and the positive is also in the
    denominator. Dot-product similarities over ``tau`` (pass normalised
    vectors for cosines), as the ICLRec code's ``NCELoss`` used for CL4SRec.
    Mean over the 2B anchors. ICLRec's ``iclrec_nce_loss`` without intent
    labels, which computes it."""
    _check_shape("nt_xent_loss", "second", second, first.shape)
    return iclrec_nce_loss(first, second, tau)


# ---- ICLRec (intent contrastive learning) and DuoRec ----
#
# Shapes: B sequences, d the size of a sequence representation. Both papers'
# contrastive losses are the NT-Xent of ``nt_xent_loss`` (dot products over
# the temperature, the positive in the denominator, the 2B - 2 other
# representations as negatives, mean over the 2B anchors); ICLRec adds the
# removal of false negatives.


def iclrec_nce_loss(first: torch.Tensor, second: torch.Tensor, tau: float,
                    labels: torch.Tensor | None = None) -> torch.Tensor:
    """The ICLRec code's ``NCELoss`` between ``first`` and ``second`` (B, d).

    Without ``labels`` it is ``nt_xent_loss(first, second, tau)``: anchor
    ``first_u`` has positive ``second_u`` and negatives ``first_n``,
    ``second_n`` (n != u); anchor ``second_u`` symmetrically. With ``labels``
    (B,), the intent ids (the code's ``de_noise``), every pair of DIFFERENT
    rows with the same label is removed from the negatives, on both sides
    (same-intent sequences are false negatives); the positive pairs stay.
    Mean over the 2B anchors."""
    _check_shape("iclrec_nce_loss", "second", second, first.shape)
    B = first.shape[0]
    z = torch.cat([first, second])                                     # (2B, d)
    sim = z @ z.T / tau
    idx = torch.arange(2 * B, device=sim.device)
    target = (idx + B) % (2 * B)
    drop = torch.eye(2 * B, dtype=torch.bool, device=sim.device)
    if labels is not None:
        same = labels.view(-1, 1) == labels.view(1, -1)                # (B, B)
        same = same.repeat(2, 2)
        same[idx, target] = False                                      # keep the positives
        drop = drop | same
    return F.cross_entropy(sim.masked_fill(drop, float("-inf")), target)


def iclrec_intent_loss(view1: torch.Tensor, view2: torch.Tensor, intents: torch.Tensor, tau: float,
                       intent_ids: torch.Tensor | None = None) -> torch.Tensor:
    """ICLRec's intent contrastive loss L_ICL as its public code computes it (``PCLoss``).

    ``view1``, ``view2`` (B, d): the representations of the two augmented
    views of every sequence; ``intents`` (B, d): the (normalised) K-means
    centroid c_u of each sequence's intent, found from the ORIGINAL sequence
    and constant (no gradient reaches it from here: the caller passes a
    detached tensor). Each view is contrasted with the intents as the second
    side of ``iclrec_nce_loss``: the positive of view_u is c_u, its negatives
    the other sequences' centroids c_n AND views view_n (n != u), and c_u is
    also an anchor whose positive is view_u; with ``intent_ids`` (B,)
    same-intent rows are not negatives (``de_noise``). Without it a centroid
    shared by two sequences of the batch is a negative of the other, as in
    the code without ``--de_noise`` (its published scripts). Returns
    ``(NCE(view1, c) + NCE(view2, c)) / 2``, the code's mean of the two."""
    return 0.5 * (iclrec_nce_loss(view1, intents, tau, intent_ids)
                  + iclrec_nce_loss(view2, intents, tau, intent_ids))


# ---- ODMT (ID, text and image branches with online distillation) ----
#
# Equation numbers are ODMT's (Ji et al., MM 2023). Shapes: P training
# positions of the batch (one next-item target each), C candidate items, d
# the hidden size. The candidates of a batch are its P target occurrences
# (C = P), so a popular item is a candidate as often as it is a target: that
# sampling is what the -log pop correction of Eq. 6 undoes.

# Masked candidates get this score rather than -inf, so that a softmax at a
# temperature below one stays finite and a masked entry contributes exactly
# 0 * finite = 0 to a KL divergence (exp(-1e4 / T) underflows to 0).
MASKED_SCORE = -1e4


def debiased_in_batch_logits(users: torch.Tensor, candidates: torch.Tensor, log_pop: torch.Tensor,
                             excluded: torch.Tensor) -> torch.Tensor:
    """Eq. 6: s(H, D) = H . D - log pop(item), for every position and candidate.

    ``users`` (P, d): H at each training position; ``candidates`` (C, d): D of
    the batch's candidate items; ``log_pop`` (C,): log of each candidate's
    training frequency; ``excluded`` (P, C) bool: candidates that are in the
    position's own user sequence and are not its target (Eq. 5's B_h), which
    get ``MASKED_SCORE``. Returns (P, C).
    """
    _check_shape("debiased_in_batch_logits", "log_pop", log_pop, candidates.shape[:1])
    _check_shape("debiased_in_batch_logits", "excluded", excluded, (users.shape[0], candidates.shape[0]))
    logits = users @ candidates.T - log_pop
    return logits.masked_fill(excluded, MASKED_SCORE)


def debiased_in_batch_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 5: -log softmax of the target's debiased score over the position's
    candidates, MEAN over the P positions (the paper sums; a mean keeps the
    weight of Eq. 10 independent of the batch). ``logits`` (P, C) from
    ``debiased_in_batch_logits``; ``labels`` (P,): each position's target column."""
    return F.cross_entropy(logits, labels)


def _kl(teacher: torch.Tensor, student: torch.Tensor, temperature: float, detach_teacher: bool) -> torch.Tensor:
    """T^2 KL(softmax(teacher / T) || softmax(student / T)) of (P, C) logits, mean over the P rows."""
    log_p = F.log_softmax(teacher / temperature, dim=-1)
    if detach_teacher:
        log_p = log_p.detach()
    log_q = F.log_softmax(student / temperature, dim=-1)
    return temperature ** 2 * F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")


def odmt_distillation_loss(logits: dict[str, torch.Tensor], temperature: float,
                           detach_teacher: bool = False) -> dict[str, torch.Tensor]:
    """Eq. 9: the distillation terms between the branches, one per branch.

    ``logits``: {branch: (P, C)} over the same candidates. With z^e the mean
    of all branches' logits (the ensemble of late fusion):
        L_kl^m  = T^2 KL(sigma(z^id / T) || sigma(z^m / T))  for m = image, text:
                  the ID branch teaches the modality branches;
        L_kl^id = T^2 KL(sigma(z^e / T)  || sigma(z^id / T)): the ensemble
                  teaches the ID branch.
    KL(p, q) has the teacher p first, as the text under Eq. 9 says. The paper
    does not say that a teacher is detached and the public code does not
    detach (its KD term is a cross entropy whose teacher side also receives
    gradient), so by default every side carries gradient; ``detach_teacher``
    stops it at the teacher. Without an ID branch (the "w/o ID" ablation)
    the ensemble teaches every branch. Returns {"kl_<branch>": term}, each
    a mean over the P positions (``batchmean``).
    """
    ensemble = average_logits(torch.stack(list(logits.values())))
    terms = {}
    for branch, z in logits.items():
        if branch == "id" or "id" not in logits:
            teacher = ensemble
        else:
            teacher = logits["id"]
        terms[f"kl_{branch}"] = _kl(teacher, z, temperature, detach_teacher)
    return terms
