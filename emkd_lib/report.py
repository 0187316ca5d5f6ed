"""Tables and figures for the book's chapters.

Notebooks narrate; the shaping of results into tables and the saving of
figures lives here so every chapter does it the same way.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import settings as settings_module
from .evaluation import paired_test
from .paper_tables import beside_quoted, quoted_table
from .runs import ensemble_run_or_load, run_or_load, stored, stored_ensemble
from .store import RunResult

METRICS = ("HR@5", "NDCG@5", "HR@10", "NDCG@10", "HR@20", "NDCG@20")


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
    seeds run, ``metric`` of each seed (NaN where not run), and mean and
    sample std over the seeds run (std needs two). ``seed_spread_table`` gives
    the same summary grouped by (dataset, method), without the seeds."""
    seeds = sorted({s for by_seed in runs.values() for s in by_seed})
    rows = []
    for label, by_seed in runs.items():
        values = pd.Series({s: r.test_metrics[metric] for s, r in by_seed.items() if r is not None}, dtype=float)
        rows.append({index_name: label, "seeds run": list(values.index),
                     **{f"seed {s}": values.get(s, np.nan) for s in seeds},
                     "mean": values.mean() if len(values) else np.nan,
                     "std": values.std(ddof=1) if len(values) > 1 else np.nan})
    return pd.DataFrame(rows).set_index(index_name)


def mean_differences_over_seeds(table: pd.DataFrame, reference: str) -> list[str]:
    """For each row of a ``per_seed_table`` with two or more seeds, a line
    with its mean minus the ``reference`` row's mean and whether that
    exceeds one pooled seed std, sqrt((std_row^2 + std_ref^2) / 2)."""
    ref = table.loc[reference]
    lines = []
    for label, row in table.iterrows():
        if label == reference or not np.isfinite(row["std"]):
            continue
        difference = row["mean"] - ref["mean"]
        pooled_std = np.sqrt((row["std"] ** 2 + ref["std"] ** 2) / 2)
        lines.append(f"{label} minus {reference}, means over seeds: {difference:+.4f}"
                     f" ({'within' if abs(difference) <= pooled_std else 'more than'} one pooled seed std, {pooled_std:.4f})")
    return lines


def method_label(config) -> str:
    """How a run's method is named in tables: ``EMKD`` on its own encoder,
    ``EMKD (SASRec)`` on another one, else the method's name."""
    names = {"sasrec": "SASRec", "bert4rec": "BERT4Rec", "gru4rec": "GRU4Rec", "caser": "Caser", "emkd": "EMKD"}
    name = names.get(config.method, config.method)
    if config.encoder != config.spec.encoders[0]:
        name += f" ({names.get(config.encoder, config.encoder)})"
    return name


def provenance_table(results: dict | list) -> pd.DataFrame:
    """Where each number comes from: run key, full commit (``+dirty`` shown),
    machine, date, cost; ``results`` a label -> run dict (or a list)."""
    items = results.items() if isinstance(results, dict) else ((method_label(r.config), r) for r in results)
    return pd.DataFrame([{
        "run": label if isinstance(label, str) else " / ".join(map(str, label)), "seed": r.config.seed,
        "key": r.key, "epochs (best)": f"{len(r.history)} ({r.best_epoch})",
        "training (s)": round(r.train_seconds), "commit": r.provenance["commit"], "machine": r.provenance["machine"],
        "date": r.provenance["date"],
    } for label, r in items if r is not None])


def stopping_table(results: dict) -> pd.DataFrame:
    """Per run: epochs run, best epoch, what stopped it (patience or the
    epoch cap) and whether the best epoch sits at the cap (still improving
    when stopped), and its validation NDCG@10 against the popularity floor."""
    rows = []
    for label, r in results.items():
        if r is None:
            continue
        at_cap = r.flags.get("stopped_by") == "epoch cap" and r.best_epoch == len(r.history)
        rows.append({"run": label if isinstance(label, str) else " / ".join(map(str, label)),
                     "epochs run": len(r.history), "best epoch": r.best_epoch,
                     "stopped by": r.flags.get("stopped_by", "?"),
                     "still improving at the cap": at_cap,
                     "valid NDCG@10": r.valid_metrics["NDCG@10"],
                     "popularity valid NDCG@10": r.flags.get("popularity_valid_ndcg10", np.nan),
                     "below popularity": bool(r.flags.get("below_popularity", False))})
    return pd.DataFrame(rows).set_index("run") if rows else pd.DataFrame()


