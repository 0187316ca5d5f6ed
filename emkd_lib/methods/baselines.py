"""The single-model baselines: next-item prediction (SASRec, GRU4Rec, Caser)
and cloze (BERT4Rec), and how each scores the next item.

- Next-item: a window ``w`` of up to ``max_len`` items gives input
  ``w[:-1]`` and targets ``w[1:]``; full-softmax cross entropy at every
  non-padding position.

Every method cuts the same windows of ``max_len`` items (``DataConfig``) and
is tested on the ``max_len - 1`` most recent items (BERT4Rec appends its
[mask] to them), so within a dataset all methods see the same data.
- Cloze: mask each item with probability ``mask_prob`` (80% [mask], 10%
  random item, 10% unchanged); cross entropy at the chosen positions only.
  Inference appends [mask] to the sequence and reads the logits there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..analysis import analysis_arrays
from ..flops import cloze_macs
from ..models.encoders import build_encoder
from ..models.ensemble import average_logits
from ..typed import bound, check_fields
from .spec import MethodSpec, Recipe


# How next_item_loss averages a batch's cross entropies (NextItemParams.loss_reduction).
LOSS_REDUCTIONS = ("positions", "windows")


@dataclass(frozen=True)
class NextItemParams:
    """How the next-item loss weighs a batch's windows.

    ``loss_reduction="positions"``: the mean over every predicted position of
    the batch. In a batch of one length (the default length buckets hold
    nearly one length) every window weighs the same; in a shuffled batch a window weighs in proportion
    to its length. ``"windows"``: each window's mean, then the mean over the
    batch's windows, so every window weighs the same in any batch (a control
    for the batch order's reweighting, chapter 05)."""

    loss_reduction: str = bound("positions", choices=LOSS_REDUCTIONS)

    def __post_init__(self):
        check_fields(self)


@dataclass(frozen=True)
class ClozeParams:
    mask_prob: float = bound(0.15, gt=0, lt=1)

    def __post_init__(self):
        check_fields(self)


def next_item_loss(model: nn.Module, windows: torch.Tensor, generator=None,
                   reduction: str = "positions") -> torch.Tensor:
    """Cross entropy of predicting ``windows[:, t+1]`` from ``windows[:, :t+1]``
    (SASRec's and S^4Rec's L_SR, Eq. 1 of S^4Rec, with a full softmax).

    ``windows`` (B, L), left-padded with 0. ``reduction="positions"``: the mean
    over all B windows' predicted positions; ``"windows"``: the mean over
    windows of each window's mean (``NextItemParams``). Logits are computed
    only at positions that carry a loss (non-padding inputs), never for the
    padding columns.
    """
    inputs, targets = windows[:, :-1], windows[:, 1:]
    hidden = model(inputs)
    if reduction == "positions":
        return next_item_cross_entropy(model, hidden, inputs, targets)
    if reduction != "windows":
        raise ValueError(f"reduction must be one of {LOSS_REDUCTIONS}, got {reduction!r}")
    carries_loss = inputs > 0
    ce = F.cross_entropy(model.logits(hidden[carries_loss]), targets[carries_loss] - 1, reduction="none")
    per_window = carries_loss.sum(1, keepdim=True).expand_as(carries_loss)[carries_loss]
    return (ce / per_window).sum() / windows.shape[0]


def next_item_cross_entropy(model: nn.Module, hidden: torch.Tensor, inputs: torch.Tensor,
                            targets: torch.Tensor) -> torch.Tensor:
    """S^4Rec's L_SR (Eq. 1) on hidden states already computed, for the
    methods that encode the inputs in one batch with their augmented views.
    ``hidden`` (B, T, d) of ``inputs`` (B, T), left-padded with 0; ``targets``
    (B, T) the next item of each position. Full-softmax cross entropy, mean
    over the non-padding positions; logits only where a loss is carried."""
    carries_loss = inputs > 0
    return F.cross_entropy(model.logits(hidden[carries_loss]), targets[carries_loss] - 1)


def next_item_units(windows: torch.Tensor) -> torch.Tensor:
    """How many terms ``next_item_loss`` averages over with ``reduction="positions"``:
    the non-padding inputs (with "windows" it averages over rows)."""
    return (windows[:, :-1] > 0).sum()


CLOZE_RULES = ("bert", "printed")


