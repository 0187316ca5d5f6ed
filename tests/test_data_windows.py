"""``tail_windows`` (the public EMKD code's training windows) and the
``training_windows`` dispatch; neither existed before the restructure
(the old code had only ``sliding_windows``, in emkd_lib.data)."""
from __future__ import annotations

import numpy as np
import pytest

from emkd_lib.batching import sliding_windows, tail_windows, training_windows


def arrs(*seqs):
    return [np.array(s, dtype=np.int64) for s in seqs]


def as_lists(seqs):
    return [s.tolist() for s in seqs]


def test_tail_windows_short_sequence_is_one_window_itself():
    seqs = arrs([1, 2, 3], [4, 5, 6, 7])
    out = tail_windows(seqs, window=5, step=1)
    assert as_lists(out) == [[1, 2, 3], [4, 5, 6, 7]]
    assert out[0] is seqs[0] and out[1] is seqs[1]
    # exactly the window length: also one window
    assert as_lists(tail_windows(arrs([1, 2, 3]), window=3, step=1)) == [[1, 2, 3]]


def test_tail_windows_longer_sequences_by_hand():
    seq = arrs(list(range(1, 8)))  # 1..7
    # ends at 7, 5, 3: every window full length
    assert as_lists(tail_windows(seq, window=3, step=2)) == [[5, 6, 7], [3, 4, 5], [1, 2, 3]]
    # ends at 7, 4; a window ending at 1 would hold one item, so it is not cut
    assert as_lists(tail_windows(seq, window=3, step=3)) == [[5, 6, 7], [2, 3, 4]]
    # step 1: every full window, from the end back
    assert as_lists(tail_windows(arrs([1, 2, 3, 4, 5, 6]), window=4, step=1)) == [
        [3, 4, 5, 6], [2, 3, 4, 5], [1, 2, 3, 4]
    ]
    # step larger than the sequence: only the last window
    assert as_lists(tail_windows(seq, window=3, step=100)) == [[5, 6, 7]]


def test_tail_windows_differs_from_sliding_windows():
    seq = arrs(list(range(1, 8)))
    # sliding windows go on to the short prefixes; tail windows stop at full length
    assert as_lists(sliding_windows(seq, window=3, step=2)) == [[5, 6, 7], [3, 4, 5], [1, 2, 3]]
    assert as_lists(sliding_windows(seq, window=3, step=3)) == [[5, 6, 7], [2, 3, 4]]
    assert as_lists(sliding_windows(seq, window=3, step=1))[-1] == [1, 2]
    assert as_lists(tail_windows(seq, window=3, step=1))[-1] == [1, 2, 3]


def test_tail_windows_several_sequences_in_order_and_as_views():
    seqs = arrs([1, 2], [3, 4, 5, 6, 7], [8, 9, 10])
    out = tail_windows(seqs, window=3, step=2)
    assert as_lists(out) == [[1, 2], [5, 6, 7], [3, 4, 5], [8, 9, 10]]
    assert all(np.shares_memory(w, seqs[1]) for w in out[1:3])


@pytest.mark.parametrize("kwargs, match", [
    (dict(window=0, step=1), "window must be a positive integer"),
    (dict(window=3, step=0), "step must be a positive integer"),
    (dict(window=3, step=1.5), "step must be a positive integer"),
    (dict(window=True, step=1), "window must be a positive integer"),
])
def test_tail_windows_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tail_windows(arrs([1, 2, 3]), **kwargs)


def test_training_windows_dispatch():
    seqs = arrs(list(range(1, 8)), [1, 2])
    assert as_lists(training_windows(seqs, "tail", window=3, step=2)) == as_lists(tail_windows(seqs, 3, 2))
    assert as_lists(training_windows(seqs, "sliding", window=3, step=2)) == as_lists(sliding_windows(seqs, 3, 2))
    with pytest.raises(ValueError, match="unknown window rule 'prefix'; known: sliding, tail"):
        training_windows(seqs, "prefix", window=3, step=1)