def results_for(grid: dict, train_missing: bool = False, device: str | None = None) -> dict:
    """label -> stored run (or None where not run) of a study's grid; with
    ``train_missing`` the missing ones are trained first."""
    if train_missing:
        return {label: run_or_load(config, device=device) for label, config in grid.items()}
    return {label: stored(config) for label, config in grid.items()}


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
                       reference: str | None = None) -> pd.DataFrame:
    """Per dataset: the best method (or ``reference``) against each other
    method, paired over test users.

    Only seed-0 runs are paired (the same users, the same seed).
    """
    rows = []
    for dataset in dict.fromkeys(r.config.dataset for r in results):
        runs = {method_label(r.config): r for r in results if r.config.dataset == dataset and r.config.seed == 0}
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


def save_figure(fig, name: str) -> Path:
    """Save a figure beside the notebooks (PNG, 150 dpi) and return its path.

    ``$EMKD_FIGURES_DIR`` redirects figures (the smoke test writes to a scratch
    folder, so it never touches the committed ones).
    """
    folder = settings_module.current().figures_dir
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=150, bbox_inches="tight")
    return path


def format_table(df: pd.DataFrame, digits: int = 4) -> str:
    """Fixed-width text of a table, stable across runs (for nbval checks)."""
    # to_string's na_rep does not reach pandas' nullable (extension) columns, e.g. Int64 counts.
    nullable = [i for i, dtype in enumerate(df.dtypes) if isinstance(dtype, pd.api.extensions.ExtensionDtype)
                and not isinstance(dtype, pd.CategoricalDtype) and df.iloc[:, i].isna().any()]
    if nullable:
        df = df.copy()
        for i in nullable:
            column = df.iloc[:, i]
            df.isetitem(i, column.astype(object).where(column.notna(), "-"))
    return df.to_string(na_rep="-", float_format=lambda x: f"{x:.{digits}f}" if np.isfinite(x) else "-")


def ensemble_gain_table(singles: dict, ensembles: dict, metric: str = "NDCG@10") -> pd.DataFrame:
    """EMKD Table 1: single models against the ensemble of two of them.

    ``singles[(dataset, method)]`` lists the stored single runs (any seeds),
    ``ensembles[(dataset, method)]`` is the ensemble of two of them (or None).
    The paired test compares the ensemble with its better member over users.
    """
    rows = []
    for key, runs in singles.items():
        ens = ensembles.get(key)
        values = [r.test_metrics[metric] for r in runs]
        row = {"dataset": key[0], "method": key[1], "seeds": len(runs),
               f"single {metric} (mean)": np.mean(values) if values else np.nan,
               "single std": np.std(values, ddof=1) if len(values) > 1 else np.nan,
               f"ensemble x2 {metric}": ens.test_metrics[metric] if ens else np.nan}
        row["gain over mean single %"] = relative_change(row[f"ensemble x2 {metric}"], row[f"single {metric} (mean)"])
        if ens:
            members = [r for r in runs if r.config in ens.members]
            if members:
                better = max(members, key=lambda r: r.test_metrics[metric])
                row["p vs better member (Wilcoxon)"] = paired_test(ens.test_ranks, better.test_ranks, metric)["p_wilcoxon"]
        rows.append(row)
    return pd.DataFrame(rows).set_index(["dataset", "method"])


