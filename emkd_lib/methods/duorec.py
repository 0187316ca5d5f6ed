"""DuoRec (Qiu et al., WSDM 2022): contrastive regularisation on SASRec with
model-level (dropout) augmentation and same-target positives.

Read for this module: github.com/RuihongQiu/DuoRec
(recbole/model/sequential_recommender/duorec.py, its dataloader's
``duorec_aug`` and ``DuoRec.yaml``). The code's ``contrast`` modes:

- ``"un"``: ``L = L_SR + lam NCE(h, h')``: h and h' are two forward passes of
  the SAME input, different only by their dropout masks (the unsupervised
  term, "ucl");
- ``"su"``: ``L = L_SR + lam_sem NCE(h, h_s)``: h_s is the pass of a
  same-target positive (the supervised term, "scl");
- ``"us"``: both terms (the paper's UCL + SCL variant);
- ``"us_x"`` (default; DuoRec itself, the repository's ``duorec.sh``):
  ``L = L_SR + lam_sem NCE(h', h_s)``: the second dropout pass against the
  positive's pass, one term ("scl" here, its anchor the second pass).

NCE is ``losses.nt_xent_loss``: the code's ``info_nce``, the positive in the
denominator, the other 2B - 2 representations of the batch as negatives
(same-target rows included, as in the code), dot products over ``tau``
(``similarity="cos"``: cosines). A representation is the hidden state at the
last position (the code's ``gather_indexes(output, len - 1)``).

Same-target positives. The target of a training window ``w`` is its last
item; its positive is the INPUT (``w'[:-1]``) of another training example
``w'`` with the same last item, drawn uniformly (``positives_from="train"``,
the code's: among all training examples; ``"batch"``: among the other rows
of the batch). The code excludes the example itself by index; the loop hands
the recipe only the padded batch, so here every example with the same
content as the row is excluded (the same unless two users share an identical
window). A row without a candidate is its own positive (its input's second
dropout pass), as in the code. Draws come from one numpy Generator per batch
drawn from the loop's ``torch.Generator`` (``augment.numpy_rng``), so they
follow the run's seed.

All passes (originals, second passes, positives) run through SASRec as ONE
batch, left-padded to a common width; dropout masks are drawn per element,
so the rows of the second pass see masks independent of the first's.
L_SR is the library's next-item cross entropy at every non-padding input
position (the code's CE at the last position of every prefix example).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .. import losses
from ..augment import numpy_rng
from ..batching import pad_left
from ..models.encoders import build_encoder
from ..typed import bound, check_fields
from .baselines import last_position_scores, next_item_cross_entropy, next_item_loss
from .spec import MethodSpec, Recipe


@dataclass(frozen=True)
class Contrast:
    """What one of the code's ``contrast`` modes trains (the module docstring)."""
    unsupervised: bool      # NCE(h, h'): "ucl"
    supervised: bool        # NCE(anchor, h_s): "scl"
    second_pass_anchor: bool = False   # the supervised term's anchor is h', not h


CONTRASTS = {"us_x": Contrast(unsupervised=False, supervised=True, second_pass_anchor=True),
             "us": Contrast(unsupervised=True, supervised=True),
             "un": Contrast(unsupervised=True, supervised=False),
             "su": Contrast(unsupervised=False, supervised=True)}
TERMS = ("ucl", "scl")


