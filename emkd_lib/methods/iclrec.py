"""ICLRec (Chen et al., WWW 2022): intent contrastive learning on SASRec.

``L = L_SR + lambda_scl L_SCL + lambda_icl L_ICL`` (the public code's
"Hybrid" contrast, github.com/salesforce/ICLRec, read for this module).

Once per epoch (``Recipe.on_epoch_start``, before the epoch's first step,
from the first epoch on: the code's ``warm_up_epoches`` 0) every training
sequence is encoded by the current model (eval mode, no gradient, batches of
the run's batch size) and ``clustering.kmeans`` groups the representations
into K intents; the centroids stay fixed for the epoch. The sequences are
the leave-one-out training part of the dataset ``build`` receives (the
subsample when the config has ``max_users``: ``runs.run_data`` subsamples
before ``build``), each as the input of its most recent training window
(its last ``max_len`` items without the last one, which is that window's
target), as the code encodes each user's training input; a user with a
single training item has no input and is not clustered.

K-means seeding: ``random_state`` = the run's seed (``RunConfig.seed``) at
every epoch, as the code's faiss ``Clustering.seed = args.seed``; the
centroids are a function of the model's weights and the seed only, so a
run resumed from a checkpoint clusters exactly as the uninterrupted one.

One step, on a batch of training windows (B, T):

- inputs ``w[:, :-1]``, two views of each (``augment.augment_batch`` with
  crop / mask / reorder, one operator per view drawn uniformly, the code's
  ``Random`` augmentation, its rates as CL4SRec's in this library); originals
  and views run through SASRec as ONE batch, as in CL4SRec and S^4Rec;
- L_SR: next-item cross entropy at every non-padding input position (the
  library's objective; the code uses one sampled negative per position);
- L_SCL: ``losses.nt_xent_loss`` between the views' last-position hidden
  states (CL4SRec's loss here; the code flattens the whole padded output
  sequence of each view instead);
- L_ICL: ``losses.iclrec_intent_loss``. A sequence's intent is the centroid
  nearest (L2) to its ORIGINAL representation, taken from the training pass
  and detached (as the code queries its faiss index with the detached
  ``sequence_output``); its L2-normalised centroid c_u (the code normalises
  after clustering) is the positive of both views, in an NCE whose
  negatives are the other sequences' centroids and views. Sequence
  representations for the intents are the MEAN of the hidden states over
  the non-padding positions (``representation="mean"``, the code's
  ``seq_representation_type``; the code's mean runs over the whole padded
  length 50, which here would depend on the batch's padding).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import losses
from ..analysis import analysis_arrays
from ..augment import CROP_FORMS
from ..batching import pad_left
from ..clustering import kmeans
from ..data.registry import settings_like
from ..data.splits import leave_one_out
from ..models.encoders import build_encoder
from ..typed import bound, check_fields
from .baselines import last_position_scores, next_item_cross_entropy, next_item_loss
from .cl4srec import CL4SRecModel, forward_with_views
from .spec import MethodSpec, Recipe

TERMS = ("scl", "icl")


def _masked_mean(hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    real = (ids > 0).unsqueeze(-1).to(hidden.dtype)
    return (hidden * real).sum(1) / real.sum(1).clamp(min=1)


def _last_position(hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return hidden[:, -1]


# The sequence representations ``ICLRecParams.representation`` names.
REPRESENTATIONS = {"mean": _masked_mean, "last": _last_position}


@dataclass(frozen=True)
class ICLRecParams:
    """ICLRec's hyperparameters (``RunConfig.params`` of method "iclrec").

    Defaults: the public code's scripts (Beauty, Sports, Toys): K = 256
    intents, ``lambda_scl`` 0.1 (``cf_weight``), ``lambda_icl`` 0.1
    (``intent_cf_weight``), temperature ``tau`` 1.0 for both contrasts,
    intents from the epoch start on (``warm_up_epochs`` 0), no de-noising;
    augmentations as the code's (crop keeping 20%: ``crop_delta`` 0.8 removed
    as ONE kept contiguous block, mask 0.7, reorder 0.2). K-means: 5 restarts
    of at most 20 iterations (the code's faiss ``nredo``, ``niter``).

    ``warm_up_epochs``: the first epochs train without L_ICL (and cluster
    nothing). ``de_noise``: same-intent sequences are not negatives of each
    other in L_ICL. Switches ``scl`` / ``icl`` (or a zero weight) remove a
    term; both off is SASRec (with the extra [mask] row, never scored).
    """

    n_intents: int = bound(256, ge=1)
    lambda_scl: float = bound(0.1, ge=0)
    lambda_icl: float = bound(0.1, ge=0)
    tau: float = bound(1.0, gt=0)
    crop_delta: float = bound(0.8, ge=0, lt=1)
    crop_form: str = bound("contiguous", choices=CROP_FORMS)
    mask_gamma: float = bound(0.7, ge=0, le=1)
    reorder_delta: float = bound(0.2, ge=0, le=1)
    representation: str = bound("mean", choices=tuple(REPRESENTATIONS))
    de_noise: bool = False
    warm_up_epochs: int = bound(0, ge=0)
    kmeans_n_init: int = bound(5, ge=1)
    kmeans_iters: int = bound(20, ge=1)
    scl: bool = True
    icl: bool = True

    def __post_init__(self):
        check_fields(self)

    def active_terms(self) -> set[str]:
        """The auxiliary terms switched on and weighted above zero (L_ICL is
        also absent during the warm-up epochs)."""
        weight = {"scl": self.lambda_scl, "icl": self.lambda_icl}
        return {name for name in TERMS if getattr(self, name) and weight[name] > 0}

    def weight(self, term: str) -> float:
        return {"sr": 1.0, "scl": self.lambda_scl, "icl": self.lambda_icl}[term]


def sequence_representation(hidden: torch.Tensor, ids: torch.Tensor, kind: str = "mean") -> torch.Tensor:
    """(B, d) of hidden states (B, T, d) of a left-padded batch ``ids`` (B, T):
    ``"mean"`` over the non-padding positions (a row without items gives
    zeros), ``"last"`` the last position."""
    if kind not in REPRESENTATIONS:
        raise ValueError(f"representation must be one of {tuple(REPRESENTATIONS)}, got {kind!r}")
    return REPRESENTATIONS[kind](hidden, ids)


class Intents:
    """The epoch's K-means intents: raw centroids (to assign a sequence to
    its nearest one, as the code's faiss index does) and their L2-normalised
    copies (the c_u of L_ICL). ``epoch``: the last epoch the hook saw (0: none)."""

    def __init__(self):
        self.centroids: torch.Tensor | None = None
        self.normalised: torch.Tensor | None = None
        self.epoch = 0

    def set(self, centroids: torch.Tensor) -> None:
        self.centroids = centroids
        self.normalised = F.normalize(centroids, dim=1)

    def query(self, representations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(intent ids (B,), normalised centroids (B, d))`` of (B, d)
        representations, nearest centroid in L2; no gradient."""
        reps = representations.detach().to(self.centroids.dtype)
        ids = torch.cdist(reps, self.centroids).argmin(1)
        return ids, self.normalised[ids]


@torch.no_grad()
def encode_sequences(model: nn.Module, inputs: list[np.ndarray], batch_size: int, kind: str = "mean",
                     ) -> torch.Tensor:
    """Representations (N, d) of ``inputs`` (1-D item arrays, at most
    ``max_len - 1`` items) by ``model`` in eval mode, without gradient, in
    batches of ``batch_size`` in order; the model's mode is restored."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        out = []
        for start in range(0, len(inputs), batch_size):
            ids = torch.from_numpy(pad_left(inputs[start:start + batch_size])).to(device)
            out.append(sequence_representation(model(ids), ids, kind).float())
        return torch.cat(out) if out else torch.empty(0, model.encoder.hidden)
    finally:
        model.train(was_training)


def clustering_inputs(train_sequences: list[np.ndarray], max_len: int) -> list[np.ndarray]:
    """Each training sequence as the input of its most recent window:
    its last ``max_len`` items without the last; sequences of one item give none."""
    return [np.asarray(s[-max_len:][:-1]) for s in train_sequences if len(s) >= 2]


def cluster_intents(model: nn.Module, inputs: list[np.ndarray], params: ICLRecParams, seed: int,
                    batch_size: int) -> torch.Tensor | None:
    """The epoch's raw centroids (K', d) on the model's device, or None without inputs."""
    if not inputs:
        return None
    reps = encode_sequences(model, inputs, batch_size, params.representation)
    centroids, _ = kmeans(reps, params.n_intents, seed, params.kmeans_n_init, params.kmeans_iters)
    return centroids.to(next(model.parameters()).device)


