"""Tables of the chapters' own results: metrics, seeds, stopping, significance, ablations, setups, provenance, time."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ..data.stats import STATISTIC_LABELS, dataset_statistics, head_tail_statistics
from ..evaluation import paired_test
from ..methods import method_spec, parse_method
from ..render import float_text
from ..store import RunResult


METRICS = ("HR@5", "NDCG@5", "HR@10", "NDCG@10", "HR@20", "NDCG@20")


def statistics_frame(datasets: dict) -> pd.DataFrame:
    """``data.dataset_statistics`` of each dataset (``{name: SequenceDataset}``),
    a row each, as floats, with sparsity in percent ("sparsity (%)"), as the
    papers print it."""
    stats = pd.DataFrame({name: dataset_statistics(ds) for name, ds in datasets.items()}).T.astype(float)
    stats["sparsity"] *= 100
    return stats.rename(columns={"sparsity": "sparsity (%)"})


def statistics_shown(stats: pd.DataFrame) -> pd.DataFrame:
    """``statistics_frame`` for a reader: counts as integers, the book's labels."""
    counts = ["users", "items", "actions", "attributes"]
    shown = stats.copy()
    shown[counts] = shown[counts].round().astype("Int64")
    return shown.rename(columns=STATISTIC_LABELS)


def head_tail_statistics_table(datasets: dict, head_fraction: float) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """``data.head_tail_statistics`` of each dataset, a row each (counts as
    integers), and each dataset's per-user head rates."""
    rows, rates = {}, {}
    for name, ds in datasets.items():
        rows[name], rates[name] = head_tail_statistics(ds, head_fraction)
    table = pd.DataFrame(rows).T
    integer = [c for c in table if c in ("head items", "head users") or c.startswith("min")]
    table[integer] = table[integer].astype(int)
    return table, rates


def metrics_table(results: list[RunResult], split: str = "test", metrics=METRICS,
                  rows: str = "method", columns: str = "dataset") -> pd.DataFrame:
    """Mean over seeds of each metric, indexed by (``columns``, metric) x ``rows``.

    With several seeds per cell the spread is in ``seed_spread_table``.
    """
    records = []
    for r in results:
        values = r.test_metrics if split == "test" else r.valid_metrics
        for m in metrics:
            records.append({"dataset": r.config.dataset, "method": method_label(r.config),
                            "seed": r.config.seed, "metric": m, "value": values[m]})
    df = pd.DataFrame(records, columns=["dataset", "method", "seed", "metric", "value"])
    return df.pivot_table(index=rows, columns=[columns, "metric"], values="value", aggfunc="mean",
                          sort=False)


def seed_spread_table(results: list[RunResult], metric: str = "NDCG@10") -> pd.DataFrame:
    """mean, std and number of seeds of ``metric`` per (dataset, method)."""
    df = pd.DataFrame([{"dataset": r.config.dataset, "method": method_label(r.config),
                        "value": r.test_metrics[metric]} for r in results], columns=["dataset", "method", "value"])
    return df.groupby(["dataset", "method"], sort=False)["value"].agg(["mean", "std", "count"])


def per_seed_table(runs: dict, metric: str = "NDCG@10", index_name: str = "variant") -> pd.DataFrame:
    """One row per label of ``runs[label][seed]`` (a run or ``None``): the
    number of seeds run, ``metric`` of each seed (NaN where not run), and mean and
    sample std over the seeds run (std needs two). ``seed_spread_table`` gives
    the same summary grouped by (dataset, method), without the seeds."""
    seeds = sorted({s for by_seed in runs.values() for s in by_seed})
    rows = []
    for label, by_seed in runs.items():
        values = pd.Series({s: r.test_metrics[metric] for s, r in by_seed.items() if r is not None}, dtype=float)
        rows.append({index_name: label, "seeds": len(values),
                     **{f"seed {s}": values.get(s, np.nan) for s in seeds},
                     "mean": values.mean() if len(values) else np.nan,
                     "std": values.std(ddof=1) if len(values) > 1 else np.nan})
    return pd.DataFrame(rows).set_index(index_name)


def runs_by_method_and_seed(grid: dict, runs: dict) -> dict[str, dict[int, object]]:
    """``per_seed_table``'s ``runs`` from a grid of one dataset (key ->
    config) and its results (key -> run or ``None``): method label (as the
    tables name it) -> seed -> run, in the grid's order. Two configs with
    the same label and seed (two datasets, two precisions) are an error,
    not one run silently kept."""
    by_method: dict[str, dict[int, object]] = {}
    for key, config in grid.items():
        seeds = by_method.setdefault(method_label(config), {})
        if config.seed in seeds:
            raise ValueError(f"runs_by_method_and_seed: two runs of {method_label(config)} with seed {config.seed} "
                             f"in one grid (key {key!r}); pass a grid of one dataset and one setting per method")
        seeds[config.seed] = runs[key]
    return by_method


