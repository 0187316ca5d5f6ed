"""The S^4Rec chapters' grids: Table 2 (S^4Rec beside the contrastive
baselines on four datasets), Table 3 (ablations) and Figures 5-6
(sensitivity to K and to the loss weights), as ``label -> RunConfig`` dicts.

Every method runs in its profile's settings (``profiles.profile_config``:
the profile's fair windows plus the method's own changes), so a run of Table
2 and Table 3 is the same run (the same key) as the one ``python -m emkd_lib
run`` trains for that method. Figures 5-6 are the exception: their 18 runs
would cost more than Table 2 on Beauty, so the cpu profile trains each point
for ``SENSITIVITY_EPOCHS`` epochs on the full data (as the EMKD chapter's
Figure 3 does), the default point included; the paper profile trains every
point to convergence.
"""
from __future__ import annotations

from ..methods import method_spec
from ..methods.s4rec import TABLE3_ABLATIONS
from ..profiles import profile_config
from ..report import clusters
from ..report.code_changes import other_draws_found
from ..report.sentences import control_found, gap_closed
from ..runs import results_for
from .patience import with_patience_checks

DATASETS = ("beauty", "sports", "toys", "ml-1m")
# Table 2's methods that the library has: SASRec, CL4SRec and ICLRec (the
# paper's strongest baseline) beside S^4Rec; DuoRec, a further contrastive
# baseline of the same family, which the paper's table does not report.
METHODS = ("sasrec", "cl4srec", "iclrec", "duorec", "s4rec")
# The paper's Table 2 column of each method (None: not in the table).
PAPER_TABLE2_COLUMNS = {"sasrec": "SASRec", "cl4srec": "CL4SRec", "iclrec": "ICLRec", "duorec": None,
                        "s4rec": "S4Rec"}
# Figure 5: the number of prototypes K; Figure 6: each loss weight of Eq. 18,
# the others at their defaults (the paper's best combination, Sec. 5.5).
FIGURE5_K = (16, 32, 64, 128, 256, 512)
FIGURE6_WEIGHTS = (0.0, 0.01, 0.1, 1.0)
SENSITIVITY = {"n_prototypes": FIGURE5_K, **{name: FIGURE6_WEIGHTS for name in ("alpha", "beta1", "beta2", "lam")}}
# Each swept parameter under the paper's symbol (Eq. 18's weights; K prototypes).
SENSITIVITY_LABELS = {"n_prototypes": "K", "alpha": "α", "beta1": "β₁", "beta2": "β₂", "lam": "λ"}
# What each swept parameter controls, for a figure panel's title beside its symbol.
SENSITIVITY_ROLES = {"n_prototypes": "prototypes", "alpha": "clustering", "beta1": "sequence contrast",
                     "beta2": "cluster distillation", "lam": "adversary"}
# About half the epochs the converged Beauty S^4Rec of Table 3 took to its best
# validation NDCG@10; chapter 07 prints how far that run had got at this epoch.
SENSITIVITY_EPOCHS = {"cpu": 10}


def main_grid(profile: str, datasets=DATASETS, seeds=(0,), methods=METHODS) -> dict:
    """Table 2: ``(dataset, method, seed) -> config``."""
    return {(d, m, s): profile_config(profile, d, m, seed=s) for d in datasets for m in methods for s in seeds}


def ablation_grid(profile: str, datasets=("beauty",), seeds=(0,), rows=tuple(TABLE3_ABLATIONS)) -> dict:
    """Table 3: ``(dataset, row, seed) -> config``, each row's switches
    (``s4rec.TABLE3_ABLATIONS``) on the profile's S^4Rec."""
    return {(d, row, s): profile_config(profile, d, "s4rec", seed=s, **TABLE3_ABLATIONS[row])
            for d in datasets for s in seeds for row in rows}