def ablation_table(runs: dict, reference: str, metrics=("HR@10", "NDCG@10")) -> pd.DataFrame:
    """One row per labelled run (``None`` = not run): its test metrics, the
    relative change of NDCG@10 against the ``reference`` row, and a paired
    Wilcoxon test over users against it."""
    ref = runs.get(reference)
    rows = []
    for label, r in runs.items():
        row = {"variant": label}
        if r is None:
            rows.append({**row, "status": "not run"})
            continue
        row.update({m: r.test_metrics[m] for m in metrics})
        row["status"] = f"best epoch {r.best_epoch}/{len(r.history)}" + (
            " (cap)" if r.flags.get("stopped_by") == "epoch cap" else "")
        if ref is not None and label != reference:
            t = paired_test(r.test_ranks, ref.test_ranks, "NDCG@10")
            row["NDCG@10 change %"] = relative_change(t["mean_a"], t["mean_b"])
            row["p vs " + reference] = t["p_wilcoxon"]
        rows.append(row)
    table = pd.DataFrame(rows).set_index("variant")
    # Column order must not depend on whether the first row was run.
    order = [*metrics, "status", "NDCG@10 change %", "p vs " + reference]
    return table[[c for c in order if c in table.columns]]


def significant_changes(table: pd.DataFrame, reference: str, alpha: float = 0.01) -> str:
    """One line naming the rows of an ``ablation_table`` whose paired test
    against ``reference`` has p < ``alpha``, with their change, so a chapter's
    conclusion is read off the table instead of written by hand."""
    if reference not in table.index or table.loc[reference, "status"] == "not run":
        return f"no comparison: {reference} has not been run"
    p = pd.to_numeric(table.get(f"p vs {reference}", pd.Series(dtype=float)), errors="coerce")
    tested = int(p.notna().sum())
    if tested == 0:
        return f"no comparison: no other row has been run beside {reference}"
    rows = table[p < alpha]
    if rows.empty:
        return f"no row differs from {reference} at p < {alpha} ({tested} tested)"
    changes = ", ".join(f"{label} ({row['NDCG@10 change %']:+.1f}%)" for label, row in rows.iterrows())
    return f"{len(rows)} of {tested} rows differ from {reference} at p < {alpha}: {changes}"


def pending_line(runs: dict) -> str:
    """One line: how many of a grid's runs are stored, and which are not yet."""
    missing = [label if isinstance(label, str) else "/".join(map(str, label)) for label, r in runs.items() if r is None]
    if not missing:
        return f"all {len(runs)} runs stored"
    shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
    return f"{len(runs) - len(missing)} of {len(runs)} runs stored; not yet run under this core: {shown}"


def ensembles_for(grid: dict, runs: dict, seeds, train_missing: bool = False, device: str | None = None) -> dict:
    """EMKD Table 1's ensembles: ``(dataset, method) -> EnsembleResult`` (or
    None where a member is missing) of the runs of ``seeds`` in a
    ``baseline_grid`` and its results."""
    out = {}
    for dataset, method in dict.fromkeys((d, m) for d, m, s in grid):
        members = [grid[(dataset, method, s)] for s in seeds]
        if any(runs.get((dataset, method, s)) is None for s in seeds):
            out[(dataset, method)] = None
        elif train_missing:
            out[(dataset, method)] = ensemble_run_or_load(members, device=device)
        else:
            out[(dataset, method)] = stored_ensemble(members)
    return out


_PAPER_NAMES = {"EMKD": {"GRU4Rec": "GRU4Rec", "Caser": "Caser", "SASRec": "SASRec", "BERT4Rec": "BERT4Rec",
                         "EMKD": "EMKD"}}


def beside_paper(results, paper: str, table: int, metrics=("NDCG@10",), ensemble: bool = False) -> pd.DataFrame:
    """Our test metrics beside the paper's (quoted from ``../shared/papers/tables``)
    and the ratio ours / quoted, one row per (dataset, method, metric).
    ``ensemble``: the results are two-member ensembles, matched to the
    paper's "<method> Ensemble(2x)" rows (EMKD Table 1)."""
    rows = []
    for r in results:
        label = method_label(r.config)
        paper_label = f"{label} Ensemble(2x)" if ensemble else label
        for m in metrics:
            rows.append({"dataset": r.config.dataset, "method": paper_label, "metric": m,
                         "value": r.test_metrics[m], "paper": paper, "table": table})
    if not rows:
        return pd.DataFrame({"status": [f"nothing run yet to set beside {paper} Table {table}"]})
    out = beside_quoted(pd.DataFrame(rows)).rename(columns={"value": "ours", "quoted": f"quoted ({paper} Table {table})"})
    return out.drop(columns=["paper", "table", "quoted from"]).set_index(["dataset", "method", "metric"])


