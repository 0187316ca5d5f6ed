"""Sequence augmentation operators (S^4Rec Section 3.2, Eq. 2-5 and 12; CL4SRec).

Every operator is a pure function of a 1-D array of item ids (no padding)
and an explicit ``numpy.random.Generator``; it returns a new array and never
changes its input. ``numpy_rng(generator)`` turns the ``torch.Generator`` the
training loop passes to a recipe into such a Generator (one draw from it), so
augmentations follow the run's seed and resume bit-identically from a
checkpoint. ``augment_batch`` applies ``two_views`` to every row of a
left-padded batch.

Lengths. ``l_c = floor(delta * n)`` as in S^4Rec Eq. 3-4 (``l_c = delta |S_u|``
rounded down, as ``int()`` in the public ICLRec / CL4SRec code); a small
epsilon keeps ``0.8 * 10`` from rounding down to 7.

The crop rate. S^4Rec prints "the length to crop is set by l_c = delta |S_u|
where empirically delta = 0.8" and Eq. 3 REMOVES the segment ``l .. l + l_c``,
keeping what is before and after it: ``delta = 0.8`` is the fraction removed,
so a crop keeps ``n - floor(0.8 n)`` items, about 20%: close to the ICLRec
code's ``Crop(tao=0.2)``, which KEEPS one contiguous block of ``int(0.2 n)``
items, but one more for most lengths above 5, wherever ``0.8 n`` is not whole
(14 items: 3 kept here, 2 there; 19: 4 and 3; 39: 8 and 7; up to 5 items
both keep one, the code raising its zero to one). ``crop(form="printed")`` (default)
is Eq. 3 as printed (prefix + suffix around a removed block);
``form="contiguous"`` keeps the one contiguous block of ``n - floor(delta n)``
items (CL4SRec's operator, with its keep ratio ``eta = 1 - delta``). Both keep
at least one item for ``delta < 1``.
"""
from __future__ import annotations

import numpy as np
import torch

OPERATORS = ("mask", "crop", "reorder", "insert")
CROP_FORMS = ("printed", "contiguous")


def numpy_rng(generator: torch.Generator | np.random.Generator) -> np.random.Generator:
    """A numpy Generator for the augmentations of one batch.

    A ``torch.Generator`` (CPU or CUDA) gives one 62-bit draw that seeds a
    fresh ``numpy`` Generator, so the augmentations are a function of the
    torch generator's state; a numpy Generator is returned as is. ``None``
    is an error: a global generator would tie the views to whatever else drew
    from it first."""
    if isinstance(generator, np.random.Generator):
        return generator
    if generator is None:
        raise ValueError("numpy_rng: pass the run's torch.Generator (or a numpy Generator), not None")
    device = generator.device
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator, device=device).item())
    return np.random.default_rng(seed)


def _count(rate: float, n: int) -> int:
    return int(np.floor(rate * n + 1e-9))


def _as_items(sequence) -> np.ndarray:
    seq = np.asarray(sequence)
    if seq.ndim != 1:
        raise ValueError(f"an augmentation takes a 1-D item sequence, got shape {seq.shape}")
    return seq


def mask(sequence, rng: np.random.Generator, gamma: float, mask_token: int) -> np.ndarray:
    """Eq. 2: ``floor(gamma n)`` positions, drawn without replacement, become ``mask_token``.

    Same length; the other items are unchanged. (The ICLRec code masks with
    0, its padding id; here the mask is a token of its own, since 0 is
    padding that attention skips.)"""
    seq = _as_items(sequence).copy()
    if not 0 <= gamma <= 1:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    k = _count(gamma, len(seq))
    if k:
        seq[rng.choice(len(seq), size=k, replace=False)] = mask_token
    return seq


def crop(sequence, rng: np.random.Generator, delta: float = 0.8, form: str = "printed") -> np.ndarray:
    """Eq. 3: remove ``l_c = floor(delta n)`` items (``delta = 0.8`` as printed:
    the fraction REMOVED, see the module docstring).

    ``form="printed"``: a contiguous block of ``l_c`` items starting at a
    uniform position is removed; prefix and suffix stay, in order.
    ``form="contiguous"``: only a contiguous block of ``n - l_c`` items, at a
    uniform start, is kept (CL4SRec's crop, keep ratio ``1 - delta``).
    Either way the result is an order-preserving subsequence of ``n - l_c >= 1``
    items."""
    seq = _as_items(sequence)
    if not 0 <= delta < 1:
        raise ValueError(f"delta must be in [0, 1), got {delta}")
    if form not in CROP_FORMS:
        raise ValueError(f"form must be one of {CROP_FORMS}, got {form!r}")
    n = len(seq)
    removed = _count(delta, n)
    if form == "printed":
        start = int(rng.integers(0, n - removed + 1))
        return np.concatenate([seq[:start], seq[start + removed:]])
    kept = n - removed
    start = int(rng.integers(0, n - kept + 1))
    return seq[start:start + kept].copy()


