"""The study's single evaluation protocol: full ranking, HR@k and NDCG@k.

Every model in the study is evaluated the same way, so that differences in
reported numbers come from the models and not from the protocol:

* **Full ranking.** The target is ranked against every item id 1..n_items; no
  sampled negatives (sampled metrics are known to disagree with full ones).
* **History exclusion.** Items the user has already interacted with -- the
  FULL input history, not only the part the model sees after truncation to its
  maximum length -- are removed from the ranking, except the target itself
  (EMKD's convention). ``exclude_history=False`` turns this off.
* **Pessimistic ties.** An item whose score equals the target's counts as
  ranked above it, so a model that outputs a constant gets the worst rank, not
  the best.
* **0-based rank.** ``rank = #{ranked i != t : s_i > s_t} + #{ranked i != t :
  s_i == s_t}``; ``HR@k = mean(rank < k)``, ``NDCG@k = mean((rank < k) /
  log2(rank + 2))``. With a single target per user Recall@k equals HR@k.

Conventions shared with the rest of ``emkd_lib``: item ids are 1..n_items and 0
is padding; a score function maps a LongTensor (B, T) of left-padded item ids
to float scores (B, n_items + 1), column 0 (padding) is never ranked.

Ranks (not metric values) are the unit of exchange: they are computed once per
user, and every metric, per-user metric, paired significance test and group
breakdown is derived from them.
"""
from __future__ import annotations

import re
from typing import Callable

import numpy as np
import torch

from .batching import length_bucketed_batches, pad_left
from .data import item_popularity

DEFAULT_KS = (5, 10, 20)

_METRIC_RE = re.compile(r"^(HR|NDCG)@([1-9][0-9]*)$")


# --------------------------------------------------------------------------
# Ranking
# --------------------------------------------------------------------------