def duorec_control_grid(profile: str, datasets=("beauty",), seeds=(0,)) -> dict:
    """DuoRec's control: ``(dataset, seed) -> config`` of the profile's DuoRec
    with both contrastive weights at zero (``lam``, ``lam_sem``), i.e. SASRec's
    next-item loss in DuoRec's training settings (its dropout 0.5, not
    SASRec's 0.2). DuoRec against it measures what the contrastive terms
    add, apart from the settings that come with them."""
    return {(d, s): profile_config(profile, d, "duorec", seed=s, params__lam=0.0, params__lam_sem=0.0)
            for d in datasets for s in seeds}


# A check of Table 2's early stopping: each baseline whose run ended still
# rising under the profile's patience (chapter 05's "Did training finish?"),
# or that patience stopped right after a dip in its validation curve, trained
# on with four times the patience; the cheapest to continue first. Only runs
# whose dropout masks today's code draws can be continued
# (``report.code_changes``), so runs with element-wise Bernoulli masks are
# not listed: ``with_patience_checks`` would refuse them.
PATIENCE_CHECK = {"train__patience": 20}
PATIENCE_CHECK_RUNS = (("toys", "cl4srec"), ("toys", "duorec"), ("sports", "cl4srec"), ("sports", "duorec"),
                       ("ml-1m", "duorec"), ("ml-1m", "cl4srec"))


def patience_check_grid(profile: str, datasets=DATASETS, seeds=(0,)) -> dict:
    """``(dataset, method, seed) -> config``: each of ``PATIENCE_CHECK_RUNS``
    among ``datasets`` with ``PATIENCE_CHECK``'s patience and nothing else
    changed, for ``studies.patience.with_patience_checks`` to put in Table 2
    in place of its run."""
    return {(d, m, s): profile_config(profile, d, m, seed=s, **PATIENCE_CHECK)
            for d, m in PATIENCE_CHECK_RUNS if d in datasets for s in seeds}


def with_table2_patience_checks(runs: dict, profile: str, datasets, seed: int) -> tuple[dict, dict, list[str]]:
    """Table 2's ``runs`` as every reader of the table sees them (chapter 05,
    the scorecard): each run with a stored check of ``patience_check_grid``
    (seed ``seed``; looked up, never trained) replaced by it. Returns
    ``(runs, checks, lines)``: the table's runs, the checks found (``None``
    where not stored) and ``studies.patience.with_patience_checks``' lines."""
    checks = results_for(patience_check_grid(profile, datasets, (seed,)))
    table_runs, lines = with_patience_checks(runs, checks)
    return table_runs, checks, lines


# S^4Rec's settings control runs where Table 2 puts S^4Rec far below SASRec
# (chapter 05); Beauty has it in Table 3 already.
SETTINGS_CONTROL_DATASETS = ("ml-1m",)


def settings_control_grid(profile: str, datasets=SETTINGS_CONTROL_DATASETS, seeds=(0,)) -> dict:
    """S^4Rec's control: ``(dataset, seed) -> config`` of Table 3's "SR only"
    row, S^4Rec with every added term off, i.e. SASRec's next-item loss in
    S^4Rec's training settings (the paper's dropout 0.5 and batch 512, not
    SASRec's 0.2 and 256). Where S^4Rec falls far below SASRec, it tells
    the settings apart from the method."""
    return {(d, s): profile_config(profile, d, "s4rec", seed=s, **TABLE3_ABLATIONS["SR only"])
            for d in datasets for s in seeds}


# The methods whose training the batch order reaches most: S^4Rec (in-batch
# negatives, Sinkhorn's equal split of each batch over the prototypes, the
# head/tail labels the adversary sees per batch) and ICLRec, its baseline.
# SASRec last: it has no batch-level term, so it tells whether the order moves the backbone itself.
BATCH_ORDER_METHODS = ("s4rec", "iclrec", "sasrec")