def mean_differences_over_seeds(table: pd.DataFrame, reference: str) -> list[str]:
    """For each row of a ``per_seed_table`` with two or more seeds, a line
    with its mean minus the ``reference`` row's mean and whether that
    exceeds one pooled seed std, sqrt((std_row^2 + std_ref^2) / 2); one line
    saying so when the reference itself has fewer than two seeds."""
    ref = table.loc[reference]
    if not np.isfinite(ref["std"]):
        return [f"{reference} has fewer than two seeds stored: no comparison of means over seeds yet"]
    lines = []
    for label, row in table.iterrows():
        if label == reference or not np.isfinite(row["std"]):
            continue
        difference = row["mean"] - ref["mean"]
        pooled_std = np.sqrt((row["std"] ** 2 + ref["std"] ** 2) / 2)
        side = ("equal to" if round(difference, 4) == 0 else
                f"{abs(difference):.4f} {'above' if difference > 0 else 'below'}")
        within = "within" if abs(difference) <= pooled_std else "more than"
        lines.append(f"{label}'s mean over {int(row['seeds'])} seeds is {side} {reference}'s "
                     f"({row['mean']:.4f} against {ref['mean']:.4f}), {within} one pooled "
                     f"seed standard deviation ({pooled_std:.4f})")
    return lines


_WITH_VARIANT = re.compile(r"^(?P<name>[^\[\]]+)(?:\[(?P<variant>[\w-]+)\])?$")


def method_title(name) -> str:
    """A method id as the book names methods: ``"sasrec"`` -> ``"SASRec"``,
    ``"emkd-gru4rec"`` (``parse_method``'s form) -> ``"EMKD (GRU4Rec)"``, and
    with a benchmark's variant, ``"emkd-gru4rec[bf16]"`` -> ``"EMKD (GRU4Rec,
    bf16)"``, as ``report.method_label`` names a run. Anything else (a
    dataset, a seed, an unknown id) is kept as written."""
    match = _WITH_VARIANT.match(name) if isinstance(name, str) else None
    if match is None:
        return str(name)
    try:
        method, encoder = parse_method(match["name"])
    except ValueError:
        return name
    details = ([method_spec(encoder).title] if encoder else []) + ([match["variant"]] if match["variant"] else [])
    title = method_spec(method).title
    return f"{title} ({', '.join(details)})" if details else title


def method_label(config, with_precision: bool = False) -> str:
    """How a run's method is named in tables: ``EMKD`` on its own encoder,
    ``EMKD (SASRec)`` on another one, else the method's name. The precision
    is a setting like the others (setup tables show it); ``with_precision``
    names it too where one table holds the same method in two precisions,
    ``EMKD (bf16)``."""
    name = config.spec.title
    if config.spec.label is not None:
        name = config.spec.label(config.params)
    if with_precision and config.train.precision != "fp32":
        name += f" ({config.train.precision})"
    if config.encoder != config.spec.encoders[0]:
        name += f" ({method_spec(config.encoder).title})"
    return name


def _commit_cell(result) -> str:
    """The full commit that stored a run, and, for a run resumed by other
    code than started it, the commits of its earlier epochs."""
    commit = result.provenance["commit"]
    earlier = [c for c in result.flags.get("trained_by_commits", []) if c != commit]
    return f"{commit} (resumed; earlier epochs: {', '.join(earlier)})" if earlier else commit


def labelled_runs(section: str, runs: dict, name=None) -> list[tuple[str, object]]:
    """``("section / name", run)`` of each stored run of a grid's results,
    for ``provenance_table``; ``name(key, run)`` names the row the run backs
    (default: its dataset and its method as the tables name it; the seed
    has its own column). An empty ``section`` labels by the name alone."""
    name = name or (lambda key, run: f"{run.config.dataset} / {method_label(run.config)}")
    prefix = f"{section} / " if section else ""
    return [(prefix + name(key, run), run) for key, run in runs.items() if run is not None]


def provenance_table(results: dict | list) -> pd.DataFrame:
    """Where each number comes from: run key, full commit (``+dirty`` shown;
    with a run's earlier commits if it was resumed by other code), machine,
    date, cost; ``results`` a label -> run dict, a list of ``(label, run)``
    (``labelled_runs``) or a list of runs. A run that backs several rows of
    a chapter (a shared reference) is one row, its labels joined by "; "."""
    if isinstance(results, dict):
        items = results.items()
    else:
        items = [item if isinstance(item, tuple) else (method_label(item.config), item) for item in results]
    rows: dict[str, dict] = {}
    for label, r in items:
        if r is None:
            continue
        label = label if isinstance(label, str) else " / ".join(map(str, label))
        if r.key in rows:
            rows[r.key]["run"] += f"; {label}"
            continue
        rows[r.key] = {"run": label, "seed": r.config.seed, "key": r.key,
                       "epochs (best)": f"{len(r.history)} ({r.best_epoch})", "training (s)": round(r.train_seconds),
                       "commit": _commit_cell(r), "machine": r.provenance["machine"], "date": r.provenance["date"]}
    return pd.DataFrame(list(rows.values()))


