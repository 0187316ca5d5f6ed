"""Layers the models share: a dropout whose CPU masks are cheap to draw;
and S^4Rec's gradient reversal layer (Section 4.3, after DANN) and K
trainable intent prototypes mu (Section 4.1)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _UniformMaskDropout(torch.autograd.Function):
    """``x * mask`` with ``mask = (U >= p) / (1 - p)``, ``U ~ Uniform[0, 1)``
    drawn by ``torch.rand_like``; the backward pass is ``grad * mask``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        mask = torch.rand_like(x).ge_(p).mul_(1.0 / (1.0 - p))
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (mask,) = ctx.saved_tensors
        return grad * mask, None


class Dropout(nn.Dropout):
    """``nn.Dropout`` (same parameters, same expectation, same inverted
    scaling) whose masks, on the CPU, come from one uniform draw compared
    with ``p``. PyTorch's CPU dropout draws a Bernoulli mask element by
    element, a visible share of a step (most of it in the feed-forward's
    4d-wide hidden layer); the uniform draw is cheaper (measured in
    ``benchmarks/measured-2026-12-03-cpu-dropout.txt``).
    The masks are the same in distribution, not in value, so a run trained
    with one and resumed with the other is a different run. Elsewhere
    (CUDA's fused kernel), and for p = 1 or in place, it is ``nn.Dropout``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p in (0.0, 1.0) or x.device.type != "cpu" or self.inplace:
            return super().forward(x)
        return _UniformMaskDropout.apply(x, self.p)


class GradientReversal(torch.autograd.Function):
    """Identity forward; backward multiplies the incoming gradient by ``-gamma``.

    Put between the encoder and the head/tail classifier: the classifier
    descends L_Adv while the encoder ascends ``gamma`` L_Adv (S^4Rec Sec. 4.3:
    the encoder minimises L_SR - gamma L_Adv). ``gamma`` gets no gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, gamma: float) -> torch.Tensor:
        ctx.gamma = float(gamma)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.gamma * grad, None


def grad_reverse(x: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """``GradientReversal.apply(x, gamma)``."""
    return GradientReversal.apply(x, gamma)


class Prototypes(nn.Module):
    """K trainable intent prototypes mu (K, d), L2-normalised on use.

    ``forward()`` returns the normalised (K, d) matrix; the raw weights are
    never used directly, so only their directions matter (SwAV normalises the
    weights in place after each step instead; on use is the same geometry
    without touching the optimiser's state)."""

    def __init__(self, n_prototypes: int, dim: int):
        super().__init__()
        if n_prototypes < 1 or dim < 1:
            raise ValueError(f"need n_prototypes >= 1 and dim >= 1, got {n_prototypes}, {dim}")
        self.weight = nn.Parameter(torch.randn(n_prototypes, dim) / dim ** 0.5)

    @property
    def n_prototypes(self) -> int:
        return self.weight.shape[0]

    def forward(self) -> torch.Tensor:
        return F.normalize(self.weight, dim=-1)
