"""S^4Rec: online clustering (Sinkhorn), cluster-aware self-distillation and
head/tail adversarial learning on a SASRec backbone.

Eq. 18: ``L = L_SR + alpha L_Clust + beta1 L_SCL + beta2 L_CKD + lambda L_Adv``.

One step, on a batch of training windows (B, T):

- inputs ``w[:, :-1]``, next-item targets ``w[:, 1:]``; two views of every
  input (Eq. 12, ``augment.augment_batch``: mask / crop / reorder / insert,
  the insert pool being every training interaction). Originals and views run
  through SASRec as ONE batch (left-padded to a common width, which leaves
  every item's position and output unchanged);
- L_SR (Eq. 1) = ``baselines.next_item_loss`` on the originals (computed from
  that shared pass; the same number, tested);
- z_u, z_u^1, z_u^2 = the hidden state at the last position (Eq. 6), L2-
  normalised for every auxiliary term (the paper does not say; SwAV, whose
  clustering it adopts, normalises both z and the prototypes; L_SR uses the
  raw hidden states);
- scores ``z_u mu^T`` (prototypes ``models.layers.Prototypes``, normalised)
  give p_u (Eq. 7) and, by ``clustering.sinkhorn``, the targets q_u (Eq. 9-11,
  no gradient); h(u) = argmax_k p_u^k ("assignments p_u", Sec. 4.2;
  ``intent_from="q"``: argmax q_u);
- L_Clust (Eq. 8), L_SCL = L(z^1, z^2) + L(z, z^1) with the non-assigned
  prototypes as extra negatives (Eq. 13-14), L_CKD = KL over features from
  mu_h(u) to z^1 and z^2 (Eq. 15-16), L_Adv = cross entropy of a linear
  classifier (no bias, Eq. 17) on GRL(z_u) with the head/tail label.

Head/tail labels. The training loop hands ``loss`` only the padded batch,
and windows carry no user id, so the label travels IN the example:
``make_examples`` cuts the usual windows (``DataConfig.examples``, same
windows in the same order as SASRec's) and NEGATES the item ids of every
window of a head user, where head = ``data.splits.split_users_by_length``
(the ``head_fraction`` longest TRAINING sequences, the one definition of the
library). Padding stays 0, so lengths, buckets and batches are unchanged;
``loss`` reads ``head = ids[:, -1] < 0`` (the last column is always an item)
and continues with ``ids.abs()``. Tail windows are the original views, head
windows copies. Every window of a user carries that user's label.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import losses
from ..analysis import analysis_arrays, last_position_states
from ..augment import CROP_FORMS, OPERATORS, augment_batch
from ..clustering import sinkhorn
from ..data.splits import split_users_by_length
from ..models.encoders import build_encoder
from ..models.layers import Prototypes, grad_reverse
from ..typed import bound, check_fields
from .baselines import last_position_scores, next_item_cross_entropy, next_item_loss
from .cl4srec import CL4SRecModel
from .spec import MethodSpec, Recipe

TERMS = ("clust", "scl", "csd", "adv")


@dataclass(frozen=True)
class S4RecParams:
    """S^4Rec's hyperparameters (``RunConfig.params`` of method "s4rec").

    Weights (Eq. 18) default to the paper's best combination (Sec. 5.5):
    ``alpha`` 0.01 (L_Clust), ``beta1`` 0.1 (L_SCL), ``beta2`` 0.1 (L_CKD),
    ``lam`` 1.0 (L_Adv); K = 128 prototypes. Not reported, chosen here:
    ``tau1``, ``tau2``, ``tau3`` (the paper picks each from {0.1, 1.0}): 0.1;
    Sinkhorn ``epsilon`` 0.05 and 3 iterations (SwAV's); GRL ``gamma`` 1.0;
    ``head_fraction`` 0.2 (head = the 20% longest histories); mask ``gamma``
    0.5 and ``insert_rate`` 0.4 (the paper gives neither; CoSeRec's code
    defaults to 0.7 and 0.4, its Beauty script sets the insert rate 0.5). Crop ``crop_delta`` 0.8 and
    reorder ``reorder_delta`` 0.2 are printed (Sec. 3.2; crop REMOVES 0.8 of
    the sequence, see ``augment``).

    Switches: ``clust``, ``scl``, ``csd``, ``adv`` turn a term off (it is not
    computed); a zero weight does too. Table 3's rows are ``TABLE3_ABLATIONS``.
    """

    n_prototypes: int = bound(128, ge=1)
    alpha: float = bound(0.01, ge=0)
    beta1: float = bound(0.1, ge=0)
    beta2: float = bound(0.1, ge=0)
    lam: float = bound(1.0, ge=0)
    tau1: float = bound(0.1, gt=0)
    tau2: float = bound(0.1, gt=0)
    tau3: float = bound(0.1, gt=0)
    sinkhorn_epsilon: float = bound(0.05, gt=0)
    sinkhorn_iters: int = bound(3, ge=0)
    grl_gamma: float = bound(1.0, ge=0)
    head_fraction: float = bound(0.2, gt=0, le=1)
    mask_gamma: float = bound(0.5, ge=0, le=1)
    crop_delta: float = bound(0.8, ge=0, lt=1)
    crop_form: str = bound("printed", choices=CROP_FORMS)
    reorder_delta: float = bound(0.2, ge=0, le=1)
    insert_rate: float = bound(0.4, ge=0)
    operators: str = "mask,crop,reorder,insert"
    intent_from: str = bound("p", choices=("p", "q"))
    scl_with_positive: bool = False
    csd_detach_teacher: bool = True
    clust: bool = True
    scl: bool = True
    csd: bool = True
    adv: bool = True

    def __post_init__(self):
        check_fields(self)
        unknown = [name for name in self.operator_names if name not in OPERATORS]
        if unknown or not self.operator_names:
            raise ValueError(f"S4RecParams: operators must be a comma-separated subset of {OPERATORS}, "
                             f"got {self.operators!r}")

    @property
    def operator_names(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.operators.split(",") if name.strip())

    def active_terms(self) -> set[str]:
        """The auxiliary terms a step computes: switched on and weighted above zero."""
        weight = {"clust": self.alpha, "scl": self.beta1, "csd": self.beta2, "adv": self.lam}
        return {name for name in TERMS if getattr(self, name) and weight[name] > 0}

    def weight(self, term: str) -> float:
        return {"sr": 1.0, "clust": self.alpha, "scl": self.beta1, "csd": self.beta2, "adv": self.lam}[term]


# Table 3's rows as params changes. "CSD" is the two-fold module of Sec. 4.2
# (L_SCL and L_CKD), "GR" the adversary; the full model adds L_Clust.
TABLE3_ABLATIONS = {
    "SR only": {"params__clust": False, "params__scl": False, "params__csd": False, "params__adv": False},
    "SR+CSD": {"params__clust": False, "params__adv": False},
    "SR+CSD+GR": {"params__clust": False},
    "S4Rec w/o CSD": {"params__scl": False, "params__csd": False},
    "S4Rec w/o GR": {"params__adv": False},
    "S4Rec": {},
}


class S4RecModel(CL4SRecModel):
    """SASRec with [mask] for the mask operator (``CL4SRecModel``), K
    prototypes and the head/tail classifier ``W`` (Eq. 17, no bias).

    ``forward`` and ``logits`` are SASRec's, so scoring and evaluation are
    the baseline's."""

    def __init__(self, encoder: nn.Module, n_prototypes: int):
        super().__init__(encoder)
        self.prototypes = Prototypes(n_prototypes, encoder.hidden)
        self.head_tail = nn.Linear(encoder.hidden, 2, bias=False)


def label_windows(sequences: list[np.ndarray], data, head_fraction: float) -> list[np.ndarray]:
    """The training windows of ``data`` (``DataConfig``) with every window of a
    head user negated (see the module docstring); order as ``data.examples``."""
    head = split_users_by_length(sequences, head_fraction)
    out: list[np.ndarray] = []
    for seq, is_head in zip(sequences, head):
        windows = data.examples([seq], window=data.max_len)
        out.extend([-w for w in windows] if is_head else windows)
    return out


def decode_head_labels(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(windows, head)`` of a batch of labelled windows: ids made positive,
    and True for the rows of head users."""
    return ids.abs(), ids[:, -1] < 0


def _left_pad_to(ids: torch.Tensor, width: int) -> torch.Tensor:
    return F.pad(ids, (width - ids.shape[1], 0))


def prototype_scores(z: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Eq. 7 before the temperature and the softmax: ``z_u mu_k^T``, (B, d) x (K, d) -> (B, K).
    ``z`` is Eq. 6's z_u, L2-normalised, as the prototypes are, so a score is a cosine."""
    return z @ prototypes.T


def s4rec_loss(model: S4RecModel, ids: torch.Tensor, generator: torch.Generator, params: S4RecParams,
               pool: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """S^4Rec's terms of one batch of labelled windows and their total (Eq. 18).

    Returns {"loss", "sr", and the active terms of "clust", "scl", "csd",
    "adv"}, each term unweighted and a mean over the batch. ``pool``: items
    for the insert operator (default: the batch's own items)."""
    windows, head = decode_head_labels(ids)
    active = params.active_terms()
    if not active:
        sr = next_item_loss(model, windows, generator)
        return {"loss": sr, "sr": sr}
    inputs, targets = windows[:, :-1], windows[:, 1:]
    B = inputs.shape[0]
    if pool is None:
        pool = inputs[inputs > 0].cpu().numpy()
    view1, view2 = augment_batch(inputs, generator, params.operator_names, model.max_len,
                                 mask_token=model.mask_token, gamma=params.mask_gamma,
                                 crop_delta=params.crop_delta, crop_form=params.crop_form,
                                 reorder_delta=params.reorder_delta, pool=pool, insert_rate=params.insert_rate)
    width = max(inputs.shape[1], view1.shape[1])
    batch = torch.cat([_left_pad_to(t, width) for t in (inputs, view1, view2)])
    hidden = model(batch)                                              # (3B, W, d)

    h0 = hidden[:B, width - inputs.shape[1]:]
    terms = {"sr": next_item_cross_entropy(model, h0, inputs, targets)}

    z = F.normalize(hidden[:, -1], dim=-1)                             # Eq. 6, normalised
    z0, z1, z2 = z[:B], z[B:2 * B], z[2 * B:]
    mu = model.prototypes()                                            # (K, d), normalised
    scores = prototype_scores(z0, mu)
    need_q = "clust" in active or params.intent_from == "q"
    q = sinkhorn(scores, params.sinkhorn_epsilon, params.sinkhorn_iters) if need_q else None
    assigned = (q if params.intent_from == "q" else scores).detach().argmax(1)     # h(u)

    if "clust" in active:
        terms["clust"] = losses.clustering_loss(scores, q, params.tau1)
    if "scl" in active:
        terms["scl"] = (losses.intent_contrastive_loss(z1, z2, params.tau2, mu, assigned,
                                                       params.scl_with_positive)
                        + losses.intent_contrastive_loss(z0, z1, params.tau2, mu, assigned,
                                                         params.scl_with_positive))
    if "csd" in active:
        teacher = mu[assigned]
        terms["csd"] = (losses.cluster_distillation_loss(z1, teacher, params.tau3, params.csd_detach_teacher)
                        + losses.cluster_distillation_loss(z2, teacher, params.tau3, params.csd_detach_teacher))
    if "adv" in active:
        terms["adv"] = losses.head_tail_adversarial_loss(model.head_tail(grad_reverse(z0, params.grl_gamma)),
                                                         head)
    total = sum(params.weight(name) * value for name, value in terms.items())
    return {"loss": total, **terms}


def build_s4rec(config, dataset):
    """The model and recipe of an S^4Rec run: SASRec windows labelled with
    head/tail (``label_windows``), ``s4rec_loss``, SASRec's last-position
    scoring. The insert pool is every item occurrence of the training
    sequences ``make_examples`` receives (no validation or test target)."""
    params, data = config.params, config.data
    encoder = build_encoder("sasrec", dataset.n_items, data.max_len, config.encoder_config, n_extra_tokens=1)
    model = S4RecModel(encoder, params.n_prototypes)
    state: dict = {"pool": None}

    def make_examples(sequences):
        state["pool"] = np.concatenate([np.asarray(s) for s in sequences]) if sequences else None
        return label_windows(sequences, data, params.head_fraction)

    def loss(model, ids, gen):
        # without it the insert operator would draw from the batch alone: other augmentations, silently
        if state["pool"] is None and "insert" in params.operator_names and params.active_terms():
            raise RuntimeError("S^4Rec's insert operator needs the item pool built by Recipe.make_examples")
        return s4rec_loss(model, ids, gen, params, state["pool"])

    return model, Recipe(
        make_examples=make_examples,
        loss=loss,
        score=last_position_scores,
        eval_max_len=data.max_len - 1,
        analysis=lambda model, split: analysis_arrays(model, split, data.max_len - 1, prototype_clusters(model)),
    )


def prototype_clusters(model: S4RecModel):
    """h(u) = argmax_k of z_u mu^T (Eq. 7 before the softmax) of each input, for the figures."""
    def assign(inputs: list[np.ndarray]) -> torch.Tensor:
        with torch.no_grad():
            states = last_position_states(model, inputs, model.max_len)
            return prototype_scores(F.normalize(states, dim=-1), model.prototypes()).argmax(1)
    return assign


def s4rec_profile_defaults(profile: str, dataset: str) -> dict:
    """S^4Rec's changes to a profile.

    ``paper``: Sec. 5.1.4, d = 64 (the profile's), maximum length 50, dropout
    0.5, batch 512, K = 128, lr 0.001 (the default), the weights of Sec. 5.5
    (the params' defaults); two blocks (from {1, 2, 3}) and two heads (the
    profile's). ``cpu``: the same method settings (dropout 0.5, batch 512,
    K = 128) on the cpu profile's fair windows (EMKD's per-dataset length,
    e.g. 15 on Beauty, instead of 50) with one head, so it compares with the
    committed baselines. ``smoke``: 16 prototypes, the smoke profile otherwise."""
    if profile == "smoke":
        return {"params__n_prototypes": 16}
    changes = {"encoder_config__dropout": 0.5, "train__batch_size": 512, "params__n_prototypes": 128}
    if profile == "paper":
        changes["data__max_len"] = 50
    return changes


SPECS = {"s4rec": MethodSpec(name="s4rec", params_type=S4RecParams, encoders=("sasrec",), build=build_s4rec,
                             profile_defaults=s4rec_profile_defaults, display_name="S4Rec",
                             description="S^4Rec: online clustering, cluster-aware self-distillation, "
                                         "head/tail adversary (SASRec)")}
