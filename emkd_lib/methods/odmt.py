"""ODMT (Ji et al., MM 2023): ID, text and image branches over one
ID-aware multi-modal transformer, trained with a debiased in-batch loss and
online distillation; and the multi-modal baselines it is measured against,
SASRec+EF (early fusion) and SASRec+LF (late fusion), from the same parts,
and FDSA with content features (``models.multimodal.FDSARecommender``).

One step, on a batch of training windows (B, T) (one window per user under
ODMT's protocol, ``ml-100k-odmt`` / ``beauty-odmt``):

- inputs ``w[:, :-1]``, targets ``w[:, 1:]``; P positions with a target;
- the item tower (``models.multimodal.ItemTower``) embeds each DISTINCT item
  of the batch once, per branch (Eq. 1-3); each branch's user tower (Eq. 4)
  gives H at every position;
- candidates are the P target occurrences; a position's own user sequence
  items other than its target are excluded (Eq. 5's B_h); scores are
  H . D - log pop (Eq. 6), pop = the item's frequency among training targets;
- ``fusion="distill"`` (ODMT): L_ce = sum over branches of Eq. 5 (Eq. 7-8),
  plus w(epoch) times Eq. 9's KL terms (Eq. 10); ``"late"`` (SASRec+LF and
  the "w/o online distillation" ablation): Eq. 5 on the branches' mean
  logits; ``"independent"`` (Table 4's "None": the distillation weight 0):
  the branches' Eq. 5 terms alone, ensembled at inference; ``"early"``
  (SASRec+EF): one user tower over the branches' mean item embedding.

Inference scores every item: each branch's H at the last position against
its item table, averaged over branches; no popularity correction (the
public code's; the correction compensates in-batch sampling only).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .. import losses
from ..models.ensemble import average_logits
from ..models.multimodal import ID_INITIALISATIONS, FDSARecommender, ItemFeatures, MultiModalRecommender
from ..typed import bound, check_fields
from .baselines import with_padding_column
from .spec import MethodSpec, Recipe

FUSIONS = ("distill", "independent", "late", "early")
ID_INITS = tuple(ID_INITIALISATIONS)


@dataclass(frozen=True)
class ODMTParams:
    """ODMT's hyperparameters (``RunConfig.params`` of method "odmt").

    ``temperature`` T and ``rampup_epochs`` alpha (Eq. 9-10): the paper's
    Table 4 sweeps T in 0.1-0.6 and alpha in 10-60; its best on Arts (the
    Amazon dataset, like Beauty) is T = 0.3, alpha = 20, the defaults.
    ``item_layers`` 2 and ``item_heads`` 2: the IMT's (Sec. 4.3; the public
    code's head count equals its layer count). ``item_tower="separate"``:
    one transformer per modality instead of the IMT (the "w/o IMT"
    ablations and the EF/LF baselines). ``use_image=False`` drops the image
    branch (a text-only dataset drops it anyway); ``use_id=False`` the ID
    branch ("w/o ID"). ``id_init``: how the ID table starts (Table 3);
    ``detach_teacher``: see ``losses.odmt_distillation_loss``.
    """

    fusion: str = bound("distill", choices=FUSIONS)
    item_tower: str = bound("imt", choices=("imt", "separate"))
    item_layers: int = bound(2, ge=1)
    item_heads: int = bound(2, ge=1)
    id_mask: bool = True
    id_init: str = bound("concat", choices=ID_INITS)
    use_id: bool = True
    use_image: bool = True
    temperature: float = bound(0.3, gt=0)
    rampup_epochs: int = bound(20, ge=0)
    detach_teacher: bool = False

    def __post_init__(self):
        check_fields(self)


@dataclass(frozen=True)
class LateFusionParams(ODMTParams):
    """SASRec+LF: a feature transformer per modality, a SASRec per branch, the
    loss on the averaged logits (ODMT Sec. 2.1, 4.4)."""

    fusion: str = bound("late", choices=("late",))   # another fusion is another method
    item_tower: str = bound("separate", choices=("imt", "separate"))


@dataclass(frozen=True)
class EarlyFusionParams(ODMTParams):
    """SASRec+EF: a feature transformer per modality, the branches' item
    embeddings averaged into one SASRec (ODMT Sec. 2.1, 4.4)."""

    fusion: str = bound("early", choices=("early",))
    item_tower: str = bound("separate", choices=("imt", "separate"))


@dataclass(frozen=True)
class FDSAParams:
    """FDSA with content features: ``use_image`` adds the image vector to the
    text vector in its feature stream (the paper's FDSA uses both, Sec. 4.4).
    It trains on the same debiased in-batch loss as the others (its one
    tower's loss: ``fusion`` is a constant, not a field)."""

    use_image: bool = True
    fusion = "late"

    def __post_init__(self):
        check_fields(self)


@dataclass(frozen=True)
class SingleInputParams:
    """SASRec on one input type (ODMT Figure 2 (c)-(d)): items enter the user
    tower as their ID embedding (random init: plain SASRec on the debiased
    in-batch loss), or as their text or image features through one feature
    transformer of ``item_layers`` layers (the "w/o IMT" tower with one
    branch). One branch, so the loss is that branch's Eq. 5."""

    input: str = bound("text", choices=("id", "text", "image"))
    item_layers: int = bound(2, ge=1)
    item_heads: int = bound(2, ge=1)
    fusion = "late"

    def __post_init__(self):
        check_fields(self)


# Table 3's variants of ODMT, as params changes (the chapter's ablation grid).
TABLE3_ABLATIONS: dict[str, dict] = {
    "Text Initialization": {"id_init": "text"},
    "Image Initialization": {"id_init": "image"},
    "w/o Initialization": {"id_init": "random"},
    "w/o ID mask": {"id_mask": False},
    "w/o IMT (1)": {"item_tower": "separate"},
    "w/o IMT (2)": {"item_tower": "separate", "item_layers": 1},
    "w/o Online Distillation": {"fusion": "late"},
    "w/o ID": {"use_id": False},
    "ODMT (full framework)": {},
}


def rampup_weight(epoch: int, rampup_epochs: int) -> float:
    """w(alpha) of Eq. 10 at a 0-based ``epoch``: Laine and Aila's ramp-up
    exp(-5 (1 - epoch / alpha)^2) until ``epoch = alpha``, 1 after (and 1
    throughout for alpha = 0). The paper's "0 at epoch 0" is this curve's
    exp(-5) = 0.0067, which the public code also uses."""
    if rampup_epochs == 0:
        return 1.0
    phase = 1.0 - min(max(epoch, 0), rampup_epochs) / rampup_epochs
    return math.exp(-5.0 * phase * phase)


def training_log_popularity(train_sequences, n_items: int) -> torch.Tensor:
    """log pop(item) of Eq. 6, (n_items + 1,): each item's share of the
    training targets (every item of a training sequence but the first). An
    item never a training target is never a training candidate; it gets the
    smallest share so the vector stays finite."""
    counts = np.zeros(n_items + 1, dtype=np.float64)
    for s in train_sequences:
        np.add.at(counts, np.asarray(s[1:]), 1.0)
    counts[counts == 0] = 0.5
    return torch.tensor(np.log(counts / counts.sum()), dtype=torch.float32)


def in_batch_candidates(windows: torch.Tensor):
    """Eq. 5's candidate sets for a batch of windows (B, T + 1).

    Returns ``rows`` (B, T) bool (positions with a target), ``labels`` (P,)
    (each position's own target column: candidates are the P targets in
    position order, so ``labels = arange(P)``), ``targets`` (P,) item ids,
    ``excluded`` (P, P) bool: candidate c is an item of position p's user
    window (inputs or targets) and c is not p's own column."""
    inputs, next_items = windows[:, :-1], windows[:, 1:]
    rows = inputs > 0
    targets = next_items[rows]
    P = targets.shape[0]
    user = torch.arange(windows.shape[0], device=windows.device)[:, None].expand_as(rows)[rows]
    in_window = (windows[:, :, None] == targets[None, None, :]).any(1)      # (B, P)
    labels = torch.arange(P, device=windows.device)
    excluded = in_window[user]
    excluded[labels, labels] = False
    return rows, labels, targets, excluded


def odmt_loss(model: MultiModalRecommender, windows: torch.Tensor, params: ODMTParams, log_pop: torch.Tensor,
              weight: float) -> dict[str, torch.Tensor]:
    """One batch's loss terms: per branch Eq. 5 on Eq. 6's debiased scores
    (``ce_<branch>``, summed as Eq. 7-8) plus ``weight`` (Eq. 10's ramp-up
    w(epoch)) times Eq. 9's KL terms (``kl_<branch>``) for ``fusion="distill"``;
    Eq. 5 on the branches' mean scores for ``"late"`` (the module docstring)."""
    rows, labels, targets, excluded = in_batch_candidates(windows)
    distinct, inverse = torch.unique(windows, return_inverse=True)
    tables = model.item_embeddings(distinct)
    inputs_inverse, target_inverse = inverse[:, :-1], inverse[:, 1:][rows]
    states = model.branch_states(windows[:, :-1], tables, inputs_inverse)
    pop = log_pop.to(windows.device)[targets]
    logits = {m: losses.debiased_in_batch_logits(states[m][rows], tables[m][target_inverse], pop, excluded)
              for m in states}
    if params.fusion in ("distill", "independent"):
        terms = {f"ce_{m}": losses.debiased_in_batch_loss(z, labels) for m, z in logits.items()}
        total = sum(terms.values())
        if params.fusion == "distill" and weight > 0 and len(logits) > 1:
            kl = losses.odmt_distillation_loss(logits, params.temperature, params.detach_teacher)
            terms.update(kl)
            total = total + weight * sum(kl.values())
        return {**terms, "loss": total}
    fused = average_logits(torch.stack(list(logits.values())))
    return {"loss": losses.debiased_in_batch_loss(fused, labels)}


def ensemble_scores(model: MultiModalRecommender, ids: torch.Tensor) -> torch.Tensor:
    """(B, n + 1) scores of every item: the branches' mean (late fusion's and
    ODMT's inference), or the fused tower's; column 0 = -inf."""
    tables = model.item_tables()
    states = model.branch_states(ids, tables)
    scores = average_logits(torch.stack([states[m][:, -1] @ tables[m][1:].T for m in states]))
    return with_padding_column(scores)


def item_space_arrays(model: MultiModalRecommender) -> dict[str, np.ndarray]:
    """Every item's embedding in each user tower's item space, float16
    (``analysis_items_<branch>``, rows = item ids), for the chapter's gallery
    of nearest neighbours."""
    model.eval()
    return {f"analysis_items_{m}": t.float().cpu().numpy().astype(np.float16) for m, t in model.item_tables().items()}


def branches_of(params: ODMTParams, has_image: bool) -> tuple[str, ...]:
    """The branches a run has: ID (unless "w/o ID"), text, image (if the dataset has images)."""
    return (("id",) if params.use_id else ()) + ("text",) + (("image",) if params.use_image and has_image else ())


def on_item_features(builder):
    """A spec's ``build``: the dataset's cached item features (the multimodal
    extra is needed only here), then ``builder(config, dataset, features)``."""
    def build(config, dataset):
        from ..data.features import features_of
        return builder(config, dataset, features_of(config.dataset, progress=True))
    return build


def _inputs(dataset, feature_set) -> tuple[ItemFeatures, torch.Tensor]:
    """Item features as tensors (from a ``FeatureSet`` or as given) and Eq. 6's log popularity."""
    features = feature_set if isinstance(feature_set, ItemFeatures) else \
        ItemFeatures.from_feature_set(feature_set, dataset.n_items)
    return features, training_log_popularity([s[:-2] for s in dataset.sequences], dataset.n_items)


def build_with_features(config, dataset, feature_set):
    """The model and recipe on given item features (``FeatureSet`` or ``ItemFeatures``)."""
    params, enc, data = config.params, config.encoder_config, config.data
    features, log_pop = _inputs(dataset, feature_set)
    branches = branches_of(params, features.has_image)
    if params.id_init == "image" and "image" not in branches:
        raise ValueError(f"ODMTParams: id_init='image' on {config.dataset!r}, which has no image branch")
    model = MultiModalRecommender(
        dataset.n_items, data.max_len, features, branches, early_fusion=params.fusion == "early",
        hidden=enc.hidden, n_blocks=enc.n_blocks, n_heads=enc.n_heads, dropout=enc.dropout,
        item_layers=params.item_layers, item_heads=params.item_heads, joint=params.item_tower == "imt",
        id_mask=params.id_mask, id_init=params.id_init)
    schedule = {"weight": rampup_weight(0, params.rampup_epochs)}

    def on_epoch_start(epoch: int) -> None:   # the loop counts epochs from 1, Eq. 10 from 0
        schedule["weight"] = rampup_weight(epoch - 1, params.rampup_epochs)

    return model, Recipe(
        make_examples=lambda seqs: data.examples(seqs, window=data.max_len),
        loss=lambda model, windows, gen: odmt_loss(model, windows, params, log_pop, schedule["weight"]),
        score=ensemble_scores,
        eval_max_len=data.max_len - 1,
        on_epoch_start=on_epoch_start,
        analysis=lambda model, split: item_space_arrays(model),
    )


def build_single_input_with_features(config, dataset, feature_set):
    """One branch's model and recipe (``SingleInputParams``) on given item features."""
    params, enc, data = config.params, config.encoder_config, config.data
    features, log_pop = _inputs(dataset, feature_set)
    if params.input == "image" and not features.has_image:
        raise ValueError(f"SingleInputParams: input='image' on {config.dataset!r}, which has no images")
    model = MultiModalRecommender(
        dataset.n_items, data.max_len, features, (params.input,), early_fusion=False,
        hidden=enc.hidden, n_blocks=enc.n_blocks, n_heads=enc.n_heads, dropout=enc.dropout,
        item_layers=params.item_layers, item_heads=params.item_heads, joint=False, id_mask=True,
        id_init="random")
    return model, Recipe(
        make_examples=lambda seqs: data.examples(seqs, window=data.max_len),
        loss=lambda model, windows, gen: odmt_loss(model, windows, params, log_pop, 0.0),
        score=ensemble_scores,
        eval_max_len=data.max_len - 1,
    )


def build_fdsa_with_features(config, dataset, feature_set):
    """FDSA's model and recipe on given item features; the loss and scoring are ODMT's (one tower)."""
    params, enc, data = config.params, config.encoder_config, config.data
    features, log_pop = _inputs(dataset, feature_set)
    model = FDSARecommender(dataset.n_items, data.max_len, features, params.use_image, hidden=enc.hidden,
                            n_blocks=enc.n_blocks, n_heads=enc.n_heads, dropout=enc.dropout)
    return model, Recipe(
        make_examples=lambda seqs: data.examples(seqs, window=data.max_len),
        loss=lambda model, windows, gen: odmt_loss(model, windows, params, log_pop, 0.0),
        score=ensemble_scores,
        eval_max_len=data.max_len - 1,
    )


def _defaults(profile: str, dataset: str) -> dict:
    # The batch of 128 is the protocol's (profiles._DATASET), for every method
    # of ODMT's tables; the IMT's two layers and heads are the params' defaults.
    return {}


SPECS = {
    name: MethodSpec(name=name, params_type=params_type, encoders=("sasrec",),
                     build=on_item_features(build_with_features),
                     profile_defaults=_defaults, display_name=display_name,
                     description=f"{display_name}: {description}")
    for name, display_name, params_type, description in (
        ("odmt", "ODMT", ODMTParams, "ID/text/image branches over an ID-aware multi-modal transformer, "
                                     "debiased in-batch loss, online distillation"),
        ("sasrec-lf", "SASRec+LF", LateFusionParams, "per-modality feature transformers, a SASRec per branch, "
                                                     "loss on the averaged logits"),
        ("sasrec-ef", "SASRec+EF", EarlyFusionParams, "per-modality feature transformers, averaged item "
                                                      "embeddings into one SASRec"),
    )
}
SPECS["fdsa"] = MethodSpec(name="fdsa", params_type=FDSAParams, encoders=("sasrec",),
                           build=on_item_features(build_fdsa_with_features),
                           profile_defaults=_defaults, display_name="FDSA",
                           description="FDSA: item and feature self-attention streams, with text and image features")
SPECS["sasrec-single"] = MethodSpec(name="sasrec-single", params_type=SingleInputParams, encoders=("sasrec",),
                                    build=on_item_features(build_single_input_with_features),
                                    profile_defaults=_defaults,
                                    description="SASRec on one input type (ID, text or image), ODMT Figure 2",
                                    label=lambda params: f"SASRec ({params.input})")