def ensemble_provenance_table(ensembles) -> pd.DataFrame:
    """``provenance_table`` for evaluated ensembles (``EnsembleResult``s;
    None skipped): dataset, method, the members' seeds, the evaluation's
    seconds, commit, machine and date. An ensemble trains nothing: its
    members' own rows say how each was trained."""
    return pd.DataFrame([{"dataset": e.config.dataset, "method": method_title(e.config.method),
                          "seeds": ", ".join(str(c.seed) for c in e.members),
                          "evaluation (s)": round(e.eval_seconds, 1), "commit": e.provenance["commit"],
                          "machine": e.provenance["machine"], "date": e.provenance["date"]}
                         for e in ensembles if e is not None])


# A run whose best validation NDCG@10 rose by more than this (percent) in
# the last quarter of its evaluations was still climbing when it stopped
# (at the cap, or by patience on a noisy step): its number is a lower bound.
# On a curve that has peaked, the last quarter adds little or nothing.
STILL_RISING_PERCENT = 5.0
STILL_RISING = "still rising"
LATE_GAIN_COLUMN = "rise, last quarter %"
AT_CAP_COLUMN = "best at the cap"


def stopping_caption() -> str:
    """What the columns of a ``stopping_table`` mean, as its caption."""
    return (f"{AT_CAP_COLUMN}: the best epoch is the last one the epoch cap allowed; {LATE_GAIN_COLUMN}: how much "
            f"the best validation NDCG@10 rose in the last quarter of the run's evaluations; {STILL_RISING}: best "
            f"at the cap, or a rise above {STILL_RISING_PERCENT:g}% (its number is a lower bound); popularity "
            f"valid NDCG@10: the most-popular ranking on the same users, the floor a trained model should clear")


def late_gain(history: list[dict]) -> float:
    """How much the best validation NDCG@10 rose in the last quarter of a
    run's evaluations, in percent: the best of all against the best of the
    first three quarters (NaN with fewer than four evaluations)."""
    values = np.array([h["valid_ndcg10"] for h in history if "valid_ndcg10" in h], dtype=float)
    if len(values) < 4:
        return float("nan")
    head = len(values) - int(np.ceil(len(values) / 4))
    return relative_change(float(values.max()), float(values[:head].max()))


def _best_at_cap(r) -> bool:
    """Stopped by the epoch cap with its best at the last epoch: still improving."""
    return r.flags.get("stopped_by") == "epoch cap" and r.best_epoch == len(r.history)


def ended_still_rising(r) -> bool:
    """One run's "still rising" flag, as ``stopping_table`` sets it: best at
    the cap, or a best that rose more than ``STILL_RISING_PERCENT`` in the
    run's last quarter."""
    return _best_at_cap(r) or bool(late_gain(r.history) > STILL_RISING_PERCENT)


def _stopped_by(r) -> str:
    """What ended a run; "patience, after min steps" where patience alone
    would have ended it sooner: the evaluations without a better score only
    count once the run has taken ``TrainConfig.min_steps`` steps, so on a
    small dataset a run ends well past its best epoch plus its patience."""
    stopped = r.flags.get("stopped_by", "?")
    if stopped == "patience" and len(r.history) - r.best_epoch > r.config.train.patience:
        return "patience, after min steps"
    return stopped


def stopping_table(results: dict) -> pd.DataFrame:
    """Per run: epochs run, best epoch, what stopped it (patience or the
    epoch cap) and whether the best epoch sits at the cap (still improving
    when stopped), the rise of its best over the last quarter of the run
    (``late_gain``; "still rising" above ``STILL_RISING_PERCENT``), and its
    validation NDCG@10 against the popularity floor; rows labelled by
    ``run_index``."""
    rows = []
    for label, r in results.items():
        if r is None:
            continue
        gain = late_gain(r.history)
        rows.append({"epochs": len(r.history), "best epoch": r.best_epoch,
                     "stopped by": _stopped_by(r),
                     AT_CAP_COLUMN: _best_at_cap(r),
                     LATE_GAIN_COLUMN: gain, "still rising": bool(gain > STILL_RISING_PERCENT),
                     "valid NDCG@10": r.valid_metrics["NDCG@10"],
                     # a run below the most-popular ranking shows as a smaller number beside it
                     "popularity valid NDCG@10": r.flags.get("popularity_valid_ndcg10", np.nan)})
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows, index=run_index({label: r for label, r in results.items() if r is not None}))


def run_index(runs: dict) -> pd.Index:
    """Row labels for a table of ``runs`` (label -> run): a grid's tuple keys
    (dataset, method, seed, ...) as index levels with the method under its
    name, a level the same in every row left out (the one seed, the one
    dataset: it only widens the table); other labels as they are. A level
    is named "dataset", "method" or "seed" where every row's value is its
    run's."""
    labels = [tuple(method_label(r.config) if part == r.config.method else part for part in label)
              if isinstance(label, tuple) else label for label, r in runs.items()]
    if not (labels and all(isinstance(label, tuple) for label in labels)
            and len({len(label) for label in labels}) == 1):
        return pd.Index([run_name(label) for label in labels], name="run")
    index = pd.MultiIndex.from_tuples(labels, names=[_level_name(labels, list(runs.values()), i)
                                                     for i in range(len(labels[0]))])
    constant = constant_levels(index)
    return index.droplevel(constant) if constant else index


