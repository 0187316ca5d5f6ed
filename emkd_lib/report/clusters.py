"""The S^4Rec figures from stored runs: head and tail users, clusters, t-SNE,
alignment and uniformity (``emkd_lib.analysis`` says what a run stores).

Head users are the 20% with the longest training sequences
(``data.splits.split_users_by_length``), the same function and the same
sequences S^4Rec's adversary is trained with.
"""
from __future__ import annotations

import io

import numpy as np
import pandas as pd

from ..analysis import alignment, nearest_by_cosine, uniformity
from ..batching import BATCH_ORDERS, training_batches
from ..data.splits import split_users_by_length
from ..evaluation import metrics_from_ranks, paired_test
from ..runs import run_data
from .sentences import p_text, significance_verdict
from .tables import method_label, relative_change

HEAD_FRACTION = 0.2


def head_users(config, head_fraction: float = HEAD_FRACTION) -> np.ndarray:
    """Bool per user of ``config``'s dataset (its subsample, if any): a head user?"""
    _, split = run_data(config)
    return split_users_by_length(split.train, head_fraction)


def batch_composition(config, orders=BATCH_ORDERS, seed: int = 0) -> pd.DataFrame:
    """What one epoch's training batches of ``config`` (its windows, batch
    size and, for S^4Rec, head fraction; else ``HEAD_FRACTION``) hold under each batch order
    (``batching.BATCH_ORDERS``, one draw with ``seed``): the share of batches
    whose windows are all of one length, all of head users, all of tail
    users, the share of rows whose batch holds another window of the
    same user, and the tail users' share of the weight of an epoch's next-item
    loss (each predicted position's weight in its batch mean).
    Sinkhorn balances a batch, the adversary learns head/tail from a batch,
    the contrastive terms draw their negatives from a batch, where another
    window of the same user is a false negative (the public ICLRec and
    CoSeRec codes train one example per user and have none). And L_SR is a mean over a batch's
    predicted positions, so in batches of one length every window weighs
    the same, while in shuffled batches a window weighs in proportion to its
    length: the order also reweights users."""
    _, split = run_data(config)
    head_user = split_users_by_length(split.train, getattr(config.params, "head_fraction", HEAD_FRACTION))
    per_user = [config.data.examples([seq], window=config.data.max_len) for seq in split.train]
    users = np.repeat(np.arange(len(per_user)), [len(windows) for windows in per_user])
    lengths = np.array([len(w) for windows in per_user for w in windows])
    predicted = lengths - 1   # a window of n items predicts n - 1 next items
    head = head_user[users]
    rows = []
    for order in orders:
        batches = training_batches(lengths, config.train.batch_size, order, np.random.default_rng(seed))
        head_share = np.array([head[b].mean() for b in batches])
        # an epoch's L_SR is the sum of batch means over each batch's predicted positions
        tail_loss_share = np.mean([predicted[b][~head[b]].sum() / max(predicted[b].sum(), 1) for b in batches])
        shared = 0
        for b in batches:
            _, inverse, counts = np.unique(users[b], return_inverse=True, return_counts=True)
            shared += int((counts[inverse] > 1).sum())
        rows.append({"batches": order, "batches per epoch": len(batches),
                     "one length %": 100 * np.mean([lengths[b].min() == lengths[b].max() for b in batches]),
                     "head users only %": 100 * np.mean(head_share == 1),
                     "tail users only %": 100 * np.mean(head_share == 0),
                     "rows beside their user's other window %": 100 * shared / len(lengths),
                     "tail users' share of the next-item loss weight %": 100 * tail_loss_share})
    return pd.DataFrame(rows).set_index("batches")


def head_tail_tests(a, b, head: np.ndarray, metric: str = "NDCG@20") -> dict:
    """``group -> paired_test`` of run ``a`` against run ``b`` over the users
    of each group ("head": ``head`` true, "tail": the rest)."""
    return {group: paired_test(a.test_ranks[mask], b.test_ranks[mask], metric)
            for group, mask in (("head", head), ("tail", ~head))}


