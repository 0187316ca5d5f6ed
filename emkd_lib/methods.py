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

EMKD (``emkd_recipe``) trains an ensemble of N BERT4Rec networks
(``ensemble.EnsembleBERT4Rec``) on M masked views per sequence with the losses
of ``losses.py``, and scores by averaging the networks' [mask] logits.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import losses
from .data import SequenceDataset, sliding_windows
from .encoders import ENCODERS, build_encoder
from .ensemble import EncoderEnsemble, EnsembleBERT4Rec


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


def ensemble_scores(models: Sequence[nn.Module], scorer: Callable[[nn.Module, torch.Tensor], torch.Tensor],
                    ) -> Callable[[torch.Tensor], torch.Tensor]:
    """Score function of an ensemble of independently trained models: the mean
    of ``scorer(model, ids)`` over ``models`` (e.g. ``appended_mask_scores``),
    i.e. the average of their logits, as in EMKD's Eq. 20. Column 0 stays -inf.
    Putting the models in ``eval()`` mode is the caller's job."""
    def score(ids: torch.Tensor) -> torch.Tensor:
        return torch.stack([scorer(model, ids) for model in models]).mean(0)
    return score


# --------------------------------------------------------------------------
# EMKD
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class EMKDParams:
    """EMKD's method-specific hyperparameters (``RunConfig.params`` of method "emkd").

    Defaults are the paper's Beauty/Toys settings. ``kd_temperature=None``
    means "the contrastive temperature tau": the book's Eq. 16 softens the
    logits with tau, and the public code uses ``args.tau`` for both.

    Ablations (Table 4): ``icl``, ``ccl``, ``kd``, ``ap`` switch a term off;
    all of ``icl``, ``ccl``, ``kd`` off is "independent training" (N networks
    that only share their masked views). ``lam = 0`` or ``mu = 0`` switches off
    the terms they weight. A switched-off term is not computed.

    Public-code variants (github.com/hw-du/EMKD), all off = the paper:
    ``positives_in_one_logsumexp`` and ``negatives_only_denominator`` (the
    code's contrastive loss, see ``losses.contrastive_loss_from_similarities``;
    both on = exactly the code), ``ap_at_masked_positions_of_last_view`` (AP at
    the masked positions of the last view instead of every position of the
    original sequence), ``kd_symmetric_detached_teacher`` (each unordered pair
    once, symmetric, teacher detached).
    """

    n_networks: int = 3
    n_views: int = 8
    tau: float = 0.3
    lam: float = 0.01
    mu: float = 0.001
    kd_temperature: float | None = None
    icl: bool = True
    ccl: bool = True
    kd: bool = True
    ap: bool = True
    positives_in_one_logsumexp: bool = False
    negatives_only_denominator: bool = False
    ap_at_masked_positions_of_last_view: bool = False
    kd_symmetric_detached_teacher: bool = False

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(f.default, bool):
                _require(isinstance(value, bool), f"{f.name} must be a bool, got {value!r}")
            elif isinstance(f.default, int):
                _require(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                         f"{f.name} must be an int >= 1, got {value!r}")
            elif value is not None or f.name != "kd_temperature":
                _require(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
                         f"{f.name} must be a finite number, got {value!r}")
        _require(self.tau > 0, f"tau must be > 0, got {self.tau}")
        _require(self.kd_temperature is None or self.kd_temperature > 0,
                 f"kd_temperature must be None (= tau) or > 0, got {self.kd_temperature}")
        _require(self.lam >= 0, f"lam must be >= 0, got {self.lam}")
        _require(self.mu >= 0, f"mu must be >= 0, got {self.mu}")

    @classmethod
    def from_params(cls, params) -> "EMKDParams":
        """From ``RunConfig.params`` (pairs or a dict); unknown names are an error."""
        params = dict(params)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - known)
        _require(not unknown, f"unknown emkd params {unknown}; known: {sorted(known)}")
        return cls(**params)

    @property
    def softmax_temperature(self) -> float:
        return self.tau if self.kd_temperature is None else self.kd_temperature

    def active_terms(self, n_networks: int, has_attributes: bool) -> set[str]:
        """The loss terms a step computes: a term is absent when switched off,
        when its weight is zero, or (CCL, KD) when there is no second network."""
        terms = {"mip"}
        if self.ap and has_attributes:
            terms.add("ap")
        if self.icl and self.lam > 0:
            terms.add("icl")
        if self.ccl and self.lam > 0 and n_networks > 1:
            terms.add("ccl")
        if self.kd and self.mu > 0 and n_networks > 1:
            terms.add("kd")
        return terms


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(f"EMKD: {message}")