_LEVEL_NAMES = {"dataset": lambda r: r.config.dataset, "method": lambda r: method_label(r.config),
                "seed": lambda r: r.config.seed}


def _level_name(labels: list[tuple], runs: list, level: int) -> str | None:
    """What level ``level`` of a grid's keys holds, where every row says so."""
    return next((name for name, value in _LEVEL_NAMES.items()
                 if all(label[level] == value(r) for label, r in zip(labels, runs))), None)


def constant_levels(index: pd.Index) -> list[int]:
    """The levels of a MultiIndex of several rows that hold one value in
    every row (the one seed, the one dataset: shown, they only widen a
    table), keeping at least one level; none for a flat or one-row index."""
    if index.nlevels < 2 or len(index) < 2:
        return []
    constant = [i for i in range(index.nlevels) if index.get_level_values(i).nunique() == 1]
    return constant if len(constant) < index.nlevels else []


def _rising_mask(stops: pd.DataFrame) -> pd.Series:
    """Which rows of a ``stopping_table`` ended still rising (at the cap, or rising late)."""
    return stops["still rising"] | stops[AT_CAP_COLUMN]


def _rising(stops: pd.DataFrame) -> pd.DataFrame:
    """The rows of a ``stopping_table`` that ended still rising."""
    return stops[_rising_mask(stops)]


def still_rising_runs(results: dict) -> list[tuple[str, str]]:
    """``(dataset, method label)`` of each stored run of ``results`` that
    ended still rising, as ``stopping_table`` flags it (best at the cap, or a
    best that rose more than ``STILL_RISING_PERCENT`` in the run's last
    quarter), once per pair however many seeds it has; for
    ``reference_found``, whose rows are such pairs."""
    stored = [r for r in results.values() if r is not None]
    if not stored:
        return []
    stops = stopping_table(results)
    flagged = _rising_mask(stops).to_numpy()
    return list(dict.fromkeys((r.config.dataset, method_label(r.config)) for r, f in zip(stored, flagged) if f))


def still_rising_found(stops: pd.DataFrame) -> list[str]:
    """A line for "What we found" from a ``stopping_table``: the runs that
    ended still rising (best at the cap, or a best that rose more than
    ``STILL_RISING_PERCENT`` in the run's last quarter), which are not
    converged however they were stopped."""
    if stops.empty:
        return []
    rising = _rising(stops)
    if rising.empty:
        return [f"no run of the {len(stops)} was still rising when it stopped (each ended on a plateau)"]
    named = ", ".join(f"{run_name(label)} (stopped by {row['stopped by']} at epoch {row['epochs']}; its best "
                      f"validation NDCG@10 rose {row[LATE_GAIN_COLUMN]:.1f}% in the last quarter of the run)"
                      for label, row in rising.iterrows())
    one = len(rising) == 1
    bound = "its number is a lower bound" if one else "their numbers are lower bounds"
    return [f"{len(rising)} of {len(stops)} runs {'was' if one else 'were'} still rising when "
            f"{'it' if one else 'they'} stopped (not converged: {bound}): {named}"]


def curves_frame(results: list[RunResult]) -> pd.DataFrame:
    """Per-epoch training curves of every run in long format."""
    rows = []
    for r in results:
        for h in r.history:
            rows.append({"dataset": r.config.dataset, "method": method_label(r.config), "seed": r.config.seed,
                         "run": r.key, **h})
    return pd.DataFrame(rows, columns=None if rows else ["dataset", "method", "seed", "run", "epoch", "loss",
                                                         "valid_ndcg10", "wall_seconds"])


def relative_change(value: float, reference: float) -> float:
    """``value`` relative to ``reference`` in percent; NaN when the reference is 0."""
    return 100 * (value / reference - 1) if reference > 0 else float("nan")


def significance_table(results: list[RunResult], metric: str = "NDCG@10",
                       reference: str | None = None, with_precision: bool = False) -> pd.DataFrame:
    """Per dataset: the best method (or ``reference``) against each other
    method, paired over test users; ``with_precision`` names a bf16 run
    apart from its fp32 twin (``method_label``).

    Only seed-0 runs are paired (the same users, the same seed).
    """
    rows = []
    for dataset in dict.fromkeys(r.config.dataset for r in results):
        runs = {method_label(r.config, with_precision): r for r in results
                if r.config.dataset == dataset and r.config.seed == 0}
        if reference is not None and reference not in runs:
            continue
        best = reference or max(runs, key=lambda m: runs[m].test_metrics[metric])
        for method, r in runs.items():
            if method == best:
                continue
            t = paired_test(runs[best].test_ranks, r.test_ranks, metric)
            role = "reference" if reference else "best"
            rows.append({"dataset": dataset, role: best, "other": method,
                         f"{role} {metric}": t["mean_a"], f"other {metric}": t["mean_b"],
                         "change %": relative_change(t["mean_a"], t["mean_b"]),
                         "p (Wilcoxon)": t["p_wilcoxon"], "significant at 0.01": t["p_wilcoxon"] < 0.01})
    return pd.DataFrame(rows)


