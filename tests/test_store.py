"""The result store never serves a record whose ranks sidecar is missing or
altered, and refuses results of uncommitted code unless asked."""
from pathlib import Path

import numpy as np
import pytest

from emkd_lib import runs, settings as settings_module, store
from emkd_lib.profiles import profile_config

DATA_DIR = Path("/work/shared/data")


def make_result(path, commit="0123abc", config=None, key="k" * 16):
    config = config or profile_config("smoke", "beauty", "sasrec")
    ranks = np.arange(10)
    return store.RunResult(
        config=config, key=key, valid_metrics={"NDCG@10": 0.1}, test_metrics={"NDCG@10": 0.2},
        history=[{"epoch": 1, "loss": 1.0}], best_epoch=1, n_params=3, train_seconds=1.0, eval_seconds=0.5,
        peak_memory_mb=1.0, provenance={"commit": commit}, flags={"stopped_by": "epoch cap", "dirty": False},
        path=path, arrays={"test_ranks": ranks, "valid_ranks": ranks[::-1].copy()})


def test_a_stored_result_round_trips(tmp_path):
    result = make_result(tmp_path / "beauty" / "r.json")
    store.store_result(result)
    loaded = store.load_result(result.path)
    assert loaded.config == result.config and loaded.flags == result.flags and loaded.key == result.key
    np.testing.assert_array_equal(loaded.test_ranks, result.arrays["test_ranks"])
    np.testing.assert_array_equal(loaded.ranks()["valid_ranks"], result.arrays["valid_ranks"])
    record = store.read_record(result.path)
    assert record["sidecar_sha256"] == store.file_sha256(result.path.with_suffix(".npz"))
    assert record["core_version"] == store.CORE_VERSION


def test_a_record_whose_sidecar_is_missing_or_altered_is_not_served(tmp_path):
    missing, altered, good = (make_result(tmp_path / "beauty" / f"{n}.json") for n in ("missing", "altered", "good"))
    for r in (missing, altered, good):
        store.store_result(r)
    missing.path.with_suffix(".npz").unlink()
    store.write_record(tmp_path / "x" / "other.json", {"a": 1}, {"test_ranks": np.zeros(10, dtype=np.int64)})
    altered.path.with_suffix(".npz").write_bytes((tmp_path / "x" / "other.npz").read_bytes())
    with pytest.raises(store.StoreError, match="sidecar missing.npz is missing"):
        store.read_record(missing.path)
    with pytest.raises(store.StoreError, match="altered.npz does not match the recorded sha256"):
        store.read_record(altered.path)
    with pytest.raises(store.StoreError):
        store.load_result(altered.path)

    (tmp_path / "beauty" / "broken.json").write_text("{not json")
    (tmp_path / "beauty" / "old.json").write_text('{"config": {}}')  # no sidecar checksum
    served, problems = store.scan(tmp_path)
    assert served == [good.path]   # other.json has a sidecar but is not a run's record
    assert len(problems) == 5
    for name, why in (("altered", "does not match"), ("broken", "unreadable"), ("missing", "is missing"),
                      ("old", "no sidecar checksum"), ("other", "is incomplete: no 'config'")):
        assert sum(f"{name}.json" in p and why in p for p in problems) == 1, (name, problems)


@pytest.fixture
def env(tmp_path, monkeypatch):
    if not (DATA_DIR / "beauty").is_dir():
        pytest.skip(f"the Beauty dataset is not available offline at {DATA_DIR}")
    monkeypatch.setenv("EMKD_DATA_DIR", str(DATA_DIR))
    monkeypatch.setenv("EMKD_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("EMKD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("EMKD_ALLOW_DIRTY", raising=False)
    return tmp_path


def test_stored_refuses_results_of_uncommitted_code_unless_allowed(env, monkeypatch):
    config = profile_config("smoke", "beauty", "sasrec")
    assert runs.stored(config) is None
    path = runs.path_of(config)
    store.store_result(make_result(path, commit="0123abc+dirty", config=config, key=runs.key_of(config)))
    with pytest.raises(store.StoreError, match=r"trained from uncommitted code \(0123abc\+dirty\)"):
        runs.stored(config)
    assert runs.stored(config, allow_dirty=True).dirty
    monkeypatch.setenv("EMKD_ALLOW_DIRTY", "1")
    assert runs.stored(config).dirty
    with pytest.raises(store.StoreError):
        runs.stored(config, allow_dirty=False)
    store.store_result(make_result(path, commit="0123abc", config=config, key=runs.key_of(config)))
    assert not runs.stored(config, settings=settings_module.current({**dict(__import__("os").environ),
                                                                       "EMKD_ALLOW_DIRTY": "0"})).dirty


def test_stored_does_not_serve_an_altered_sidecar(env):
    config = profile_config("smoke", "beauty", "sasrec")
    path = runs.path_of(config)
    store.store_result(make_result(path, config=config, key=runs.key_of(config)))
    path.with_suffix(".npz").write_bytes(b"not an npz")
    with pytest.raises(store.StoreError, match="does not match the recorded sha256"):
        runs.stored(config)


def test_link_or_copy_shares_bytes_and_survives_the_source_being_replaced(tmp_path, monkeypatch):
    from emkd_lib import files
    source, kept = tmp_path / "run.pt", tmp_path / "cache" / "run.pt"
    files.atomic_write_bytes(source, b"best epoch")
    files.atomic_link_or_copy(source, kept)
    assert kept.read_bytes() == b"best epoch"
    assert kept.stat().st_ino == source.stat().st_ino   # one filesystem: a link, not a second write
    files.atomic_write_bytes(source, b"retrained")        # replaced by a rename, as the store writes
    assert kept.read_bytes() == b"best epoch"
    # Across filesystems os.link fails; the bytes are copied instead.
    def no_link(*args):
        raise OSError(18, "Invalid cross-device link")
    monkeypatch.setattr(files.os, "link", no_link)
    files.atomic_link_or_copy(source, kept)
    assert kept.read_bytes() == b"retrained" and kept.stat().st_ino != source.stat().st_ino
    assert sorted(p.name for p in kept.parent.iterdir()) == ["run.pt"]   # no temporary left behind


def test_a_copy_without_git_records_the_commit_it_was_told_marked_as_a_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "REPO_ROOT", tmp_path)   # no .git here: git rev-parse fails
    monkeypatch.delenv("EMKD_CODE_COMMIT", raising=False)
    assert store.code_commit.__wrapped__() == "unknown"
    monkeypatch.setenv("EMKD_CODE_COMMIT", "0123abc")
    commit = store.code_commit.__wrapped__()
    assert commit == "0123abc+copy"
    assert not commit.endswith("+dirty")


def test_provenance_names_the_cpu_features_that_pick_the_matmul_kernels():
    """One model name ("AMD EPYC") has been lent with and without AVX512-BF16:
    the features, not the name, say whether two runs took the same kernels."""
    avx2_only = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 fma bmi2\n"
    with_bf16 = avx2_only.replace("bmi2", "bmi2 avx512f avx512_bf16")
    assert store.cpu_features(avx2_only) == ["avx2", "fma"]
    assert store.cpu_features(with_bf16) == ["avx2", "fma", "avx512f", "avx512_bf16"]
    assert store.cpu_features("model name\t: no flags line\n") == []
    import torch
    record = store.provenance(torch.device("cpu"), "test", {}, 0)
    assert record["cpu_features"] == store.cpu_features()
