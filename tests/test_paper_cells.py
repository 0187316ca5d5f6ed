"""report.paper_cells: every cell the scorecard fills is a cell the papers
print. Against an empty store every cell is "not run yet", so the only way a
quoted value can be missing is a label of ours that the paper's CSV does not
have (S^4Rec's Table 2 once named S^4Rec "Ours", which matched nothing)."""
import pytest

import helpers
from emkd_lib import paper_tables
from emkd_lib.report import paper_cells as cells
from emkd_lib.report.quoted import scorecard

try:
    paper_tables.tables_dir()
    HAVE_TABLES = True
except FileNotFoundError:
    HAVE_TABLES = False

pytestmark = [pytest.mark.skipif(not HAVE_TABLES, reason="no ../shared/papers/tables"),
              *[helpers.needs_dataset(d) for d in ("beauty", "sports", "toys", "ml-1m")]]


def _frames():
    table4, table5 = cells.emkd_table4_and_5_cells("cpu", "paper", "beauty", 0)
    return {("EMKD", 1): cells.emkd_table1_cells("cpu", "paper", ("beauty", "toys", "ml-1m"), (0, 1, 2), (1, 2)),
            ("EMKD", 3): cells.emkd_table3_cells("cpu", "paper", ("beauty", "toys", "ml-1m"), 0),
            ("EMKD", 4): table4, ("EMKD", 5): table5,
            ("S4Rec", 2): cells.s4rec_table2_cells("cpu", "paper", ("beauty", "sports", "toys", "ml-1m"), 0),
            ("S4Rec", 3): cells.s4rec_table3_cells("cpu", "paper", "beauty", 0)}


def test_every_scorecard_cell_has_its_quoted_value(empty_store):
    for (paper, table), frame in _frames().items():
        assert len(frame) and set(frame["paper"]) == {paper} and set(frame["table"]) == {table}
        card = scorecard(frame)
        missing = card[card["quoted"].isna()]
        assert missing.empty, f"{paper} Table {table}: no quoted value for {list(missing.index)}"
        assert set(card["verdict"]) == {"not run yet"}


def test_s4rec_table2_covers_the_papers_methods_that_the_library_has(empty_store):
    frame = cells.s4rec_table2_cells("cpu", "paper", ("beauty",), 0)
    assert set(frame["method"]) == {"SASRec", "CL4SRec", "ICLRec", "S4Rec"}   # DuoRec is not in the table
    assert set(frame["metric"]) == {"HR@5", "HR@20", "NDCG@5", "NDCG@20"}
    # the cpu profile's ML-1M user sample is a setting the paper's does not have
    ml = cells.s4rec_table2_cells("cpu", "paper", ("ml-1m",), 0)
    assert ml["setting differs"].str.contains("users").all()


def test_s4rec_table2_cells_use_a_stored_patience_check_as_chapter_05_does(empty_store, monkeypatch):
    from types import SimpleNamespace

    from emkd_lib.studies import s4rec as study
    key = ("toys", "cl4srec", 0)
    main_config = study.main_grid("cpu", ("toys",), (0,), ("cl4srec",))[key]
    check_config = study.patience_check_grid("cpu", ("toys",), (0,))[key]
    history = [{"valid_ndcg10": 0.01 * e, "loss": 9.0 - e} for e in range(1, 6)]
    main = SimpleNamespace(config=main_config, history=history, best_epoch=5,
                           test_metrics=dict.fromkeys(cells.S4REC_METRICS, 0.25))
    check = SimpleNamespace(config=check_config, history=history + [{"valid_ndcg10": 0.5, "loss": 1.0}],
                            best_epoch=6, test_metrics=dict.fromkeys(cells.S4REC_METRICS, 0.5))
    store = {main_config: main, check_config: check}

    def stored(grid, **_):
        return {k: store.get(c) for k, c in grid.items()}
    monkeypatch.setattr(cells, "results_for", stored)
    monkeypatch.setattr(study, "results_for", stored)   # the checks are looked up where Table 2's readers share it

    def cl4srec_cells():
        frame = cells.s4rec_table2_cells("cpu", "paper", ("toys",), 0)
        assert frame[frame["method"] != "CL4SRec"]["value"].isna().all()
        return frame[frame["method"] == "CL4SRec"]
    # each cell names its own run's patience where it differs from the paper profile's
    paper_patience = study.main_grid("paper", ("toys",), (0,), ("cl4srec",))[key].train.patience

    def names_patience(frame, config):
        text = f"patience {config.train.patience} (paper profile: {paper_patience})"
        return set(frame["setting differs"].str.contains(text, regex=False)) == {config.train.patience != paper_patience}
    with_check = cl4srec_cells()
    assert set(with_check["value"]) == {0.5} and names_patience(with_check, check_config)
    del store[check_config]   # without the check the main run fills the cell
    without = cl4srec_cells()
    assert set(without["value"]) == {0.25} and names_patience(without, main_config)
    assert main_config.train.patience != paper_patience   # the cpu profile stops sooner than the paper's
