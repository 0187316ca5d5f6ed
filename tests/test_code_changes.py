"""Which dropout masks a stored run drew, from the commits that trained it,
and the line that names a table's rows that drew otherwise than its
reference; the list of commits before the change, checked against git."""
import subprocess
from types import SimpleNamespace

import pytest

from emkd_lib.report import cpu_type, dropout_masks, other_draws_found
from emkd_lib.report.code_changes import (BERNOULLI_MASK_COMMITS, HAND_WRITTEN_ITEM_CE, UNIFORM_DROPOUT_MASKS,
                                         run_commits)
from emkd_lib.settings import REPO_ROOT

BEFORE, AFTER = "b" * 40, "a" * 40


def run(commit, ndcg=0.05, resumed_by=None, machine="AMD EPYC x2 (torch threads 1)", history=(), precision="bf16"):
    flags = {"trained_by_commits": [commit, resumed_by]} if resumed_by else {}
    return SimpleNamespace(flags=flags, provenance={"commit": commit, "machine": machine},
                           test_metrics={"NDCG@10": ndcg}, history=list(history),
                           config=SimpleNamespace(train=SimpleNamespace(precision=precision)))


def test_dropout_masks_follow_the_commits_that_trained_a_run():
    kw = dict(bernoulli_commits={BEFORE})
    assert dropout_masks(run(BEFORE), **kw) == "Bernoulli"
    assert dropout_masks(run(BEFORE + "+dirty"), **kw) == "Bernoulli"
    assert dropout_masks(run(AFTER), **kw) == "uniform"
    assert dropout_masks(run(BEFORE, resumed_by=AFTER), **kw) == "mixed"


def test_other_draws_found_names_the_rows_that_drew_otherwise_than_the_reference():
    kw = dict(bernoulli_commits={BEFORE})
    xeon = "Intel(R) Xeon(R) Processor x2 (torch threads 1)"
    assert cpu_type(run(AFTER, machine=xeon)) == "Intel(R) Xeon(R) Processor"
    rows = {"default": run(BEFORE), "switch a": run(AFTER), "switch b": run(BEFORE),
            "switch c": run(AFTER, machine=xeon), "switch d": run(BEFORE, machine=xeon), "later": None}
    (line,) = other_draws_found(rows, "default", "fidelity table", **kw)
    assert line.startswith("fidelity table: the reference row \"default\" was trained with Bernoulli dropout masks "
                           "on AMD EPYC; 3 of the other 4 rows drew otherwise (uniform masks: \"switch a\"; "
                           "uniform masks on Intel(R) Xeon(R) Processor: \"switch c\"; "
                           "on Intel(R) Xeon(R) Processor: \"switch d\"), so")
    assert "seeds" not in line and "switch b" not in line
    spread = [run(BEFORE, 0.0382), run(AFTER, 0.0383), run(AFTER, 0.0373), None]
    (line,) = other_draws_found(rows, "default", "fidelity table", seed_spread=spread, **kw)
    mean = (0.0382 + 0.0383 + 0.0373) / 3
    assert line.endswith(f"over 3 seeds spans {100 * 0.0010 / mean:.1f}% of test NDCG@10 (0.0373 to 0.0383)")
    # a row resumed onto another CPU type names both, read epoch by epoch from its stamped history
    resumed = run(BEFORE, machine=xeon, history=[{"machine": "AMD EPYC x2 (torch threads 1)"}, {"machine": xeon}])
    (line,) = other_draws_found({"default": run(BEFORE), "resumed": resumed}, "default", "t", **kw)
    assert "; the other row drew otherwise (on AMD EPYC and Intel(R) Xeon(R) Processor: \"resumed\"), so its difference " \
           "from the reference also holds other dropout draws" in line
    # a row trained in fp32 beside a bf16 reference (the fallback on a CPU without bf16 units)
    (line,) = other_draws_found({"default": run(AFTER), "same": run(AFTER), "fallback": run(AFTER, precision="fp32"),
                                 "both": run(AFTER, machine=xeon, precision="fp32")}, "default", "t", **kw)
    assert line.startswith("t: the reference row \"default\" was trained with uniform dropout masks on AMD EPYC in "
                           "bf16; 2 of the other 3 rows drew otherwise (in fp32: \"fallback\"; "
                           "on Intel(R) Xeon(R) Processor in fp32: \"both\"), so")
    # rows that drew otherwise in the same way are named together
    (line,) = other_draws_found({"default": run(AFTER), "x": run(AFTER, precision="fp32"), "y": run(AFTER),
                                 "z": run(AFTER, precision="fp32")}, "default", "t", **kw)
    assert '2 of the other 3 rows drew otherwise (in fp32: "x", "z"), so their differences' in line
    # one row of several drew otherwise: its difference, singular
    (line,) = other_draws_found({"default": run(AFTER), "x": run(AFTER, precision="fp32"), "y": run(AFTER)},
                                "default", "t", **kw)
    assert '1 of the other 2 rows drew otherwise (in fp32: "x"), so its difference from the reference also holds' in line
    # every row drew as the reference did, or the reference is missing: no line
    assert other_draws_found({"default": run(AFTER), "a": run(AFTER)}, "default", "t", **kw) == []
    assert other_draws_found({"default": None, "a": run(AFTER)}, "default", "t", **kw) == []


