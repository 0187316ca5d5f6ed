"""Describing a dataset: the usual statistics table, item popularity and the
popular-item head."""
from __future__ import annotations

import numpy as np

from .containers import SequenceDataset
from .splits import _top_count, leave_one_out, split_users_by_length


# How the book names each statistic of ``dataset_statistics``.
STATISTIC_LABELS = {"avg_actions_per_user": "actions per user", "avg_actions_per_item": "actions per item",
                    "avg_attributes_per_item": "attributes per item"}


def dataset_statistics(ds: SequenceDataset) -> dict:
    """The usual dataset table row: users, items, actions, averages, sparsity, attributes."""
    users, items = len(ds.sequences), ds.n_items
    actions = ds.n_actions
    attrs = ds.attributes
    has_attrs = attrs is not None
    return {
        "users": users,
        "items": items,
        "actions": actions,
        "avg_actions_per_user": actions / users if users else 0.0,
        "avg_actions_per_item": actions / items if items else 0.0,
        "sparsity": 1.0 - actions / (users * items) if users and items else 1.0,
        "attributes": attrs.n_attributes if has_attrs else None,
        # averaged over all items 1..n_items, including items without attributes
        "avg_attributes_per_item": (
            float(attrs.counts()[1:].mean()) if has_attrs and items else None
        ),
    }


def item_popularity(sequences: list[np.ndarray], n_items: int) -> np.ndarray:
    """Interaction count per item id, shape (n_items + 1,); entry 0 (padding) is 0."""
    flat = np.concatenate(sequences) if len(sequences) else np.zeros(0, dtype=np.int64)
    if len(flat) and (flat.min() < 1 or flat.max() > n_items):
        raise ValueError(f"item ids must lie in 1..{n_items}, found {flat.min()}..{flat.max()}")
    return np.bincount(flat, minlength=n_items + 1).astype(np.int64)


def head_items(popularity: np.ndarray, head_fraction: float = 0.2) -> np.ndarray:
    """Bool mask (n_items + 1,) of the ``head_fraction`` most popular items.

    The Pareto head of S^4Rec-style head/tail analysis: ``head_fraction *
    n_items`` items rounded half up (at least one), most interactions first, ties broken by
    smaller id so the split is deterministic. Entry 0 (padding) is False.
    """
    popularity = np.asarray(popularity)
    n = len(popularity) - 1
    k = _top_count(n, head_fraction)
    ids = np.arange(1, n + 1)
    order = np.lexsort((ids, -popularity[1:]))  # last key is primary
    mask = np.zeros(n + 1, dtype=bool)
    mask[ids[order[:k]]] = True
    return mask


def user_head_rate(sequences: list[np.ndarray], is_head: np.ndarray) -> np.ndarray:
    """Fraction of each user's interactions that hit head items (NaN for empty sequences)."""
    is_head = np.asarray(is_head, dtype=bool)
    return np.array(
        [is_head[s].mean() if len(s) else np.nan for s in sequences], dtype=np.float64
    )


def head_tail_statistics(ds: SequenceDataset, head_fraction: float = 0.2) -> tuple[dict, np.ndarray]:
    """The two head/tail splits of one dataset's training sequences (the
    leave-one-out training part): popular items (``head_items``) and long
    users (``split_users_by_length``, the split S^4Rec's adversary and
    chapter 06 use). Returns a table row and each user's head rate
    (``user_head_rate``)."""
    train = leave_one_out(ds.sequences).train
    is_head = head_items(item_popularity(train, ds.n_items), head_fraction)
    rates = user_head_rate(train, is_head)
    head_users = split_users_by_length(train, head_fraction)
    lengths = np.array([len(s) for s in train])
    row = {"head items": int(is_head.sum()),
           "share of training interactions on head items": float(is_head[np.concatenate(train)].mean()),
           "median user head rate": float(np.nanmedian(rates)),
           "head users": int(head_users.sum()),
           "min training length of a head user": int(lengths[head_users].min()),
           "median training length of a tail user": float(np.median(lengths[~head_users]))}
    return row, rates