def iclrec_loss(model: CL4SRecModel, windows: torch.Tensor, generator, params: ICLRecParams,
                intents: Intents | None = None) -> dict[str, torch.Tensor]:
    """{"loss", "sr", and the active terms of "scl", "icl"} of one batch of
    windows (B, T); each term unweighted, "loss" the weighted total.

    "icl" needs the epoch's ``intents``: it is absent while none are set
    (the warm-up epochs); a call before the hook ever ran is an error."""
    active = params.active_terms()
    if "icl" in active and (intents is None or intents.centroids is None):
        if intents is None or intents.epoch == 0:
            raise RuntimeError("ICLRec's intents are clustered in Recipe.on_epoch_start; call it before the loss")
        active = active - {"icl"}
    if not active:
        sr = next_item_loss(model, windows, generator)
        return {"loss": sr, "sr": sr}
    inputs, targets = windows[:, :-1], windows[:, 1:]
    B = inputs.shape[0]
    batch, hidden = forward_with_views(model, inputs, generator, params)   # (3B, W), (3B, W, d)
    h0 = hidden[:B, batch.shape[1] - inputs.shape[1]:]
    terms = {"sr": next_item_cross_entropy(model, h0, inputs, targets)}
    if "scl" in active:
        z = hidden[B:, -1]
        terms["scl"] = losses.nt_xent_loss(z[:B], z[B:], params.tau)
    if "icl" in active:
        ids, c = intents.query(sequence_representation(h0, inputs, params.representation))
        m = sequence_representation(hidden[B:], batch[B:], params.representation)
        terms["icl"] = losses.iclrec_intent_loss(m[:B], m[B:], c.to(m.dtype), params.tau,
                                                 ids if params.de_noise else None)
    total = sum(params.weight(name) * value for name, value in terms.items())
    return {"loss": total, **terms}