def _has_change(change, commit):
    """Whether ``commit`` descends from ``change``; skips where this checkout
    lacks the history (a shallow clone or a copy without .git)."""
    done = subprocess.run(["git", "merge-base", "--is-ancestor", change, commit], cwd=REPO_ROOT,
                          capture_output=True)
    if done.returncode not in (0, 1):
        pytest.skip(f"no git history for {commit[:12]} here (a shallow clone or a copy without .git)")
    return done.returncode == 0


def _stored_records():
    from emkd_lib.store import served_records

    records, _ = served_records(REPO_ROOT / "results")
    records = [record for record in records.values() if "provenance" in record]
    assert records, "no stored result to check"
    return records


def _commits(record):
    return run_commits(SimpleNamespace(flags=record.get("flags", {}), provenance=record["provenance"]))


def test_the_listed_commits_are_the_stored_runs_commits_without_the_change_in_their_history():
    """Where this checkout has the history: every commit that trained a
    stored run is listed exactly when the uniform-mask commit is not among
    its ancestors."""
    commits = {c for record in _stored_records() for c in _commits(record)}
    assert {c for c in commits if not _has_change(UNIFORM_DROPOUT_MASKS, c)} == BERNOULLI_MASK_COMMITS & commits
    assert BERNOULLI_MASK_COMMITS <= commits    # no commit listed that trained nothing


def test_no_stored_emkd_run_straddles_the_hand_written_item_cross_entropy_and_those_after_it_are_fp32():
    """The module's promise about the hand-written item cross entropy: no
    stored EMKD run was trained across it; those after it are fp32, so
    ``other_draws_found`` names them beside the bf16 runs by their
    precision; the only fp32 runs from before it are chapter 10's
    precision check (the reference's twin of the fidelity table)."""
    from emkd_lib.runs import key_of
    from emkd_lib.studies.baselines import precision_grid
    precision_check = {key_of(c) for c in precision_grid("cpu").values()}
    from emkd_lib.store import is_ensemble, result_from_record, served_records
    records, _ = served_records(REPO_ROOT / "results")
    runs = [result_from_record(path, record) for path, record in records.items() if not is_ensemble(record)]
    checked = 0
    for run in (r for r in runs if r.config.method == "emkd"):
        after = {_has_change(HAND_WRITTEN_ITEM_CE, c) for c in run_commits(run)}
        assert len(after) == 1, f"{run.key} was trained across {HAND_WRITTEN_ITEM_CE[:7]}"
        fp32 = run.config.train.precision == "fp32"
        if after == {True}:
            assert fp32, run.key
        elif fp32:
            assert run.key in precision_check, run.key
        checked += 1
    assert checked, "no stored EMKD run to check"
