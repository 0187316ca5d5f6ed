"""EMKD (Du et al., SIGIR 2023): N parallel networks on M masked views with
masked item prediction, attribute prediction, intra- and cross-network
contrastive learning and logit distillation; ensemble inference (Eq. 20).

Method ``emkd`` runs on BERT4Rec by default (``models.ensemble.EnsembleBERT4Rec``);
with ``encoder="sasrec"``, ``"gru4rec"`` or ``"caser"`` it is the paper's
Figure 4, EMKD on a next-item encoder (``models.ensemble.EncoderEnsemble``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .. import losses
from ..data.registry import settings_like
from ..flops import emkd_macs
from ..models.encoders import is_cloze
from ..models.ensemble import EncoderEnsemble, EnsembleBERT4Rec, average_logits
from ..typed import bound, check_fields
from .baselines import CLOZE_RULES, cloze_mask, with_padding_column
from .spec import MethodSpec, Recipe


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

    Public-code variants (github.com/hw-du/EMKD; ``EMKD_CODE`` switches them
    all on, the defaults are the printed equations): ``positives_in_one_logsumexp``
    and ``contrastive_denominator`` (see
    ``losses.contrastive_loss_from_similarities``; ``True`` and
    ``"negatives-and-self"`` = exactly the code), ``ap_at_masked_positions_of_last_view``
    (AP at the masked positions of the last view instead of every position of
    the original sequence), ``kd_symmetric_detached_teacher`` (each unordered
    pair once, symmetric, teacher detached), ``force_a_masked_position=False``
    (a view in which no position was drawn stays unmasked, as in the code),
    ``shared_initialisation`` (every network's transformer blocks start from
    the same weights, as in the code); with them ``EMKD_CODE`` sets the
    code's training choices: no gradient clipping, and batches drawn at
    random rather than by length (``TrainConfig.batch_order``), so a batch's
    in-batch negatives have every length.

    Architecture (BERT4Rec encoder): ``output_layer="linear"`` is Eq. 5 as
    printed (and the code's separate ``Linear(d, |V|)``), ``"bert4rec"``
    BERT4Rec's tied projection head; ``scale_embeddings=False`` is Eq. 1 as
    printed (``v + p``, as the code), ``True`` BERT4Rec's sqrt(d) scaling.
    """

    n_networks: int = bound(3, ge=1)
    n_views: int = bound(8, ge=1)
    tau: float = bound(0.3, gt=0)
    lam: float = bound(0.01, ge=0)
    mu: float = bound(0.001, ge=0)
    kd_temperature: float | None = bound(None, gt=0)
    icl: bool = True
    ccl: bool = True
    kd: bool = True
    ap: bool = True
    positives_in_one_logsumexp: bool = False
    contrastive_denominator: str = bound("negatives", choices=losses.CONTRASTIVE_DENOMINATORS)
    ap_at_masked_positions_of_last_view: bool = False
    kd_symmetric_detached_teacher: bool = False
    force_a_masked_position: bool = True
    shared_initialisation: bool = False
    output_layer: str = bound("linear", choices=("linear", "bert4rec"))
    scale_embeddings: bool = False
    mask_prob: float = bound(0.15, gt=0, lt=1)
    # What a selected position becomes: "bert" (the library's default, the
    # public code's and BERT4Rec's 80/10/10 rule) or "printed" (Eq. 3: always
    # [mask]); the one place where the default follows the code, not the paper.
    mask_rule: str = bound("bert", choices=CLOZE_RULES)
    # Positions per chunk of the output layer fused with MIP and KD
    # (losses.chunked_item_losses): the (N, P, V) logits are never held, for
    # the paper profile's memory; None forms them at once. The same losses up
    # to the order of floating-point sums, so it is part of a run's identity.
    output_chunk: int | None = bound(None, ge=1)

    def __post_init__(self):
        check_fields(self)

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


# The public code's choices where it departs from the printed equations
# (params) and from our training loop (train); chapter 03 switches them one at
# a time against the paper's defaults.
EMKD_CODE = {"params__positives_in_one_logsumexp": True, "params__contrastive_denominator": "negatives-and-self",
             "params__ap_at_masked_positions_of_last_view": True, "params__kd_symmetric_detached_teacher": True,
             "params__force_a_masked_position": False, "params__shared_initialisation": True,
             "train__grad_clip": None, "train__batch_order": "shuffled"}