def head_tail_table(runs: dict, head: np.ndarray, reference: str, other: str,
                    metrics=("HR@5", "HR@20", "NDCG@5", "NDCG@20")) -> pd.DataFrame:
    """Figure 4: test metrics of head and of tail users for each labelled run
    (``label -> result``, one dataset), and the paired test of ``reference``
    against ``other`` inside each group (NDCG@20)."""
    both = runs.get(reference) is not None and runs.get(other) is not None
    tests = head_tail_tests(runs[reference], runs[other], head) if both else {}
    rows = []
    for group, mask in (("head", head), ("tail", ~head)):
        for label, r in runs.items():
            if r is None:
                continue
            rows.append({"group": group, "method": label, "users": int(mask.sum()),
                         **{m: v for m, v in metrics_from_ranks(r.test_ranks[mask]).items() if m in metrics}})
        if group in tests:
            rows[-1][f"p {reference} vs {other} (NDCG@20)"] = tests[group]["p_wilcoxon"]
    if not rows:
        return pd.DataFrame({"status": ["nothing run yet"]})
    return pd.DataFrame(rows).set_index(["group", "method"])


def group_changes_table(pairs: dict, head: np.ndarray, reference: str, variant: str,
                        metric: str = "NDCG@20") -> pd.DataFrame:
    """Where a control moves a method, by user group: for each ``label ->
    {reference: run, variant: run}`` of ``pairs`` (``None`` = not stored),
    ``metric`` of the head and of the tail users under both, the relative
    change and the paired Wilcoxon p of the variant against the reference
    inside the group (e.g. shuffled batches against length buckets)."""
    rows = []
    for label, runs in pairs.items():
        a, b = runs.get(variant), runs.get(reference)
        if a is None or b is None:
            continue
        for group, t in head_tail_tests(a, b, head, metric).items():
            rows.append({"method": label, "group": group, "users": t["n"], f"{reference} {metric}": t["mean_b"],
                         f"{variant} {metric}": t["mean_a"], "change %": relative_change(t["mean_a"], t["mean_b"]),
                         "p (Wilcoxon)": t["p_wilcoxon"]})
    if not rows:
        return pd.DataFrame({"status": ["no pair stored yet"]})
    return pd.DataFrame(rows).set_index(["method", "group"])


def _change_text(change: float) -> str:
    return f"{change:+.1f}%" if np.isfinite(change) else "no relative change (the reference scores 0)"


def group_changes_found(table: pd.DataFrame, what: str, alpha: float = 0.01) -> list[str]:
    """Lines for "What we found" from a ``group_changes_table``: per method,
    each group's change and paired p, and which groups the change falls on
    (significant at ``alpha``): the tail users only, the head users only,
    both, or neither."""
    if "change %" not in table:
        return [f"{what}: no pair stored yet"]
    lines = []
    for method, rows in table.groupby(level="method", sort=False):
        rows = rows.droplevel("method")
        moved = [g for g in ("tail", "head") if g in rows.index and rows.loc[g, "p (Wilcoxon)"] < alpha]
        parts = ", ".join(f"{g} users {_change_text(rows.loc[g, 'change %'])} "
                          f"({p_text(rows.loc[g, 'p (Wilcoxon)'])}, "
                          f"{significance_verdict(rows.loc[g, 'p (Wilcoxon)'], alpha)})"
                          for g in ("tail", "head") if g in rows.index)
        falls = (f"the change falls on the {moved[0]} users only" if len(moved) == 1
                 else "both groups change significantly" if moved else "neither group changes significantly")
        lines.append(f"{what}, {method}: {parts}: {falls}")
    return lines


def head_rate_by_cluster(result, head: np.ndarray) -> pd.DataFrame:
    """Figure 3's data: per cluster of ``result`` (its stored assignment of
    every user), the number of users and the share of head users."""
    clusters = np.asarray(result.ranks()["analysis_clusters"])
    frame = pd.DataFrame({"cluster": clusters, "head": head})
    frame = frame[frame.cluster >= 0]
    out = frame.groupby("cluster")["head"].agg(users="size", head_rate="mean").reset_index()
    return out


