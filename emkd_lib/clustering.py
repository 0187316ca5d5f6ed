"""Clustering: the Sinkhorn-Knopp algorithm for online targets (S^4Rec Eq. 9-11;
SwAV) and offline K-means over all training sequences (ICLRec), ``kmeans``.

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

import numpy as np
import torch


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, n_iters: int = 3) -> torch.Tensor:
    """Eq. 9-11: targets Q (B, K) of a batch's prototype scores (B, K), e.g. ``z mu^T``.

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


def kmeans(points, n_clusters: int, seed: int, n_init: int = 5, max_iter: int = 20,
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Offline K-means (ICLRec's intent clustering): ``(centroids (K', d), assignments (N,))``.

    ``points`` (N, d), a tensor or an array, is clustered in float64 by
    scikit-learn's Lloyd K-means with ``random_state=seed`` (the result is a
    function of ``points`` and ``seed`` only), ``n_init`` restarts from
    ``init="random"`` (K random points) keeping the lowest inertia, and at
    most ``max_iter`` iterations each: the ICLRec code's faiss settings
    (``nredo=5``, ``niter=20``, ``seed=args.seed``). ``K' = min(n_clusters,
    N)``: with fewer points than clusters every point is its own centroid
    (the ICLRec code skips training then and would fail on its empty
    centroids). Centroids are NOT normalised; returned as float32 on the CPU,
    assignments as int64."""
    from sklearn.cluster import KMeans

    x = points.detach().cpu().double().numpy() if isinstance(points, torch.Tensor) else np.asarray(
        points, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"points must be a non-empty (N, d) matrix, got shape {x.shape}")
    if n_clusters < 1:
        raise ValueError(f"n_clusters must be >= 1, got {n_clusters}")
    k = min(int(n_clusters), len(x))
    fitted = KMeans(n_clusters=k, init="random", n_init=n_init, max_iter=max_iter, random_state=int(seed)).fit(x)
    return (torch.from_numpy(fitted.cluster_centers_).float(), torch.from_numpy(fitted.labels_.astype(np.int64)))
