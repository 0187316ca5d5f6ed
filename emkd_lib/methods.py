"""Training objectives and scoring rules of the single-model baselines.

A *recipe* bundles what a method needs around the one training loop in
``train.py``: how training examples are cut from the training sequences, the
loss of one padded batch, and how a trained model scores the next item.

- Next-item prediction (SASRec, GRU4Rec, Caser): a window ``w`` of up to
  ``max_len + 1`` items gives input ``w[:-1]`` and targets ``w[1:]``; full-softmax
  cross entropy at every non-padding position.
- Cloze (BERT4Rec): mask each item with probability ``mask_prob`` (80% [mask],
  10% random item, 10% unchanged); cross entropy at the chosen positions only.
  Inference appends [mask] to the sequence and reads the logits there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import SequenceDataset, sliding_windows
from .encoders import ENCODERS, build_encoder


@dataclass(frozen=True)
class Recipe:
    """What the training loop needs to know about a method."""

    make_examples: Callable[[list[np.ndarray]], list[np.ndarray]]
    loss: Callable[[nn.Module, torch.Tensor, torch.Generator], torch.Tensor]
    score: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    eval_max_len: int  # how many history items the scorer feeds the model


def next_item_loss(model: nn.Module, windows: torch.Tensor, generator=None) -> torch.Tensor:
    """Mean cross entropy of predicting ``windows[:, t+1]`` from ``windows[:, :t+1]``.

    Logits are computed only at positions that carry a loss (non-padding
    inputs), never for the padding columns.
    """
    inputs, targets = windows[:, :-1], windows[:, 1:]
    hidden = model(inputs)
    carries_loss = inputs > 0
    logits = model.logits(hidden[carries_loss])
    return F.cross_entropy(logits, targets[carries_loss] - 1)


def cloze_mask(ids: torch.Tensor, mask_prob: float, mask_token: int, n_items: int,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking rule on a left-padded batch.

    Each non-padding position is chosen with probability ``mask_prob``; a chosen
    position becomes [mask] with probability 0.8, a uniformly random item with
    probability 0.1, and stays unchanged otherwise. A sequence in which nothing
    was chosen gets its last item chosen, so every window carries a loss.

    Returns ``(masked_ids, chosen)`` where ``chosen`` is a bool tensor.
    """
    real = ids > 0
    u = torch.rand(ids.shape, generator=generator, device=ids.device)
    chosen = real & (u < mask_prob)
    nothing = ~chosen.any(1)
    chosen[nothing, -1] = real[nothing, -1]
    action = torch.rand(ids.shape, generator=generator, device=ids.device)
    random_items = torch.randint(1, n_items + 1, ids.shape, generator=generator, device=ids.device)
    masked = torch.where(chosen & (action < 0.8), torch.full_like(ids, mask_token), ids)
    masked = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_items, masked)
    return masked, chosen


def cloze_loss(model: nn.Module, ids: torch.Tensor, generator: torch.Generator | None = None,
               mask_prob: float = 0.15) -> torch.Tensor:
    """Masked item prediction: cross entropy at the chosen positions only."""
    masked, chosen = cloze_mask(ids, mask_prob, model.mask_token, model.n_items, generator)
    hidden = model(masked)
    return F.cross_entropy(model.logits(hidden[chosen]), ids[chosen] - 1)


def with_padding_column(item_scores: torch.Tensor) -> torch.Tensor:
    """Scores over items 1..n -> (B, n + 1) with column 0 (padding) at -inf,
    the layout ``evaluation.evaluate`` expects."""
    pad = torch.full_like(item_scores[:, :1], float("-inf"))
    return torch.cat([pad, item_scores], 1)


def last_position_scores(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Next-item scores from the hidden state of the most recent item."""
    return with_padding_column(model.logits(model(ids)[:, -1]))


def appended_mask_scores(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """BERT4Rec inference: append [mask] and score at that position."""
    mask_col = torch.full_like(ids[:, :1], model.mask_token)
    return with_padding_column(model.logits(model(torch.cat([ids, mask_col], 1))[:, -1]))


def baseline_recipe(encoder: str, max_len: int, window_step: int | None, mask_prob: float) -> Recipe:
    """The recipe of a single-model baseline.

    ``window_step=None`` cuts non-overlapping windows, so every training target
    is seen exactly once per epoch.
    """
    if encoder == "bert4rec":
        step = window_step or max_len
        return Recipe(
            make_examples=lambda seqs: sliding_windows(seqs, window=max_len, step=step),
            loss=lambda model, ids, gen: cloze_loss(model, ids, gen, mask_prob),
            score=appended_mask_scores,
            eval_max_len=max_len - 1,
        )
    step = window_step or max_len
    return Recipe(
        make_examples=lambda seqs: sliding_windows(seqs, window=max_len + 1, step=step),
        loss=next_item_loss,
        score=last_position_scores,
        eval_max_len=max_len,
    )


METHODS = tuple(ENCODERS)


def build_method(config, dataset: SequenceDataset) -> tuple[nn.Module, Recipe]:
    """The model and recipe a run config asks for (``config`` is an
    ``experiments.RunConfig``)."""
    if config.method in ENCODERS:
        model = build_encoder(config.method, dataset.n_items, config.max_len, hidden=config.hidden,
                              n_blocks=config.n_blocks, n_heads=config.n_heads, dropout=config.dropout,
                              **dict(config.params))
        return model, baseline_recipe(config.method, config.max_len, config.window_step, config.mask_prob)
    raise ValueError(f"unknown method {config.method!r}; known: {sorted(METHODS)}")
