"""Tests for emkd_lib.evaluation against brute-force references of the protocol."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from emkd_lib.evaluation import (
    evaluate,
    metrics_from_ranks,
    paired_test,
    per_user_metric,
    popularity_ranks,
    ranks_by_group,
    target_ranks,
)


# --------------------------------------------------------------------------
# Brute-force references: explicit loops, straight from the definition.
# --------------------------------------------------------------------------

def brute_rank(scores_row: np.ndarray, target: int, excluded: set[int]) -> int:
    """rank = #{ranked i != t: s_i > s_t} + #{ranked i != t: s_i == s_t}."""
    s_t = scores_row[target]
    rank = 0
    for item in range(1, len(scores_row)):  # column 0 is never ranked
        if item == target or item in excluded:
            continue
        if scores_row[item] > s_t or scores_row[item] == s_t:
            rank += 1
    return rank


def brute_ranks(scores: np.ndarray, targets, histories, exclude: bool) -> np.ndarray:
    out = []
    for u in range(len(targets)):
        excluded = {int(i) for i in histories[u] if i != 0} if exclude else set()
        out.append(brute_rank(scores[u], int(targets[u]), excluded))
    return np.array(out, dtype=np.int64)


# --------------------------------------------------------------------------
# target_ranks
# --------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("exclude", [True, False])
def test_target_ranks_matches_brute_force_with_ties(seed, exclude):
    rng = np.random.default_rng(seed)
    B, n_items, T = 40, 30, 12
    # Integer scores in a small range: many ties with the target.
    scores = rng.integers(0, 4, size=(B, n_items + 1)).astype(np.float32)
    targets = rng.integers(1, n_items + 1, size=B)
    history = rng.integers(1, n_items + 1, size=(B, T))
    history[rng.random((B, T)) < 0.3] = 0               # padding zeros
    plant = rng.random(B) < 0.5                          # target inside the history
    history[plant, rng.integers(0, T, size=B)[plant]] = targets[plant]

    scores_t = torch.from_numpy(scores)
    before = scores_t.clone()
    got = target_ranks(
        scores_t, torch.from_numpy(targets), torch.from_numpy(history) if exclude else None
    )
    assert got.dtype == torch.long
    expected = brute_ranks(scores, targets, history, exclude)
    np.testing.assert_array_equal(got.numpy(), expected)
    assert torch.equal(scores_t, before), "scores modified in place"


def test_target_ranks_ties_are_pessimistic_and_padding_never_ranked():
    # Column 0 has the highest score but must not count; all ties count above.
    scores = torch.tensor([[100.0, 1.0, 1.0, 1.0, 1.0], [100.0, 0.0, 5.0, 0.0, 0.0]])
    ranks = target_ranks(scores, torch.tensor([2, 2]))
    assert ranks.tolist() == [3, 0]
    # Excluding a tied item lowers the rank; the target itself is never excluded.
    ranks = target_ranks(scores, torch.tensor([2, 2]), torch.tensor([[0, 1, 2], [0, 0, 2]]))
    assert ranks.tolist() == [2, 0]


