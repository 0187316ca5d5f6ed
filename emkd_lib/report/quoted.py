"""The papers' numbers beside ours: quoted cells, ratios, verdicts, the reproduction scorecard and its figure."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ..paper_tables import beside_quoted, quoted_table
from .tables import method_label


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
    out = beside_quoted(pd.DataFrame(rows)).rename(columns={"value": "ours",
                                                            "quoted": f"quoted ({paper} Table {table})"})
    return out.drop(columns=["paper", "table", "quoted from"]).set_index(["dataset", "method", "metric"])


def quoted_statistics(stats: pd.DataFrame, tables) -> pd.DataFrame:
    """Our dataset statistics (``data.dataset_statistics`` rows) beside the
    ones the papers print (quoted), where a paper reports the same dataset
    and statistic; ``tables`` lists ``(paper, table)``. Sparsity is compared
    in percent, as the papers print it: ``stats``' "sparsity (%)" column,
    or its "sparsity" fraction times 100."""
    names = {"#users": "users", "#items": "items", "#actions": "actions", "#inter.": "actions",
             "avg.length": "avg_actions_per_user", "avg. actions/user": "avg_actions_per_user",
             "avg. actions/item": "avg_actions_per_item", "#attributes": "attributes",
             "avg. attributes/item": "avg_attributes_per_item", "sparsity": "sparsity (%)"}
    if "sparsity (%)" not in stats and "sparsity" in stats:
        stats = stats.assign(**{"sparsity (%)": 100 * stats["sparsity"]})
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


def statistics_apart(beside: pd.DataFrame, tolerance: float = 0.05) -> str:
    """One line naming the rows of a ``quoted_statistics`` table whose ratio
    to the quoted value is more than ``tolerance`` (relative) from 1, with
    both values, then the statistics within it in every row, so that the
    text under the table is read off it."""
    if "ratio" not in beside:
        return "no quoted statistics to compare"
    far = beside[~((beside["ratio"] - 1).abs() <= tolerance)]   # a ratio that is not a number is not within
    if far.empty:
        return f"all {len(beside)} statistics are within {tolerance:.0%} of the quoted values"

    def value(x: float) -> str:   # as chapter 00's table prints them
        return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.1f}"

    parts = [f"{row.dataset} {row.statistic} ({row.source}: {value(row.quoted)} quoted, {value(row.ours)} ours)"
             for row in far.itertuples()]
    close = [statistic for statistic in dict.fromkeys(beside["statistic"]) if statistic not in set(far["statistic"])]
    return (f"{len(far)} of {len(beside)} statistics are more than {tolerance:.0%} from the quoted value: "
            + "; ".join(parts)
            + (f". Within {tolerance:.0%} in every paper and dataset: {', '.join(close)}" if close else ""))


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
    ("heads", lambda c: getattr(c.encoder_config, "n_heads", None)),
    ("epochs cap", lambda c: c.train.epochs),
    # how long a run goes on without improving: a short patience stopped some baselines far below what they reach
    ("patience", lambda c: c.train.patience),
    ("M", lambda c: getattr(c.params, "n_views", None)),
    ("length", lambda c: c.data.max_len),
    ("users", lambda c: c.data.max_users or "all"),
)


def setting_differences(config, reference) -> str:
    """The settings of ``SETTINGS_COMPARED`` (profile, d, attention heads,
    epochs cap, patience, M, maximum length, user sample) in
    which ``config`` differs from ``reference`` (the ``paper`` profile's
    config: the paper's setting where the paper states one, this study's
    choice where it does not), as ``"profile cpu; d 64 (paper profile: 256)"``;
    ``"none"`` when they agree, ``""`` when either config is missing."""
    if config is None or reference is None:
        return ""
    parts = [f"{name} {get(config)}" + ("" if name == "profile" else f" (paper profile: {get(reference)})")
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


def settings_apart(part: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """A scorecard table (one paper table's rows) without its "setting
    differs" column, and that column said once per distinct value: a line
    naming the datasets (and, where a dataset's rows differ, the methods) it
    holds for. Repeated on every row it would take half the table's width."""
    if "setting differs" not in part:
        return part, []
    lines = []
    for setting, rows in part.groupby("setting differs", sort=False):
        datasets = list(dict.fromkeys(rows.index.get_level_values("dataset")))
        in_datasets = part.index.get_level_values("dataset").isin(datasets)
        everywhere = part.loc[in_datasets, "setting differs"].eq(setting).all()
        methods = {d: ", ".join(dict.fromkeys(rows.xs(d, level="dataset").index.get_level_values("method")))
                   for d in datasets}
        where = ", ".join(datasets) if everywhere else "; ".join(f"{d} ({methods[d]})" for d in datasets)
        lines.append(f"{where}: {setting or 'the paper’s settings'}")
    return part.drop(columns="setting differs"), lines


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
    line = f"Of {n} cells quoted from the papers, {run} have a stored result of ours: " + ", ".join(parts)
    # A paper quotes one number in several tables (EMKD's full model in Tables 3, 4 and 5): where ours is the
    # same stored number too, the second cell repeats a comparison and adds no evidence.
    done = card[card["verdict"] != "not run yet"].reset_index()
    repeats = int(done.duplicated(subset=["dataset", "metric", "ours", "quoted"]).sum()) if len(done) else 0
    if repeats:
        line += (f"; {repeats} of the {run} repeat a comparison another table already makes (the same result "
                 f"of ours against the same quoted value), so {run - repeats} are distinct")
    return line + "."


def _cells(n: int) -> str:
    return f"{n} cell" + ("" if n == 1 else "s")


def proposed_against_baselines(card: pd.DataFrame, proposed: dict[str, str]) -> list[str]:
    """A line per paper table of a ``scorecard`` (``proposed``: source ->
    the paper's proposed method in it): the median ratio ours / quoted of
    the proposed method's cells against that of the other methods' cells of
    the same table. A proposed method's ratio below its baselines' means
    that the paper's margin over them shrinks here (or turns), whatever the
    absolute numbers. None for a table with no stored cell of either."""
    lines = []
    if "source" not in card.index.names:      # an empty scorecard: no cell set beside the paper yet
        return lines
    for source, method in proposed.items():
        if source not in card.index.get_level_values("source"):
            continue
        part = card.loc[source]
        ratios = part["ratio"].astype(float)
        is_proposed = part.index.get_level_values("method") == method
        own, others = ratios[is_proposed].dropna(), ratios[~is_proposed].dropna()
        if own.empty or others.empty:
            continue
        verdict = ("the paper's margin over its baselines shrinks here" if own.median() < others.median()
                   else "the paper's margin over its baselines holds or grows here")
        lines.append(f"{source}: ours / the paper's value has median {own.median():.2f} for {method} "
                     f"({_cells(len(own))}) against {others.median():.2f} for the other methods "
                     f"({_cells(len(others))}): {verdict}")
    return lines


def scorecard_found(card: pd.DataFrame, tolerance: float, proposed: dict[str, str]) -> list[str]:
    """The scorecard chapter's "What we found": the verdicts counted
    (``scorecard_summary``, once any cell has a result), the ratios ours /
    quoted of each paper table with a stored cell (``ratio_summary``), and
    each proposed method's ratios against its baselines'
    (``proposed_against_baselines``)."""
    from .sentences import ratio_summary
    if "source" not in card.index.names:      # an empty scorecard
        return []
    sources = dict.fromkeys(card.index.get_level_values("source"))
    run_yet = card["verdict"].ne("not run yet").any()
    return (([scorecard_summary(card, tolerance)] if run_yet else [])
            + [ratio_summary(card.loc[s], s) for s in sources if card.loc[s]["ratio"].notna().any()]
            + proposed_against_baselines(card, proposed))


def beside_paper_rows(runs: dict, paper: str, table: int, dataset: str, paper_labels: dict,
                      metric: str = "NDCG@10") -> pd.DataFrame:
    """A chapter's labelled runs (``label -> run`` or None) beside the rows of
    a paper table they reproduce: ``paper_labels`` maps our label to the
    paper's row label. Columns: the paper's row (only where some label
    differs from ours), ours, quoted, ratio ours / quoted; a run not stored
    yet has no value of ours (and no ratio)."""
    quoted = quoted_table(paper, table, dataset=dataset, metric=metric).set_index("method")["value"]
    rows = []
    for label, paper_label in paper_labels.items():
        r = runs.get(label)
        ours = r.test_metrics[metric] if r is not None else np.nan
        q = float(quoted.get(paper_label, np.nan))
        rows.append({"row": label, "paper's row": paper_label, f"ours {metric}": ours,
                     f"quoted ({paper} Table {table})": q, "ratio": ours / q if q else np.nan})
    table = pd.DataFrame(rows).set_index("row")
    same = all(str(label) == str(paper_label) for label, paper_label in paper_labels.items())
    return table.drop(columns="paper's row") if same else table


def per_network_parameters_found(ensemble: tuple[str, int], single: tuple[str, int], networks: int, dataset: str,
                                 paper_rows: tuple[str, str], paper: str = "EMKD", table: int = 5) -> list[str]:
    """One network of an ensemble against a single model, in parameters,
    ours beside the paper's (its table's ``params_M``, quoted):
    ``ensemble`` and ``single`` are (our label, our count), ``paper_rows``
    the paper's labels of the same two rows. A ratio near 1 says that one
    network holds what the single model holds; a per-network output matrix
    over the catalogue would put it near 2 on these catalogues; the line
    reads each ratio on that scale (below ``OWN_OUTPUT_RATIO``: no output
    matrix of its own). None where the paper gives no count for either row."""
    quoted = quoted_table(paper, table, dataset=dataset, metric="params_M").set_index("method")["value"]
    if any(row not in quoted for row in paper_rows):
        return []
    theirs = float(quoted[paper_rows[0]]) / networks, float(quoted[paper_rows[1]])
    ours = ensemble[1] / networks, single[1]
    paper_has, ours_has = (ratio >= OWN_OUTPUT_RATIO for ratio in (theirs[0] / theirs[1], ours[0] / ours[1]))
    if paper_has == ours_has:
        reading = f"as if both networks have {'an' if ours_has else 'no'} output matrix of their own"
    else:
        reading = (f"as if the paper's network has {'an' if paper_has else 'no'} output matrix of its own and ours "
                   + ("has one" if ours_has else "has none"))
    return [f"{dataset}: one of the {networks} networks of the paper's {paper_rows[0]} holds {theirs[0]:.2f}M "
            f"parameters, {theirs[0] / theirs[1]:.2f} times its {paper_rows[1]} ({theirs[1]:.2f}M, quoted from "
            f"{paper} Table {table}); one of ours ({ensemble[0]}) holds {ours[0]:,.0f}, {ours[0] / ours[1]:.2f} "
            f"times our {single[0]} ({ours[1]:,}): {reading}"]


# Halfway between a network without an output matrix of its own (ratio 1
# to its single model) and one with it (near 2 where the item table dominates).
OWN_OUTPUT_RATIO = 1.5


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def quoted_sweep(paper: str, table: int, name: str) -> pd.DataFrame:
    """One hyperparameter's sweep in a quoted table whose rows are labelled
    ``"<name>=<value> (<the others>)"`` (ODMT's Table 4, e.g.
    ``"T=0.3 (alpha=50)"``): the rows of ``name`` with ``x``, the swept value
    as a float, NaN for ``"<name>=None"`` (the run without the component)."""
    rows = quoted_table(paper, table)
    rows = rows[rows["method"].str.startswith(f"{name}=")]
    if rows.empty:
        raise KeyError(f"{paper} Table {table} has no row labelled '{name}=...'")
    x = rows["method"].str.extract(rf"^{re.escape(name)}=([^ ]+)")[0]
    return rows.assign(x=pd.to_numeric(x.where(x != "None"), errors="raise"))


def quoted_claim(paper: str, table: int, methods, metric: str, datasets, digits: int = 4) -> str:
    """What a paper's table reports, as one sentence read from the quoted
    CSVs (``paper_tables.quoted_table``), e.g. "EMKD reports NDCG@10 of
    0.0594 on beauty and 0.0622 on toys for EMKD (quoted, EMKD Table 3)."
    With several ``methods`` each dataset lists "value (method)", highest
    first. A cell the paper does not report is left out; none at all gives
    a sentence saying so."""
    methods = [methods] if isinstance(methods, str) else list(methods)
    reported = quoted_claim_table(paper, table, methods, metric, datasets)
    parts = []
    for dataset in reported.columns:
        values = reported[dataset].dropna()
        if len(methods) == 1:
            parts.append(f"{values.iloc[0]:.{digits}f} on {dataset}")
        else:
            values = values.sort_values(ascending=False, kind="stable")
            parts.append(f"on {dataset} " + ", ".join(f"{v:.{digits}f} ({m})" for m, v in values.items()))
    source = f"quoted, {paper} Table {table}"
    if not parts:
        return f"{paper} Table {table} reports no {metric} for {_join(methods)} on {_join(list(datasets))}."
    if len(methods) == 1:
        return f"{paper} reports {metric} of {_join(parts)} for {methods[0]} ({source})."
    return f"{paper} reports {metric} {'; '.join(parts)} ({source})."


def quoted_first(paper: str, table: int, method: str, datasets, metrics, digits: int = 4) -> str:
    """Where a paper's table puts ``method`` first, as one sentence read from
    the quoted CSVs: in how many of its (dataset, metric) cells on
    ``datasets`` and ``metrics`` it reports the highest value of any method
    (a tie counts as first), naming each cell where another method is ahead."""
    q = quoted_table(paper, table)
    q = q[q["dataset"].isin(list(datasets)) & q["metric"].isin(list(metrics))]
    cells, behind = 0, []
    for (dataset, metric), rows in q.groupby(["dataset", "metric"], sort=False):
        ours = rows.loc[rows["method"] == method, "value"]
        if ours.empty:
            continue
        cells += 1
        best = rows.loc[rows["value"].idxmax()]
        if best["value"] > ours.iloc[0]:
            behind.append(f"{dataset} {metric}, where {best['method']} reports {best['value']:.{digits}f} "
                          f"against {ours.iloc[0]:.{digits}f}")
    source = f"quoted, {paper} Table {table}"
    if not cells:
        return f"{paper} Table {table} reports no {_join(list(metrics))} for {method} on {_join(list(datasets))}."
    if not behind:
        return f"{paper}'s Table {table} puts {method} first in all {cells} of its dataset-metric cells ({source})."
    return (f"{paper}'s Table {table} puts {method} first in {cells - len(behind)} of its {cells} dataset-metric "
            f"cells; not in {'; '.join(behind)} ({source}).")


def quoted_claim_table(paper: str, table: int, methods, metric: str, datasets) -> pd.DataFrame:
    """What a paper's table reports for ``methods`` on ``datasets``, as a
    small table read from the quoted CSVs: a row per method (the paper's
    names, in the order given), a column per dataset, NaN where the paper
    reports nothing; ``quoted_claim`` says the same in one sentence."""
    methods = [methods] if isinstance(methods, str) else list(methods)
    datasets = list(datasets)
    q = quoted_table(paper, table)
    q = q[(q["metric"] == metric) & q["method"].isin(methods) & q["dataset"].isin(datasets)]
    out = q.pivot_table(index="method", columns="dataset", values="value", aggfunc="first")
    out = out.reindex(index=methods, columns=datasets)
    out.index.name, out.columns.name = "method", None
    return out.dropna(how="all").dropna(axis=1, how="all")


def ordering_found(beside: pd.DataFrame, metric: str = "NDCG@10") -> list[str]:
    """A line per dataset of a ``beside_paper`` table: the methods ordered by
    ``metric``, ours and the paper's (quoted), and how many of the pairs of
    methods the two orders agree on. Where setups differ, the order is the
    comparison that can carry over; its digits cannot."""
    quoted = next((c for c in beside.columns if c.startswith("quoted")), None)
    if quoted is None or "dataset" not in beside.index.names:   # nothing run yet: a status table
        return []
    lines = []
    for dataset in dict.fromkeys(beside.index.get_level_values("dataset")):
        part = beside.xs(dataset, level="dataset")
        part = part[part.index.get_level_values("metric") == metric].droplevel("metric")[["ours", quoted]].dropna()
        if len(part) < 2:
            continue
        methods = list(part.index)
        pairs = [(a, b) for i, a in enumerate(methods) for b in methods[i + 1:]]
        agree = sum((part.loc[a, "ours"] - part.loc[b, "ours"]) * (part.loc[a, quoted] - part.loc[b, quoted]) > 0
                    for a, b in pairs)
        order = lambda column: " > ".join(part[column].sort_values(ascending=False).index)  # noqa: E731
        lines.append(f"{dataset}: by {metric} the paper orders {order(quoted)} (quoted), ours {order('ours')}: "
                     f"{agree} of {len(pairs)} pairs of methods in the same order")
    return lines


def ensemble_gains_beside_paper(gains: pd.DataFrame, paper: str = "EMKD", table: int = 1,
                                metric: str = "NDCG@10") -> pd.DataFrame:
    """An ``ensemble_gain_table``'s gains (the ensemble of two over the mean
    of its two members) beside the paper's (its ``"<method> Ensemble(2x)"`` row over
    its ``"<method>"`` row, quoted), per (dataset, method). The paper's claim
    is a relative gain, so the gain is what is compared, not the values."""
    q = quoted_table(paper, table, metric=metric)
    rows = []
    for (dataset, method), row in gains.iterrows():
        cell = q[q["dataset"] == dataset].set_index("method")["value"]
        single, ensemble = cell.get(method, np.nan), cell.get(f"{method} Ensemble(2x)", np.nan)
        rows.append({"dataset": dataset, "method": method, "ours gain %": row["gain over members' mean %"],
                     f"quoted gain % ({paper} Table {table})": 100 * (ensemble / single - 1)})
    return pd.DataFrame(rows).set_index(["dataset", "method"])


def ensemble_pattern_found(beside: pd.DataFrame) -> list[str]:
    """A line per dataset of an ``ensemble_gains_beside_paper``: which method
    the ensemble of two lifts most, in the paper and here, and every
    method's gain, ours against the paper's (its Table 1's pattern)."""
    quoted = next(c for c in beside.columns if c.startswith("quoted gain"))
    lines = []
    for dataset in dict.fromkeys(beside.index.get_level_values("dataset")):
        part = beside.loc[dataset].dropna()
        if part.empty:
            continue
        ours, theirs = part["ours gain %"].idxmax(), part[quoted].idxmax()
        most = (f"for {ours} both in the paper ({part.loc[theirs, quoted]:+.1f}%, quoted) and here "
                f"({part.loc[ours, 'ours gain %']:+.1f}%)" if ours == theirs else
                f"for {theirs} in the paper ({part.loc[theirs, quoted]:+.1f}%, quoted) but for another method here, "
                f"{ours} ({part.loc[ours, 'ours gain %']:+.1f}%)")
        lines.append(f"{dataset}: the ensemble of two gains most {most}; each method's gain here against the "
                     f"paper's: " + ", ".join(f"{m} {part.loc[m, 'ours gain %']:+.1f}% against "
                                              f"{part.loc[m, quoted]:+.1f}%" for m in part.index))
    return lines


def gains_beside_paper(results, paper: str, table: int, target: str, reference: str,
                       metrics=("Recall@10", "NDCG@10")) -> pd.DataFrame:
    """The relative gain of ``target`` over ``reference`` (method labels as in
    ``method_label`` and in the paper, e.g. "ODMT" over "SASRec+LF"), ours
    per dataset beside the paper's per dataset. For papers whose datasets we
    do not have (ODMT's), the gain is what can be compared. Recall@k is our
    HR@k (one held-out item per user)."""
    ours_metric = {m: m.replace("Recall@", "HR@") for m in metrics}
    rows = []
    by_dataset: dict = {}
    for r in results:
        if r.config.seed == 0:
            by_dataset.setdefault(r.config.dataset, {})[method_label(r.config)] = r
    for dataset, runs in by_dataset.items():
        if target in runs and reference in runs:
            for m in metrics:
                a, b = runs[target].test_metrics[ours_metric[m]], runs[reference].test_metrics[ours_metric[m]]
                rows.append({"source": "ours", "dataset": dataset, "metric": m, target: a, reference: b,
                             "gain %": 100 * (a / b - 1) if b else np.nan})
    q = quoted_table(paper, table, metric=list(metrics))
    for dataset in q["dataset"].unique():
        for m in metrics:
            cell = q[(q["dataset"] == dataset) & (q["metric"] == m)].set_index("method")["value"]
            if target in cell and reference in cell:
                rows.append({"source": f"quoted ({paper} Table {table})", "dataset": dataset, "metric": m,
                             target: float(cell[target]), reference: float(cell[reference]),
                             "gain %": 100 * (cell[target] / cell[reference] - 1)})
    if not rows:
        return pd.DataFrame({"status": [f"no {target} and {reference} pair to compare yet"]})
    return pd.DataFrame(rows).set_index(["source", "dataset", "metric"])