def quoted_statistics(stats: pd.DataFrame, tables) -> pd.DataFrame:
    """Our dataset statistics (``data.dataset_statistics`` rows) beside the
    ones the papers print (quoted), where a paper reports the same dataset
    and statistic; ``tables`` lists ``(paper, table)``."""
    names = {"#users": "users", "#items": "items", "#actions": "actions", "#inter.": "actions",
             "avg.length": "avg_actions_per_user", "avg. actions/user": "avg_actions_per_user",
             "avg. actions/item": "avg_actions_per_item", "#attributes": "attributes",
             "avg. attributes/item": "avg_attributes_per_item"}
    rows = []
    for paper, table in tables:
        try:
            q = quoted_table(paper, table)
        except (KeyError, FileNotFoundError):
            continue
        for _, row in q.iterrows():
            ours_name = names.get(str(row["metric"]).lower())
            if row["dataset"] in stats.index and ours_name in stats.columns:
                ours = float(stats.loc[row["dataset"], ours_name])
                rows.append({"source": f"{paper} Table {table}", "dataset": row["dataset"],
                             "statistic": ours_name, "quoted": row["value"], "ours": ours,
                             "ratio": ours / row["value"] if row["value"] else np.nan})
    return pd.DataFrame(rows) if rows else pd.DataFrame({"status": ["no quoted statistics for these datasets"]})


def setup_table(grid: dict) -> pd.DataFrame:
    """One row per (dataset, method) of a grid: the settings that differ between its configs."""
    rows = {}
    for config in grid.values():
        flat = {"dataset": config.dataset, "method": method_label(config)}
        for part in ("encoder_config", "params", "train", "data"):
            for k, v in vars(getattr(config, part)).items():
                flat[f"{k}"] = v
        rows.setdefault((config.dataset, flat["method"]), flat)
    df = pd.DataFrame(list(rows.values()))
    varying = [c for c in df.columns if c in ("dataset", "method") or df[c].astype(str).nunique() > 1]
    return df[varying].set_index(["dataset", "method"])


def emkd_setup_table(datasets, profiles) -> pd.DataFrame:
    """EMKD's configuration per dataset under each profile (d, blocks, heads, length, dropout, windows, N, M, ...)."""
    from .studies.emkd import emkd_variant
    rows = []
    for dataset in datasets:
        for profile in profiles:
            c = emkd_variant(profile, dataset)
            e, p, t, d = c.encoder_config, c.params, c.train, c.data
            rows.append({"dataset": dataset, "profile": profile, "d": e.hidden, "blocks": e.n_blocks,
                         "heads": e.n_heads, "max len": d.max_len, "dropout": e.dropout, "window step": d.step,
                         "batch": t.batch_size, "epochs (cap)": t.epochs, "N": p.n_networks, "M": p.n_views,
                         "tau": p.tau, "lambda": p.lam, "mu": p.mu})
    return pd.DataFrame(rows).drop_duplicates().set_index(["dataset", "profile"])


def parameter_count(config, dataset) -> int:
    """Trainable parameters of the model ``config`` builds on ``dataset``."""
    from .methods import build_method
    model, _ = build_method(config, dataset)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --- Conclusions in words, computed from the stored numbers -----------------

def _p_text(p: float) -> str:
    return f"p = {p:.1e}" if p < 1e-3 else f"p = {p:.3f}"


def comparison_sentences(sig: pd.DataFrame, datasets, others=("SASRec", "BERT4Rec"), reference: str = "EMKD",
                         metric: str = "NDCG@10", alpha: float = 0.01) -> str:
    """A Markdown list, one line per (dataset, other method): ``reference``
    against it, read off a ``significance_table(..., reference=reference)``:
    its relative change in ``metric``, both values, the paired test's p and
    whether that is below ``alpha``; "not run yet" where either run is missing."""
    lines = []
    for dataset in datasets:
        for other in others:
            row = sig[(sig["dataset"] == dataset) & (sig["other"] == other)] if len(sig) else sig
            if len(row) == 0:
                lines.append(f"- {reference} vs {other} on {dataset}: not run yet")
                continue
            row = row.iloc[0]
            p = row["p (Wilcoxon)"]
            verdict = "significant" if p < alpha else "not significant"
            change = row["change %"]
            change = f"{change:+.1f}%" if np.isfinite(change) else f"no relative change ({other} scores 0)"
            lines.append(f"- {reference} vs {other} on {dataset}: {change} {metric} "
                         f"({row[f'reference {metric}']:.4f} vs {row[f'other {metric}']:.4f}), "
                         f"{_p_text(p)}, {verdict} at {alpha}")
    return "\n".join(lines)