def head_rates(by_dataset: dict, head: dict, methods=("ICLRec", "S4Rec")) -> pd.DataFrame:
    """Figure 3's boxplot data over datasets: ``head_rate_by_cluster`` of each
    of ``methods`` (labels, as ``labelled`` gives them) with stored clusters,
    with its dataset and method; ``by_dataset`` dataset -> labelled runs,
    ``head`` dataset -> the head mask of its users. Empty if none has clusters."""
    frames = [head_rate_by_cluster(r, head[d]).assign(dataset=d, method=label)
              for d, runs in by_dataset.items() for label in methods
              if has_clusters(r := runs.get(label))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["cluster", "users", "head_rate", "dataset", "method"])


def has_clusters(result) -> bool:
    return result is not None and "analysis_clusters" in result.ranks()


def has_embeddings(result) -> bool:
    return result is not None and "analysis_embeddings" in result.ranks()


def _embeddings(result) -> np.ndarray:
    return np.asarray(result.ranks()["analysis_embeddings"], dtype=np.float32)


def tsne_path(result, seed: int = 0):
    """Where ``tsne_coordinates`` keeps a run's map:
    ``<results>/derived/tsne-<key>-<embeddings>-seed<seed>.npy``, ``<embeddings>``
    the first 12 hex digits of the sha256 of the embeddings it maps, so that
    a run trained again under the same key never reads the old run's map."""
    import hashlib
    from .. import settings as settings_module
    digest = hashlib.sha256(np.ascontiguousarray(_embeddings(result)).tobytes()).hexdigest()[:12]
    return settings_module.current().results_dir / "derived" / f"tsne-{result.key}-{digest}-seed{seed}.npy"


def tsne_coordinates(result, seed: int = 0) -> np.ndarray:
    """A 2-D t-SNE (scikit-learn, PCA initialisation, fixed seed) of a run's
    stored sequence embeddings, (users, 2), computed once and kept in the
    store (``tsne_path``; commit it with the run). t-SNE's thousand
    iterations amplify the last-bit differences between CPUs' BLAS kernels:
    the same embeddings mapped on an AVX2-only CPU and on one with AVX-512
    give visibly different maps, so a map recomputed elsewhere would redraw
    the figure otherwise; a stored one draws it the same everywhere."""
    from sklearn.manifold import TSNE
    from ..files import atomic_write_bytes
    path = tsne_path(result, seed)
    if path.is_file():
        return np.load(path)
    xy = TSNE(n_components=2, init="pca", random_state=seed, perplexity=30).fit_transform(_embeddings(result))
    buffer = io.BytesIO()
    np.save(buffer, xy)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    return xy


def tsne_frame(result, head: np.ndarray, seed: int = 0) -> pd.DataFrame:
    """Figure 1's data: the run's ``tsne_coordinates`` of the user sample,
    with each user's head/tail label and cluster (-1 for a method without
    clusters)."""
    arrays = result.ranks()
    users = np.asarray(arrays["analysis_users"])
    xy = tsne_coordinates(result, seed)
    clusters = np.asarray(arrays["analysis_clusters"])[users] if "analysis_clusters" in arrays else \
        np.full(len(users), -1)
    return pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "head": head[users], "cluster": clusters})


def embedding_quality_table(runs: dict) -> pd.DataFrame:
    """Alignment (user with the item chosen next) and uniformity (of the
    user sample) of each labelled run's stored embeddings; lower is better
    for both (Wang and Isola, 2020)."""
    rows = []
    for label, r in runs.items():
        if not has_embeddings(r):
            continue
        a = r.ranks()
        users = np.asarray(a["analysis_embeddings"], dtype=np.float64)
        rows.append({"method": label, "alignment": alignment(users, np.asarray(a["analysis_target_embeddings"],
                                                                             dtype=np.float64)),
                     "uniformity": uniformity(users)})
    if not rows:
        return pd.DataFrame({"status": ["no run with stored embeddings yet"]})
    return pd.DataFrame(rows).set_index("method")