def format_table(df: pd.DataFrame, digits: int | None = 4) -> str:
    """Fixed-width text of a table, stable across runs (for nbval checks);
    ``digits`` as in ``render.render_table`` (None: floats as written)."""
    # to_string's na_rep does not reach pandas' nullable (extension) columns, e.g. Int64 counts.
    nullable = [i for i, dtype in enumerate(df.dtypes) if isinstance(dtype, pd.api.extensions.ExtensionDtype)
                and not isinstance(dtype, pd.CategoricalDtype) and df.iloc[:, i].isna().any()]
    if nullable:
        df = df.copy()
        for i in nullable:
            column = df.iloc[:, i]
            df.isetitem(i, column.astype(object).where(column.notna(), "-"))
    return df.to_string(na_rep="-", float_format=lambda x: float_text(x, digits) if np.isfinite(x) else "-")


def ensemble_gain_table(singles: dict, ensembles: dict, metric: str = "NDCG@10") -> pd.DataFrame:
    """EMKD Table 1: single models against the ensemble of two of them.

    ``singles[(dataset, method)]`` lists the stored single runs (any seeds),
    ``ensembles[(dataset, method)]`` is the ensemble of two of them (or None).
    Rows are (dataset, the method's name). The single models' mean and
    standard deviation are over every seed listed (the seed spread); the
    ensemble's gain is over the mean of its own two members, the models it
    averages; the better member's value is beside it, and the paired test
    compares the ensemble with that member over users.
    """
    rows = []
    for key, runs in singles.items():
        ens = ensembles.get(key)
        values = [r.test_metrics[metric] for r in runs]
        row = {"dataset": key[0], "method": method_title(key[1]), "seeds": len(runs),
               f"single {metric} (mean)": np.mean(values) if values else np.nan,
               "single std": np.std(values, ddof=1) if len(values) > 1 else np.nan,
               "members' mean": np.nan,
               f"ensemble x2 {metric}": ens.test_metrics[metric] if ens else np.nan}
        members = [r for r in runs if ens and r.config in ens.members]
        if members:
            row["members' mean"] = np.mean([r.test_metrics[metric] for r in members])
        row["gain over members' mean %"] = relative_change(row[f"ensemble x2 {metric}"], row["members' mean"])
        if members:
            better = max(members, key=lambda r: r.test_metrics[metric])
            # a weak member inflates the gain over the mean; the better member is the bar an ensemble must clear
            row["better member"] = better.test_metrics[metric]
            row["p vs better member (Wilcoxon)"] = paired_test(ens.test_ranks, better.test_ranks, metric)["p_wilcoxon"]
        rows.append(row)
    return pd.DataFrame(rows).set_index(["dataset", "method"])


def ablation_table(runs: dict, reference: str, metrics=("HR@10", "NDCG@10"), tested: str = "NDCG@10"
                   ) -> pd.DataFrame:
    """One row per labelled run (``None`` = not run): its test metrics, the
    relative change of the ``tested`` metric against the ``reference`` row
    (column "<tested> change %"), and the p of a paired Wilcoxon test of it
    over users against that row (column "p": the reference is the row
    without one, named in the chapter's text). A run that ended still rising
    (``still_rising_runs``) says so in its status."""
    ref = runs.get(reference)
    metrics = _metric_columns(metrics, tested)
    rows = []
    for label, r in runs.items():
        row = {"variant": label}
        if r is None:
            rows.append({**row, "status": "not run"})
            continue
        row.update({m: r.test_metrics[m] for m in metrics})
        row["status"] = f"best epoch {r.best_epoch}/{len(r.history)}" + (
            " (cap)" if r.flags.get("stopped_by") == "epoch cap" else "") + (
            f", {STILL_RISING}" if ended_still_rising(r) else "")
        if ref is not None and label != reference:
            t = paired_test(r.test_ranks, ref.test_ranks, tested)
            row[f"{tested} change %"] = relative_change(t["mean_a"], t["mean_b"])
            row["p"] = t["p_wilcoxon"]
        rows.append(row)
    table = pd.DataFrame(rows).set_index("variant")
    # Column order must not depend on whether the first row was run.
    return table[[c for c in _ablation_columns(metrics, tested) if c in table.columns]]


def _metric_columns(metrics, tested: str) -> list[str]:
    """An ablation table's metric columns: ``metrics``, with ``tested`` (the
    metric of its change and test) added when ``metrics`` lacks it."""
    return [*metrics, *(() if tested in metrics else (tested,))]


def _ablation_columns(metrics, tested: str) -> list[str]:
    """An ablation table's columns in order."""
    return [*_metric_columns(metrics, tested), "status", f"{tested} change %", "p"]


