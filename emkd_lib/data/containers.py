"""The two containers every dataset becomes.

A :class:`SequenceDataset` holds one chronological int64 item sequence per
user, item ids dense in ``1..n_items`` (0 is kept free for padding, see
:mod:`emkd_lib.batching`), plus optional item attributes as a CSR matrix
(:class:`ItemAttributes`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

@dataclass
class ItemAttributes:
    """Item -> attribute sets as a CSR matrix.

    Row ``i`` lists the attribute ids (``1..n_attributes``, sorted, unique) of
    item ``i``; row 0 is the padding item and is always empty. CSR instead of a
    dense matrix because Sports has 18k items x 2.3k attributes with ~4
    attributes per item.
    """

    indptr: np.ndarray
    indices: np.ndarray
    n_attributes: int
    names: list[str] | None = None  # names[a - 1] names attribute a, where known

    @property
    def n_items(self) -> int:
        return len(self.indptr) - 2

    def multi_hot(self, dtype=np.float32) -> np.ndarray:
        """Dense (n_items + 1, n_attributes) 0/1 matrix; column a-1 is attribute a."""
        out = np.zeros((len(self.indptr) - 1, self.n_attributes), dtype=dtype)
        rows = np.repeat(np.arange(len(self.indptr) - 1), np.diff(self.indptr))
        out[rows, self.indices - 1] = 1
        return out

    def counts(self) -> np.ndarray:
        """Number of (distinct) attributes per item, shape (n_items + 1,)."""
        return np.diff(self.indptr)


@dataclass
class SequenceDataset:
    """One chronological item sequence per user plus optional attributes."""

    name: str
    user_ids: np.ndarray
    sequences: list[np.ndarray]
    n_items: int
    attributes: ItemAttributes | None
    source: str
    # sha256 of every file the dataset was read from, by file name: part of
    # every run's identity, so an edited file never reuses a stored result.
    files: dict[str, str] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.sequences)

    @property
    def n_actions(self) -> int:
        return int(sum(len(s) for s in self.sequences))