def target_ranks(
    scores: torch.Tensor,
    targets: torch.Tensor,
    history: torch.Tensor | None = None,
) -> torch.Tensor:
    """0-based pessimistic rank of each target among the ranked items.

    ``scores`` is (B, n_items + 1) with column 0 = padding; ``targets`` is (B,)
    with ids in 1..n_items; ``history`` (optional) is (B, T) of item ids to
    exclude from the ranking, 0 = padding. The target is never excluded, even
    if it appears in ``history`` (a repeat consumption is still a hit).

    Vectorized over the batch: one comparison against the target score builds a
    boolean "ranked above the target" matrix, from which column 0, the history
    items and the target itself are cleared by ``scatter_``; the rank is the
    row sum. ``scores`` is only read, never modified. Raises ``ValueError`` if
    a score is NaN (a NaN would silently compare False and give the target an
    optimistic rank) or if an id is out of range.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be (B, n_items + 1), got shape {tuple(scores.shape)}")
    B, width = scores.shape
    n_items = width - 1
    device = scores.device
    targets = torch.as_tensor(targets, device=device).long().reshape(-1)
    if targets.numel() != B:
        raise ValueError(f"{targets.numel()} targets for {B} score rows")
    if B == 0:
        return torch.zeros(0, dtype=torch.long, device=device)
    if bool((targets < 1).any()) or bool((targets > n_items).any()):
        raise ValueError(f"targets must be item ids in 1..{n_items}")
    if bool(torch.isnan(scores).any()):
        raise ValueError("scores contain NaN")

    target_scores = scores.gather(1, targets[:, None])           # (B, 1)
    above = scores >= target_scores                               # ties count as above
    above[:, 0] = False                                           # padding is never ranked
    if history is not None:
        history = torch.as_tensor(history, device=device).long()
        if history.dim() != 2 or history.shape[0] != B:
            raise ValueError(f"history must be (B={B}, T), got shape {tuple(history.shape)}")
        if history.numel():
            if bool((history < 0).any()) or bool((history > n_items).any()):
                raise ValueError(f"history ids must be in 0..{n_items}")
            above.scatter_(1, history, False)                     # padding 0 -> column 0, harmless
    above.scatter_(1, targets[:, None], False)                    # i != target
    return above.sum(dim=1)


# --------------------------------------------------------------------------
# Metrics from ranks
# --------------------------------------------------------------------------

def _parse_metric(metric: str) -> tuple[str, int]:
    match = _METRIC_RE.match(metric) if isinstance(metric, str) else None
    if match is None:
        raise ValueError(
            f"unknown metric {metric!r}: expected 'HR@k' or 'NDCG@k' with integer k >= 1"
        )
    return match.group(1), int(match.group(2))


def _check_ranks(ranks: np.ndarray) -> np.ndarray:
    ranks = np.asarray(ranks)
    if ranks.ndim != 1:
        raise ValueError(f"ranks must be 1-D, got shape {ranks.shape}")
    if ranks.size == 0:
        raise ValueError("ranks is empty: no users to average over")
    if (ranks < 0).any():
        raise ValueError("ranks must be non-negative (0-based)")
    return ranks


def per_user_metric(ranks: np.ndarray, metric: str) -> np.ndarray:
    """Per-user value of ``metric`` ("HR@k" or "NDCG@k") as a float64 array.

    This is what paired tests and group breakdowns average or compare; its mean
    is the corresponding entry of :func:`metrics_from_ranks`.
    """
    name, k = _parse_metric(metric)
    ranks = _check_ranks(ranks).astype(np.float64)
    hit = ranks < k
    if name == "HR":
        return hit.astype(np.float64)
    return np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0)


def metrics_from_ranks(ranks: np.ndarray, ks=DEFAULT_KS) -> dict[str, float]:
    """HR@k and NDCG@k averaged over users, keys ordered HR@k, NDCG@k per k."""
    ranks = _check_ranks(ranks)
    out: dict[str, float] = {}
    for k in ks:
        for name in ("HR", "NDCG"):
            metric = f"{name}@{k}"
            out[metric] = float(per_user_metric(ranks, metric).mean())
    return out


def ranks_by_group(ranks: np.ndarray, groups: np.ndarray, ks=DEFAULT_KS) -> dict:
    """``metrics_from_ranks`` for each group label, e.g. head vs tail users.

    ``groups`` gives one label per user (same length as ``ranks``); the result
    maps each label (as a Python scalar, in sorted order) to its metrics dict.
    """
    ranks = _check_ranks(ranks)
    groups = np.asarray(groups)
    if groups.shape != ranks.shape:
        raise ValueError(f"groups has shape {groups.shape}, ranks has shape {ranks.shape}")
    return {
        label.item() if hasattr(label, "item") else label: metrics_from_ranks(ranks[groups == label], ks)
        for label in np.unique(groups)
    }


# --------------------------------------------------------------------------
# Evaluating a model
# --------------------------------------------------------------------------

def evaluate(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    inputs: list[np.ndarray],
    targets: np.ndarray,
    *,
    max_len: int | None = None,
    batch_size: int = 1024,
    exclude_history: bool = True,
    device="cpu",
    progress: bool = False,
) -> np.ndarray:
    """Ranks (int64, original user order) of each user's target under ``score_fn``.

    ``inputs[u]`` is user u's full input sequence (oldest first) and
    ``targets[u]`` the held-out next item. Users are batched by input length
    (:func:`length_bucketed_batches`, no shuffle) so each batch is cut to its
    own longest sequence. The model sees ``pad_left`` of the ``max_len`` most
    recent items; the exclusion set is the FULL input, so truncation changes
    what the model sees but never which items are ranked. Runs under
    ``torch.inference_mode()``; putting a module into ``eval()`` mode is the
    caller's job.

    Raises ``ValueError`` on mismatched lengths, an empty input sequence (a
    next-item model needs at least one item; the message names the user),
    input ids outside 1..n_items, targets outside 1..n_items (n_items is read
    from the score width), or a score matrix of the wrong shape.
    """
    targets = np.asarray(targets, dtype=np.int64).reshape(-1)
    if len(inputs) != len(targets):
        raise ValueError(f"{len(inputs)} input sequences but {len(targets)} targets")
    if max_len is not None and max_len < 1:
        raise ValueError(f"max_len must be a positive int or None, got {max_len}")
    inputs = [np.asarray(seq, dtype=np.int64).reshape(-1) for seq in inputs]
    lengths = np.array([len(seq) for seq in inputs], dtype=np.int64)
    empty = np.flatnonzero(lengths == 0)
    if empty.size:
        raise ValueError(
            f"user index {int(empty[0])} has an empty input sequence "
            f"({empty.size} such users); a next-item model needs at least one input item"
        )
    if (targets < 1).any():
        u = int(np.flatnonzero(targets < 1)[0])
        raise ValueError(f"target of user index {u} is {int(targets[u])}; item ids start at 1")
    ranks = np.zeros(len(targets), dtype=np.int64)
    if len(targets) == 0:
        return ranks
    min_id = min(int(seq.min()) for seq in inputs)
    if min_id < 1:
        raise ValueError(f"input sequences contain item id {min_id}; ids start at 1 (0 is padding)")
    max_input_id = max(int(seq.max()) for seq in inputs)

    batches = length_bucketed_batches(lengths, batch_size, shuffle=False)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="evaluate", unit="batch")

    n_items = None
    with torch.inference_mode():
        for idx in batches:
            seqs = [inputs[u] for u in idx]
            model_seqs = seqs if max_len is None else [seq[-max_len:] for seq in seqs]
            x = torch.as_tensor(pad_left(model_seqs), device=device)
            scores = torch.as_tensor(score_fn(x))
            if scores.dim() != 2 or scores.shape[0] != len(idx):
                raise ValueError(
                    f"score_fn returned shape {tuple(scores.shape)} for a batch of {len(idx)}; "
                    "expected (B, n_items + 1)"
                )
            if n_items is None:
                n_items = scores.shape[1] - 1
                if targets.max() > n_items:
                    u = int(np.argmax(targets))
                    raise ValueError(
                        f"target of user index {u} is {int(targets[u])} > n_items = {n_items}"
                    )
                if max_input_id > n_items:
                    raise ValueError(f"input sequences contain item id {max_input_id} > n_items = {n_items}")
            elif scores.shape[1] - 1 != n_items:
                raise ValueError(
                    f"score_fn returned {scores.shape[1]} columns, earlier batches had {n_items + 1}"
                )
            tgt = torch.as_tensor(targets[idx], device=scores.device)
            hist = torch.as_tensor(pad_left(seqs), device=scores.device) if exclude_history else None
            ranks[idx] = target_ranks(scores, tgt, hist).cpu().numpy()
    return ranks


def popularity_ranks(train_sequences: list[np.ndarray], inputs: list[np.ndarray], targets: np.ndarray,
                     n_items: int, exclude_history: bool = True) -> np.ndarray:
    """Ranks under the most-popular recommender: every user gets the items
    ordered by their interaction count in ``train_sequences``.

    The floor any trained model should clear; a model near it has learned
    item popularity and little of the sequence. Evaluated by :func:`evaluate`,
    so history exclusion and pessimistic ties are those of every other model
    (items tied in count rank above the target).
    """
    try:
        counts = torch.as_tensor(item_popularity(train_sequences, n_items), dtype=torch.float32)
    except ValueError as error:
        raise ValueError(f"training {error}") from None
    return evaluate(lambda x: counts.expand(len(x), -1), inputs, targets, exclude_history=exclude_history)


# --------------------------------------------------------------------------
# Paired significance test
# --------------------------------------------------------------------------

def paired_test(ranks_a: np.ndarray, ranks_b: np.ndarray, metric: str = "NDCG@10") -> dict:
    """Compare two models on the same users through a per-user ``metric``.

    Returns ``metric``, ``n`` (users), ``n_nonzero`` (users whose values
    differ), ``mean_a``, ``mean_b``, ``mean_diff`` (a - b), ``p_wilcoxon``
    (two-sided Wilcoxon signed-rank test) and ``p_ttest`` (two-sided paired
    t-test). Both arrays must hold ranks of the same users in the same order.

    Zero differences: the Wilcoxon test uses ``zero_method="wilcox"``, i.e.
    users on whom the two models tie are dropped before ranking the
    differences -- with HR/NDCG most users score 0 under both models, and a tie
    carries no information about which model is better. If every difference is
    zero both p-values are 1.0 (scipy would raise); if the differences are a
    nonzero constant the t statistic is infinite and ``p_ttest`` is 0.0.
    """
    from scipy import stats

    ranks_a = np.asarray(ranks_a)
    ranks_b = np.asarray(ranks_b)
    if ranks_a.shape != ranks_b.shape:
        raise ValueError(f"ranks_a has shape {ranks_a.shape}, ranks_b has shape {ranks_b.shape}")
    a = per_user_metric(ranks_a, metric)
    b = per_user_metric(ranks_b, metric)
    diff = a - b
    nonzero = int(np.count_nonzero(diff))
    out = {
        "metric": metric,
        "n": int(len(a)),
        "n_nonzero": nonzero,
        "mean_a": float(a.mean()),
        "mean_b": float(b.mean()),
        "mean_diff": float(diff.mean()),
    }
    if nonzero == 0:
        out["p_wilcoxon"] = 1.0
        out["p_ttest"] = 1.0
        return out
    out["p_wilcoxon"] = float(stats.wilcoxon(a, b, zero_method="wilcox", alternative="two-sided").pvalue)
    if np.all(diff == diff[0]):
        # Nonzero constant difference: zero variance, t = +-inf.
        out["p_ttest"] = 0.0 if len(a) > 1 else float("nan")
    else:
        out["p_ttest"] = float(stats.ttest_rel(a, b).pvalue)
    return out