def grouped_ablation_table(groups: dict, reference: str, metrics=("HR@10", "NDCG@10"),
                           level: str = "method", tested: str = "NDCG@10") -> pd.DataFrame:
    """The ``ablation_table`` of each group (``group label -> {row label -> run}``,
    each group with its own ``reference`` row), stacked under an outer index
    level ``level``: one table for a control that several methods share."""
    if not groups:
        return pd.DataFrame(index=pd.MultiIndex.from_tuples([], names=[level, "variant"]))
    table = pd.concat({group: ablation_table(runs, reference, metrics, tested) for group, runs in groups.items()},
                      names=[level])
    # the column order must not depend on which group ran first
    return table[[c for c in _ablation_columns(metrics, tested) if c in table.columns]]


def significant_changes(table: pd.DataFrame, reference: str, alpha: float = 0.01, fixed_budget: bool = False) -> str:
    """One line naming the rows of an ``ablation_table`` whose paired test
    against ``reference`` has p < ``alpha``, with their change in the tested
    metric (named), so a chapter's conclusion is read off the table instead
    of written by hand. ``fixed_budget``: every row trained the same few
    epochs by design (a sweep), so a reference at its cap is not a lower
    bound to flag but the comparison's budget, and the line says so."""
    if reference not in table.index or table.loc[reference, "status"] == "not run":
        return f"no comparison: {reference} has not been run"
    p = pd.to_numeric(table.get("p", pd.Series(dtype=float)), errors="coerce")
    n_tested = int(p.notna().sum())
    if n_tested == 0:
        return f"no comparison: no other row has been run beside {reference}"
    (change,) = [c for c in table.columns if str(c).endswith(" change %")]
    metric = change.removesuffix(" change %")
    rows = table[p < alpha]

    def rising(label) -> bool:
        return STILL_RISING in str(table.loc[label, "status"])

    caveat = ("; every row trained the same fixed number of epochs, so the rows are compared at that budget, "
              "not converged" if fixed_budget else
              f"; {reference} itself ended {STILL_RISING}, so every change is read against a lower bound"
              if rising(reference) else "")
    if rows.empty:
        return f"no row differs from {reference} in {metric} at p < {alpha} ({n_tested} tested){caveat}"
    changes = ", ".join(f"{label} ({row[change]:+.1f}%" + (f", {STILL_RISING}" if rising(label) and not fixed_budget
                                                           else "") + ")"
                        for label, row in rows.iterrows())
    rows_text = f"{len(rows)} of {n_tested} row{'s' * (n_tested > 1)} {'differs' if len(rows) == 1 else 'differ'}"
    return f"{rows_text} from {reference} in {metric} at p < {alpha}: {changes}{caveat}"


def parameters_found(ensembles: dict, singles: dict, where: str) -> list[str]:
    """EMKD Table 5's question, is it the parameters: per stored ensemble
    (``label -> (parameter count, run or None)``), its test NDCG@10 against
    the best stored single model of any size (``singles``, the same form),
    with the change and a paired Wilcoxon test over test users."""
    stored = {label: (n, r) for label, (n, r) in singles.items() if r is not None}
    if not stored:
        return [f"{where}: no single model stored yet"]
    best, (best_n, best_run) = max(stored.items(), key=lambda kv: kv[1][1].test_metrics["NDCG@10"])
    lines = []
    for label, (n, run) in ensembles.items():
        if run is None:
            continue
        t = paired_test(run.test_ranks, best_run.test_ranks, "NDCG@10")
        lines.append(f"{where}: {label} ({n:,} parameters) NDCG@10 {t['mean_a']:.4f}, "
                     f"{relative_change(t['mean_a'], t['mean_b']):+.1f}% against the best single model, {best} "
                     f"({best_n:,} parameters, {t['mean_b']:.4f}; paired Wilcoxon p = {t['p_wilcoxon']:.2g})")
    return lines


def sweep_points(runs: dict, name: str, metrics=("NDCG@10", "HR@10")) -> list[tuple]:
    """One hyperparameter's stored points of a sweep, for a figure:
    ``(value, *metrics)`` sorted by value, from ``runs`` keyed
    ``(dataset, name, value, seed)`` as the studies' sensitivity grids key
    them; runs not stored yet are left out."""
    return sorted((v, *(r.test_metrics[m] for m in metrics)) for (d, n, v, s), r in runs.items()
                  if n == name and r is not None)


def sweep_rows(runs: dict, default, labels: dict[str, str]) -> dict:
    """A one-at-a-time sweep's stored runs as rows for ``ablation_table``:
    ``"default"`` (the point where the swept parameter has its default value,
    which every sweep shares; taken from the first sweep that has it) and
    ``"<label> = <value>"`` for each other point. ``runs`` is keyed
    ``(dataset, name, value, seed)`` as the studies' sensitivity grids key
    them, ``default`` holds each name's default (as an attribute, or a
    mapping name -> value), ``labels`` maps a name to its printed label. A
    name without a default (a control, ODMT's ``"fusion = independent"``) is
    a row of its own."""
    value_of = default.get if isinstance(default, dict) else (lambda n: getattr(default, n, None))
    at_default = [r for (d, n, v, s), r in runs.items() if v == value_of(n)]
    rows = {"default": next((r for r in at_default if r is not None), None)}
    rows.update({f"{labels[n]} = {v}": r for (d, n, v, s), r in runs.items() if v != value_of(n)})
    return rows