def cluster_size_table(runs: dict) -> pd.DataFrame:
    """Per labelled run with clusters: how many clusters hold users, the
    smallest, median and largest cluster in users, the equal share (the
    users spread evenly over the clusters used) and the largest cluster in
    equal shares: 1 is an even split."""
    rows = []
    for label, r in runs.items():
        if not has_clusters(r):
            continue
        c = np.asarray(r.ranks()["analysis_clusters"])
        sizes = np.bincount(c[c >= 0])
        sizes = sizes[sizes > 0]
        equal = sizes.sum() / len(sizes)
        rows.append({"method": label, "clusters used": len(sizes), "smallest (users)": int(sizes.min()),
                     "median (users)": float(np.median(sizes)), "largest (users)": int(sizes.max()),
                     "equal share (users)": float(equal), "largest / equal share": float(sizes.max() / equal)})
    if not rows:
        return pd.DataFrame({"status": ["no run with stored clusters yet"]})
    return pd.DataFrame(rows).set_index("method")


def cluster_size_found(table: pd.DataFrame, dataset: str) -> list[str]:
    """A line per run of a ``cluster_size_table``: how far its final
    assignments are from an even split (Sinkhorn's equipartition holds
    within a batch, not necessarily for the final assignments)."""
    if "clusters used" not in table:
        return []
    return [f"{dataset} {method}: {int(row['clusters used'])} clusters hold users, from {int(row['smallest (users)'])} "
            f"to {int(row['largest (users)'])} users (an even split: {row['equal share (users)']:.0f} each); the "
            f"largest holds {row['largest / equal share']:.1f} equal shares"
            for method, row in table.iterrows()]


def labelled(runs: dict, dataset: str) -> dict:
    """``label -> result`` of a grid's ``(dataset, method, seed)`` runs on one dataset, seed 0."""
    return {method_label(r.config) if r is not None else m: r
            for (d, m, s), r in runs.items() if d == dataset and s == 0}


def head_rate_spread(frames: dict) -> list[str]:
    """Lines for "What we found": per labelled run, the interquartile range
    of its clusters' head rates (S^4Rec's claim: its adversary mixes head
    and tail users, so every cluster's head rate sits near the overall 20%),
    beside ``chance_head_rate_iqr`` where the frame counts each cluster's users."""
    lines = []
    for label, frame in frames.items():
        if frame is None or not len(frame):
            continue
        q1, med, q3 = np.percentile(frame["head_rate"], [25, 50, 75])
        line = (f"{label}: clusters' head rate median {med:.2f}, interquartile range {q1:.2f}-{q3:.2f} "
                f"over {len(frame)} clusters (overall {HEAD_FRACTION:.2f})")
        if "users" in frame:
            # the width clusters of these sizes show by chance alone: the yardstick for "mixed"
            line += (f"; its width {q3 - q1:.2f} against {chance_head_rate_iqr(frame):.2f} for clusters of the "
                     f"same sizes filled at random")
        lines.append(line)
    return lines or ["no run with stored clusters yet"]


def head_tail_found(runs: dict, head: np.ndarray, reference: str, other: str, dataset: str,
                    metric: str = "NDCG@20", level: float = 0.01, paper_datasets=("beauty",)) -> list[str]:
    """Lines for "What we found" from Figure 4's data: inside the head and the
    tail group, ``reference`` against ``other`` (labels of ``runs``, one
    dataset) in ``metric``, the relative change and the paired Wilcoxon
    test over the group's users. The paper's Figure 4 (``paper_datasets``:
    Beauty only) reports that S^4Rec improves on ICLRec in both groups; on
    those datasets the lines say whether ours do, elsewhere only what ours do."""
    a, b = runs.get(reference), runs.get(other)
    if a is None or b is None:
        return [f"{dataset}: {reference} against {other} by head and tail: not both run yet"]
    lines = []
    for group, t in head_tail_tests(a, b, head, metric).items():
        change = (f"{relative_change(t['mean_a'], t['mean_b']):+.1f}%" if t["mean_b"] > 0
                  else "no relative change: zero base")
        if t["p_wilcoxon"] >= level:
            verdict, paper = f"no significant difference at p < {level:g}", "where the paper's Figure 4 reports a gain"
        elif t["mean_a"] > t["mean_b"]:
            verdict, paper = f"higher, significant at p < {level:g}", "as the paper's Figure 4 reports"
        else:
            verdict, paper = f"lower, significant at p < {level:g}", "unlike the paper's Figure 4"
        if dataset in paper_datasets:
            verdict += f", {paper}"
        lines.append(f"{dataset} {group} users ({t['n']:,}): {reference} {metric} {t['mean_a']:.4f} against "
                     f"{other} {t['mean_b']:.4f} ({change}, p = {t['p_wilcoxon']:.2g}: {verdict})")
    return lines