def ensemble_gain_sentences(gains: pd.DataFrame, metric: str = "NDCG@10", alpha: float = 0.01) -> str:
    """A Markdown list read off an ``ensemble_gain_table``: per (dataset,
    method) the ensemble of two against the mean single model, and whether it
    beats its better member at p < ``alpha``; then how many did."""
    lines, tested, real = [], 0, 0
    for (dataset, method), row in gains.iterrows():
        ens = row.get(f"ensemble x2 {metric}", np.nan)
        if not np.isfinite(ens):
            lines.append(f"- {method} on {dataset}: not run yet")
            continue
        p = row.get("p vs better member (Wilcoxon)", np.nan)
        text = (f"- {method} on {dataset}: the ensemble of two is {row['gain over mean single %']:+.1f}% {metric} "
                f"over the mean single model ({ens:.4f} vs {row[f'single {metric} (mean)']:.4f})")
        if np.isfinite(p):
            tested += 1
            real += bool(p < alpha)
            text += f"; against its better member {_p_text(p)}, {'significant' if p < alpha else 'not significant'} at {alpha}"
        lines.append(text)
    if tested:
        lines.append(f"- in all: {real} of {tested} ensembles differ from their better member at p < {alpha}")
    return "\n".join(lines)


# --- Reproduction scorecard -------------------------------------------------

VERDICTS = ("reproduced", "below the paper", "above the paper", "not run yet", "not in the paper")


def verdict(ours: float, quoted: float, tolerance: float = 0.10) -> str:
    """``"reproduced"`` when ours is within ``tolerance`` (relative) of the
    quoted value, else ``"below the paper"`` / ``"above the paper"``;
    ``"not run yet"`` when ours is missing, ``"not in the paper"`` when the
    quote is."""
    if ours is None or not np.isfinite(ours):
        return "not run yet"
    if quoted is None or not np.isfinite(quoted) or quoted == 0:
        return "not in the paper"
    ratio = ours / quoted
    if abs(ratio - 1) <= tolerance + 1e-12:
        return "reproduced"
    return "below the paper" if ratio < 1 else "above the paper"


# The settings that most often set a profile's run apart from the paper's: (label, how to read it off a config).
SETTINGS_COMPARED = (
    ("profile", lambda c: c.profile),
    ("d", lambda c: getattr(c.encoder_config, "hidden", None)),
    ("epochs cap", lambda c: c.train.epochs),
    ("M", lambda c: getattr(c.params, "n_views", None)),
)


def setting_differences(config, reference) -> str:
    """The settings of ``SETTINGS_COMPARED`` (profile, d, epochs cap, M) in
    which ``config`` differs from ``reference`` (the paper's setting), as
    ``"profile cpu; d 64 (paper: 256)"``; ``"none"`` when
    they agree, ``""`` when either config is missing."""
    if config is None or reference is None:
        return ""
    parts = [f"{name} {get(config)}" + ("" if name == "profile" else f" (paper: {get(reference)})")
             for name, get in SETTINGS_COMPARED if get(config) != get(reference)]
    return "; ".join(parts) if parts else "none"