def batch_order_grid(profile: str, datasets=("beauty",), seeds=(0,), methods=BATCH_ORDER_METHODS) -> dict:
    """The book's batches hold windows of one length (``TrainConfig.batch_order``,
    "length-buckets", a speed lever); the public code of ICLRec and CoSeRec,
    on which S^4Rec builds, draws them at random. ``(dataset, method, seed) ->
    config`` of each method with shuffled batches, against Table 2's run."""
    return {(d, m, s): profile_config(profile, d, m, seed=s, train__batch_order="shuffled")
            for d in datasets for s in seeds for m in methods}


def equal_weight_grid(profile: str, datasets=("beauty",), seeds=(0,)) -> dict:
    """The batch-order control's control: shuffled batches in which every
    window weighs the same in the next-item loss (``NextItemParams.loss_reduction``
    "windows"), as it does in a batch of one length. SASRec only: it has no
    term that couples a batch's rows, so what is left between its shuffled and
    length-bucket runs is the reweighting and the batches' make-up (length
    buckets also hold mostly one group of users). ``(dataset, "sasrec", seed) -> config``."""
    return {(d, "sasrec", s): profile_config(profile, d, "sasrec", seed=s, train__batch_order="shuffled",
                                             params__loss_reduction="windows")
            for d in datasets for s in seeds}


def batch_order_found(table_runs: dict, batch_runs: dict, equal_weight_runs: dict) -> list[str]:
    """Lines for the batch-order section: each shuffled run (``batch_order_grid``'s
    results) against its Table 2 run in length buckets (``table_runs``, keyed
    alike), each equal-weight run (``equal_weight_grid``'s) as the share of
    that gap it closes, then per method the runs that drew otherwise than the
    length-bucket run (other dropout masks, another CPU type:
    ``report.other_draws_found``), a difference like another seed's."""
    lines = [line for (d, m, s), r in batch_runs.items()
             for line in control_found(r, table_runs.get((d, m, s)),
                                       f"{d}: {method_spec(m).title} with shuffled batches",
                                       metric="NDCG@20", control_is="in length buckets")]
    lines += [line for (d, m, s), r in equal_weight_runs.items()
              for line in gap_closed(table_runs.get((d, m, s)), batch_runs.get((d, m, s)), r,
                                     f"{d}: {method_spec(m).title} with shuffled batches, windows weighed equally")]
    for (d, m, s), r in batch_runs.items():
        pair = {"length buckets": table_runs.get((d, m, s)), "shuffled": r,
                "windows weighed equally": equal_weight_runs.get((d, m, s))}
        lines += other_draws_found(pair, "length buckets", f"{d}: {method_spec(m).title}'s batch order")
    return lines


EQUAL_WEIGHTS = "shuffled, windows weighed equally"


