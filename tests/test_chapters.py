"""The chapters as the book shows them: code is plumbing, so no code cell's
input reaches a page unhidden (``remove-input``, or ``hide-input`` behind a
toggle); only the papermill parameter cells show, so a reader sees what can
be changed."""
import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
SHOWN = {"parameters", "injected-parameters"}
HIDDEN = {"remove-input", "hide-input", "remove-cell"}


def test_every_chapter_is_found():
    assert len(NOTEBOOKS) >= 11


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_code_cell_shows_its_input(path):
    cells = json.loads(path.read_text())["cells"]
    shown = [i for i, cell in enumerate(cells) if cell["cell_type"] == "code"
             and not set(cell["metadata"].get("tags", [])) & (SHOWN | HIDDEN)]
    assert not shown, f"{path.name}: code cells {shown} show their input; tag them remove-input or hide-input"


# The longest line of code that fits the book's 654 px code box without
# scrolling sideways: scripts/browser_check.py measured a line of 80 characters
# at 706 px (8.8 px a character) and passed every line of 74.
TEXT_COLUMN_CHARACTERS = 74


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_code_a_reader_can_expand_fits_the_text_column(path):
    long = [f"cell {i}: {line.strip()[:50]}" for i, cell in enumerate(json.loads(path.read_text())["cells"])
            if cell["cell_type"] == "code" and set(cell["metadata"].get("tags", [])) & (SHOWN | {"hide-input"})
            for line in "".join(cell["source"]).split("\n") if len(line) > TEXT_COLUMN_CHARACTERS]
    assert not long, f"{path.name}: lines over {TEXT_COLUMN_CHARACTERS} characters in code the book shows: {long}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_rendered_sentence_or_table_is_dropped(path):
    """``render_sentence``, ``render_bullets`` and ``render_table`` return
    what Jupyter shows only as a cell's last expression; anywhere else
    (earlier in the cell, inside an ``if``) the text is computed and never
    reaches the page unless passed to ``display``."""
    import ast
    dropped = []
    for i, cell in enumerate(json.loads(path.read_text())["cells"]):
        if cell["cell_type"] != "code":
            continue
        tree = ast.parse("".join(cell["source"]))
        last = tree.body[-1] if tree.body else None
        dropped += [f"cell {i}: {ast.unparse(node)[:60]}" for node in ast.walk(tree)
                    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and node is not last
                    and getattr(node.value.func, "id", None) in ("render_sentence", "render_bullets", "render_table")]
    assert not dropped, f"{path.name}: wrap in display(...): {dropped}"


def _default_parameters(name: str) -> dict:
    """The values a chapter's "parameters" cell assigns (literals only)."""
    import ast
    cells = json.loads((NOTEBOOKS[0].parent / f"{name}.ipynb").read_text())["cells"]
    cell = next(c for c in cells if "parameters" in c["metadata"].get("tags", []))
    tree = ast.parse("".join(cell["source"]))
    return {t.targets[0].id: ast.literal_eval(t.value) for t in tree.body if isinstance(t, ast.Assign)}


@pytest.mark.parametrize("chapter,module", [("03_emkd_main_results", "emkd"), ("08_odmt_multimodal", "odmt")])
def test_the_budgets_seed_spread_is_the_chapters(chapter, module):
    """The performance chapter prices each chapter's runs from ``CHAPTER_GRIDS``:
    its spread grid must be the spread the chapter shows by default."""
    import importlib

    from emkd_lib.studies import CHAPTER_GRIDS, GRIDS
    study = importlib.import_module(f"emkd_lib.studies.{module}")
    assert tuple(_default_parameters(chapter)["spread_seeds"]) == study.SPREAD_SEEDS
    assert GRIDS[f"{module}-spread"] is study.spread_grid
    assert any(f"{module}-spread" in grids for grids in CHAPTER_GRIDS.values())


def test_odmt_spread_grid_is_table_2_with_three_seeds_on_the_first_dataset():
    from emkd_lib.studies import odmt
    spread = odmt.spread_grid("cpu")
    assert {(d, s) for d, m, s in spread} == {("ml-100k-odmt", s) for s in (0, 1, 2)}
    assert spread[("ml-100k-odmt", "odmt", 0)] == odmt.main_grid("cpu")[("ml-100k-odmt", "odmt", 0)]
    assert len(spread) == 3 * len(odmt.METHODS)


def test_the_budgets_ensemble_grid_is_chapter_02s():
    """Chapter 02 trains its singles and ensemble members from the registered
    ``ensembles`` grid, so the budget prices what the chapter shows."""
    from emkd_lib.studies import CHAPTER_GRIDS, GRIDS, baselines
    defaults = _default_parameters("02_ensemble_motivation")
    assert tuple(defaults["methods"]) == baselines.ENSEMBLE_METHODS
    assert tuple(defaults["datasets"]) == baselines.DATASETS
    assert tuple(sorted(set(defaults["single_seeds"]) | set(defaults["ensemble_seeds"]))) == baselines.ENSEMBLE_SEEDS
    assert CHAPTER_GRIDS["02 ensemble motivation"] == ("ensembles",)
    assert GRIDS["ensembles"]("cpu")[("toys", "caser", 2)] == GRIDS["baselines"]("cpu", seeds=(2,))[("toys", "caser", 2)]


def test_chapter_03s_table_3_grid_is_the_baselines_and_emkds_main_run_on_one_seed():
    from emkd_lib.studies.baselines import baseline_grid
    from emkd_lib.studies.emkd import main_grid, table3_grid
    grid = table3_grid("cpu", ("beauty", "toys"), 1, ("sasrec", "bert4rec"))
    assert set(grid) == {(d, m) for d in ("beauty", "toys") for m in ("sasrec", "bert4rec", "emkd")}
    assert grid[("toys", "emkd")] == main_grid("cpu", ("toys",), (1,))[("toys", 1)]
    assert grid[("beauty", "bert4rec")] == baseline_grid("cpu", ("beauty",), (1,), ("bert4rec",))[
        ("beauty", "bert4rec", 1)]