def reproduction_cells(paper: str, table: int, ours: dict, metrics, configs: dict | None = None,
                       reference: dict | None = None) -> pd.DataFrame:
    """Tidy rows ``dataset, method, metric, value, paper, table`` (the input
    of ``paper_tables.beside_quoted``) for the cells of a paper's table that
    the book reproduces: ``ours[(dataset, paper method)]`` is a run, a list
    of runs (their mean is taken: seeds) or None / [] (value NaN: not run yet).

    With ``reference`` (same keys -> the config the paper's setting gives,
    e.g. the ``paper`` profile's) a column ``setting differs`` names what
    differs (``setting_differences``), read off the stored run's config, or
    off ``configs[key]`` (the config that would run) where nothing is stored."""
    rows = []
    for key, runs in ours.items():
        dataset, method = key
        runs = [runs] if runs is not None and not isinstance(runs, (list, tuple)) else list(runs or [])
        row = {}
        if reference is not None:
            config = runs[0].config if runs else (configs or {}).get(key)
            row["setting differs"] = setting_differences(config, reference.get(key))
        for m in metrics:
            value = float(np.mean([r.test_metrics[m] for r in runs])) if runs else np.nan
            rows.append({"dataset": dataset, "method": method, "metric": m, "value": value,
                         "paper": paper, "table": table, **row})
    columns = ["dataset", "method", "metric", "value", "paper", "table"]
    return pd.DataFrame(rows, columns=columns + (["setting differs"] if reference is not None else []))


def scorecard(cells: pd.DataFrame, tolerance: float = 0.10) -> pd.DataFrame:
    """Ours beside the quoted value of each cell (``paper_tables.beside_quoted``),
    their ratio and a ``verdict`` per row, indexed by (source, dataset, method, metric)."""
    if cells.empty:
        return pd.DataFrame(columns=["ours", "quoted", "ratio", "verdict"])
    out = beside_quoted(cells)
    out["verdict"] = [verdict(o, q, tolerance) for o, q in zip(out["value"], out["quoted"])]
    out = out.rename(columns={"value": "ours", "quoted from": "source"})
    shown = ["ours", "quoted", "ratio", "verdict"] + (["setting differs"] if "setting differs" in out else [])
    if "setting differs" in out:
        out["setting differs"] = out["setting differs"].fillna("")
    return out.set_index(["source", "dataset", "method", "metric"])[shown]


def scorecard_figure(card: pd.DataFrame, title: str = "Ours against the paper"):
    """Ours against the paper's value, one marker per cell with a result of
    ours, log-log, the diagonal (ours = paper) drawn and the ``tolerance``
    band left to the table; marker and colour by source table. With no
    result yet the figure has the diagonal and a note. Returns the figure."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.2, 5.2))
    done = card[np.isfinite(card["ours"].astype(float)) & np.isfinite(card["quoted"].astype(float))
                & (card["ours"].astype(float) > 0) & (card["quoted"].astype(float) > 0)] if len(card) else card
    values = np.concatenate([done["ours"].astype(float), done["quoted"].astype(float)]) if len(done) else []
    if len(card):
        values = np.concatenate([values, card["quoted"].astype(float).dropna().to_numpy()])
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    low, high = (values.min() / 1.5, values.max() * 1.5) if len(values) else (1e-3, 1.0)
    ax.plot([low, high], [low, high], color="grey", lw=1, ls="--", label="ours = paper")
    markers = "osD^vP*X"
    for i, source in enumerate(dict.fromkeys(done.index.get_level_values("source")) if len(done) else []):
        part = done.xs(source, level="source")
        ax.scatter(part["quoted"].astype(float), part["ours"].astype(float), marker=markers[i % len(markers)],
                   s=22, alpha=0.8, label=f"{source} ({len(part)})")
    if not len(done):
        ax.text(0.5, 0.6, "no result of ours stored yet", transform=ax.transAxes, ha="center", color="grey")
    ax.set_xscale("log"); ax.set_yscale("log")
    ax.set_xlim(low, high); ax.set_ylim(low, high)
    ax.set_xlabel("paper's value (quoted)"); ax.set_ylabel("ours")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def scorecard_summary(card: pd.DataFrame, tolerance: float = 0.10) -> str:
    """One sentence counting a ``scorecard``'s verdicts."""
    counts = card["verdict"].value_counts()
    n = len(card)
    if n == 0:
        return "No paper cell is set beside ours yet."
    run = n - int(counts.get("not run yet", 0))
    parts = [f"{int(counts.get('reproduced', 0))} reproduced (within {tolerance:.0%} of the paper)",
             f"{int(counts.get('below the paper', 0))} below the paper",
             f"{int(counts.get('above the paper', 0))} above it",
             f"{int(counts.get('not run yet', 0))} not run yet"]
    if counts.get("not in the paper", 0):
        parts.append(f"{int(counts['not in the paper'])} not in the paper")
    return f"Of {n} cells quoted from the papers, {run} have a stored result of ours: " + ", ".join(parts) + "."