def cloze_mask(ids: torch.Tensor, mask_prob: float, mask_token: int, n_items: int,
               generator: torch.Generator, force_one: bool = True,
               rule: str = "bert") -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking rule on a left-padded batch.

    Each non-padding position is chosen with probability ``mask_prob``; with
    ``rule="bert"`` a chosen position becomes [mask] with probability 0.8, a
    uniformly random item with probability 0.1, and stays unchanged
    otherwise; with ``rule="printed"`` (EMKD's Eq. 3 as printed) every chosen
    position becomes [mask]. Both rules draw the same random numbers, so one
    seed chooses the same positions under either. With ``force_one`` a
    sequence in which nothing was chosen gets its last item chosen, so every
    window carries a loss (the public EMKD code leaves it unmasked).

    Returns ``(masked_ids, chosen)`` where ``chosen`` is a bool tensor.
    ``generator`` is required (``None`` raises): the masks are a function of
    the run's generator alone.
    """
    if generator is None:
        raise ValueError("cloze_mask: pass the run's torch.Generator, not None")
    real = ids > 0
    u = torch.rand(ids.shape, generator=generator, device=ids.device)
    chosen = real & (u < mask_prob)
    if force_one:
        nothing = ~chosen.any(1)
        chosen[nothing, -1] = real[nothing, -1]
    if rule not in CLOZE_RULES:
        raise ValueError(f"cloze_mask: rule must be one of {CLOZE_RULES}, got {rule!r}")
    action = torch.rand(ids.shape, generator=generator, device=ids.device)
    random_items = torch.randint(1, n_items + 1, ids.shape, generator=generator, device=ids.device)
    if rule == "printed":
        return torch.where(chosen, torch.full_like(ids, mask_token), ids), chosen
    masked = torch.where(chosen & (action < 0.8), torch.full_like(ids, mask_token), ids)
    masked = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_items, masked)
    return masked, chosen


def cloze_loss(model: nn.Module, ids: torch.Tensor, generator: torch.Generator,
               mask_prob: float = 0.15) -> torch.Tensor:
    """Masked item prediction: cross entropy at the chosen positions only.
    ``ids`` (B, T), left-padded; mean over the chosen positions of the batch."""
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


def ensemble_scores(models: Sequence[nn.Module], scorer: Callable[[nn.Module, torch.Tensor], torch.Tensor],
                    ) -> Callable[[torch.Tensor], torch.Tensor]:
    """Score function of an ensemble of independently trained models: the mean
    of ``scorer(model, ids)`` over ``models`` (e.g. ``appended_mask_scores``),
    i.e. the average of their logits, as in EMKD's Eq. 20. Column 0 stays -inf.
    Putting the models in ``eval()`` mode is the caller's job."""
    def score(ids: torch.Tensor) -> torch.Tensor:
        return average_logits(torch.stack([scorer(model, ids) for model in models]))
    return score


def build_next_item(config, dataset):
    model = build_encoder(config.encoder, dataset.n_items, config.data.max_len, config.encoder_config)
    data, reduction = config.data, config.params.loss_reduction
    return model, Recipe(
        make_examples=lambda seqs: data.examples(seqs, window=data.max_len),
        loss=lambda model, windows, gen: {"loss": next_item_loss(model, windows, gen, reduction)},
        score=last_position_scores,
        eval_max_len=data.max_len - 1,
        analysis=lambda model, split: analysis_arrays(model, split, data.max_len - 1),
        loss_units=next_item_units if reduction == "positions" else None,   # None: rows
    )


def build_cloze(config, dataset):
    model = build_encoder("bert4rec", dataset.n_items, config.data.max_len, config.encoder_config)
    data, mask_prob = config.data, config.params.mask_prob
    return model, Recipe(
        make_examples=lambda seqs: data.examples(seqs, window=data.max_len),
        loss=lambda model, ids, gen: {"loss": cloze_loss(model, ids, gen, mask_prob)},
        score=appended_mask_scores,
        eval_max_len=data.max_len - 1,
    )


def _no_defaults(profile: str, dataset: str) -> dict:
    return {}


def _bert4rec_defaults(profile: str, dataset: str) -> dict:
    # Two heads, as in BERT4Rec's and EMKD's setups.
    return {} if profile == "smoke" else {"encoder_config__n_heads": 2}


SPECS = {
    name: MethodSpec(name=name, params_type=NextItemParams, encoders=(name,), build=build_next_item,
                     profile_defaults=_no_defaults, display_name=display_name,
                     description=f"{display_name}: {description}")
    for name, display_name, description in (
        ("sasrec", "SASRec", "causal self-attention, next-item cross entropy"),
        ("gru4rec", "GRU4Rec", "a GRU, next-item cross entropy"),
        ("caser", "Caser", "horizontal and vertical convolutions, next-item cross entropy"),
        ("nextitnet", "NextItNet", "dilated causal convolutions, next-item cross entropy"))
}
SPECS["bert4rec"] = MethodSpec(name="bert4rec", params_type=ClozeParams, encoders=("bert4rec",),
                               build=build_cloze, profile_defaults=_bert4rec_defaults, display_name="BERT4Rec",
                               forward_macs=cloze_macs,
                               description="BERT4Rec: bidirectional self-attention, cloze objective")
