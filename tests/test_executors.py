"""Grids on Ray (``executors``): a grid trained by Ray tasks fills the store
with the bits the local executor gives, a rerun trains only what is missing,
and a failed run is reported while the others complete. One Ray of two CPUs
on this machine serves the module; the command-line tests join it."""
import dataclasses
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from emkd_lib import __main__ as cli  # noqa: E402
from emkd_lib import runs, store  # noqa: E402
from emkd_lib import settings as settings_module  # noqa: E402
from emkd_lib.data import register_dataset  # noqa: E402
from emkd_lib.executors import run_grid_ray  # noqa: E402
from emkd_lib.profiles import profile_config  # noqa: E402
from helpers import offline_data_root  # noqa: E402

DATA_DIR = offline_data_root()
TIMING = {"train_seconds", "eval_seconds", "wall_seconds"}

pytestmark = pytest.mark.skipif(DATA_DIR is None,
                                reason="the Beauty dataset is not available offline ($EMKD_DATA_DIR or the default places)")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Caches in tmp_path, and a data directory there that holds Beauty (a
    link to the shared mirror) and a registered dataset with a user too
    short to split: the Ray tasks can only find it through the EMKD_DATA_DIR
    the driver forwards to them."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "beauty").symlink_to(DATA_DIR / "beauty")
    short = tmp_path / "short.txt"
    short.write_text("1 1 2 3 4 5\n2 2 3 4 5 6\n3 4 5\n")
    register_dataset("short", short, None, data)
    monkeypatch.setenv("EMKD_DATA_DIR", str(data))
    monkeypatch.setenv("EMKD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("EMKD_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("EMKD_ALLOW_DIRTY", "1")  # the checkout under test may have uncommitted changes
    monkeypatch.setenv("EMKD_KEEP_FREED_MEMORY", "0")  # leave this test process's malloc alone
    monkeypatch.delenv("EMKD_REQUIRE_CACHED", raising=False)
    return tmp_path


def tiny(seed=0, dataset="beauty"):
    return profile_config("smoke", dataset, "sasrec", seed=seed, data__max_users=40, train__epochs=1,
                          encoder_config__hidden=8)


def store_at(root: Path):
    return dataclasses.replace(settings_module.current(), results_dir=root)


def records(root: Path) -> dict:
    """name -> (record without timings and provenance, ranks) of every run in a store."""
    good, problems = store.scan(root)
    assert not problems
    out = {}
    for path in good:
        record = store.read_record(path)
        record["history"] = [{k: v for k, v in h.items() if k not in TIMING} for h in record["history"]]
        for k in ("train_seconds", "eval_seconds", "peak_memory_mb", "provenance", "sidecar_sha256"):
            record.pop(k)
        out[path.relative_to(root).as_posix()] = (record, store.read_sidecar(path))
    return out


def assert_same_stores(a: Path, b: Path, n: int):
    ra, rb = records(a), records(b)
    assert sorted(ra) == sorted(rb) and len(ra) == n
    for name in ra:
        (record_a, ranks_a), (record_b, ranks_b) = ra[name], rb[name]
        assert record_a == record_b, name  # metrics, history, flags, key, config
        assert sorted(ranks_a) == sorted(ranks_b) and {"test_ranks", "valid_ranks"} <= set(ranks_a)
        for array in ranks_a:   # ranks, and the analysis arrays of emkd_lib.analysis
            assert np.array_equal(ranks_a[array], ranks_b[array]), (name, array)


def test_a_ray_grid_stores_the_bits_of_a_local_one(cluster, env, capsys):
    argv = ["--threads", "1", "grid", "baselines", "--profile", "smoke", "--datasets", "beauty",
            "--methods", "sasrec", "gru4rec", "--max-users", "40", "--device", "cpu"]
    assert cli.main([*argv, "--executor", "ray"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(": test NDCG@10 " in line for line in lines)
    ray_store = env / "results"
    assert not list(ray_store.rglob("*.pt")), "weights stay with the workers"
    provenance = [store.read_record(p)["provenance"] for p in store.scan(ray_store)[0]]
    assert all(p["device"] == "cpu" and p["machine"].endswith("(torch threads 1)") for p in provenance)

    local_store = env / "local"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMKD_RESULTS_DIR", str(local_store))
        assert cli.main(argv) == 0
    assert_same_stores(ray_store, local_store, n=2)


def test_rerunning_a_grid_trains_only_what_is_missing(cluster, env):
    settings = store_at(env / "results")
    first = run_grid_ray([tiny(0)], device="cpu", progress=False, settings=settings)
    assert first.trained == ["beauty/sasrec-smoke-seed0"] and not first.failures
    path = runs.path_of(tiny(0), settings)
    stamp = path.stat().st_mtime_ns

    second = run_grid_ray([tiny(0), tiny(1)], device="cpu", progress=False, settings=settings)
    assert second.trained == ["beauty/sasrec-smoke-seed1"] and not second.failures
    assert sorted(second.results) == ["beauty/sasrec-smoke-seed0", "beauty/sasrec-smoke-seed1"]
    assert path.stat().st_mtime_ns == stamp

    third = run_grid_ray([tiny(0), tiny(1)], device="cpu", progress=False, settings=settings)
    assert third.trained == [] and not third.failures
    for label, result in third.results.items():
        assert result.test_metrics == second.results[label].test_metrics
        np.testing.assert_array_equal(result.test_ranks, second.results[label].test_ranks)


def test_a_failed_run_is_reported_and_the_others_complete(cluster, env):
    settings = store_at(env / "results")
    grid = {"good": tiny(0), "short": tiny(0, "short"), "unknown": tiny(0, "nope")}
    outcome = run_grid_ray(grid, device="cpu", progress=False, settings=settings)
    assert outcome.trained == ["good"] and sorted(outcome.results) == ["good"]
    assert runs.stored(tiny(0), settings).test_metrics == outcome.results["good"].test_metrics
    failures = {f.run: f.error for f in outcome.failures}
    assert sorted(failures) == ["nope/sasrec-smoke-seed0", "short/sasrec-smoke-seed0"]
    # raised in the task, on a worker that found the dataset through the forwarded EMKD_DATA_DIR
    assert failures["short/sasrec-smoke-seed0"].startswith("ValueError: ")
    assert "user 3 has 2 item(s), fewer than min_length=3" in failures["short/sasrec-smoke-seed0"]
    # raised on the driver, when it looked the run up
    assert failures["nope/sasrec-smoke-seed0"].startswith("KeyError: unknown dataset 'nope'")
    assert all("\n" not in error for error in failures.values())


def test_the_command_exits_1_and_names_each_failed_run(cluster, env, capsys):
    argv = ["grid", "baselines", "--profile", "smoke", "--datasets", "nope", "toys-not-here", "--methods", "sasrec",
            "--executor", "ray"]
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    errors = [line for line in captured.err.splitlines() if line.startswith("emkd_lib: ")]  # not the bar
    assert len(errors) == 2, captured.err
    for dataset, line in zip(("nope", "toys-not-here"), errors):
        assert line.startswith(f"emkd_lib: error: {dataset}/sasrec-smoke-seed0 failed: "
                               f"KeyError: unknown dataset '{dataset}'")