def beside_paper_rows(runs: dict, paper: str, table: int, dataset: str, paper_labels: dict,
                      metric: str = "NDCG@10") -> pd.DataFrame:
    """A chapter's labelled runs (``label -> run`` or None) beside the rows of
    a paper table they reproduce: ``paper_labels`` maps our label to the
    paper's row label. Columns: ours, quoted, ratio ours / quoted; a run not
    stored yet has no value of ours (and no ratio)."""
    quoted = quoted_table(paper, table, dataset=dataset, metric=metric).set_index("method")["value"]
    rows = []
    for label, paper_label in paper_labels.items():
        r = runs.get(label)
        ours = r.test_metrics[metric] if r is not None else np.nan
        q = float(quoted.get(paper_label, np.nan))
        rows.append({"row": label, "paper's row": paper_label, f"ours {metric}": ours,
                     f"quoted ({paper} Table {table})": q, "ratio": ours / q if q else np.nan})
    return pd.DataFrame(rows).set_index("row")


def equal_time_table(results: dict, seconds: float | None = None) -> pd.DataFrame:
    """Validation NDCG@10 at equal training time (EMKD's Figure 5 read as a
    table): per run, the best validation NDCG@10 reached within ``seconds`` of
    training (default: the shortest total training time among the runs, so
    every run is compared at a time all of them reached), beside its best and
    its total training time. EMKD's step costs several single models', and
    this is what that cost buys."""
    runs = {label: r for label, r in results.items() if r is not None}
    if not runs:
        return pd.DataFrame({"status": ["no runs stored yet"]})
    totals = {label: float(np.sum([h["train_seconds"] for h in r.history])) for label, r in runs.items()}
    budget = min(totals.values()) if seconds is None else float(seconds)
    rows = []
    for label, r in runs.items():
        elapsed = np.cumsum([h["train_seconds"] for h in r.history])
        within = [h["valid_ndcg10"] for h, t in zip(r.history, elapsed) if t <= budget]
        rows.append({"run": label if isinstance(label, str) else " / ".join(map(str, label)),
                     f"valid NDCG@10 within {budget:.0f} s": max(within) if within else np.nan,
                     "best valid NDCG@10": max(h["valid_ndcg10"] for h in r.history),
                     "training (s, total)": totals[label]})
    return pd.DataFrame(rows).set_index("run")


# --- Narrative: what the paper claims, what we found ------------------------

def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def quoted_claim(paper: str, table: int, methods, metric: str, datasets, digits: int = 4) -> str:
    """What a paper's table reports, as one sentence read from the quoted
    CSVs (``paper_tables.quoted_table``), e.g. "EMKD reports NDCG@10 of
    0.0594 on beauty and 0.0622 on toys for EMKD (quoted, EMKD Table 3)."
    With several ``methods`` each dataset lists "value (method)", highest
    first. A cell the paper does not report is left out; none at all gives
    a sentence saying so."""
    methods = [methods] if isinstance(methods, str) else list(methods)
    q = quoted_table(paper, table)
    q = q[q["metric"] == metric]
    parts = []
    for dataset in datasets:
        rows = q[(q["dataset"] == dataset) & q["method"].isin(methods)]
        if rows.empty:
            continue
        if len(methods) == 1:
            parts.append(f"{rows['value'].iloc[0]:.{digits}f} on {dataset}")
        else:
            rows = rows.sort_values("value", ascending=False)
            parts.append(f"on {dataset} " + ", ".join(f"{v:.{digits}f} ({m})" for m, v in zip(rows["method"], rows["value"])))
    source = f"quoted, {paper} Table {table}"
    if not parts:
        return f"{paper} Table {table} reports no {metric} for {_join(methods)} on {_join(list(datasets))}."
    if len(methods) == 1:
        return f"{paper} reports {metric} of {_join(parts)} for {methods[0]} ({source})."
    return f"{paper} reports {metric} {'; '.join(parts)} ({source})."


