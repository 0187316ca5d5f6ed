"""Sinkhorn-Knopp targets (S^4Rec Eq. 9-11) in the log domain."""
import numpy as np
import pytest
import torch

from emkd_lib.clustering import sinkhorn


def scores(B=12, K=5, seed=0, scale=1.0, dtype=torch.float64):
    return scale * torch.randn(B, K, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_rows_sum_to_one_and_columns_to_b_over_k():
    s = scores()
    q = sinkhorn(s, epsilon=0.5, n_iters=3)
    torch.testing.assert_close(q.sum(1), torch.ones(12, dtype=torch.float64))
    assert (q.sum(0) / (12 / 5) - 1).abs().max() < 0.15     # three iterations: close, not exact
    q = sinkhorn(s, epsilon=0.5, n_iters=200)
    torch.testing.assert_close(q.sum(0), torch.full((5,), 12 / 5, dtype=torch.float64))
    assert (q >= 0).all()


def test_equals_the_direct_matrix_scaling_of_eq_11():
    s, eps = scores(), 0.7
    Q = torch.exp(s / eps)
    for _ in range(3):                       # columns to 1/K, then rows to 1/B
        Q = Q / Q.sum(0, keepdim=True) / 5
        Q = Q / Q.sum(1, keepdim=True) / 12
    torch.testing.assert_close(sinkhorn(s, eps, 3), 12 * Q)


def test_no_gradient_and_dtype_kept():
    s = scores(dtype=torch.float32).requires_grad_()
    q = sinkhorn(s, 0.05, 3)
    assert not q.requires_grad and q.dtype == torch.float32


def test_zero_iterations_is_a_softmax():
    s = scores()
    torch.testing.assert_close(sinkhorn(s, 0.5, 0), torch.softmax(s / 0.5, 1))


def test_stable_for_small_epsilon_and_large_scores():
    for dtype in (torch.float32, torch.float16):
        s = scores(B=64, K=16, scale=1000.0, dtype=torch.float32).to(dtype)
        q = sinkhorn(s, epsilon=0.01, n_iters=10)
        assert torch.isfinite(q).all()
        torch.testing.assert_close(q.float().sum(1), torch.ones(64), atol=1e-2, rtol=0)


def test_agrees_with_pot():
    ot = pytest.importorskip("ot")
    s, eps = scores(B=10, K=4, seed=3), 0.5
    B, K = s.shape
    plan = ot.sinkhorn(np.full(B, 1 / B), np.full(K, 1 / K), -s.numpy(), reg=eps,
                       numItermax=100000, stopThr=1e-13)
    torch.testing.assert_close(sinkhorn(s, eps, 2000), torch.from_numpy(B * plan), atol=1e-8, rtol=1e-6)
