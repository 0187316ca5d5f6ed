"""Padding and length-bucketed batching shared by training and evaluation.

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
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
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
