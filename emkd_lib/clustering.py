"""Online clustering targets: the Sinkhorn-Knopp algorithm (S^4Rec Eq. 9-11; SwAV).

``sinkhorn(scores, epsilon, n_iters)`` solves, approximately, Eq. 9 over the
transportation polytope of Eq. 10,

    max_Q  Tr(Q mu Z^T) + epsilon H(Q),   Q 1_K = 1_B / B,   Q^T 1_B = 1_K / K,

whose solution is Eq. 11, ``Q* = diag(m) exp(Z mu^T / epsilon) diag(v)``; the
scaling vectors m (rows) and v (columns) are found by alternating row and
column normalisations. Here they run in the log domain (``logsumexp``), so
``epsilon = 0.01`` with scores of any size gives no overflow, NaN or inf.

Normalisation of the result. Each iteration first scales the columns to
1/K, then the rows to 1/B; the returned matrix is that Q times B, so each ROW
sums to exactly 1 (a target distribution q_u over the K prototypes, as the
cross entropy of Eq. 8 needs) and each COLUMN sums to about B/K (exactly
only in the limit of many iterations): the equipartition of Eq. 10. SwAV's
``distributed_sinkhorn`` makes the same choice, with 3 iterations.
"""
from __future__ import annotations

import math

import torch


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, n_iters: int = 3) -> torch.Tensor:
    """Targets Q (B, K) of a batch's prototype scores (B, K), e.g. ``z mu^T``.

    No gradient flows through Q (computed under ``no_grad``, the input is
    detached). Rows sum to 1; columns to about B / K (see the module
    docstring). Computed in at least float32 (half inputs are upcast) and
    returned in the input's dtype.
    ``n_iters = 0`` is a plain softmax of ``scores / epsilon`` over prototypes.
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be (B, K), got shape {tuple(scores.shape)}")
    if epsilon <= 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    if n_iters < 0:
        raise ValueError(f"n_iters must be >= 0, got {n_iters}")
    B, K = scores.shape
    dtype = scores.dtype
    log_q = scores.detach().to(torch.promote_types(dtype, torch.float32)) / epsilon
    log_b, log_k = math.log(B), math.log(K)
    for _ in range(n_iters):
        log_q = log_q - log_q.logsumexp(0, keepdim=True) - log_k   # columns sum to 1 / K
        log_q = log_q - log_q.logsumexp(1, keepdim=True) - log_b   # rows sum to 1 / B
    if n_iters == 0:
        log_q = log_q - log_q.logsumexp(1, keepdim=True) - log_b
    return (log_q + log_b).exp().to(dtype)