def emkd_loss_terms(model: EnsembleBERT4Rec, ids: torch.Tensor, generator: torch.Generator,
                    params: EMKDParams) -> dict[str, torch.Tensor]:
    """The unweighted EMKD loss terms of one batch, keyed "mip", "ap", "icl",
    "ccl", "kd"; only active terms (``EMKDParams.active_terms``) are computed.

    Eq. 3: M views of each sequence are masked independently (BERT's rule);
    the originals and the views run through all N networks as ONE batch of
    (M + 1) B sequences. View m of sequence u is row m * B + u of ``views``.
    """
    B = ids.shape[0]
    originals = ids.repeat(params.n_views, 1)
    views, chosen = cloze_mask(originals, params.mask_prob, model.mask_token, model.n_items, generator,
                               force_one=params.force_a_masked_position, rule=params.mask_rule)
    ap_at = chosen[-B:] if params.ap_at_masked_positions_of_last_view else ids > 0
    return _emkd_terms(model, ids, views, chosen, originals[chosen] - 1, params, ap_at)


def emkd_next_item_loss_terms(model: nn.Module, windows: torch.Tensor, generator: torch.Generator,
                              params: EMKDParams) -> dict[str, torch.Tensor]:
    """EMKD on a next-item encoder (the paper's Figure 4; ``ensemble.EncoderEnsemble``).

    Views mask the INPUT ``windows[:, :-1]`` with BERT's rule, as Eq. 3; the
    encoder's own objective replaces MIP: every network predicts the next
    item at every non-padding position of every view ("mip" here is that
    cross entropy), and KD distils those next-item distributions. AP, ICL and
    CCL are Eq. 8-15 unchanged, on the original inputs.
    """
    inputs, targets = windows[:, :-1], windows[:, 1:]
    M = params.n_views
    views, _ = cloze_mask(inputs.repeat(M, 1), params.mask_prob, model.mask_token, model.n_items, generator,
                         force_one=params.force_a_masked_position, rule=params.mask_rule)
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
    # The public code's KD: each unordered pair once, teacher detached.
    kd_variant = dict(detach_teacher=params.kd_symmetric_detached_teacher,
                      symmetric=params.kd_symmetric_detached_teacher)
    at_views = hidden[:, B:][:, predict_at]
    if params.output_chunk is None:
        logits = model.logits(at_views)                                  # (N, P, n_items)
        terms["mip"] = losses.masked_item_prediction_loss(logits, targets, weights)
        kd = (losses.distillation_loss(logits, params.softmax_temperature, weights=weights, **kd_variant)
              if "kd" in active else None)
    else:
        if not hasattr(model, "output_parts"):
            raise ValueError(f"output_chunk needs EMKD's BERT4Rec ensemble, not {type(model).__name__}")
        terms["mip"], kd = losses.chunked_item_losses(*model.output_parts(at_views), targets, weights,
                                                      params.softmax_temperature, with_kd="kd" in active,
                                                      chunk=params.output_chunk, **kd_variant)
    if "kd" in active:
        terms["kd"] = kd

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
                       denominator=params.contrastive_denominator)
        if "icl" in active:
            terms["icl"] = losses.intra_network_contrastive_loss(h_orig, h_views, params.tau, **variant)
        if "ccl" in active:
            terms["ccl"] = losses.cross_network_contrastive_loss(h_orig, h_views, params.tau, **variant)
    return terms


def combine_emkd_terms(terms: dict[str, torch.Tensor], params: EMKDParams) -> torch.Tensor:
    """Eq. 19: L = L_MIP + L_AP + lambda (L_ICL + L_CCL) + mu L_KD, over the terms present."""
    weight = {"mip": 1.0, "ap": 1.0, "icl": params.lam, "ccl": params.lam, "kd": params.mu}
    return sum(weight[name] * value for name, value in terms.items())


def emkd_loss(model: EnsembleBERT4Rec, ids: torch.Tensor, generator: torch.Generator,
              params: EMKDParams) -> dict[str, torch.Tensor]:
    """EMKD's loss terms of one batch and their total by Eq. 19 (as "loss")."""
    terms = emkd_loss_terms(model, ids, generator, params)
    return {"loss": combine_emkd_terms(terms, params), **terms}


def ensemble_appended_mask_scores(model: EnsembleBERT4Rec, ids: torch.Tensor) -> torch.Tensor:
    """Eq. 20: append [mask], average the N networks' logits at that position."""
    mask_col = torch.full_like(ids[:, :1], model.mask_token)
    hidden = model(torch.cat([ids, mask_col], 1))[:, :, -1]               # (N, B, d)
    return with_padding_column(average_logits(model.logits(hidden)))


