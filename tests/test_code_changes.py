"""Which dropout masks a stored run drew, told from the git history of the
commits that trained it, and the line that names a table's rows that drew
otherwise than its reference."""
import subprocess
from types import SimpleNamespace

import pytest

from emkd_lib.report import dropout_masks, mixed_masks_found


@pytest.fixture
def history(tmp_path):
    """A repository with three commits: before the change, the change, after it."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout.strip()
    git("init", "-q")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    commits = {}
    for name in ("before", "change", "after"):
        (tmp_path / "f").write_text(name)
        git("add", "f")
        git("commit", "-q", "-m", name)
        commits[name] = git("rev-parse", "HEAD")
    return tmp_path, commits


def run(commit, ndcg=0.05, resumed_by=None):
    flags = {"trained_by_commits": [commit, resumed_by]} if resumed_by else {}
    return SimpleNamespace(flags=flags, provenance={"commit": commit}, test_metrics={"NDCG@10": ndcg})


def test_dropout_masks_follow_the_commits_that_trained_a_run(history):
    repo, c = history
    kw = dict(repo=repo, change=c["change"])
    assert dropout_masks(run(c["before"]), **kw) == "Bernoulli"
    assert dropout_masks(run(c["change"]), **kw) == "uniform"
    assert dropout_masks(run(c["after"] + "+dirty"), **kw) == "uniform"
    assert dropout_masks(run(c["before"], resumed_by=c["after"]), **kw) == "mixed"
    assert dropout_masks(run("0" * 40), **kw) == "unknown"          # not in this history


def test_mixed_masks_found_names_the_rows_that_drew_otherwise_than_the_reference(history):
    repo, c = history
    kw = dict(repo=repo, change=c["change"])
    rows = {"default": run(c["before"]), "switch a": run(c["after"]), "switch b": run(c["before"]), "later": None}
    (line,) = mixed_masks_found(rows, "default", "fidelity table", **kw)
    assert line.startswith("fidelity table: the reference row 'default' was trained with element-wise Bernoulli")
    assert "1 of the other 2 rows (switch a) with dropout masks from one uniform draw" in line
    assert "seeds" not in line
    spread = [run(c["before"], 0.0382), run(c["after"], 0.0383), run(c["after"], 0.0373), None]
    (line,) = mixed_masks_found(rows, "default", "fidelity table", seed_spread=spread, **kw)
    mean = (0.0382 + 0.0383 + 0.0373) / 3
    assert line.endswith(f"over 3 seeds spans {100 * 0.0010 / mean:.1f}% of test NDCG@10 (0.0373 to 0.0383)")
    # every row drew as the reference did, the reference missing, or a commit not in the history: no line
    assert mixed_masks_found({"default": run(c["after"]), "a": run(c["change"])}, "default", "t", **kw) == []
    assert mixed_masks_found({"default": None, "a": run(c["after"])}, "default", "t", **kw) == []
    assert mixed_masks_found({"default": run("0" * 40), "a": run(c["after"])}, "default", "t", **kw) == []