def head_tail_gap_found(runs: dict, head: np.ndarray, dataset: str, metric: str = "NDCG@20") -> list[str]:
    """A line for "What we found": each stored run's ``metric`` over its head
    users against its tail users. The paper's premise is that tail users
    are served worse; the line says, method by method, whether ours are.
    Means only: head and tail are different users, so no paired test
    applies, and the groups differ in more than history length."""
    gaps = []
    for label, run in runs.items():
        if run is None:
            continue
        head_mean = metrics_from_ranks(run.test_ranks[head])[metric]
        tail_mean = metrics_from_ranks(run.test_ranks[~head])[metric]
        gaps.append((label, head_mean, tail_mean))
    if not gaps:
        return [f"{dataset}: head against tail users: nothing run yet"]
    worse = [label for label, h, t in gaps if t < h]
    if len(gaps) == 1:  # one method says nothing of a premise about methods in general
        verdict = (f"for {gaps[0][0]}, the one method stored so far, tail users score "
                   f"{'lower' if worse else 'no lower'} than head users")
    else:
        verdict = ("tail users score lower than head users for every method, as the paper's premise has it"
                   if len(worse) == len(gaps) else
                   "tail users score no lower than head users for any method, against the paper's premise" if not worse
                   else f"tail users score lower than head users for {', '.join(worse)} only")
    values = ", ".join(f"{label} {t:.4f} against {h:.4f}" for label, h, t in gaps)
    return [f"{dataset}: {verdict} ({metric}, tail against head: {values})"]


def chance_head_rate_iqrs(frame: pd.DataFrame, draws: int = 200, seed: int = 0) -> np.ndarray:
    """The interquartile ranges of the clusters' head rates that chance alone
    gives, one per random partition of the same users (the same number of
    head users) into clusters of the same sizes as ``frame`` (a
    ``head_rate_by_cluster``): ``draws`` of them."""
    sizes = frame["users"].to_numpy(dtype=np.int64)
    heads = int(round(float((frame["users"] * frame["head_rate"]).sum())))
    is_head = np.zeros(int(sizes.sum()), dtype=np.int64)
    is_head[:heads] = 1
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rng = np.random.default_rng(seed)
    return np.array([np.subtract(*np.percentile(np.add.reduceat(rng.permutation(is_head), starts) / sizes, [75, 25]))
                     for _ in range(draws)])


def chance_head_rate_iqr(frame: pd.DataFrame, draws: int = 200, seed: int = 0) -> float:
    """The mean of ``chance_head_rate_iqrs``. Smaller clusters spread their
    head rates wider by sampling alone, so two methods whose clusters differ
    in size are read against this as well as against each other."""
    return float(np.mean(chance_head_rate_iqrs(frame, draws, seed)))