def pending_line(runs: dict, of: str = "", name=None, stored_as: str = "stored") -> str:
    """One clause: how many of a grid's runs (``of``, e.g. "of Table 3",
    names the grid) are ``stored_as``, and which are still to train, each
    named by ``name(label)`` (default: a grid key's parts under their
    names, "toys / EMKD"; a table row's own label in quotes)."""
    # rows are named like "code: batches drawn at random": quoted, they read as one name
    name = name or (lambda label: f'"{label}"' if isinstance(label, str) else run_name(label))
    missing = [name(label) for label, r in runs.items() if r is None]
    # a run under two labels (a sweep's default point, shared by every sweep) counts once
    stored = len({getattr(r, "key", id(r)) for r in runs.values() if r is not None})
    of = f" {of}" if of else ""
    if not missing:
        return f"the one run{of} is {stored_as}" if stored == 1 else f"all {stored} runs{of} are {stored_as}"
    shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
    verb = "is" if stored == 1 else "are"
    return f"{stored} of {stored + len(missing)} runs{of} {verb} {stored_as}; still to train: {shown}"


def pending_sentence(runs: dict, of: str = "", name=None) -> str:
    """``pending_line`` as a sentence of its own, for a chapter's opening:
    "All 15 runs of Table 3 are in the result store." """
    line = pending_line(runs, of, name, stored_as="in the result store")
    return line[0].upper() + line[1:] + "."


def not_stored_by_dataset(runs: dict, grid: dict) -> dict:
    """dataset -> labels of the methods of ``runs`` (a grid's results, keyed
    ``(dataset, method, seed)`` as ``grid``) not stored there yet, for
    ``claim_found``'s ``not_stored``; a dataset with every run stored is
    absent."""
    missing: dict = {}
    for key, result in runs.items():
        if result is None:
            missing.setdefault(key[0], []).append(method_label(grid[key]))
    return missing


def run_name(label) -> str:
    """A run's label as the chapters name it: a string as it is, a key
    ``(dataset, method, ...)`` with its parts joined, methods titled
    (``("ml-1m", "duorec")`` -> "ml-1m / DuoRec")."""
    return label if isinstance(label, str) else " / ".join(map(method_title, label))


# What a None setting means, where it is not "not applicable".
_NONE_MEANS = {"max_users": "all", "grad_clip": "off", "window_step": "default"}
# One setting under two methods' names: compared, and shown, as one column.
_SAME_SETTING = {"n_intents": "clusters", "n_prototypes": "clusters"}


def _flat_settings(grid: dict) -> dict:
    """(dataset, method label) -> that config's settings as one flat dict
    (settings that two methods name differently, ``_SAME_SETTING``, under one
    name; None as what it means, ``_NONE_MEANS``)."""
    rows = {}
    for config in grid.values():
        flat = {"dataset": config.dataset, "method": method_label(config)}
        for part in ("encoder_config", "params", "train", "data"):
            for k, v in vars(getattr(config, part)).items():
                flat[_SAME_SETTING.get(k, k)] = _NONE_MEANS.get(k, v) if v is None else v
        rows.setdefault((config.dataset, flat["method"]), flat)
    return rows


def setup_table(grid: dict) -> pd.DataFrame:
    """One row per (dataset, method) of a grid: the settings that differ
    between the configs that have them ("-" where a method has no such
    setting; a method's own settings only where they differ)."""
    rows = _flat_settings(grid)
    df = pd.DataFrame(list(rows.values()))
    # compared as the config's own values, among the configs that have the key
    values = {c: {repr(flat[c]) for flat in rows.values() if c in flat} for c in df.columns}
    varying = [c for c in df.columns if c in ("dataset", "method") or len(values[c]) > 1]
    return df[varying].set_index(["dataset", "method"])


# Options that change how a run is computed or loaded, not what it trains:
# left out of the shared-settings table.
_HOW_NOT_WHAT = {"activation_checkpointing", "checkpoint_rows", "output_chunk", "on_short", "remap_ids",
                 "allow_modified"}


def shared_settings(grid: dict) -> pd.DataFrame:
    """The settings every config of a grid has, each with one value across
    all of them (the ones ``setup_table`` leaves out), one row each, in a
    column "every run"."""
    rows = list(_flat_settings(grid).values())
    if not rows:
        return pd.DataFrame()
    common = [c for c in rows[0] if c not in ("dataset", "method") and c not in _HOW_NOT_WHAT
              and all(c in r for r in rows) and len({repr(r[c]) for r in rows}) == 1]
    return pd.DataFrame({"every run": [rows[0][c] for c in common]},
                        index=pd.Index(common, name="setting"))


