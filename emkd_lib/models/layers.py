"""Layers of S^4Rec: the gradient reversal layer (Section 4.3, after DANN)
and the K trainable intent prototypes mu (Section 4.1)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
