"""The augmentation operators of S^4Rec Sec. 3.2 and CL4SRec."""
from collections import Counter

import numpy as np
import pytest
import torch

from emkd_lib import augment

SEQ = np.arange(1, 11, dtype=np.int64)   # 10 distinct items
MASK = 99


def rng(seed=0):
    return np.random.default_rng(seed)


def is_subsequence(small, big):
    it = iter(big.tolist())
    return all(x in it for x in small.tolist())


def test_mask_replaces_floor_gamma_n_items_and_keeps_the_rest():
    for seed in range(20):
        out = augment.mask(SEQ, rng(seed), 0.3, MASK)
        assert len(out) == 10 and (out == MASK).sum() == 3
        kept = out != MASK
        assert (out[kept] == SEQ[kept]).all()
    assert (augment.mask(SEQ, rng(), 0.0, MASK) == SEQ).all()
    assert (augment.mask(SEQ, rng(), 1.0, MASK) == MASK).all()


@pytest.mark.parametrize("form", augment.CROP_FORMS)
def test_crop_removes_floor_delta_n_items_in_order(form):
    starts = set()
    for seed in range(50):
        out = augment.crop(SEQ, rng(seed), 0.8, form)
        assert len(out) == 2 and is_subsequence(out, SEQ)
        if form == "contiguous":
            assert out[1] == out[0] + 1                     # one block
        starts.add(tuple(out))
    assert len(starts) > 1
    every_outcome = {tuple(augment.crop(SEQ, rng(s), 0.8, form)) for s in range(200)}
    if form == "printed":   # Eq. 3: prefix + suffix around the removed block; the block may be anywhere
        assert every_outcome == {tuple(np.concatenate([SEQ[:l], SEQ[l + 8:]])) for l in range(3)}
    else:                   # CL4SRec: one kept block of 2, at any of the 9 starts
        assert every_outcome == {tuple(SEQ[l:l + 2]) for l in range(9)}


def test_crop_of_fifteen_keeps_three_not_a_rounding_artefact():
    assert len(augment.crop(np.arange(1, 16), rng(), 0.8)) == 3   # 0.8 * 15 = 12 exactly
    assert len(augment.crop(np.arange(1, 11), rng(), 0.8)) == 2   # 0.8 * 10 = 8


def test_reorder_shuffles_one_block_and_keeps_the_multiset():
    changed = 0
    for seed in range(30):
        out = augment.reorder(SEQ, rng(seed), 0.2)
        assert sorted(out) == sorted(SEQ)
        moved = np.nonzero(out != SEQ)[0]
        if len(moved):
            changed += 1
            assert moved.max() - moved.min() < 2              # a block of floor(0.2 * 10) = 2
    assert changed > 0


def test_insert_adds_pool_items_and_keeps_the_original_order():
    pool = np.array([50, 51, 52])
    for seed in range(20):
        out = augment.insert(SEQ, rng(seed), pool, 0.4)
        assert len(out) == 14
        extra = Counter(out.tolist()) - Counter(SEQ.tolist())
        assert sum(extra.values()) == 4 and set(extra) <= set(pool.tolist())
        assert (out[np.isin(out, SEQ)] == SEQ).all()
    assert len(augment.insert(np.array([7]), rng(), pool, 0.4)) == 2   # at least one insertion
    with pytest.raises(ValueError, match="non-empty item pool"):
        augment.insert(SEQ, rng(), [], 0.4)


@pytest.mark.parametrize("n", [1, 2])
def test_short_sequences(n):
    seq = np.arange(1, n + 1)
    for seed in range(10):
        assert len(augment.mask(seq, rng(seed), 0.5, MASK)) == n
        assert (augment.mask(seq, rng(seed), 0.5, MASK) == MASK).sum() == n // 2
        for form in augment.CROP_FORMS:
            out = augment.crop(seq, rng(seed), 0.8, form)
            assert len(out) == n - int(0.8 * n) >= 1 and is_subsequence(out, seq)
        assert (augment.reorder(seq, rng(seed), 0.2) == seq).all()   # block of 0 items
        assert len(augment.insert(seq, rng(seed), [9], 0.4)) == n + 1


def test_operators_do_not_change_their_input():
    seq = SEQ.copy()
    for name in augment.OPERATORS:
        augment.apply_operator(name, seq, rng(), mask_token=MASK, pool=[50])
    assert (seq == SEQ).all()


def test_two_views_are_deterministic_under_a_seed_and_use_every_operator():
    kw = dict(mask_token=MASK, gamma=0.5, pool=[50, 51])
    a = augment.two_views(SEQ, rng(3), **kw)
    b = augment.two_views(SEQ, rng(3), **kw)
    assert all((x == y).all() for x, y in zip(a, b))
    lengths = Counter()
    for seed in range(200):
        for view in augment.two_views(SEQ, rng(seed), **kw):
            kind = ("insert" if len(view) > 10 else "crop" if len(view) < 10
                    else "mask" if (view == MASK).any() else "reorder")
            lengths[kind] += 1
    assert set(lengths) == set(augment.OPERATORS) and min(lengths.values()) > 50
    only = augment.two_views(SEQ, rng(), operators=("reorder",))
    assert all(sorted(v) == sorted(SEQ) for v in only)
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment.two_views(SEQ, rng(), operators=("shuffle",))


def test_augment_batch_is_left_padded_capped_and_follows_the_torch_generator():
    ids = torch.tensor([[0, 0, 3, 4], [1, 2, 3, 4], [0, 0, 0, 7]])
    kw = dict(mask_token=MASK, pool=[50], insert_rate=1.0)
    v1, v2 = augment.augment_batch(ids, torch.Generator().manual_seed(0), ("insert",), max_len=6, **kw)
    assert v1.shape == v2.shape == (3, 6)
    assert ((v1 > 0).sum(1) == torch.tensor([4, 6, 2])).all()     # 4 + 4 insertions, capped at 6
    assert (v1[2, :4] == 0).all()
    w1, _ = augment.augment_batch(ids, torch.Generator().manual_seed(0), ("insert",), max_len=6, **kw)
    assert torch.equal(v1, w1)
    x1, _ = augment.augment_batch(ids, torch.Generator().manual_seed(1), ("mask", "crop"), max_len=6, **kw)
    assert x1.shape[1] <= 4
