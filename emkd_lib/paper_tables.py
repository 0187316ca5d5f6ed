"""The papers' own result tables, read from the shared tidy CSVs.

The chapters quote the papers' numbers beside their own measurements. Those
numbers are never typed into a notebook: they are read here from the CSVs that
were parsed from the papers' texts (``../shared/papers/tables/``, one value a
row, columns ``paper,table,dataset,method,metric,value``), so a quoted number
always has one source that can be checked against the paper.

Where the folder is
-------------------
1. ``$EMKD_PAPERS_DIR``: the papers folder (the one that holds ``tables/``) or
   the folder of CSVs itself;
2. otherwise ``<repo>/../shared/papers/tables``, beside the repository, as the
   data mirror (``../shared/data``) is.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from . import settings as settings_module

DEFAULT_TABLES_DIR = settings_module.REPO_ROOT.parent / "shared" / "papers" / "tables"
COLUMNS = ["paper", "table", "dataset", "method", "metric", "value"]


def tables_dir() -> Path:
    """The folder of the papers' tidy CSVs (see the module docstring).

    Raises
    ------
    FileNotFoundError
        If the folder does not exist or holds no CSV; the message names the
        folder looked in.
    """
    settings = settings_module.current()
    if settings.papers_dir is not None:
        folder = settings.papers_dir
        # Accept the papers folder as well as its tables/ subfolder: both are
        # natural things to point the variable at.
        if (folder / "tables").is_dir():
            folder = folder / "tables"
        where = f"{folder} (from $EMKD_PAPERS_DIR)"
    elif settings.data_dir is not None and (settings.data_dir.parent / "papers" / "tables").is_dir():
        # The papers sit beside the data mirror (../shared/{data,papers}), so a
        # clone that was told where the data is finds the papers too.
        folder = settings.data_dir.parent / "papers" / "tables"
        where = f"{folder} (beside $EMKD_DATA_DIR)"
    else:
        folder = DEFAULT_TABLES_DIR
        where = f"{folder} (default; set $EMKD_PAPERS_DIR to look elsewhere)"
    if not folder.is_dir() or not any(folder.glob("*.csv")):
        raise FileNotFoundError(f"no paper tables (*.csv) found in {where}")
    return folder


@lru_cache(maxsize=4)
def _read_all(folder: Path) -> pd.DataFrame:
    # The files are small (a few hundred rows in all), so reading all of them
    # and selecting by the `paper` and `table` columns is simpler and safer
    # than relying on the file names.
    frames = [pd.read_csv(path) for path in sorted(folder.glob("*.csv"))]
    df = pd.concat(frames, ignore_index=True)
    missing = set(COLUMNS) - set(df.columns)
    if missing:
        raise ValueError(f"paper tables in {folder} lack columns {sorted(missing)}")
    return df[COLUMNS]


def _select(df: pd.DataFrame, column: str, wanted, context: str) -> pd.DataFrame:
    """Rows of ``df`` whose ``column`` is in ``wanted`` (a value or a list);
    an asked-for value that the table does not have is an error, not an
    empty result, so that a typo cannot pass as "the paper did not report it"."""
    if wanted is None:
        return df
    values = [wanted] if isinstance(wanted, str) else list(wanted)
    known = df[column].dropna().unique().tolist()
    unknown = [v for v in values if v not in known]
    if unknown:
        raise KeyError(f"{context} has no {column} {unknown}; it has {known}")
    return df[df[column].isin(values)]


def quoted_table(paper: str, table: int, *, dataset=None, method=None, metric=None) -> pd.DataFrame:
    """Values of one result table of a paper, as printed in the paper.

    Parameters
    ----------
    paper : str
        ``"EMKD"``, ``"S4Rec"`` or ``"ODMT"`` (case-insensitive).
    table : int
        The table's number in the paper.
    dataset, method, metric : str or list of str, optional
        Keep only these rows, e.g. ``dataset="beauty"``, ``metric="NDCG@10"``.
        Method labels are the paper's (``"SASRec"``, ``"EMKD"``).

    Returns
    -------
    pandas.DataFrame
        Tidy rows with columns ``paper, table, dataset, method, metric,
        value``, in the CSV's order. ``method`` is empty (NaN) in
        dataset-statistics tables.

    Raises
    ------
    FileNotFoundError
        If the folder of tables is missing (see :func:`tables_dir`).
    KeyError
        If the paper, the table or a requested dataset/method/metric is not
        in the CSVs.
    """
    folder = tables_dir()
    df = _read_all(folder)
    papers = df["paper"].unique().tolist()
    by_lower = {p.lower(): p for p in papers}
    if paper.lower() not in by_lower:
        raise KeyError(f"no paper {paper!r} in the tables in {folder}; they have {papers}")
    name = by_lower[paper.lower()]
    rows = df[df["paper"] == name]
    tables = sorted(rows["table"].unique().tolist())
    if int(table) not in tables:
        raise KeyError(f"{name} has no table {table} in {folder}; it has tables {tables}")
    rows = rows[rows["table"] == int(table)]
    context = f"{name} Table {table}"
    rows = _select(rows, "dataset", dataset, context)
    rows = _select(rows, "method", method, context)
    rows = _select(rows, "metric", metric, context)
    return rows.reset_index(drop=True)


def beside_quoted(ours: pd.DataFrame, method_map: dict[str, str] | None = None) -> pd.DataFrame:
    """Our measured values with the paper's value for the same cell beside them.

    Parameters
    ----------
    ours : pandas.DataFrame
        Tidy rows with columns ``dataset, method, metric, value, paper,
        table``: ``value`` is ours, ``paper`` and ``table`` say which of the
        paper's tables the row is compared with.
    method_map : dict, optional
        Our method label -> the paper's label (``{"sasrec": "SASRec"}``).
        Labels not in the map are looked up as they are.

    Returns
    -------
    pandas.DataFrame
        ``ours`` with three more columns: ``quoted`` (the paper's value, NaN
        where the paper does not report that dataset or metric), ``ratio``
        (``value / quoted``) and ``quoted from`` (e.g. ``"EMKD Table 3"``), so
        that a reader never takes the paper's number for a measured one.

    Raises
    ------
    KeyError
        If a paper label is not a method of the paper's table at all (most
        likely a wrong ``method_map``), or if the paper or table is unknown.
    """
    method_map = method_map or {}
    missing = {"dataset", "method", "metric", "value", "paper", "table"} - set(ours.columns)
    if missing:
        raise ValueError(f"beside_quoted needs columns {sorted(missing)} in `ours`")
    out = ours.copy()
    out["paper method"] = out["method"].map(lambda m: method_map.get(m, m))
    quoted = pd.Series(np.nan, index=out.index, dtype=float)
    source = pd.Series("", index=out.index, dtype=object)
    for (paper, table), group in out.groupby(["paper", "table"], sort=False):
        paper_rows = quoted_table(paper, table)
        known = set(paper_rows["method"].dropna())
        unknown = sorted(set(group["paper method"]) - known)
        if unknown:
            raise KeyError(f"{paper} Table {table} has no method {unknown} (check method_map); "
                           f"it has {sorted(known)}")
        lookup = paper_rows.set_index(["dataset", "method", "metric"])["value"]
        keys = list(zip(group["dataset"], group["paper method"], group["metric"]))
        quoted[group.index] = [lookup.get(k, np.nan) for k in keys]
        source[group.index] = f"{paper_rows['paper'].iloc[0]} Table {table}"
    out["quoted"] = quoted
    # A ratio against a missing or zero quote is undefined, not infinite.
    out["ratio"] = out["value"] / out["quoted"].where(out["quoted"] != 0)
    out["quoted from"] = source
    return out.drop(columns="paper method")