def found_section(lines) -> str:
    """The closing "What we found" of a chapter: a Markdown list of computed
    ``lines`` (empty ones dropped), or "not run yet" when there is none."""
    lines = [line for line in lines if line]
    if not lines:
        return "- not run yet: no result of this chapter is stored under this profile"
    return "\n".join(line if line.startswith("- ") else f"- {line}" for line in lines)


def best_per_dataset(table: pd.DataFrame, metric: str = "NDCG@10") -> list[str]:
    """Read off a ``metrics_table``: per dataset the best method by
    ``metric`` and the runner-up, with their values and the gap in percent."""
    lines = []
    if table.empty:
        return lines
    for dataset in dict.fromkeys(table.columns.get_level_values(0)):
        if (dataset, metric) not in table.columns:
            continue
        values = table[(dataset, metric)].dropna().sort_values(ascending=False)
        if values.empty:
            continue
        line = f"on {dataset} the best by test {metric} is {values.index[0]} ({values.iloc[0]:.4f})"
        if len(values) > 1:
            gap = relative_change(values.iloc[0], values.iloc[1])
            line += (f", {gap:+.1f}% over" if np.isfinite(gap) else ", ahead of") + \
                f" {values.index[1]} ({values.iloc[1]:.4f})"
        lines.append(line)
    return lines


def ratio_summary(table: pd.DataFrame, what: str, ratio_column: str = "ratio") -> str:
    """One line on a beside-the-paper table: how many rows have a ratio
    ours / quoted, their median and range; "not run yet" when none has."""
    if ratio_column not in table:
        return f"{what}: nothing run yet to set beside the paper"
    ratios = pd.to_numeric(table[ratio_column], errors="coerce").dropna()
    if ratios.empty:
        return f"{what}: nothing run yet to set beside the paper"
    return (f"{what}: ours / the paper's value has median {ratios.median():.2f} over {len(ratios)} "
            f"cell{'s' * (len(ratios) > 1)} (from {ratios.min():.2f} to {ratios.max():.2f})")


def ensemble_found(gains: pd.DataFrame, metric: str = "NDCG@10", alpha: float = 0.01) -> str:
    """One line on an ``ensemble_gain_table``: in how many (dataset, method)
    pairs the ensemble of two beats the mean single model, and how many of
    those tested beat their better member at p < ``alpha``."""
    column = f"ensemble x2 {metric}"
    if column not in gains:
        return ""
    done = gains[np.isfinite(gains[column].astype(float))]
    if done.empty:
        return ""
    gain = pd.to_numeric(done["gain over mean single %"], errors="coerce")
    above = int((done[column].astype(float) > done[f"single {metric} (mean)"].astype(float)).sum())
    line = f"the ensemble of two beats the mean single model in {above} of {len(done)} (dataset, method) pairs"
    if gain.notna().any():  # a mean single model at 0 has no relative gain
        line += f" (median gain {gain.median():+.1f}% {metric})"
    p = pd.to_numeric(done.get("p vs better member (Wilcoxon)", pd.Series(dtype=float)), errors="coerce").dropna()
    if len(p):
        line += f"; {int((p < alpha).sum())} of {len(p)} differ from their better member at p < {alpha}"
    return line


def reference_found(sig: pd.DataFrame, reference: str = "EMKD", metric: str = "NDCG@10", alpha: float = 0.01) -> str:
    """One line on a ``significance_table(..., reference=...)``: against how
    many methods the reference is significantly above, below, or not
    different at p < ``alpha``, and its median relative change."""
    if sig.empty or "reference" not in sig:
        return ""
    significant = sig["p (Wilcoxon)"] < alpha
    above = int((significant & (sig[f"reference {metric}"] > sig[f"other {metric}"])).sum())
    below = int((significant & (sig[f"reference {metric}"] < sig[f"other {metric}"])).sum())
    change = pd.to_numeric(sig["change %"], errors="coerce").dropna()
    line = (f"{reference} is significantly above the other method in {above}, below it in {below} and not different "
            f"in {len(sig) - above - below} of {len(sig)} paired comparisons (p < {alpha})")
    if len(change):
        line += f"; its median change in {metric} is {change.median():+.1f}%"
    return line