def emkd_loss_terms(model: EnsembleBERT4Rec, ids: torch.Tensor, generator: torch.Generator | None,
                    params: EMKDParams, mask_prob: float = 0.15) -> dict[str, torch.Tensor]:
    """The unweighted EMKD loss terms of one batch, keyed "mip", "ap", "icl",
    "ccl", "kd"; only active terms (``EMKDParams.active_terms``) are computed.

    Eq. 3: M views of each sequence are masked independently (BERT's rule);
    the originals and the views run through all N networks as ONE batch of
    (M + 1) B sequences. View m of sequence u is row m * B + u of ``views``.
    """
    B = ids.shape[0]
    originals = ids.repeat(params.n_views, 1)
    views, chosen = cloze_mask(originals, mask_prob, model.mask_token, model.n_items, generator)
    ap_at = chosen[-B:] if params.ap_at_masked_positions_of_last_view else ids > 0
    return _emkd_terms(model, ids, views, chosen, originals[chosen] - 1, params, ap_at)


def emkd_next_item_loss_terms(model: nn.Module, windows: torch.Tensor, generator: torch.Generator | None,
                              params: EMKDParams, mask_prob: float = 0.15) -> dict[str, torch.Tensor]:
    """EMKD on a next-item encoder (the paper's Figure 4; ``ensemble.EncoderEnsemble``).

    Views mask the INPUT ``windows[:, :-1]`` with BERT's rule, as Eq. 3; the
    encoder's own objective replaces MIP: every network predicts the next
    item at every non-padding position of every view ("mip" here is that
    cross entropy), and KD distils those next-item distributions. AP, ICL and
    CCL are Eq. 8-15 unchanged, on the original inputs.
    """
    inputs, targets = windows[:, :-1], windows[:, 1:]
    M = params.n_views
    views, _ = cloze_mask(inputs.repeat(M, 1), mask_prob, model.mask_token, model.n_items, generator)
    predict_at = (inputs > 0).repeat(M, 1)
    return _emkd_terms(model, inputs, views, predict_at, targets.repeat(M, 1)[predict_at] - 1, params,
                       ap_at=inputs > 0)


def _emkd_terms(model, ids, views, predict_at, targets, params: EMKDParams, ap_at) -> dict[str, torch.Tensor]:
    """The terms shared by both forms of EMKD: one forward pass over originals
    and views, item prediction and KD at ``predict_at`` (positions of the view
    rows, targets as column indices), AP at ``ap_at`` of the originals, ICL and
    CCL between originals and views."""
    B, T = ids.shape
    M, N = params.n_views, model.n_networks
    active = params.active_terms(N, model.item_attributes is not None)
    batch = torch.cat([ids, views])
    hidden = model(batch)                                                # (N, (M+1)B, T, d)
    terms = {}

    # Eq. 4-7 and 16-18 share the logits at the predicted positions. Each view's
    # positions are averaged, then views are summed (weights sum to M), as the
    # public code's per-view CrossEntropyLoss / batchmean KL.
    view_of = torch.arange(M, device=ids.device).repeat_interleave(B)[:, None].expand(M * B, T)[predict_at]
    weights = 1.0 / torch.bincount(view_of, minlength=M).to(hidden.dtype)[view_of]
    logits = model.logits(hidden[:, B:][:, predict_at])                  # (N, P, n_items)
    terms["mip"] = losses.masked_item_prediction_loss(logits, targets, weights)
    if "kd" in active:
        code = params.kd_symmetric_detached_teacher
        terms["kd"] = losses.distillation_loss(logits, params.softmax_temperature, detach_teacher=code,
                                               symmetric=code, weights=weights)

    if "ap" in active:  # Eq. 8-11, from the hidden states of the ORIGINAL sequences
        attribute_targets = model.item_attributes[ids[ap_at]].to(hidden.dtype)
        terms["ap"] = losses.attribute_prediction_loss(model.attribute_logits(hidden[:, :B][:, ap_at]),
                                                       attribute_targets)

    if "icl" in active or "ccl" in active:  # Eq. 12-15 on whole flattened T x d matrices
        # Padding rows are zeroed so that they never add to a similarity; the
        # views share their sequence's padding, so rows line up.
        flat = (hidden * (batch > 0)[..., None]).flatten(2)            # (N, (M+1)B, T d)
        h_orig, h_views = flat[:, :B], flat[:, B:].view(N, M, B, -1)
        variant = dict(positives_in_one_logsumexp=params.positives_in_one_logsumexp,
                       negatives_only_denominator=params.negatives_only_denominator)
        if "icl" in active:
            terms["icl"] = losses.intra_network_contrastive_loss(h_orig, h_views, params.tau, **variant)
        if "ccl" in active:
            terms["ccl"] = losses.cross_network_contrastive_loss(h_orig, h_views, params.tau, **variant)
    return terms


