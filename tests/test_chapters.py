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