@dataclass(frozen=True)
class DuoRecParams:
    """DuoRec's hyperparameters (``RunConfig.params`` of method "duorec").

    Defaults: the code's ``DuoRec.yaml`` and ``duorec.sh``: ``lam`` 0.1
    (``lmd``, the unsupervised term's weight), ``lam_sem`` 0.1 (``lmd_sem``,
    the supervised term's), ``tau`` 1.0, dot-product similarity,
    ``contrast="us_x"``, positives from the whole training set. A zero
    weight removes its term; no term is SASRec.
    """

    lam: float = bound(0.1, ge=0)
    lam_sem: float = bound(0.1, ge=0)
    tau: float = bound(1.0, gt=0)
    contrast: str = bound("us_x", choices=tuple(CONTRASTS))
    similarity: str = bound("dot", choices=("dot", "cos"))
    positives_from: str = bound("train", choices=("train", "batch"))

    def __post_init__(self):
        check_fields(self)

    def active_terms(self) -> set[str]:
        mode = CONTRASTS[self.contrast]
        return ({"ucl"} if mode.unsupervised and self.lam > 0 else set()) | \
               ({"scl"} if mode.supervised and self.lam_sem > 0 else set())

    def weight(self, term: str) -> float:
        return {"sr": 1.0, "ucl": self.lam, "scl": self.lam_sem}[term]


def _content_key(items) -> int:
    """A deterministic 64-bit key of an item sequence (the same in every process)."""
    data = np.ascontiguousarray(np.asarray(items, dtype=np.int64)).tobytes()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)