def combine_emkd_terms(terms: dict[str, torch.Tensor], params: EMKDParams) -> torch.Tensor:
    """Eq. 19: L = L_MIP + L_AP + lambda (L_ICL + L_CCL) + mu L_KD, over the terms present."""
    weight = {"mip": 1.0, "ap": 1.0, "icl": params.lam, "ccl": params.lam, "kd": params.mu}
    return sum(weight[name] * value for name, value in terms.items())


def emkd_loss(model: EnsembleBERT4Rec, ids: torch.Tensor, generator: torch.Generator | None,
              params: EMKDParams, mask_prob: float = 0.15) -> torch.Tensor:
    """EMKD's total training loss of one batch (Eq. 19)."""
    return combine_emkd_terms(emkd_loss_terms(model, ids, generator, params, mask_prob), params)


def ensemble_appended_mask_scores(model: EnsembleBERT4Rec, ids: torch.Tensor) -> torch.Tensor:
    """Eq. 20: append [mask], average the N networks' logits at that position."""
    mask_col = torch.full_like(ids[:, :1], model.mask_token)
    hidden = model(torch.cat([ids, mask_col], 1))[:, :, -1]               # (N, B, d)
    return with_padding_column(model.logits(hidden).mean(0))


def emkd_recipe(max_len: int, window_step: int | None, mask_prob: float,
                params: EMKDParams = EMKDParams()) -> Recipe:
    """EMKD's recipe: BERT4Rec's training windows (length ``max_len``, every
    ``window_step`` items), the EMKD loss, ensemble [mask] scoring."""
    step = window_step or max_len
    return Recipe(
        make_examples=lambda seqs: sliding_windows(seqs, window=max_len, step=step),
        loss=lambda model, ids, gen: emkd_loss(model, ids, gen, params, mask_prob),
        score=ensemble_appended_mask_scores,
        eval_max_len=max_len - 1,
    )


def ensemble_last_position_scores(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Eq. 20 for next-item encoders: the N networks' logits at the most recent item, averaged."""
    return with_padding_column(model.logits(model(ids)[:, :, -1]).mean(0))


def emkd_next_item_recipe(max_len: int, window_step: int | None, mask_prob: float,
                          params: EMKDParams = EMKDParams()) -> Recipe:
    """EMKD on a next-item encoder: the baseline's windows of ``max_len + 1``
    items, ``emkd_next_item_loss_terms`` combined by Eq. 19, ensemble scoring."""
    step = window_step or max_len
    return Recipe(
        make_examples=lambda seqs: sliding_windows(seqs, window=max_len + 1, step=step),
        loss=lambda model, windows, gen: combine_emkd_terms(
            emkd_next_item_loss_terms(model, windows, gen, params, mask_prob), params),
        score=ensemble_last_position_scores,
        eval_max_len=max_len,
    )


# "emkd-sasrec" etc.: EMKD with that encoder as its parallel networks (Figure 4).
EMKD_ENCODERS = ("gru4rec", "caser", "sasrec")
METHODS = tuple(ENCODERS) + ("emkd",) + tuple(f"emkd-{e}" for e in EMKD_ENCODERS)


def build_method(config, dataset: SequenceDataset) -> tuple[nn.Module, Recipe]:
    """The model and recipe a run config asks for (``config`` is an
    ``experiments.RunConfig``)."""
    if config.method in ENCODERS:
        model = build_encoder(config.method, dataset.n_items, config.max_len, hidden=config.hidden,
                              n_blocks=config.n_blocks, n_heads=config.n_heads, dropout=config.dropout,
                              **dict(config.params))
        return model, baseline_recipe(config.method, config.max_len, config.window_step, config.mask_prob)
    if config.method == "emkd" or config.method.startswith("emkd-"):
        params = EMKDParams.from_params(config.params)
        attributes = dataset.attributes
        multi_hot = None
        if params.ap and attributes is not None and attributes.n_attributes > 0:
            multi_hot = torch.from_numpy(attributes.multi_hot(dtype=np.bool_))
        hyper = dict(hidden=config.hidden, n_blocks=config.n_blocks, n_heads=config.n_heads, dropout=config.dropout)
        if config.method == "emkd":
            model = EnsembleBERT4Rec(params.n_networks, dataset.n_items, config.max_len, item_attributes=multi_hot,
                                     **hyper)
            return model, emkd_recipe(config.max_len, config.window_step, config.mask_prob, params)
        if config.method[5:] in EMKD_ENCODERS:
            model = EncoderEnsemble(config.method[5:], params.n_networks, dataset.n_items, config.max_len,
                                    item_attributes=multi_hot, **hyper)
            return model, emkd_next_item_recipe(config.max_len, config.window_step, config.mask_prob, params)
    raise ValueError(f"unknown method {config.method!r}; known: {sorted(METHODS)}")
