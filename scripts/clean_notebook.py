#!/usr/bin/env python3
"""Strip what changes on every run from executed notebooks, in place.

    python scripts/clean_notebook.py notebooks/*.ipynb

``make book`` executes every chapter with papermill and copies it back over
the committed notebook. Without cleaning, every rebuild rewrites every
notebook even when no result changed: papermill's timestamps and durations,
Jupyter's per-cell execution times, tqdm's progress bars and its "IProgress
not found" warning, a random id for papermill's injected-parameters cell, and
absolute paths of the machine that ran it (the checkout, the virtual
environment). This script removes or rewrites exactly those, so that a
rebuild with unchanged results leaves ``git status`` clean.

What it does to each notebook:

- notebook metadata: keeps only ``parameters`` and ``default_parameters`` of
  papermill's record (drops durations, start/end times, input/output paths);
  drops ``widgets`` state;
- cell metadata: drops ``execution`` (iopub timestamps), ``papermill`` and
  ``ExecuteTime``;
- cell ids: keeps a cell's id when it is valid and unique (papermill keeps the
  input notebook's ids); the injected-parameters cell gets the id
  ``injected-parameters``; any other cell without a usable id gets
  ``cell-<index>``;
- tags: the parameters cell is also tagged ``hide-input`` and papermill's
  injected-parameters cell ``remove-cell`` (``BOOK_TAGS``: how the book
  shows them);
- execution counts: renumbered 1, 2, ... over the executed code cells, in
  order (what a top-to-bottom run gives anyway);
- outputs: removes tqdm progress bars and TqdmWarning/IProgress lines from
  stderr streams (dropping a stream left empty); in text outputs replaces the
  virtual environment's path by ``<venv>``, the repository's path by
  ``<repo>``, its sibling ``../shared`` (the shared data and papers) by
  ``<repo>/../shared`` and the home folder by ``~``. Other paths beside the
  checkout stay as they are: a clone in /tmp must not turn ``/tmp/cache``
  into ``<repo>/../cache`` where the working checkout leaves it alone.

Cleaning is idempotent: a cleaned notebook cleaned again is byte-identical.
The file is written as Jupyter writes it (JSON, indent 1, sorted keys).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

VOLATILE_CELL_METADATA = ("execution", "papermill", "ExecuteTime")
# How the book shows papermill's cells: the chapter's parameters folded
# under a toggle (a reader rerunning it looks them up), papermill's copy of
# the values it was run with not at all (the defaults above say the same).
BOOK_TAGS = {"parameters": "hide-input", "injected-parameters": "remove-cell"}
KEPT_PAPERMILL_METADATA = ("parameters", "default_parameters")
VALID_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
# tqdm: "name:  40%|████      | 2/5 [00:00<00:01,  2.33it/s]" and its warning
# when ipywidgets is missing (plus the import line Python prints under it).
PROGRESS_BAR = re.compile(r"\d+%\|.*\|\s*\d+/\d+|\|\s*\d+/\d+ \[[^\]]*\]")
TQDM_NOISE = re.compile(r"TqdmWarning|IProgress|from \.autonotebook import tqdm")
TEXT_MIMETYPES = ("text/plain", "text/html", "text/markdown", "text/latex")


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else value


def _lines(text: str) -> list[str]:
    # nbformat's on-disk form: a list of lines, each but the last ending in "\n".
    return text.splitlines(keepends=True)


def repo_root(path: Path) -> Path | None:
    """The git checkout holding ``path`` (a folder with ``.git``, file or dir)."""
    for folder in [path.resolve().parent, *path.resolve().parents]:
        if (folder / ".git").exists():
            return folder
    return None


def path_replacements(notebook: Path) -> list[tuple[str, str]]:
    """(absolute prefix, replacement) pairs, longest prefix first."""
    pairs = {}
    root = repo_root(notebook)
    venvs = []
    if sys.prefix != sys.base_prefix:  # running inside a virtual environment
        venvs.append(Path(sys.prefix))
    if os.environ.get("VIRTUAL_ENV"):
        venvs.append(Path(os.environ["VIRTUAL_ENV"]))
    if root is not None:
        venvs.append(root / ".venv")
        pairs[str(root)] = "<repo>"
        pairs[str(root.parent / "shared")] = "<repo>/../shared"
    for venv in venvs:
        pairs[str(venv)] = "<venv>"
        pairs[str(venv.resolve())] = "<venv>"
    home = Path.home()
    if str(home) not in ("/", ""):
        pairs.setdefault(str(home), "~")
    # Longest first, so that the venv inside the repo wins over the repo.
    return sorted(((k, v) for k, v in pairs.items() if len(k) > 1), key=lambda kv: -len(kv[0]))


def replace_paths(text: str, replacements: list[tuple[str, str]]) -> str:
    for prefix, replacement in replacements:
        # Only whole path components: /work/main must not match /work/mainline.
        text = re.sub(re.escape(prefix) + r"(?=[/\s'\",:)\]}]|$)", replacement, text)
    return text


def clean_stderr(text: str) -> str:
    kept = []
    for line in re.split(r"(?<=\n)", text):
        # a progress bar redraws itself with "\r": judge the last redraw
        last = line.rstrip("\n").split("\r")[-1]
        if TQDM_NOISE.search(line) or PROGRESS_BAR.search(last) or (not last.strip() and "\r" in line):
            continue
        kept.append(line)
    cleaned = "".join(kept)
    return "" if not cleaned.strip() else cleaned


def clean_outputs(outputs: list, replacements) -> list:
    cleaned = []
    for out in outputs:
        kind = out.get("output_type")
        if kind == "stream":
            text = _text(out.get("text", ""))
            if out.get("name") == "stderr":
                text = clean_stderr(text)
                if not text:
                    continue
            out["text"] = _lines(replace_paths(text, replacements))
        elif kind in ("execute_result", "display_data"):
            data = out.get("data", {})
            for mime in TEXT_MIMETYPES:
                if mime in data:
                    data[mime] = _lines(replace_paths(_text(data[mime]), replacements))
        elif kind == "error":
            out["traceback"] = [replace_paths(line, replacements) for line in out.get("traceback", [])]
        cleaned.append(out)
    return cleaned


def clean_notebook(nb: dict, replacements) -> dict:
    """Clean a notebook (a dict as read from JSON) in place and return it."""
    meta = nb.setdefault("metadata", {})
    meta.pop("widgets", None)
    if "papermill" in meta:
        kept = {k: meta["papermill"][k] for k in KEPT_PAPERMILL_METADATA if k in meta["papermill"]}
        if kept:
            meta["papermill"] = kept
        else:
            del meta["papermill"]

    seen: set[str] = set()
    count = 0
    for index, cell in enumerate(nb.get("cells", [])):
        cmeta = cell.setdefault("metadata", {})
        for key in VOLATILE_CELL_METADATA:
            cmeta.pop(key, None)
        tags = cmeta.get("tags", [])
        for tag, shown_as in BOOK_TAGS.items():
            if tag in tags and shown_as not in tags:
                cmeta["tags"] = tags = [*tags, shown_as]
        if "injected-parameters" in tags:
            cell_id = "injected-parameters"
        else:
            cell_id = cell.get("id")
            if not (isinstance(cell_id, str) and VALID_ID.match(cell_id)) or cell_id in seen:
                cell_id = f"cell-{index}"
        while cell_id in seen:  # only if a notebook reused "cell-<n>" by hand
            cell_id += "-"
        seen.add(cell_id)
        if nb.get("nbformat", 4) > 4 or nb.get("nbformat_minor", 0) >= 5:
            cell["id"] = cell_id  # ids exist from nbformat 4.5 on

        if cell.get("cell_type") == "code":
            if cell.get("execution_count") is not None:
                count += 1
                cell["execution_count"] = count
            outputs = clean_outputs(cell.get("outputs", []), replacements)
            for out in outputs:
                if out.get("output_type") == "execute_result":
                    out["execution_count"] = cell.get("execution_count")
            cell["outputs"] = outputs
    return nb


def dumps(nb: dict) -> str:
    # As nbformat.write does, so a cleaned notebook diffs cleanly against one
    # saved by Jupyter.
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def clean_file(path: Path) -> bool:
    """Clean ``path`` in place; True if the file changed."""
    before = path.read_text(encoding="utf-8")
    after = dumps(clean_notebook(json.loads(before), path_replacements(path)))
    if after != before:   # atomically: an interrupted clean must not leave half a notebook
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(after)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return after != before


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    args = parser.parse_args(argv)
    for path in args.notebooks:
        changed = clean_file(path)
        print(f"clean_notebook: {path}: {'cleaned' if changed else 'already clean'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