class ICLRecModel(CL4SRecModel):
    """SASRec with [mask] (``CL4SRecModel``) and the epoch's ``intents``, a
    plain attribute, not a parameter or buffer (the hook recomputes them at
    every epoch start, so checkpoints do not carry them)."""

    def __init__(self, encoder: nn.Module):
        super().__init__(encoder)
        self.intents = Intents()


def build_iclrec(config, dataset):
    """The model and recipe of an ICLRec run: SASRec (with [mask]), the
    baseline's windows and scoring, ``iclrec_loss``, and the hook that
    clusters the dataset's training sequences once per epoch into
    ``model.intents`` (see the module docstring)."""
    params, data = config.params, config.data
    encoder = build_encoder("sasrec", dataset.n_items, data.max_len, config.encoder_config, n_extra_tokens=1)
    model = ICLRecModel(encoder)
    inputs = clustering_inputs(leave_one_out(dataset.sequences).train, data.max_len)
    seed, batch_size = config.seed, config.train.batch_size

    def on_epoch_start(epoch: int) -> None:
        model.intents.epoch = epoch
        if "icl" not in params.active_terms() or epoch <= params.warm_up_epochs:
            return
        centroids = cluster_intents(model, inputs, params, seed, batch_size)
        if centroids is not None:
            model.intents.set(centroids)

    return model, Recipe(
        make_examples=lambda seqs: data.examples(seqs, window=data.max_len),
        loss=lambda model, windows, gen: iclrec_loss(model, windows, gen, params, model.intents),
        score=last_position_scores,
        eval_max_len=data.max_len - 1,
        on_epoch_start=on_epoch_start,
        analysis=lambda model, split: analysis_arrays(model, split, data.max_len - 1, intent_clusters(model, params)),
    )


def intent_clusters(model: ICLRecModel, params: ICLRecParams):
    """Each input's nearest intent of the last epoch, on ICLRec's own
    representation (``params.representation``), for the figures."""
    def assign(inputs: list[np.ndarray]) -> torch.Tensor:
        if model.intents.centroids is None:   # intent contrast off, or no epoch clustered
            return torch.full((len(inputs),), -1, dtype=torch.long)
        reps = encode_sequences(model, inputs, 512, params.representation)
        return model.intents.query(reps.to(model.intents.centroids.device))[0]
    return assign


# The code's depth per dataset (its scripts' --num_hidden_layers).
PAPER_BLOCKS = {"beauty": 1, "sports": 2, "toys": 3, "ml-1m": 2}
# The public code's script for ML-1M turns sequence contrast off ("IntentCL");
# a dataset whose settings are ML-1M's (``settings_like``: ML-100K, and one
# registered ``--like ml-1m``) takes the same.
PAPER_LAMBDA_SCL = {"ml-1m": 0.0}


def iclrec_profile_defaults(profile: str, dataset: str) -> dict:
    """ICLRec's changes to a profile.

    ``paper``: the public code's scripts (src/scripts/run_*.sh and main.py's
    defaults): dropout 0.5, batch 256, lr 0.001 (the default), K = 256, both
    weights 0.1, temperature 1; on ML-1M intent contrast only (``lambda_scl``
    0, "IntentCL"); its depth per dataset (``PAPER_BLOCKS``); maximum length
    50, which S^4Rec (Sec. 5.1.4) sets for every baseline (the code's ML-1M
    script uses 200); two heads and d = 64 (the profile's). ``cpu``: the same
    method settings on the cpu profile's fair windows and encoder depth, so
    it compares with the committed SASRec. ``smoke``: 16 intents."""
    if profile == "smoke":
        return {"params__n_intents": 16}
    changes = {"encoder_config__dropout": 0.5, "train__batch_size": 256, "params__n_intents": 256}
    like = settings_like(dataset)
    if like in PAPER_LAMBDA_SCL:
        changes["params__lambda_scl"] = PAPER_LAMBDA_SCL[like]
    if profile == "paper":
        changes["data__max_len"] = 50
        if dataset in PAPER_BLOCKS:
            changes["encoder_config__n_blocks"] = PAPER_BLOCKS[dataset]
    return changes


SPECS = {"iclrec": MethodSpec(name="iclrec", params_type=ICLRecParams, encoders=("sasrec",),
                              build=build_iclrec, profile_defaults=iclrec_profile_defaults, display_name="ICLRec",
                              description="ICLRec: SASRec with sequence and intent (K-means) contrastive learning")}