def test_target_ranks_rejects_bad_input():
    scores = torch.zeros(2, 5)
    with pytest.raises(ValueError, match=r"^targets must be item ids in 1\.\.4$"):
        target_ranks(scores, torch.tensor([1, 5]))       # 5 > n_items = 4
    with pytest.raises(ValueError, match=r"^targets must be item ids in 1\.\.4$"):
        target_ranks(scores, torch.tensor([0, 1]))       # 0 is padding
    nan_scores = scores.clone()
    nan_scores[0, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        target_ranks(nan_scores, torch.tensor([1, 1]))


# --------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------

def test_metrics_from_ranks_hand_computed():
    ranks = np.array([0, 1, 4, 9, 25])
    m = metrics_from_ranks(ranks)
    assert list(m) == ["HR@5", "NDCG@5", "HR@10", "NDCG@10", "HR@20", "NDCG@20"]
    l2 = math.log2
    assert m["HR@5"] == pytest.approx(3 / 5)
    assert m["NDCG@5"] == pytest.approx((1 + 1 / l2(3) + 1 / l2(6)) / 5)
    assert m["HR@10"] == pytest.approx(4 / 5)
    assert m["NDCG@10"] == pytest.approx((1 + 1 / l2(3) + 1 / l2(6) + 1 / l2(11)) / 5)
    assert m["HR@20"] == pytest.approx(4 / 5)
    assert m["NDCG@20"] == pytest.approx(m["NDCG@10"])
    assert list(metrics_from_ranks(ranks, ks=(1,))) == ["HR@1", "NDCG@1"]
    assert metrics_from_ranks(ranks, ks=(1,))["NDCG@1"] == pytest.approx(1 / 5)


def test_metrics_from_scores_match_top_k_lists_built_by_sorting():
    """HR@k and NDCG@k the way a recommender is read: sort every rankable item
    (not item 0, not the user's history) by score, cut the top k, and look
    for the target; NDCG@k = 1 / log2(position + 2) with one relevant item."""
    rng = np.random.default_rng(7)
    B, n_items, T = 60, 40, 6
    scores = rng.standard_normal((B, n_items + 1)).astype(np.float32)   # no ties
    targets = rng.integers(1, n_items + 1, size=B)
    history = rng.integers(1, n_items + 1, size=(B, T))
    history[history == targets[:, None]] = 0             # the common protocol: the target is never in the history
    ranks = target_ranks(torch.from_numpy(scores), torch.from_numpy(targets), torch.from_numpy(history))
    got = metrics_from_ranks(ranks.numpy(), ks=(1, 5, 10, 20))
    for k in (1, 5, 10, 20):
        hits, gains = [], []
        for u in range(B):
            rankable = [i for i in range(1, n_items + 1) if i not in set(history[u].tolist())]
            top = sorted(rankable, key=lambda i: -scores[u, i])[:k]
            hits.append(targets[u] in top)
            gains.append(1 / math.log2(top.index(targets[u]) + 2) if targets[u] in top else 0.0)
        assert got[f"HR@{k}"] == pytest.approx(np.mean(hits))
        assert got[f"NDCG@{k}"] == pytest.approx(np.mean(gains))
    assert 0 < got["HR@10"] < 1                           # the sample exercises hits and misses


def test_per_user_metric_values_and_unknown_name():
    ranks = np.array([0, 1, 4, 9, 25])
    np.testing.assert_allclose(per_user_metric(ranks, "HR@5"), [1, 1, 1, 0, 0])
    np.testing.assert_allclose(
        per_user_metric(ranks, "NDCG@10"), [1, 1 / math.log2(3), 1 / math.log2(6), 1 / math.log2(11), 0]
    )
    for bad in ["MRR@10", "NDCG", "ndcg@10", "HR@0", "HR@x"]:
        with pytest.raises(ValueError, match="unknown metric"):
            per_user_metric(ranks, bad)


def test_ranks_by_group():
    ranks = np.array([0, 30, 4, 9, 25, 1])
    groups = np.array(["head", "tail", "head", "tail", "tail", "head"])
    out = ranks_by_group(ranks, groups, ks=(5, 10))
    assert set(out) == {"head", "tail"}
    assert out["head"] == metrics_from_ranks(np.array([0, 4, 1]), ks=(5, 10))
    assert out["tail"] == metrics_from_ranks(np.array([30, 9, 25]), ks=(5, 10))
    assert out["head"]["HR@5"] == 1.0 and out["tail"]["HR@10"] == pytest.approx(1 / 3)


# --------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------

N_ITEMS = 25


def make_score_fn(seed: int = 0):
    """Fixed integer item scores plus a term depending on the last input item.

    Integer values give ties; the last-item term makes the ranking depend on
    the (truncated) input, so a wrong user order or a wrong input shows up.
    """
    rng = np.random.default_rng(seed)
    base = torch.from_numpy(rng.integers(0, 5, size=N_ITEMS + 1).astype(np.float32))
    bonus = torch.from_numpy(rng.integers(0, 3, size=(N_ITEMS + 1, N_ITEMS + 1)).astype(np.float32))
    calls = []

    def score_fn(x: torch.Tensor) -> torch.Tensor:
        assert x.dtype == torch.long and x.dim() == 2
        calls.append(x.clone())
        return base[None, :] + bonus[x[:, -1]]

    def reference(model_input_last: np.ndarray) -> np.ndarray:
        return (base[None, :] + bonus[torch.from_numpy(model_input_last)]).numpy()

    return score_fn, reference, calls


def random_users(seed: int, n_users: int = 37, max_seq: int = 15):
    rng = np.random.default_rng(seed)
    inputs = [rng.integers(1, N_ITEMS + 1, size=rng.integers(1, max_seq + 1)) for _ in range(n_users)]
    targets = rng.integers(1, N_ITEMS + 1, size=n_users)
    for u in range(0, n_users, 3):   # some targets also appear in the history
        inputs[u][0] = targets[u]
    return inputs, targets


def brute_evaluate(reference, inputs, targets, max_len, exclude):
    last = np.array([seq[-1] for seq in inputs])  # truncation keeps the last item
    scores = reference(last)
    return brute_ranks(scores, targets, inputs, exclude)


@pytest.mark.parametrize("exclude", [True, False])
@pytest.mark.parametrize("batch_size", [1, 4, 1024])
def test_evaluate_matches_brute_force_in_original_order(exclude, batch_size):
    score_fn, reference, _ = make_score_fn()
    inputs, targets = random_users(1)
    ranks = evaluate(score_fn, inputs, targets, batch_size=batch_size, exclude_history=exclude)
    assert ranks.dtype == np.int64 and ranks.shape == (len(inputs),)
    np.testing.assert_array_equal(ranks, brute_evaluate(reference, inputs, targets, None, exclude))


def test_evaluate_batch_size_does_not_change_result_and_batches_are_tight():
    score_fn, _, calls = make_score_fn()
    inputs, targets = random_users(2, n_users=50)
    results = [evaluate(score_fn, inputs, targets, batch_size=bs) for bs in (1, 3, 7, 50, 1024)]
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    # Each batch is cut to its own longest sequence (no padding-only columns).
    calls.clear()
    evaluate(score_fn, inputs, targets, batch_size=5)
    assert sum(len(x) for x in calls) == len(inputs)
    for x in calls:
        assert (x[:, 0] != 0).any()


def test_evaluate_truncation_changes_model_input_not_exclusion():
    score_fn, _, calls = make_score_fn()
    inputs, targets = random_users(3)
    max_len = 4
    full = evaluate(score_fn, inputs, targets, batch_size=8)
    calls.clear()
    truncated = evaluate(score_fn, inputs, targets, max_len=max_len, batch_size=8)
    # The model sees at most max_len items, left-padded, most recent last.
    assert all(x.shape[1] <= max_len for x in calls)
    seen = sorted(tuple(row[row != 0].tolist()) for x in calls for row in x)
    assert seen == sorted(tuple(seq[-max_len:].tolist()) for seq in inputs)
    # The score function only looks at the last item, so if the exclusion set
    # were the truncated history the ranks would differ from the full run.
    np.testing.assert_array_equal(truncated, full)
    # A batch shorter than max_len is cut to its own longest sequence.
    calls.clear()
    evaluate(score_fn, [np.array([3]), np.array([4, 5]), np.array([6])], np.array([1, 2, 3]), max_len=10)
    assert [tuple(x.shape) for x in calls] == [(3, 2)]
    assert calls[0].tolist() == [[0, 3], [0, 6], [4, 5]]  # sorted by length, left-padded
    wrong = np.array([
        brute_rank(row, int(t), {int(i) for i in seq[-max_len:]})
        for row, t, seq in zip(make_score_fn()[1](np.array([s[-1] for s in inputs])), targets, inputs)
    ])
    assert not np.array_equal(wrong, full)


def test_evaluate_progress_bar_runs():
    score_fn, reference, _ = make_score_fn()
    inputs, targets = random_users(4, n_users=10)
    ranks = evaluate(score_fn, inputs, targets, batch_size=3, progress=True)
    np.testing.assert_array_equal(ranks, brute_evaluate(reference, inputs, targets, None, True))


def test_evaluate_errors():
    score_fn, _, _ = make_score_fn()
    inputs, targets = random_users(5, n_users=6)
    with pytest.raises(ValueError, match="6 input sequences but 5 targets"):
        evaluate(score_fn, inputs, targets[:5])
    bad = targets.copy()
    bad[2] = N_ITEMS + 1
    with pytest.raises(ValueError, match="user index 2"):
        evaluate(score_fn, inputs, bad)
    bad[2] = 0
    with pytest.raises(ValueError, match="user index 2"):
        evaluate(score_fn, inputs, bad)
    with_empty = list(inputs)
    with_empty[4] = np.array([], dtype=np.int64)
    with pytest.raises(ValueError, match="user index 4"):
        evaluate(score_fn, with_empty, targets)
    with pytest.raises(ValueError, match="^max_len must be a positive int or None, got 0$"):
        evaluate(score_fn, inputs, targets, max_len=0)


# --------------------------------------------------------------------------
# paired_test
# --------------------------------------------------------------------------

def test_paired_test_identical_gives_p_one():
    ranks = np.random.default_rng(0).integers(0, 50, size=200)
    out = paired_test(ranks, ranks.copy())
    assert out["p_wilcoxon"] == 1.0 and out["p_ttest"] == 1.0
    assert out["n"] == 200 and out["mean_diff"] == 0.0
    assert out["mean_a"] == pytest.approx(metrics_from_ranks(ranks)["NDCG@10"])


def test_paired_test_clear_difference_gives_small_p():
    rng = np.random.default_rng(1)
    ranks_b = rng.integers(0, 40, size=300)
    ranks_a = np.maximum(ranks_b - rng.integers(3, 10, size=300), 0)  # a ranks targets higher
    out = paired_test(ranks_a, ranks_b, metric="NDCG@10")
    assert out["mean_a"] > out["mean_b"] and out["mean_diff"] > 0
    assert out["p_wilcoxon"] < 1e-6 and out["p_ttest"] < 1e-6
    # Two-sided: swapping the models flips the sign, not the p-values.
    swapped = paired_test(ranks_b, ranks_a, metric="NDCG@10")
    assert swapped["mean_diff"] == pytest.approx(-out["mean_diff"])
    assert swapped["p_wilcoxon"] == pytest.approx(out["p_wilcoxon"])
    assert swapped["p_ttest"] == pytest.approx(out["p_ttest"])
    # Random relabelling of the same users: no real difference.
    noise = paired_test(rng.permutation(ranks_b), ranks_b, metric="HR@20")
    assert noise["p_wilcoxon"] > 1e-3


def _signed_rank_p(diff):
    """Two-sided Wilcoxon signed-rank p by its normal approximation, from the
    textbook formula: zero differences dropped, tied |d| given their mean rank,
    the variance corrected for ties, no continuity correction."""
    from scipy import stats
    d = diff[diff != 0]
    n = len(d)
    ranks = stats.rankdata(np.abs(d))
    w_plus = ranks[d > 0].sum()
    _, ties = np.unique(np.abs(d), return_counts=True)
    var = n * (n + 1) * (2 * n + 1) / 24 - (ties ** 3 - ties).sum() / 48
    z = (w_plus - n * (n + 1) / 4) / np.sqrt(var)
    return 2 * stats.norm.sf(abs(z))


def test_paired_test_p_values_are_the_formulas_on_the_users_that_differ():
    from scipy import stats
    rng = np.random.default_rng(1)
    ranks_b = rng.integers(0, 15, size=300)
    ranks_a = np.where(rng.random(300) < 0.5, ranks_b, rng.integers(0, 15, size=300))
    out = paired_test(ranks_a, ranks_b, metric="NDCG@10")
    diff = per_user_metric(ranks_a, "NDCG@10") - per_user_metric(ranks_b, "NDCG@10")
    assert 60 < out["n_nonzero"] == np.count_nonzero(diff) < 240
    assert out["p_wilcoxon"] == pytest.approx(_signed_rank_p(diff), rel=1e-9)
    # Ties dropped ("wilcox"), not kept with rank zero ("pratt"): the two differ here.
    pratt = stats.wilcoxon(diff, zero_method="pratt").pvalue
    assert abs(out["p_wilcoxon"] - pratt) > 1e-3 * out["p_wilcoxon"]
    t = diff.mean() / (diff.std(ddof=1) / np.sqrt(len(diff)))
    assert out["p_ttest"] == pytest.approx(2 * stats.t.sf(abs(t), len(diff) - 1), rel=1e-9)


def test_paired_test_constant_difference_and_a_single_user():
    ranks_b = np.full(20, 30)
    out = paired_test(np.zeros(20, dtype=int), ranks_b)   # every user gains the same
    assert out["p_ttest"] == 0.0 and out["mean_diff"] > 0 and out["p_wilcoxon"] < 1e-4
    single = paired_test(np.array([0]), np.array([30]))
    assert np.isnan(single["p_ttest"]) and single["n"] == 1


def test_paired_test_errors():
    with pytest.raises(ValueError, match="ranks_a has shape"):
        paired_test(np.arange(5), np.arange(4))
    with pytest.raises(ValueError, match="unknown metric"):
        paired_test(np.arange(5), np.arange(5), metric="MRR@10")


# --------------------------------------------------------------------------
# popularity_ranks
# --------------------------------------------------------------------------

def test_popularity_ranks_hand_checked():
    # counts: item1 3, item2 2, item3 1, item4 0, item5 2
    train = [np.array([1, 2, 1]), np.array([5, 1, 3]), np.array([2, 5])]
    inputs = [np.array([1]), np.array([3, 4]), np.array([4])]
    targets = np.array([2, 1, 3])
    # user 0: item1 excluded; 2 ties with 5 (pessimistic) -> rank 1
    # user 1: 3 and 4 excluded; item1 is the most popular -> rank 0
    # user 2: item4 excluded; 1, 2, 5 above item3 -> rank 3
    np.testing.assert_array_equal(popularity_ranks(train, inputs, targets, n_items=5), [1, 0, 3])
    # without exclusion user 1's rank is unchanged and user 0 has item1 above item2
    np.testing.assert_array_equal(
        popularity_ranks(train, inputs, targets, n_items=5, exclude_history=False), [2, 0, 3])


def test_popularity_ranks_match_brute_force_and_reject_bad_ids():
    rng = np.random.default_rng(0)
    train = [rng.integers(1, 21, size=rng.integers(1, 9)) for _ in range(30)]
    inputs, targets = [t for t in train[:10]], rng.integers(1, 21, size=10)
    counts = np.bincount(np.concatenate(train), minlength=21).astype(float)
    expected = brute_ranks(np.tile(counts, (10, 1)), targets, inputs, exclude=True)
    np.testing.assert_array_equal(popularity_ranks(train, inputs, targets, n_items=20), expected)
    with pytest.raises(ValueError, match="training item ids must lie in 1..20"):
        popularity_ranks([np.array([0, 3])], inputs, targets, n_items=20)