def head_rate_compactness(frames: dict, reference: str, other: str, dataset: str,
                          figure: str = "the paper's Figure 3") -> list[str]:
    """A line comparing the interquartile ranges of the clusters' head rates
    of ``reference`` and ``other`` (``frames``: label -> ``head_rate_by_cluster``);
    the paper's Figure 3 reports S^4Rec's boxes more compact than ICLRec's on
    every dataset (``figure`` names the claim's figure: chapter 07 reads the
    paper's Figure 6(b) the same way). Where the frames count each cluster's users, the line adds
    each method's ``chance_head_rate_iqr`` and reads the claim from the ranges
    beyond it: clusters of other sizes spread their head rates otherwise by
    chance alone (128 prototypes against 256 K-means clusters), so a narrower
    range may be one of size, not of mixing."""
    a, b = frames.get(reference), frames.get(other)
    if a is None or b is None or not len(a) or not len(b):
        return []
    width = {label: float(np.subtract(*np.percentile(f["head_rate"], [75, 25]))) for label, f in
             ((reference, a), (other, b))}
    relation = ("narrower than" if width[reference] < width[other]
                else "as wide as" if width[reference] == width[other] else "wider than")
    agrees = f"in the direction {figure} reports" if relation == "narrower than" else f"unlike {figure}"
    line = (f"{dataset}: {reference}'s interquartile range of cluster head rates is {relation} {other}'s "
            f"({width[reference]:.2f} against {width[other]:.2f}), {agrees}")
    if "users" in a and "users" in b:
        chance = {label: chance_head_rate_iqrs(f) for label, f in ((reference, a), (other, b))}
        excess = {label: width[label] - float(np.mean(c)) for label, c in chance.items()}
        # Each observed range is one draw, varying about as the random partitions' ranges do: a gap
        # within two standard deviations of the difference of two such draws is not read as one.
        noise = 2 * float(np.sqrt(sum(np.var(c) for c in chance.values())))
        gap = excess[reference] - excess[other]
        beyond = ("narrower than" if gap < -noise else "wider than" if gap > noise else "not different from")
        holds = {"narrower than": f"the claim of {figure} holds beyond chance",
                 "wider than": f"beyond chance the claim of {figure} is reversed",
                 "not different from": f"beyond chance the claim of {figure} is not supported"}[beyond]
        line += (f"; clusters of the same sizes filled at random would give {np.mean(chance[reference]):.2f} "
                 f"and {np.mean(chance[other]):.2f}, so beyond chance {reference}'s range is {beyond} {other}'s "
                 f"({excess[reference]:+.3f} against {excess[other]:+.3f}, a gap of {gap:+.3f}, which counts only "
                 f"beyond {noise:.3f}, two standard deviations of the difference of two random partitions' ranges): "
                 f"{holds}")
    return [line]