def equal_weight_verdict(table_runs: dict, batch_runs: dict, equal_weight_runs: dict, metric: str = "NDCG@20",
                         alpha: float = 0.01) -> list[str]:
    """What the equal-weight control (shuffled batches, the length buckets'
    weights of the next-item loss) says about the batch order's effect, per
    method of ``batch_runs`` (all three dicts keyed alike; paired tests at
    ``alpha``): where shuffling moved the method significantly (down or up)
    and the control is not significantly apart from length buckets, the
    reweighting accounts for the change and the batches' make-up does not
    measurably matter; where the control stays apart on the shuffled side,
    the make-up matters too; where it lands apart on the other side, the
    make-up moves it the other way. A method without a control is named:
    for it the two explanations are not separated."""
    from ..evaluation import paired_test
    from ..report.sentences import p_text
    given_back = "with the length buckets' weights given back, shuffled batches leave it"
    lines = []
    for key, shuffled in batch_runs.items():
        d, m, _ = key
        title, buckets, control = method_spec(m).title, table_runs.get(key), equal_weight_runs.get(key)
        if key not in equal_weight_runs:
            lines.append(f"{d}: {title} has no equal-weight run, so whether the reweighting or the make-up of "
                         f"the batches moves it is not measured")
            continue
        if buckets is None or shuffled is None or control is None:
            lines.append(f"{d}: {title}'s equal-weight control: not all three runs stored yet")
            continue
        gap = paired_test(shuffled.test_ranks, buckets.test_ranks, metric)
        against = paired_test(control.test_ranks, buckets.test_ranks, metric)
        change = "drop" if gap["mean_a"] < gap["mean_b"] else "gain"
        side = "below" if against["mean_a"] < against["mean_b"] else "above"
        if gap["p_wilcoxon"] >= alpha:
            verdict = "shuffling does not move it significantly, so the control has nothing to explain"
        elif against["p_wilcoxon"] >= alpha:
            verdict = (f"{given_back} not significantly apart from length buckets ({p_text(against['p_wilcoxon'])}): "
                       f"the reweighting of the next-item loss accounts for its {change} under shuffling, and the "
                       f"make-up of the batches does not measurably matter")
        elif (side == "below") == (change == "drop"):
            verdict = (f"{given_back} significantly {side} length buckets still ({p_text(against['p_wilcoxon'])}): "
                       f"the make-up of the batches matters too")
        else:
            verdict = (f"{given_back} significantly {side} length buckets, past them "
                       f"({p_text(against['p_wilcoxon'])}): the make-up of the batches moves it the other way")
        lines.append(f"{d}: {title}, {metric}: {verdict}")
    return lines


def batch_order_pairs(batch_runs: dict, table2_runs: dict, equal_weight_runs: dict | None = None) -> dict:
    """``method title -> {"length buckets": Table 2's run, "shuffled": its
    batch-order run}`` (``None`` where not stored), for ``grouped_ablation_table``;
    a method in ``equal_weight_runs`` (``equal_weight_grid``'s keys) also has
    an ``EQUAL_WEIGHTS`` row. With several datasets or seeds the label also names them."""
    several = len({(d, s) for d, m, s in batch_runs}) > 1
    equal_weight_runs = equal_weight_runs or {}
    return {(f"{d} / {method_spec(m).title} / seed {s}" if several else method_spec(m).title):
            {"length buckets": table2_runs.get((d, m, s)), "shuffled": run,
             **({EQUAL_WEIGHTS: equal_weight_runs[(d, m, s)]} if (d, m, s) in equal_weight_runs else {})}
            for (d, m, s), run in batch_runs.items()}


def sensitivity_defaults(profile: str, dataset: str = "beauty") -> dict:
    """Each swept param -> its value in the profile's S^4Rec: the run every
    sweep of Figures 5 and 6 shares (Table 3's full model, trained for
    ``SENSITIVITY_EPOCHS`` where the profile has them)."""
    params = profile_config(profile, dataset, "s4rec").params
    return {name: getattr(params, name) for name in SENSITIVITY}


def sensitivity_grid(profile: str, dataset: str = "beauty", seeds=(0,), datasets=None,
                     epochs: int | None = None) -> dict:
    """Figures 5 and 6: ``(dataset, hyperparameter, value, seed) -> config``,
    one S^4Rec param changed at a time (``SENSITIVITY``: K = ``n_prototypes``
    and the weights ``alpha``, ``beta1``, ``beta2``, ``lam``); a value equal
    to the default maps to the profile's S^4Rec config (Table 3's full
    model), capped like every point at ``epochs`` (default: the profile's
    ``SENSITIVITY_EPOCHS``, none for smoke and paper). ``datasets`` (the
    grids' common argument, as the command line passes it) replaces
    ``dataset``."""
    epochs = epochs or SENSITIVITY_EPOCHS.get(profile)
    grid = {}
    for d in (datasets or (dataset,)):
        for s in seeds:
            for name, values in SENSITIVITY.items():
                for v in values:
                    c = profile_config(profile, d, "s4rec", seed=s, **{f"params__{name}": v})
                    grid[(d, name, v, s)] = c.replace(train__epochs=epochs) if epochs else c
    return grid


