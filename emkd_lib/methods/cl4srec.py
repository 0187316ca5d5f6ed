"""CL4SRec (Xie et al., ICDE 2022): SASRec's next-item cross entropy plus a
contrastive loss between two augmented views of every input sequence.

``L = L_SR + lam L_CL``. The views are drawn by ``augment.two_views`` from
crop / mask / reorder (one operator per view, uniformly, as the ICLRec code's
``Random``); each view's representation is SASRec's hidden state at its last
position; ``losses.nt_xent_loss`` contrasts them with the 2B - 2 views of the
other sequences as negatives (dot products over ``tau``, the ICLRec code's
``NCELoss``). The two views run through SASRec in one batch with the
originals, as in S^4Rec.

Defaults: the ICLRec code's CL4SRec settings, ``tau`` 1.0, weight 0.1, crop
keeping about 20% (``crop_delta`` 0.8 removed; CL4SRec's crop keeps ONE
contiguous block: ``crop_form="contiguous"``), mask 0.7, reorder 0.2, the two
views' operators drawn independently (both may be the same); the mask is a
token of its own (the ICLRec code writes its padding id 0). The CL4SRec of
the DuoRec code differs: it keeps 60% on crop, masks 30%, reorders 60% and
always draws two different operators.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import losses
from ..augment import CROP_FORMS, augment_batch
from ..models.encoders import build_encoder
from ..typed import bound, check_fields
from .baselines import last_position_scores, next_item_cross_entropy, next_item_loss
from .spec import MethodSpec, Recipe

CL4SREC_OPERATORS = ("crop", "mask", "reorder")


@dataclass(frozen=True)
class CL4SRecParams:
    """CL4SRec's hyperparameters. ``cl = False`` or ``lam = 0`` is SASRec
    (with the extra [mask] row, which is never scored)."""

    lam: float = bound(0.1, ge=0)
    tau: float = bound(1.0, gt=0)
    crop_delta: float = bound(0.8, ge=0, lt=1)
    crop_form: str = bound("contiguous", choices=CROP_FORMS)
    mask_gamma: float = bound(0.7, ge=0, le=1)
    reorder_delta: float = bound(0.2, ge=0, le=1)
    normalise: bool = False
    cl: bool = True

    def __post_init__(self):
        check_fields(self)

    def active_terms(self) -> set[str]:
        return {"cl"} if self.cl and self.lam > 0 else set()


class CL4SRecModel(nn.Module):
    """SASRec with one extra input token, [mask] (id ``n_items + 1``)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    @property
    def n_items(self) -> int:
        return self.encoder.n_items

    @property
    def max_len(self) -> int:
        return self.encoder.max_len

    @property
    def mask_token(self) -> int:
        return self.encoder.n_items + 1

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.encoder(ids)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.encoder.logits(hidden)


def forward_with_views(model: CL4SRecModel, inputs: torch.Tensor, generator, params
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Two augmented views of each left-padded input (B, T) (crop / mask /
    reorder, ``params``' rates), stacked under the inputs as one left-padded
    batch (3B, W) and run through SASRec in one forward pass: returns the
    batch and its hidden states (3B, W, d). Rows 0..B-1 are the inputs."""
    view1, view2 = augment_batch(inputs, generator, CL4SREC_OPERATORS, model.max_len,
                                 mask_token=model.mask_token, gamma=params.mask_gamma,
                                 crop_delta=params.crop_delta, crop_form=params.crop_form,
                                 reorder_delta=params.reorder_delta)
    width = max(inputs.shape[1], view1.shape[1])
    batch = torch.cat([F.pad(t, (width - t.shape[1], 0)) for t in (inputs, view1, view2)])
    return batch, model(batch)


def cl4srec_loss(model: CL4SRecModel, windows: torch.Tensor, generator, params: CL4SRecParams
                 ) -> dict[str, torch.Tensor]:
    """{"loss", "sr", "cl"} of one batch of windows (B, T); "cl" only when active."""
    if not params.active_terms():
        sr = next_item_loss(model, windows, generator)
        return {"loss": sr, "sr": sr}
    inputs, targets = windows[:, :-1], windows[:, 1:]
    B = inputs.shape[0]
    batch, hidden = forward_with_views(model, inputs, generator, params)
    h0 = hidden[:B, batch.shape[1] - inputs.shape[1]:]
    sr = next_item_cross_entropy(model, h0, inputs, targets)
    z = hidden[B:, -1]
    if params.normalise:
        z = F.normalize(z, dim=-1)
    cl = losses.nt_xent_loss(z[:B], z[B:], params.tau)
    return {"loss": sr + params.lam * cl, "sr": sr, "cl": cl}


def build_cl4srec(config, dataset):
    params, data = config.params, config.data
    encoder = build_encoder("sasrec", dataset.n_items, data.max_len, config.encoder_config, n_extra_tokens=1)
    return CL4SRecModel(encoder), Recipe(
        make_examples=lambda seqs: data.examples(seqs, window=data.max_len),
        loss=lambda model, windows, gen: cl4srec_loss(model, windows, gen, params),
        score=last_position_scores,
        eval_max_len=data.max_len - 1,
    )


def cl4srec_profile_defaults(profile: str, dataset: str) -> dict:
    """``paper``: maximum length 50 (S^4Rec aligns every baseline to it),
    dropout 0.5 and batch 256 (the ICLRec code's); ``cpu``: the same on the
    profile's fair windows; ``smoke``: the smoke profile."""
    if profile == "smoke":
        return {}
    changes = {"encoder_config__dropout": 0.5, "train__batch_size": 256}
    if profile == "paper":
        changes["data__max_len"] = 50
    return changes


SPECS = {"cl4srec": MethodSpec(name="cl4srec", params_type=CL4SRecParams, encoders=("sasrec",),
                               build=build_cl4srec, profile_defaults=cl4srec_profile_defaults, display_name="CL4SRec",
                               description="CL4SRec: SASRec with contrastive learning between augmented views")}
