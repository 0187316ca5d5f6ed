"""scripts/clean_notebook.py on a small notebook shaped like papermill's output."""
import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("clean_notebook", REPO / "scripts" / "clean_notebook.py")
clean_notebook = importlib.util.module_from_spec(spec)
spec.loader.exec_module(clean_notebook)

PM_CELL = {"duration": 0.01, "end_time": "2026-11-25T01:58:22.1+00:00", "exception": False,
           "start_time": "2026-11-25T01:58:22.0+00:00", "status": "completed"}
IOPUB = {"iopub.execute_input": "2026-11-25T01:58:22.158006Z", "iopub.status.busy": "2026-11-25T01:58:22.1Z",
         "iopub.status.idle": "2026-11-25T01:58:22.2Z", "shell.execute_reply": "2026-11-25T01:58:22.2Z"}


def executed_notebook(root: Path) -> dict:
    venv = Path(sys.prefix)
    return {
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "papermill": {"duration": 12.3, "start_time": "2026-11-25T01:58:21+00:00",
                          "end_time": "2026-11-25T01:58:33+00:00", "input_path": "notebooks/x.ipynb",
                          "output_path": "_build/executed/x.ipynb", "environment_variables": {},
                          "exception": None, "version": "2.7.0",
                          "parameters": {"profile": "cpu"}, "default_parameters": {}},
        },
        "cells": [
            {"cell_type": "markdown", "id": "d45d0c46", "source": ["# Title"],
             "metadata": {"papermill": PM_CELL, "tags": []}},
            {"cell_type": "code", "id": "0b66d8a3", "execution_count": 1, "source": ["profile = 'smoke'"],
             "metadata": {"tags": ["parameters"], "execution": IOPUB, "papermill": PM_CELL}, "outputs": []},
            # papermill's injected cell has a new random id on every run
            {"cell_type": "code", "id": "5f3e9a0c-random", "execution_count": 2, "source": ["profile = 'cpu'"],
             "metadata": {"tags": ["injected-parameters"], "execution": IOPUB, "papermill": PM_CELL},
             "outputs": []},
            {"cell_type": "code", "id": "0b66d8a3", "execution_count": 7, "source": ["run()"],  # duplicate id
             "metadata": {"execution": IOPUB, "papermill": PM_CELL, "ExecuteTime": {"end_time": "x"}},
             "outputs": [
                 {"output_type": "stream", "name": "stderr", "text": [
                     f"{venv}/lib/python3.11/site-packages/tqdm/auto.py:21: TqdmWarning: IProgress not found. "
                     "Please update jupyter and ipywidgets.\n",
                     "  from .autonotebook import tqdm as notebook_tqdm\n"]},
                 {"output_type": "stream", "name": "stderr",
                  "text": ["\r", "datasets:  40%|████      | 2/5 [00:00<00:01,  2.33it/s]"]},
                 {"output_type": "stream", "name": "stderr", "text": ["UserWarning: something real\n"]},
                 {"output_type": "stream", "name": "stdout",
                  "text": [f"{{'beauty': '{root.parent}/shared/data/beauty/Beauty.txt'}}\n",
                           f"results in {root}/results\n",
                           f"features cached in {root.parent}/featcache\n"]},
                 {"output_type": "execute_result", "execution_count": 7, "metadata": {},
                  "data": {"text/plain": [f"PosixPath('{root}/notebooks')"]}},
             ]},
        ],
    }


def write(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "checkout"
    (root / ".git").mkdir(parents=True)
    (root / "notebooks").mkdir()
    path = root / "notebooks" / "x.ipynb"
    path.write_text(json.dumps(executed_notebook(root), indent=2))
    return root, path


def test_volatile_fields_are_gone_and_content_stays(tmp_path):
    root, path = write(tmp_path)
    assert clean_notebook.clean_file(path)
    text = path.read_text()
    nb = json.loads(text)
    assert nb["metadata"]["papermill"] == {"parameters": {"profile": "cpu"}, "default_parameters": {}}
    for cell in nb["cells"]:
        assert set(cell["metadata"]) <= {"tags"}
    for needle in ("2026-11-25", "duration", "TqdmWarning", "IProgress", "it/s", str(root), sys.prefix):
        assert needle not in text, needle
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert [c["execution_count"] for c in code] == [1, 2, 3]
    outputs = code[2]["outputs"]
    assert [o.get("name", o["output_type"]) for o in outputs] == ["stderr", "stdout", "execute_result"]
    assert "".join(outputs[0]["text"]) == "UserWarning: something real\n"
    assert "<repo>/../shared/data/beauty/Beauty.txt" in "".join(outputs[1]["text"])
    assert "<repo>/results" in "".join(outputs[1]["text"])
    # a path beside the checkout that is not ../shared reads the same wherever the checkout lies
    assert f"features cached in {root.parent}/featcache" in "".join(outputs[1]["text"])
    assert outputs[2]["execution_count"] == 3
    assert outputs[2]["data"]["text/plain"] == ["PosixPath('<repo>/notebooks')"]


def test_cell_ids_are_stable_and_unique(tmp_path):
    _, path = write(tmp_path)
    clean_notebook.clean_file(path)
    ids = [c["id"] for c in json.loads(path.read_text())["cells"]]
    assert ids == ["d45d0c46", "0b66d8a3", "injected-parameters", "cell-3"]


def test_the_book_folds_the_parameters_and_drops_papermills_copy_of_them(tmp_path):
    _, path = write(tmp_path)
    clean_notebook.clean_file(path)
    tags = [c["metadata"].get("tags") for c in json.loads(path.read_text())["cells"]]
    assert tags == [[], ["parameters", "hide-input"], ["injected-parameters", "remove-cell"], None]


def test_second_clean_is_byte_identical(tmp_path):
    _, path = write(tmp_path)
    clean_notebook.clean_file(path)
    first = path.read_bytes()
    assert not clean_notebook.clean_file(path)
    assert path.read_bytes() == first


def test_paths_only_replaced_as_whole_components():
    replacements = [("/work/main", "<repo>")]
    assert clean_notebook.replace_paths("/work/main/x /work/mainline", replacements) == "<repo>/x /work/mainline"