# Chapter 07's smoke run: two values of each swept setting (K 16 and 128, a weight 0 and 0.1), so it takes seconds.
SMOKE_SENSITIVITY_VALUES = (16, 128, 0.0, 0.1)


def chapter_sensitivity_grid(profile: str, dataset: str, seed: int) -> dict:
    """Chapter 07's grid: ``sensitivity_grid`` on one dataset and seed, at
    the smoke profile only ``SMOKE_SENSITIVITY_VALUES``."""
    grid = sensitivity_grid(profile, dataset, seeds=(seed,))
    if profile == "smoke":
        grid = {k: c for k, c in grid.items() if k[2] in SMOKE_SENSITIVITY_VALUES}
    return grid


def lambda_head_rates(runs: dict, head) -> dict:
    """Figure 6(b)'s boxes: λ -> ``report.clusters.head_rate_by_cluster`` of
    each run of the λ sweep (``runs``: a ``sensitivity_grid``'s results)
    with stored clusters, head users ``head``."""
    return {value: clusters.head_rate_by_cluster(result, head) for (_, name, value, _), result in runs.items()
            if name == "lam" and clusters.has_clusters(result)}


def lambda_head_rate_found(frames: dict, dataset: str) -> list[str]:
    """Lines for "What we found" on ``lambda_head_rates``' frames: each λ's
    spread of cluster head rates, and the paper's Figure 6(b) (head rates
    concentrate as λ grows) read from the largest λ against the smallest."""
    lines = clusters.head_rate_spread({f"λ = {v}": f for v, f in frames.items()})
    if len(frames) > 1:
        high, low = max(frames), min(frames)
        lines += clusters.head_rate_compactness({f"λ = {high}": frames[high], f"λ = {low}": frames[low]},
                                                f"λ = {high}", f"λ = {low}", dataset,
                                                figure="the paper's Figure 6(b)")
    return lines


SETTINGS_CONTROL_ROWS = ("SASRec (its settings)", "SR only (S4Rec's settings)", "S4Rec")


def settings_control(profile: str, datasets, seed: int, table_runs: dict, train_missing: bool = False,
                     device: str = "auto") -> tuple[dict, list[str]]:
    """Chapter 05's settings control on each of ``datasets`` that has one
    (``SETTINGS_CONTROL_DATASETS``): SASRec and S^4Rec from Table 2
    (``table_runs``, keyed ``(dataset, method, seed)``) beside "SR only",
    SASRec's loss in S^4Rec's settings (``settings_control_grid``, trained
    where ``train_missing``). Returns ``({dataset: {row: run or None}},
    lines)``: the rows of ``SETTINGS_CONTROL_ROWS`` and where the control
    lies between S^4Rec and SASRec (``gap_closed``), the share of the gap
    that S^4Rec's added terms account for."""
    control_datasets = [d for d in datasets if d in SETTINGS_CONTROL_DATASETS]
    controls = results_for(settings_control_grid(profile, datasets=control_datasets, seeds=(seed,)),
                           train_missing=train_missing, device=device)
    sasrec, control, s4rec = SETTINGS_CONTROL_ROWS
    trios, lines = {}, []
    for d in control_datasets:
        trios[d] = {sasrec: table_runs.get((d, "sasrec", seed)), control: controls[(d, seed)],
                    s4rec: table_runs.get((d, "s4rec", seed))}
        lines += gap_closed(trios[d][sasrec], trios[d][s4rec], trios[d][control],
                            f"{d}: 'SR only', SASRec's loss in S4Rec's settings", names=("SASRec", "S4Rec"))
    return trios, lines


def batch_order_pending(batch_runs: dict, equal_weight_runs: dict) -> dict:
    """The batch-order section's runs as one ``pending_line`` input: the
    shuffled runs and the equal-weight ones, told apart in their keys."""
    return {**batch_runs, **{(*k, "windows weighed equally"): r for k, r in equal_weight_runs.items()}}
