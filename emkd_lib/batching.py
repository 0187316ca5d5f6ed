"""Training windows, padding and length-bucketed batching, shared by training and evaluation.

Convention used everywhere in emkd_lib: item id 0 is padding and sequences are
LEFT-padded, so the most recent item always sits in the last column. A batch is
cut to its own longest sequence, so no compute is spent on padding columns
beyond it.
"""
from __future__ import annotations

import numpy as np


def pad_left(seqs: list[np.ndarray], length: int | None = None) -> np.ndarray:
    """Stack 1-D int arrays into a (B, length) int64 array, left-padded with 0.

    ``length`` defaults to the longest sequence; longer sequences keep their
    most recent ``length`` items.
    """
    if length is None:
        length = max((len(s) for s in seqs), default=0)
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for row, seq in enumerate(seqs):
        tail = seq[-length:] if length else seq[:0]
        if len(tail):
            out[row, length - len(tail):] = tail
    return out


def _check_batch_size(batch_size: int) -> None:
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")


def length_bucketed_batches(
    lengths: np.ndarray,
    batch_size: int,
    shuffle: bool = False,
    rng: np.random.Generator | None = None,
) -> list[np.ndarray]:
    """Split example indices into batches of similar length.

    Examples are sorted by length (ties broken randomly when shuffling) and cut
    into consecutive chunks; with ``shuffle`` the order of the chunks is
    permuted too, so every epoch sees different batches in a different order
    while each batch stays tight.
    """
    _check_batch_size(batch_size)
    lengths = np.asarray(lengths)
    if shuffle:
        if rng is None:
            raise ValueError("shuffle=True needs an explicit rng for reproducibility")
        tie_break = rng.random(len(lengths))
        order = np.lexsort((tie_break, lengths))
    else:
        order = np.argsort(lengths, kind="stable")
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def shuffled_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A random permutation of the examples cut into chunks of ``batch_size``."""
    _check_batch_size(batch_size)
    permutation = rng.permutation(len(lengths))
    return [permutation[i:i + batch_size] for i in range(0, len(permutation), batch_size)]


def _length_buckets(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    return length_bucketed_batches(lengths, batch_size, shuffle=True, rng=rng)


# How an epoch's training windows are cut into batches: "length-buckets"
# (length_bucketed_batches: no compute on padding, but every batch holds
# windows of nearly one length) or "shuffled" (a random permutation cut into
# chunks, as the public code of EMKD, ICLRec and CoSeRec, and RecBole, draw
# them: a batch mixes lengths, so its in-batch negatives, its Sinkhorn
# balance and its head/tail labels do too).
BATCH_ORDERS = {"length-buckets": _length_buckets, "shuffled": shuffled_batches}


def training_batches(lengths: np.ndarray, batch_size: int, order: str, rng: np.random.Generator
                     ) -> list[np.ndarray]:
    """One epoch's batches of example indices, in ``order`` (``BATCH_ORDERS``);
    every example once, in chunks of ``batch_size`` (the last may be smaller)."""
    if order not in BATCH_ORDERS:
        raise ValueError(f"batch order must be one of {tuple(BATCH_ORDERS)}, got {order!r}")
    return BATCH_ORDERS[order](lengths, batch_size, rng)


def _positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def sliding_windows(
    sequences: list[np.ndarray], window: int, step: int, min_length: int = 2
) -> list[np.ndarray]:
    """Cut sequences into windows of at most ``window`` items, ending every ``step`` items.

    For each sequence, windows end at ``len, len - step, len - 2*step, ...``
    while the end is >= ``min_length``; each is ``seq[max(0, end - window):end]``.
    ``step=1`` gives every prefix (truncated to ``window``), the BERT4Rec/EMKD
    augmentation; ``step >= len`` gives just the (truncated) whole sequence;
    ``step = window - 1`` with a shifted next-item objective covers every
    target exactly once. Windows are views into the input arrays (ML-1M with
    step 1 has 1M windows; copies would cost gigabytes).
    """
    _positive_int("window", window)
    _positive_int("step", step)
    _positive_int("min_length", min_length)
    out = []
    for seq in sequences:
        for end in range(len(seq), min_length - 1, -step):
            out.append(seq[max(0, end - window):end])
    return out


def tail_windows(sequences: list[np.ndarray], window: int, step: int) -> list[np.ndarray]:
    """Full-length windows of ``window`` items cut from the end of each
    sequence every ``step`` items (the public EMKD code's rule): windows end
    at ``len, len - step, ...`` while they still hold ``window`` items; a
    sequence shorter than ``window`` gives one window, itself."""
    _positive_int("window", window)
    _positive_int("step", step)
    out = []
    for seq in sequences:
        if len(seq) <= window:
            out.append(seq)
            continue
        for end in range(len(seq), window - 1, -step):
            out.append(seq[end - window:end])
    return out


# The training examples' rules (``DataConfig.windows``).
WINDOW_RULES = {"sliding": sliding_windows, "tail": tail_windows}


def training_windows(sequences: list[np.ndarray], rule: str, window: int, step: int) -> list[np.ndarray]:
    """The training examples of a ``DataConfig``: ``rule`` "sliding"
    (``sliding_windows``) or "tail" (``tail_windows``)."""
    if rule not in WINDOW_RULES:
        raise ValueError(f"unknown window rule {rule!r}; known: {', '.join(WINDOW_RULES)}")
    return WINDOW_RULES[rule](sequences, window=window, step=step)