def reorder(sequence, rng: np.random.Generator, delta: float = 0.2) -> np.ndarray:
    """Eq. 4: a contiguous block of ``l_c = floor(delta n)`` items at a uniform
    start is shuffled (``delta = 0.2`` as printed); the rest stays. Same
    length and multiset; a block of fewer than two items changes nothing."""
    seq = _as_items(sequence).copy()
    if not 0 <= delta <= 1:
        raise ValueError(f"delta must be in [0, 1], got {delta}")
    n = len(seq)
    length = _count(delta, n)
    start = int(rng.integers(0, n - length + 1))
    seq[start:start + length] = rng.permutation(seq[start:start + length])
    return seq


def insert(sequence, rng: np.random.Generator, pool, rate: float = 0.4) -> np.ndarray:
    """Eq. 5: ``max(1, floor(rate n))`` times, an item drawn uniformly from
    ``pool`` is inserted at a uniform position (before any item or at the end).

    ``pool``: items of other users' histories; the S^4Rec recipe passes every
    training interaction, so items are drawn in proportion to their
    popularity. The paper gives no rate; 0.4 is CoSeRec's default
    ``insert_rate``. The original items keep their order; the length grows by
    the number of insertions."""
    seq = _as_items(sequence)
    pool = np.asarray(pool)
    if len(pool) == 0:
        raise ValueError("insert needs a non-empty item pool")
    if rate < 0:
        raise ValueError(f"rate must be >= 0, got {rate}")
    out = list(seq)
    for _ in range(max(1, _count(rate, len(seq)))):
        out.insert(int(rng.integers(0, len(out) + 1)), pool[int(rng.integers(0, len(pool)))])
    return np.asarray(out, dtype=seq.dtype)


def apply_operator(name: str, sequence, rng: np.random.Generator, *, mask_token: int | None = None,
                   gamma: float = 0.5, crop_delta: float = 0.8, crop_form: str = "printed",
                   reorder_delta: float = 0.2, pool=None, insert_rate: float = 0.4) -> np.ndarray:
    """One operator of ``OPERATORS`` by name, with its rate."""
    if name == "mask":
        if mask_token is None:
            raise ValueError("mask needs a mask_token")
        return mask(sequence, rng, gamma, mask_token)
    if name == "crop":
        return crop(sequence, rng, crop_delta, crop_form)
    if name == "reorder":
        return reorder(sequence, rng, reorder_delta)
    if name == "insert":
        if pool is None:
            raise ValueError("insert needs an item pool")
        return insert(sequence, rng, pool, insert_rate)
    raise ValueError(f"unknown augmentation {name!r}; known: {OPERATORS}")


def two_views(sequence, rng: np.random.Generator, operators: tuple[str, ...] = OPERATORS,
              **rates) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 12: two views ``g^1(S), g^2(S)``, each operator drawn uniformly and
    independently from ``operators`` (the two may coincide, as in the ICLRec
    code's ``Random``). ``rates``: keyword arguments of ``apply_operator``."""
    if not operators:
        raise ValueError("two_views needs at least one operator")
    views = []
    for _ in range(2):
        name = operators[int(rng.integers(0, len(operators)))]
        views.append(apply_operator(name, sequence, rng, **rates))
    return views[0], views[1]


def augment_batch(ids: torch.Tensor, generator, operators: tuple[str, ...], max_len: int,
                  **rates) -> tuple[torch.Tensor, torch.Tensor]:
    """``two_views`` of every row of a LEFT-padded batch ``ids`` (B, T) (0 = padding).

    Returns two left-padded (B, W) tensors on ``ids``' device, W the longest
    view, at most ``max_len`` (an insertion beyond it keeps the most recent
    ``max_len`` items, as ``batching.pad_left``). Rows are augmented in order
    with one numpy Generator drawn from ``generator`` (``numpy_rng``)."""
    from .batching import pad_left
    rng = numpy_rng(generator)
    rows = ids.detach().cpu().numpy()
    first, second = [], []
    for row in rows:
        v1, v2 = two_views(row[row > 0], rng, operators, **rates)
        first.append(v1)
        second.append(v2)
    width = min(max_len, max(max(len(v) for v in first), max(len(v) for v in second)))
    return (torch.from_numpy(pad_left(first, width)).to(ids.device),
            torch.from_numpy(pad_left(second, width)).to(ids.device))