def head_neighbour_shares(result, head: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Figure 1's claim as numbers: for each user of the run's stored sample,
    the share of head users among its ``k`` nearest other users by cosine
    similarity of the stored sequence embeddings (the space the t-SNE
    draws, before t-SNE distorts it), with each user's own head label.
    Returns ``(shares, is_head)``, both of shape (sample size,)."""
    arrays = result.ranks()
    users = np.asarray(arrays["analysis_users"])
    x = np.asarray(arrays["analysis_embeddings"], dtype=np.float64)
    if len(users) <= k:
        raise ValueError(f"{k} nearest users need more than {k} users in the sample, not {len(users)}")
    nearest = nearest_by_cosine(x, k)
    is_head = head[users].astype(bool)
    return is_head[nearest].mean(axis=1), is_head


def head_separation(shares: np.ndarray, is_head: np.ndarray) -> float:
    """How far head users keep to themselves: the mean head share of a head
    user's neighbours minus that of a tail user's (0 when the space ignores
    history length, up to 1 when head and tail users never neighbour)."""
    return float(shares[is_head].mean() - shares[~is_head].mean())


def _bootstrap_interval(statistic, n: int, draws: int, seed: int) -> tuple[float, float]:
    """95% percentile interval of ``statistic(rows)`` over ``draws`` resamples
    of ``n`` rows with replacement."""
    rng = np.random.default_rng(seed)
    values = [statistic(rng.integers(0, n, n)) for _ in range(draws)]
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def head_separation_found(runs: dict, head: np.ndarray, dataset: str, reference: str = "S4Rec",
                          other: str = "ICLRec", k: int = 10, draws: int = 1000, seed: int = 0) -> list[str]:
    """Lines for "What we found" from Figure 1's data. The paper's Figure 1
    premise: representations of users with long histories cluster by
    themselves, apart from short ones, and S^4Rec's adversary mixes them.
    Per run with stored embeddings, ``head_separation`` of its ``k``-nearest
    neighbours with a 95% bootstrap interval over the sample's users (the
    neighbours held fixed); then ``reference`` against ``other``, the same
    users resampled for both (a paired bootstrap of the difference)."""
    found = {label: head_neighbour_shares(r, head, k) for label, r in runs.items() if has_embeddings(r)}
    if not found:
        return []
    parts, apart = [], []
    for label, (shares, is_head) in found.items():
        low, high = _bootstrap_interval(lambda i: head_separation(shares[i], is_head[i]), len(shares), draws, seed)
        apart.append(low > 0)
        parts.append(f"{label} {head_separation(shares, is_head):+.3f} (95% interval {low:+.3f} to {high:+.3f}; "
                     f"{shares[is_head].mean():.1%} head among a head user's neighbours, "
                     f"{shares[~is_head].mean():.1%} among a tail user's)")
    is_head = next(iter(found.values()))[1]
    which = ("in every method's space" if all(apart) else "in no method's space" if not any(apart)
             else "in some methods' spaces only")
    premise = ("as the paper's Figure 1 premise has it" if all(apart)
               else "against the paper's Figure 1 premise" if not any(apart)
               else "the paper's Figure 1 premise in part")
    lines = [f"{dataset}: head users neighbour head users more than tail users do {which}, {premise} "
             f"(separation: the head share among a head user's {k} "
             f"nearest users by cosine minus that among a tail user's; {is_head.mean():.1%} of the "
             f"{len(is_head):,} sampled users are head): " + "; ".join(parts)]
    if reference in found and other in found:
        (a, head_a), (b, head_b) = found[reference], found[other]
        low, high = _bootstrap_interval(
            lambda i: head_separation(a[i], head_a[i]) - head_separation(b[i], head_b[i]), len(a), draws, seed)
        gap = head_separation(a, head_a) - head_separation(b, head_b)
        verdict = ("less apart than" if high < 0 else "further apart than" if low > 0
                   else "no less apart than")
        paper = ("as the paper's Figure 1 argues" if high < 0
                 else "against the paper's Figure 1 argument" if low > 0
                 else "so the paper's argument is not supported here")
        lines.append(f"{dataset}: {reference}'s head and tail users are {verdict} {other}'s, {paper} "
                     f"(difference in separation {gap:+.3f}, 95% interval {low:+.3f} to {high:+.3f}, the same "
                     f"users resampled for both)")
    return lines


def clusters_found(by_dataset: dict, head: dict, datasets, reference: str = "S4Rec",
                   other: str = "ICLRec") -> list[str]:
    """Chapter 06's findings on every dataset, in order: the spread of the
    clusters' head rates, how much more compact ``reference``'s is than
    ``other``'s, how far apart head and tail users lie in each model's space,
    and the two groups' test metrics (``head_rate_spread``,
    ``head_rate_compactness``, ``head_separation_found``, ``head_tail_found``,
    ``head_tail_gap_found``). ``by_dataset``: ``{dataset: {label: result}}``;
    ``head``: ``{dataset: head-user mask}``."""
    lines = []
    for d in datasets:
        frames = {label: head_rate_by_cluster(r, head[d]) for label, r in by_dataset[d].items() if has_clusters(r)}
        lines += (head_rate_spread({f"{d} {label}": f for label, f in frames.items()}) if frames
                  else [f"{d}: no run with stored clusters yet"])
        lines += head_rate_compactness(frames, reference, other, d)
        lines += head_separation_found(by_dataset[d], head[d], d)
        lines += head_tail_found(by_dataset[d], head[d], reference, other, d)
        lines += head_tail_gap_found(by_dataset[d], head[d], d)
    return lines