# Settings as a reader names them; other settings drop their underscores.
SETTING_LABELS = {"max_users": "users", "n_heads": "heads", "n_blocks": "blocks", "n_layers": "layers",
                  "max_len": "max length", "lam": "lambda"}


def setup_tables(grid: dict) -> dict[str, pd.DataFrame]:
    """``setup_table`` split so that each setting is shown once: those that
    every run shares (``shared_settings``), those that depend only on the
    dataset (a row per dataset), those that depend only on the method (a
    row per method), and any that depend on both (a row per dataset and
    method), each under its caption, with readable labels
    (``SETTING_LABELS``). Empty parts, and rows of methods without any of
    the last part's settings, are left out."""
    table = setup_table(grid)
    if table.empty:
        return {}
    same_within = lambda level, c: (table[c].map(repr).groupby(level=level).nunique() == 1).all()
    by_dataset = [c for c in table.columns if same_within("dataset", c)]
    by_method = [c for c in table.columns if c not in by_dataset and same_within("method", c)]
    rest = [c for c in table.columns if c not in by_dataset and c not in by_method]
    label = lambda df: df.rename(columns=lambda c: SETTING_LABELS.get(c, c.replace("_", " ")))
    shared = shared_settings(grid)
    shared.index = [SETTING_LABELS.get(c, c.replace("_", " ")) for c in shared.index]
    parts = {"settings shared by every run": shared,
             "settings per dataset (every method)": table[by_dataset].groupby(level="dataset", sort=False).first(),
             "settings per method (every dataset)": table[by_method].groupby(level="method", sort=False).first(),
             "settings per dataset and method": table[rest].dropna(how="all")}
    return {caption: df if caption == "settings shared by every run" else label(df)
            for caption, df in parts.items() if len(df.columns) and len(df)}


def emkd_setup_table(datasets, profiles) -> pd.DataFrame:
    """The configuration of Table 3's EMKD run per dataset under each profile
    (d, blocks, heads, length, dropout, windows, users, N, M, ..., precision)."""
    from ..studies.emkd import main_grid
    rows = []
    for dataset in datasets:
        for profile in profiles:
            c = main_grid(profile, (dataset,))[(dataset, 0)]
            e, p, t, d = c.encoder_config, c.params, c.train, c.data
            rows.append({"dataset": dataset, "profile": profile, "d": e.hidden, "blocks": e.n_blocks,
                         "heads": e.n_heads, "max len": d.max_len, "dropout": e.dropout, "window step": d.step,
                         "users": d.max_users or "all",
                         "batch": t.batch_size, "epochs (cap)": t.epochs, "N": p.n_networks, "M": p.n_views,
                         "tau": p.tau, "lambda": p.lam, "mu": p.mu, "precision": t.precision})
    return pd.DataFrame(rows).drop_duplicates().set_index(["dataset", "profile"])


def parameter_count(config, dataset) -> int:
    """Trainable parameters of the model ``config`` builds on ``dataset``."""
    from ..methods import build_method
    model, _ = build_method(config, dataset)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def size_table(sized: dict) -> pd.DataFrame:
    """EMKD Table 5's view: ``label -> (parameter count, run or None)`` as
    rows of parameters and test NDCG@10 (NaN: not run)."""
    rows = [{"model": label, "parameters": n, "test NDCG@10": r.test_metrics["NDCG@10"] if r else np.nan}
            for label, (n, r) in sized.items()]
    return pd.DataFrame(rows).set_index("model")


# --- Conclusions in words, computed from the stored numbers -----------------

def equal_time_table(results: dict, seconds: float | None = None) -> pd.DataFrame:
    """Validation NDCG@10 at equal training time (EMKD's Figure 5 read as a
    table): per run, the best validation NDCG@10 reached within ``seconds`` of
    training (default: the shortest total training time among the runs, so
    every run is compared at a time all of them reached), beside its best and
    its total training time (rows labelled by ``run_index``). EMKD's step
    costs several single models', and this is what that cost buys."""
    runs = {label: r for label, r in results.items() if r is not None}
    if not runs:
        return pd.DataFrame({"status": ["no runs stored yet"]})
    totals = {label: float(np.sum([h["train_seconds"] for h in r.history])) for label, r in runs.items()}
    budget = min(totals.values()) if seconds is None else float(seconds)
    rows = []
    for label, r in runs.items():
        elapsed = np.cumsum([h["train_seconds"] for h in r.history])
        within = [h["valid_ndcg10"] for h, t in zip(r.history, elapsed) if t <= budget]
        rows.append({f"valid NDCG@10 within {budget:.0f} s": max(within) if within else np.nan,
                     "best valid NDCG@10": max(h["valid_ndcg10"] for h in r.history),
                     "training (s, total)": totals[label]})
    return pd.DataFrame(rows, index=run_index(runs))


# --- Narrative: what the paper claims, what we found ------------------------