def ensemble_last_position_scores(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Eq. 20 for next-item encoders: the N networks' logits at the most recent item, averaged."""
    return with_padding_column(average_logits(model.logits(model(ids)[:, :, -1])))


# Settings of the BERT4Rec ensemble (its output layer, embeddings,
# initialisation and fused output chunks) that a next-item encoder has not.
_BERT4REC_ONLY = ("output_layer", "scale_embeddings", "shared_initialisation", "output_chunk")


def build_emkd(config, dataset):
    """The ensemble and recipe of an EMKD run: windows of ``max_len`` items,
    BERT4Rec's [mask] scoring or a next-item encoder's last-position scoring,
    EMKD's terms combined by Eq. 19, Eq. 20 at inference."""
    params, data = config.params, config.data
    multi_hot = None
    attributes = dataset.attributes
    if params.ap and attributes is not None and attributes.n_attributes > 0:
        multi_hot = torch.from_numpy(attributes.multi_hot(dtype=np.bool_))
    if is_cloze(config.encoder):
        model = EnsembleBERT4Rec(params.n_networks, dataset.n_items, data.max_len, item_attributes=multi_hot,
                                 output_layer=params.output_layer, scale_embeddings=params.scale_embeddings,
                                 **dataclasses.asdict(config.encoder_config))
        if params.shared_initialisation:
            model.share_block_initialisation()
        return model, Recipe(
            make_examples=lambda seqs: data.examples(seqs, window=data.max_len),
            loss=lambda model, ids, gen: emkd_loss(model, ids, gen, params),
            score=ensemble_appended_mask_scores,
            eval_max_len=data.max_len - 1,
        )
    # These shape the BERT4Rec ensemble only; on another encoder they would be
    # ignored, and two runs keyed apart would train the same model.
    bert4rec_only = [name for name in _BERT4REC_ONLY
                     if getattr(params, name) != EMKDParams.__dataclass_fields__[name].default]
    if bert4rec_only:
        raise ValueError(f"EMKDParams.{', '.join(bert4rec_only)} applies only to EMKD's BERT4Rec encoder, "
                         f"not to '{config.encoder}'")
    model = EncoderEnsemble(config.encoder, params.n_networks, dataset.n_items, data.max_len,
                            config=config.encoder_config, item_attributes=multi_hot)

    def loss(model, windows, gen):
        terms = emkd_next_item_loss_terms(model, windows, gen, params)
        return {"loss": combine_emkd_terms(terms, params), **terms}

    return model, Recipe(
        make_examples=lambda seqs: data.examples(seqs, window=data.max_len),
        loss=loss,
        score=ensemble_last_position_scores,
        eval_max_len=data.max_len - 1,
    )


# EMKD's per-dataset settings (the paper's Section 5; book/emkd.md), besides
# the window lengths and steps of ``profiles.FAIR_WINDOWS``. Datasets the
# paper did not use borrow those of the one they are like
# (``DatasetSpec.settings_like``).
PAPER_SETTINGS = {
    "beauty": dict(dropout=0.3, n_heads=2, tau=0.3),
    "toys": dict(dropout=0.3, n_heads=2, tau=0.3),
    "ml-1m": dict(dropout=0.2, n_heads=4, tau=1.0),
}


def emkd_profile_defaults(profile: str, dataset: str) -> dict:
    """EMKD's changes to a profile: its tau and dropout per dataset; the
    windows are the profile's fair rule (``profiles.FAIR_WINDOWS``, EMKD's own
    lengths and steps). For next-item encoders only the ``params__`` changes
    apply (see ``profiles``)."""
    paper = PAPER_SETTINGS.get(dataset) or PAPER_SETTINGS[settings_like(dataset)]
    changes = {"params__tau": paper["tau"]}
    if profile == "smoke":
        return {**changes, "params__n_networks": 2, "params__n_views": 2}
    changes.update({"encoder_config__dropout": paper["dropout"], "encoder_config__n_heads": paper["n_heads"]})
    if profile == "cpu":
        # M = 2 views instead of 8 and two heads, to fit two cores; the
        # paper's batch of 256. book/emkd.md and chapter 03 list the departures.
        changes.update({"params__n_views": 2, "encoder_config__n_heads": 2})
    else:
        changes.update({"params__n_views": 8, "encoder_config__hidden": 256, "train__batch_size": 256,
                        "train__epochs": 250})
    return changes


SPECS = {"emkd": MethodSpec(name="emkd", params_type=EMKDParams, encoders=("bert4rec", "sasrec", "gru4rec", "caser"),
                            build=build_emkd, profile_defaults=emkd_profile_defaults, display_name="EMKD",
                            forward_macs=emkd_macs,
                            description="EMKD: ensemble of networks with contrastive knowledge distillation")}
