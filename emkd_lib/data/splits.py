"""Leave-one-out splits, user subsamples, and the head/tail user split.

The head/tail split by history length has ONE definition here, used by
training (S^4Rec's adversary) and by every analysis.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .containers import SequenceDataset



@dataclass
class LeaveOneOutSplit:
    """Leave-one-out: last item = test target, second to last = validation."""

    train: list[np.ndarray]
    valid_inputs: list[np.ndarray]
    valid_targets: np.ndarray
    test_inputs: list[np.ndarray]
    test_targets: np.ndarray


def leave_one_out(sequences: list[np.ndarray]) -> LeaveOneOutSplit:
    """Standard leave-one-out split; every sequence needs at least 3 items.

    The training sequence equals the validation input: validation predicts
    ``seq[-2]`` from everything before it, and test predicts ``seq[-1]`` from
    everything before *it* (including the validation item).
    """
    for i, s in enumerate(sequences):
        if len(s) < 3:
            raise ValueError(f"sequence {i} has {len(s)} item(s); leave-one-out needs at least 3")
    train = [s[:-2] for s in sequences]
    return LeaveOneOutSplit(
        train=train,
        # same arrays, separate list: appending to one cannot alter the other
        valid_inputs=list(train),
        valid_targets=np.array([s[-2] for s in sequences], dtype=np.int64),
        test_inputs=[s[:-1] for s in sequences],
        test_targets=np.array([s[-1] for s in sequences], dtype=np.int64),
    )


def subsample_users(ds: SequenceDataset, n_users: int, seed: int) -> SequenceDataset:
    """A random subset of ``n_users`` users (in their original order).

    For fast smoke runs. ``n_items`` and ``attributes`` stay those of the full
    dataset so item ids, embedding tables and attribute heads keep their
    shapes. With ``n_users >= ds.n_users`` all users are kept.
    """
    if n_users < 1:
        raise ValueError(f"n_users must be positive, got {n_users}")
    total = len(ds.sequences)
    if n_users >= total:
        keep = np.arange(total)
    else:
        keep = np.sort(np.random.default_rng(seed).choice(total, size=n_users, replace=False))
    return SequenceDataset(
        name=ds.name,
        user_ids=ds.user_ids[keep],
        sequences=[ds.sequences[i] for i in keep],
        n_items=ds.n_items,
        attributes=ds.attributes,
        source=ds.source,
        files=ds.files,
    )


def repeat_target_users(sequences: list[np.ndarray]) -> np.ndarray:
    """Bool per user: the validation or test target also occurs earlier in the history."""
    return np.array([bool(np.isin(s[-2:], s[:-2]).any() or s[-1] == s[-2]) for s in sequences], dtype=bool)


def _top_count(n: int, fraction: float) -> int:
    if not 0 < fraction <= 1:
        raise ValueError(f"head_fraction must be in (0, 1], got {fraction}")
    # Round half up rather than ceil: 0.1 * 30 is 3.0000000000000004 in
    # floating point, and ceil would turn it into 4.
    return min(n, max(1, int(np.floor(fraction * n + 0.5)))) if n else 0


def split_users_by_length(sequences: list[np.ndarray], head_fraction: float = 0.2) -> np.ndarray:
    """Bool per user: True for the ``head_fraction`` longest histories ("head users").

    Same rounding as :func:`head_items`; ties in length are broken by user
    order (earlier users first) so the split is deterministic.
    """
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    k = _top_count(len(lengths), head_fraction)
    order = np.lexsort((np.arange(len(lengths)), -lengths))
    mask = np.zeros(len(lengths), dtype=bool)
    mask[order[:k]] = True
    return mask