class SameTargetIndex:
    """The training examples grouped by target (last item) and, within a
    target, by content, so that a positive is drawn in O(log n): uniformly
    among the examples with the row's target and a different content."""

    def __init__(self, examples: list[np.ndarray]):
        self.examples = examples
        targets = np.fromiter((e[-1] for e in examples), dtype=np.int64, count=len(examples))
        keys = np.fromiter((_content_key(e) for e in examples), dtype=np.int64, count=len(examples))
        self.order = np.lexsort((keys, targets))
        self.targets, self.keys = targets[self.order], keys[self.order]

    def sample(self, window: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
        """A same-target example (its whole window) for ``window``, or None."""
        lo, hi = np.searchsorted(self.targets, window[-1], "left"), np.searchsorted(self.targets, window[-1], "right")
        key = _content_key(window)
        group = self.keys[lo:hi]
        s, e = np.searchsorted(group, key, "left"), np.searchsorted(group, key, "right")
        n = (hi - lo) - (e - s)
        if n == 0:
            return None
        j = int(rng.integers(0, n))
        j = j if j < s else j + (e - s)
        return self.examples[self.order[lo + j]]


def same_target_positives(windows: torch.Tensor, rng: np.random.Generator,
                          index: SameTargetIndex | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """The positive INPUT of every row of a left-padded batch of windows (B, T)
    and a bool array, True where a same-target example was found (otherwise
    the row's own input). ``index``: draw from the training set
    (``positives_from="train"``); None: from the other rows of the batch."""
    rows = windows.detach().cpu().numpy()
    rows = [r[r > 0] for r in rows]
    positives, found = [], np.zeros(len(rows), dtype=bool)
    if index is None:
        targets = np.array([r[-1] for r in rows])
        for u, r in enumerate(rows):
            others = np.flatnonzero(targets == targets[u])
            others = others[others != u]
            if len(others):
                positives.append(rows[int(others[rng.integers(0, len(others))])][:-1])
                found[u] = True
            else:
                positives.append(r[:-1])
        return positives, found
    for u, r in enumerate(rows):
        other = index.sample(r, rng)
        found[u] = other is not None
        positives.append(np.asarray(other if other is not None else r)[:-1])
    return positives, found


def duorec_contrastive_terms(first: torch.Tensor, second: torch.Tensor | None, positive: torch.Tensor | None,
                             params: DuoRecParams) -> dict[str, torch.Tensor]:
    """The active contrastive terms from the representations (B, d) of the
    first pass ``first`` (h), the second pass of the same inputs ``second``
    (h') and the positives' pass ``positive`` (h_s); unweighted."""
    if params.similarity == "cos":
        first, second, positive = (None if t is None else F.normalize(t, dim=-1) for t in (first, second, positive))
    active, terms = params.active_terms(), {}
    if "ucl" in active:
        terms["ucl"] = losses.nt_xent_loss(first, second, params.tau)
    if "scl" in active:
        anchor = second if CONTRASTS[params.contrast].second_pass_anchor else first
        terms["scl"] = losses.nt_xent_loss(anchor, positive, params.tau)
    return terms


def duorec_loss(model, windows: torch.Tensor, generator, params: DuoRecParams,
                index: SameTargetIndex | None = None) -> dict[str, torch.Tensor]:
    """{"loss", "sr", and the active terms of "ucl", "scl"} of one batch of
    windows (B, T). ``index``: the training set's same-target index (needed
    with ``positives_from="train"``)."""
    active = params.active_terms()
    if not active:
        sr = next_item_loss(model, windows, generator)
        return {"loss": sr, "sr": sr}
    inputs, targets = windows[:, :-1], windows[:, 1:]
    B = inputs.shape[0]
    need_second = "ucl" in active or CONTRASTS[params.contrast].second_pass_anchor
    parts = [inputs, inputs] if need_second else [inputs]
    if "scl" in active:
        if params.positives_from == "train" and index is None:
            raise RuntimeError("DuoRec's positives_from='train' needs the index built by Recipe.make_examples")
        positives, _ = same_target_positives(windows, numpy_rng(generator),
                                             index if params.positives_from == "train" else None)
        parts.append(torch.from_numpy(pad_left(positives)).to(inputs.device))
    width = max(p.shape[1] for p in parts)
    hidden = model(torch.cat([F.pad(p, (width - p.shape[1], 0)) for p in parts]))
    h0 = hidden[:B, width - inputs.shape[1]:]
    terms = {"sr": next_item_cross_entropy(model, h0, inputs, targets)}
    z = hidden[:, -1]
    terms.update(duorec_contrastive_terms(z[:B], z[B:2 * B] if need_second else None,
                                          z[-B:] if "scl" in active else None, params))
    total = sum(params.weight(name) * value for name, value in terms.items())
    return {"loss": total, **terms}


def build_duorec(config, dataset):
    """The model and recipe of a DuoRec run: plain SASRec, the baseline's
    windows and scoring; ``make_examples`` also builds the same-target index
    of the training windows it returns."""
    params, data = config.params, config.data
    model = build_encoder("sasrec", dataset.n_items, data.max_len, config.encoder_config)
    state: dict = {"index": None}

    def make_examples(sequences):
        examples = data.examples(sequences, window=data.max_len)
        if "scl" in params.active_terms() and params.positives_from == "train":
            state["index"] = SameTargetIndex(examples)
        return examples

    return model, Recipe(
        make_examples=make_examples,
        loss=lambda model, windows, gen: duorec_loss(model, windows, gen, params, state["index"]),
        score=last_position_scores,
        eval_max_len=data.max_len - 1,
    )


def duorec_profile_defaults(profile: str, dataset: str) -> dict:
    """DuoRec's changes to a profile.

    ``paper``: the code's ``DuoRec.yaml`` and ``duorec.sh`` (two blocks and
    two heads, d = 64, dropout 0.5, batch 256, lr 0.001, the params'
    defaults) with maximum length 50 (RecBole's default, and S^4Rec's length
    for every baseline, Sec. 5.1.4; S^4Rec's Table 2 does not report DuoRec).
    ``cpu``: the same method settings on the cpu profile's fair windows and
    encoder. ``smoke``: the smoke profile."""
    if profile == "smoke":
        return {}
    changes = {"encoder_config__dropout": 0.5, "train__batch_size": 256}
    if profile == "paper":
        changes.update({"data__max_len": 50, "encoder_config__n_blocks": 2})
    return changes


SPECS = {"duorec": MethodSpec(name="duorec", params_type=DuoRecParams, encoders=("sasrec",), build=build_duorec,
                              profile_defaults=duorec_profile_defaults, display_name="DuoRec",
                              description="DuoRec: SASRec with dropout and same-target contrastive regularisation")}
