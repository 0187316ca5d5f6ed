"""paper_tables: quoted numbers come from the shared CSVs, never from this file.

Every expected value below is read from the CSVs themselves, so the tests
check the plumbing (selection, alignment, ratio), not any number.
"""
import glob

import numpy as np
import pandas as pd
import pytest

from emkd_lib import paper_tables
from emkd_lib.paper_tables import beside_quoted, quoted_table

try:
    TABLES = paper_tables.tables_dir()
except FileNotFoundError:  # a clone without ../shared: nothing to quote
    TABLES = None
needs_tables = pytest.mark.skipif(TABLES is None, reason="no ../shared/papers/tables and no $EMKD_PAPERS_DIR")


def csv_value(paper, table, dataset, method, metric):
    """The one CSV row for a cell, read independently of the module."""
    df = pd.concat([pd.read_csv(f) for f in glob.glob(str(TABLES / "*.csv"))])
    row = df[(df.paper == paper) & (df.table == table) & (df.dataset == dataset)
             & (df.method == method) & (df.metric == metric)]
    assert len(row) == 1
    return float(row["value"].iloc[0])


@needs_tables
def test_emkd_table3_beauty_sasrec_ndcg10_is_the_csv_row():
    got = quoted_table("EMKD", 3, dataset="beauty", method="SASRec", metric="NDCG@10")
    assert list(got.columns) == paper_tables.COLUMNS
    assert len(got) == 1
    assert got["value"].iloc[0] == csv_value("EMKD", 3, "beauty", "SASRec", "NDCG@10")


@needs_tables
def test_filters_accept_lists_and_paper_name_is_case_insensitive():
    got = quoted_table("emkd", 3, dataset=["beauty", "toys"], metric="NDCG@10")
    assert set(got["dataset"]) == {"beauty", "toys"}
    assert set(got["metric"]) == {"NDCG@10"}
    assert (got["paper"] == "EMKD").all() and (got["table"] == 3).all()


@needs_tables
@pytest.mark.parametrize("kwargs, needle", [
    (dict(paper="EMKD", table=99), "no table 99"),
    (dict(paper="NoSuchPaper", table=1), "no paper 'NoSuchPaper'"),
    (dict(paper="EMKD", table=3, method="NoSuchMethod"), "no method ['NoSuchMethod']"),
    (dict(paper="EMKD", table=3, dataset="nowhere"), "no dataset ['nowhere']"),
])
def test_unknown_paper_table_or_filter_raises_naming_it(kwargs, needle):
    paper, table = kwargs.pop("paper"), kwargs.pop("table")
    with pytest.raises(KeyError) as err:
        quoted_table(paper, table, **kwargs)
    assert needle in str(err.value)
    # an unknown paper or table names the folder it looked in; an unknown filter value lists the known ones
    assert (str(TABLES) if not kwargs else "; it has [") in str(err.value)


def test_missing_folder_names_where_it_looked(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    monkeypatch.setenv("EMKD_PAPERS_DIR", str(missing))
    with pytest.raises(FileNotFoundError) as err:
        quoted_table("EMKD", 3)
    message = str(err.value)
    assert str(missing) in message and "EMKD_PAPERS_DIR" in message
    assert "\n" not in message


def test_env_var_may_point_at_the_papers_folder_or_its_tables(tmp_path, monkeypatch):
    tables = tmp_path / "papers" / "tables"
    tables.mkdir(parents=True)
    pd.DataFrame([{"paper": "X", "table": 1, "dataset": "d", "method": "m",
                   "metric": "NDCG@10", "value": 0.5}]).to_csv(tables / "x_table1.csv", index=False)
    for folder in (tables, tables.parent):
        monkeypatch.setenv("EMKD_PAPERS_DIR", str(folder))
        assert quoted_table("X", 1)["value"].tolist() == [0.5]


@needs_tables
def test_beside_quoted_adds_quoted_and_ratio():
    paper_value = csv_value("EMKD", 3, "beauty", "SASRec", "NDCG@10")
    ours = pd.DataFrame([
        {"dataset": "beauty", "method": "sasrec", "metric": "NDCG@10", "value": paper_value / 2,
         "paper": "EMKD", "table": 3},
        # a metric the paper's table does not report: no quote, no ratio
        {"dataset": "beauty", "method": "sasrec", "metric": "NDCG@20", "value": 0.1,
         "paper": "EMKD", "table": 3},
    ])
    out = beside_quoted(ours, {"sasrec": "SASRec"})
    assert out["quoted"].iloc[0] == paper_value
    assert out["ratio"].iloc[0] == pytest.approx(ours["value"].iloc[0] / paper_value)
    assert np.isnan(out["quoted"].iloc[1]) and np.isnan(out["ratio"].iloc[1])
    assert out["quoted from"].iloc[0] == "EMKD Table 3"
    # ours is left as it was, and our labels stay ours
    assert out["method"].tolist() == ["sasrec", "sasrec"]
    assert "quoted" not in ours.columns


@needs_tables
def test_beside_quoted_rejects_a_label_the_table_does_not_have():
    ours = pd.DataFrame([{"dataset": "beauty", "method": "sasrec", "metric": "NDCG@10", "value": 0.1,
                          "paper": "EMKD", "table": 3}])
    with pytest.raises(KeyError, match="check method_map"):
        beside_quoted(ours, {})


@needs_tables
def test_quoted_sweep_reads_the_swept_value_and_none_from_odmt_table4_labels():
    from emkd_lib.report import quoted_sweep
    sweep = quoted_sweep("ODMT", 4, "T")
    rows = paper_tables.quoted_table("ODMT", 4)
    assert len(sweep) == rows["method"].str.startswith("T=").sum() > 0
    one = sweep[(sweep["method"] == "T=0.3 (alpha=50)") & (sweep["dataset"] == "stream") & (sweep["metric"] == "NDCG@10")]
    assert one["x"].tolist() == [0.3]
    assert sweep.loc[sweep["method"].str.startswith("T=None"), "x"].isna().all()
    assert sweep["x"].notna().sum() > 0 and not sweep["method"].str.startswith("alpha=").any()
    alpha = quoted_sweep("ODMT", 4, "alpha")
    assert set(alpha["x"].dropna()) >= {10.0, 20.0}
    with pytest.raises(KeyError, match="no row labelled 'beta=...'"):
        quoted_sweep("ODMT", 4, "beta")
