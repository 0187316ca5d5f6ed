"""Runs: training through the method specs, the store round trip, ensembles of
stored runs, the popularity floor, and process settings."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from emkd_lib import runs, store
from emkd_lib.config import DataConfig, RunConfig, TrainConfig
from emkd_lib.data import leave_one_out, load_dataset, subsample_users
from emkd_lib.evaluation import evaluate, metrics_from_ranks, popularity_ranks
from emkd_lib.files import atomic_write
from emkd_lib.methods import METHODS, build_method
from emkd_lib.models.encoders import CaserConfig, GRU4RecConfig, TransformerConfig
from emkd_lib.profiles import profile_config
from emkd_lib.train import fit

import helpers

DATA_DIR = Path("/work/shared/data")


successor_dataset = helpers.successor_dataset


ENCODER_CONFIGS = {"sasrec": TransformerConfig(hidden=32, n_blocks=1, n_heads=1, dropout=0.0),
                   "bert4rec": TransformerConfig(hidden=32, n_blocks=1, n_heads=1, dropout=0.0),
                   "gru4rec": GRU4RecConfig(hidden=32, dropout=0.0),
                   "caser": CaserConfig(hidden=32, window=3, dropout=0.0)}


@pytest.mark.parametrize("method", ["sasrec", "gru4rec", "bert4rec", "caser"])
def test_training_learns_a_deterministic_successor(method):
    dataset = successor_dataset()
    split = leave_one_out(dataset.sequences)
    params = METHODS[method].params_type(**({"mask_prob": 0.3} if method == "bert4rec" else {}))
    config = RunConfig(dataset="successor", method=method, profile="cpu", encoder_config=ENCODER_CONFIGS[method],
                       params=params, encoder=method, data=DataConfig(max_len=10))
    torch.manual_seed(0)
    model, recipe = build_method(config, dataset)
    train = TrainConfig(epochs=40 if method == "bert4rec" else 15, batch_size=32, lr=5e-3, patience=40)
    result = fit(model, recipe, split, train, seed=0, device="cpu", progress=False)
    assert result.test_metrics["HR@5"] > 0.9
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.stopped_by in ("patience", "epoch cap") and result.steps == result.history[-1]["steps"]


# ---- the store, on a tiny real run -------------------------------------------

@pytest.fixture
def env(tmp_path, monkeypatch):
    """Results and caches in tmp_path, data from the shared mirror (skip without it)."""
    if not (DATA_DIR / "beauty").is_dir():
        pytest.skip(f"the Beauty dataset is not available offline at {DATA_DIR}")
    monkeypatch.setenv("EMKD_DATA_DIR", str(DATA_DIR))
    monkeypatch.setenv("EMKD_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("EMKD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("EMKD_ALLOW_DIRTY", "1")  # the checkout under test may have uncommitted changes
    monkeypatch.delenv("EMKD_REQUIRE_CACHED", raising=False)
    return tmp_path


def tiny_config(seed=0):
    return profile_config("smoke", "beauty", "sasrec", seed=seed, data__max_users=40, train__epochs=1,
                          encoder_config__hidden=8)


def test_run_or_load_stores_then_loads_without_training(env, monkeypatch):
    config = tiny_config()
    first = runs.run_or_load(config, device="cpu", progress=False)
    path = runs.path_of(config)
    assert first.path == path and path.exists() and path.with_suffix(".npz").exists()
    assert path.parent == env / "results" / "beauty"
    record = json.loads(path.read_text())
    for key in ("commit", "machine", "torch", "date", "data_source"):
        assert record["provenance"][key]
    # the CPU time of the training, split into user and kernel mode
    cpu = record["provenance"]["process_seconds"]
    assert set(cpu) == {"user", "system"} and min(cpu.values()) >= 0 and sum(cpu.values()) > 0
    assert record["config"] == config.to_dict()
    assert record["key"] == first.key == runs.key_of(config)
    assert record["sidecar_sha256"] == store.file_sha256(path.with_suffix(".npz"))
    assert {"stopped_by", "below_popularity", "popularity_valid_ndcg10", "dirty"} <= set(record["flags"])
    assert not (env / "cache" / "checkpoints" / f"{first.key}.pt").exists()  # removed after the run

    monkeypatch.setattr(runs, "fit", lambda *a, **k: pytest.fail("must not retrain"))
    second = runs.run_or_load(config, device="cpu", progress=False)
    assert second.test_metrics == first.test_metrics and second.history == first.history
    np.testing.assert_array_equal(second.test_ranks, first.test_ranks)
    np.testing.assert_array_equal(second.ranks()["valid_ranks"], first.ranks()["valid_ranks"])
    assert len(second.test_ranks) == 40


def test_require_cached_raises_instead_of_training(env, monkeypatch):
    monkeypatch.setenv("EMKD_REQUIRE_CACHED", "1")
    with pytest.raises(FileNotFoundError, match="EMKD_REQUIRE_CACHED=1; run it with: python -m emkd_lib run"):
        runs.run_or_load(tiny_config(), progress=False)
    assert not any((env / "results").rglob("*.json"))


def test_a_failed_write_leaves_no_partial_file_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")

    def crash(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_corrupt_result_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{not json")
    with pytest.raises(store.StoreError, match="unreadable"):
        store.load_result(bad)


def test_ensemble_of_stored_runs_averages_their_logits(env, monkeypatch):
    members = [tiny_config(seed=s) for s in (0, 1)]
    for config in members:
        runs.run_or_load(config, device="cpu", progress=False)
    assert runs.stored_ensemble(members) is None
    # The weights are also kept in the cache, which outlives a work tree laid
    # anew: a member whose weights are gone from beside its record still counts.
    beside = runs.path_of(members[0]).with_suffix(".pt")
    kept = env / "cache" / "weights" / "beauty" / beside.name
    assert kept.read_bytes() == beside.read_bytes()
    beside.unlink()
    result = runs.ensemble_run_or_load(members, device="cpu")

    dataset = load_dataset("beauty")
    split = leave_one_out(subsample_users(dataset, 40, seed=0).sequences)
    models = []
    for config in members:
        model, recipe = build_method(config, dataset)
        model.load_state_dict(torch.load(runs.stored_weights(runs.path_of(config), runs.settings_module.current())))
        models.append(model.eval())
    mean_logits = lambda ids: sum(recipe.score(m, ids) for m in models) / 2
    ranks = evaluate(mean_logits, split.test_inputs, split.test_targets, max_len=recipe.eval_max_len)
    np.testing.assert_array_equal(result.test_ranks, ranks)
    assert result.test_metrics == metrics_from_ranks(ranks)
    # stored: loads without evaluating again
    monkeypatch.setattr(runs, "build_method", lambda *a: pytest.fail("must not rebuild"))
    again = runs.ensemble_run_or_load(members)
    assert again.test_metrics == result.test_metrics
    np.testing.assert_array_equal(again.test_ranks, ranks)
    assert runs.stored_ensemble(members).test_metrics == result.test_metrics
    result.path.write_text('{"members": []}')
    with pytest.raises(store.StoreError, match="is incomplete"):
        runs.stored_ensemble(members)


def test_ensemble_member_without_weights_is_a_clear_error(env):
    members = [tiny_config(seed=s) for s in (0, 1)]
    first = runs.run_or_load(members[0], device="cpu", progress=False)
    with pytest.raises(FileNotFoundError, match="member .* has not been trained; train it with: .*--seed 1 "):
        runs.ensemble_run_or_load(members, device="cpu")
    runs.run_or_load(members[1], device="cpu", progress=False)
    from emkd_lib import settings as settings_module
    for weights in runs.weights_paths(first.path, settings_module.current()):
        weights.unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError, match="has no stored weights.*--seed 0 .*--force$"):
        runs.ensemble_run_or_load(members, device="cpu")
    with pytest.raises(ValueError, match=r"must differ \(seeds \[1, 1\] repeat a model\)"):
        runs.ensemble_run_or_load([members[1], members[1]])
    with pytest.raises(ValueError, match="at least 2 members"):
        runs.ensemble_run_or_load(members[:1])
    with pytest.raises(ValueError, match="must share dataset, method"):
        runs.ensemble_run_or_load([members[0], profile_config("smoke", "beauty", "gru4rec", seed=1)])


def test_popularity_floor_uses_the_runs_users_and_split(env):
    config = tiny_config()
    dataset = subsample_users(load_dataset("beauty"), config.data.max_users, seed=0)
    split = leave_one_out(dataset.sequences)
    expected = popularity_ranks(split.train, split.test_inputs, split.test_targets, dataset.n_items)
    ranks = runs.popularity_test_ranks(config)
    assert len(ranks) == config.data.max_users
    np.testing.assert_array_equal(ranks, expected)


# ---- process settings ------------------------------------------------------------

@pytest.mark.skipif(not hasattr(__import__("ctypes").CDLL(None), "gnu_get_libc_version"), reason="glibc only")
def test_freed_tensor_memory_is_reused_without_new_page_faults():
    # In a fresh process, as the CLI sets it: mallopt lasts as long as the
    # process, and this test's must not change how every later test allocates.
    code = """
import resource, torch
from emkd_lib.process import keep_freed_cpu_memory

def faults_of_a_fresh_256mb_tensor():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(64 * 2**20)  # written, so every page is touched, then freed
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

assert keep_freed_cpu_memory()
for _ in range(12):  # the heap grows to hold it; in a fresh process it settles after some ten
    faults_of_a_fresh_256mb_tensor()
print(sum(faults_of_a_fresh_256mb_tensor() for _ in range(8)))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    # 256 MB is 65,536 pages of 4 KiB: served by a new mmap, each of the eight
    # would fault them all again. From the heap most are reused; a few may not
    # be, when small objects were carved out of the freed block in between and
    # the heap must grow once more.
    assert int(done.stdout) < 3 * 65_536


def test_keeping_freed_memory_can_be_switched_off(monkeypatch):
    from emkd_lib import process, settings
    assert settings.current({"EMKD_KEEP_FREED_MEMORY": "0"}).keep_freed_memory is False
    assert settings.current({}).keep_freed_memory is True
    monkeypatch.setattr(process, "keep_freed_cpu_memory", lambda: pytest.fail("must not touch malloc"))
    process.configure_process(None, keep_freed_memory=False)


def test_cpu_profile_waits_for_min_steps_before_patience_counts():
    """On ML-1M, BERT4Rec, GRU4Rec and Caser sit near popularity level for
    their first epochs, a handful of steps each; patience only counts after
    1,500 optimizer steps, on every dataset and for every method."""
    for dataset in ("ml-1m", "beauty"):
        for method in ("bert4rec", "gru4rec", "caser", "sasrec", "emkd"):
            c = profile_config("cpu", dataset, method)
            assert (c.train.min_steps, c.train.patience) == (1500, 5)
            assert c.train.patience < c.train.epochs
    assert profile_config("smoke", "beauty", "sasrec").train.min_steps == 0


def test_analysis_arrays_are_recomputed_bitwise_from_the_saved_weights(env):
    config = tiny_config()
    first = runs.run_or_load(config, device="cpu", progress=False)
    original = {k: v for k, v in first.ranks().items() if k.startswith("analysis_")}
    assert {"analysis_users", "analysis_embeddings", "analysis_target_embeddings"} <= set(original)
    # a run stored before its method kept analysis arrays
    first.arrays = {k: v for k, v in first.ranks().items() if not k.startswith("analysis_")}
    store.store_result(first)
    added = runs.add_analysis(config)
    for name, array in original.items():
        assert np.array_equal(added.ranks()[name], array), name
    reloaded = runs.stored(config)
    assert set(reloaded.ranks()) == set(original) | {"test_ranks", "valid_ranks"}
    assert reloaded.flags["analysis_added"]["weights_sha256"] == store.file_sha256(first.path.with_suffix(".pt"))
    np.testing.assert_array_equal(reloaded.test_ranks, first.test_ranks)
    # without the weights: a clear error, and the stored result is untouched
    first.arrays = {k: v for k, v in reloaded.ranks().items() if not k.startswith("analysis_")}
    store.store_result(first)
    first.path.with_suffix(".pt").unlink()
    added = runs.add_analysis(config)   # from the copy in the weights cache
    for name, array in original.items():
        assert np.array_equal(added.ranks()[name], array), name
    first.arrays = {k: v for k, v in reloaded.ranks().items() if not k.startswith("analysis_")}
    store.store_result(first)
    (env / "cache" / "weights" / "beauty" / first.path.with_suffix(".pt").name).unlink()
    with pytest.raises(FileNotFoundError, match="not committed"):
        runs.add_analysis(config)
    assert runs.stored(config).test_metrics == first.test_metrics


# ---- one process per run: the run lock ----------------------------------------

def test_a_run_another_process_trains_is_refused_and_skipped_by_a_grid(env, monkeypatch):
    from emkd_lib import settings as settings_module
    from emkd_lib.files import exclusive_lock

    config = tiny_config()
    lock = runs.run_lock_path(runs.key_of(config), settings_module.current())
    real_fit = runs.fit
    monkeypatch.setattr(runs, "fit", lambda *a, **k: pytest.fail("must not train a run that is locked"))
    with exclusive_lock(lock):
        with pytest.raises(runs.RunInProgress, match=r"beauty/sasrec-smoke-seed0 is being trained by another"):
            runs.run_or_load(config, device="cpu", progress=False)
        assert runs.run_grid([config], device="cpu", progress=False) == {"beauty/sasrec-smoke-seed0": None}
    # a process that holds the lock and dies leaves no stale lock behind
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from emkd_lib.files import "
                               "exclusive_lock; cm = exclusive_lock(sys.argv[1]); cm.__enter__(); "
                               "print('held', flush=True); time.sleep(60)", str(lock)],
                              stdout=subprocess.PIPE, text=True)
    try:  # a failed assert must not leave the child holding the lock for a minute
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(runs.RunInProgress):
            runs.run_or_load(config, device="cpu", progress=False)
    finally:
        holder.kill()
        holder.wait()
    monkeypatch.setattr(runs, "fit", real_fit)
    assert runs.run_or_load(config, device="cpu", progress=False).path.exists()


def test_a_run_resumed_by_committed_code_after_epochs_of_uncommitted_code_is_flagged_dirty(env, monkeypatch):
    from emkd_lib import store as store_module
    config = tiny_config().replace(train__epochs=2, train__patience=10)
    for module in (runs, store_module):
        monkeypatch.setattr(module, "code_commit", lambda: "0123abc+dirty")
    with pytest.raises(InterruptedError):
        runs.execute(config, device="cpu", progress=False, stop_after_epoch=1)
    for module in (runs, store_module):
        monkeypatch.setattr(module, "code_commit", lambda: "0123abc")
    result = runs.execute(config, device="cpu", progress=False)
    assert result.provenance["commit"] == "0123abc" and result.flags["resumed_from_epoch"] == 2
    assert result.flags["trained_by_commits"] == ["0123abc+dirty", "0123abc"]
    assert result.flags["dirty"], "its first epoch cannot be replayed from a commit"


def test_a_waiting_lock_is_taken_once_its_holder_releases_it(tmp_path):
    from emkd_lib.files import LockHeld, exclusive_lock

    lock = tmp_path / "slot.lock"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from emkd_lib.files import "
                               "exclusive_lock; cm = exclusive_lock(sys.argv[1]); cm.__enter__(); "
                               "print('held', flush=True); sys.stdin.readline()", str(lock)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld):
            with exclusive_lock(lock):
                pass
        holder.stdin.write("release\n")
        holder.stdin.flush()
        with exclusive_lock(lock, wait=True):   # blocks until the holder has exited
            assert holder.wait(timeout=60) == 0
    finally:
        holder.kill()
        holder.wait()


def test_a_capped_run_that_a_higher_cap_would_continue_counts_as_checkpointed(env):
    """``grid --plan``, ``--checkpointed-only`` and the budget see the run a
    capped run's slot would continue, as they see a run's own checkpoint."""
    config = tiny_config().replace(train__epochs=2, train__patience=10)
    assert runs.run_or_load(config, device="cpu", progress=False).flags["stopped_by"] == "epoch cap"
    statuses = [row["status"] for row in runs.grid_progress(
        [config.replace(train__epochs=e) for e in (1, 2, 4)])]
    assert statuses == ["not started", "stored", "checkpointed"]
    (row,) = runs.grid_progress([config.replace(train__epochs=4)])
    assert row["progress"]["epoch"] == 2


def test_the_grid_command_reports_a_skipped_run_and_exits_1(env, monkeypatch, capsys):
    from emkd_lib import __main__ as cli

    def busy(config, **kwargs):
        raise runs.RunInProgress(f"{config.dataset}/{config.label()} is being trained by another process")

    monkeypatch.setattr(runs, "run_or_load", busy)
    assert cli.main(["grid", "baselines", "--profile", "smoke", "--datasets", "beauty", "--methods", "sasrec"]) == 1
    err = capsys.readouterr().err
    assert "skipped: beauty/sasrec-smoke-seed0 is being trained by another process" in err
    assert "beauty/sasrec-smoke-seed0 failed: being trained by another process (skipped)" in err


# ---- precision --------------------------------------------------------------------

def test_committed_results_keep_their_keys():
    """Options added to the configs (``config.ADDED_OPTIONS``) leave every
    stored run's key as it was: each committed record's key is recomputed from
    its config and data checksums."""
    records = [json.loads(p.read_text()) for p in (Path(__file__).parent.parent / "results").glob("*/*.json")
               if not p.name.startswith("ensemble")]
    if not records:
        pytest.skip("no committed results in this checkout")
    for record in records:
        config = RunConfig.from_dict(record["config"])
        assert store.run_key(config, record["provenance"]["data_sha256"]) == record["key"], record["key"]


def test_bf16_precision_gets_its_own_key_and_trains(env):
    fp32 = tiny_config()
    bf16 = fp32.replace(train__precision="bf16")
    assert "precision" not in fp32.identity()["train"] and bf16.identity()["train"]["precision"] == "bf16"
    assert runs.key_of(bf16) != runs.key_of(fp32)
    a = runs.run_or_load(fp32, device="cpu", progress=False)
    b = runs.run_or_load(bf16, device="cpu", progress=False)
    assert b.path != a.path and b.config.train.precision == "bf16"
    assert b.history[0]["loss"] != a.history[0]["loss"]
    assert abs(b.history[0]["loss"] - a.history[0]["loss"]) < 0.05 * a.history[0]["loss"]
    with pytest.raises(ValueError, match="precision"):
        fp32.replace(train__precision="fp16")


def test_shuffled_batches_get_their_own_key_and_train(env):
    default = tiny_config()
    shuffled = default.replace(train__batch_order="shuffled")
    assert "batch_order" not in default.identity()["train"] and runs.key_of(shuffled) != runs.key_of(default)
    a = runs.run_or_load(default, device="cpu", progress=False)
    b = runs.run_or_load(shuffled, device="cpu", progress=False)
    assert b.path != a.path and b.config.train.batch_order == "shuffled"
    assert b.history[0]["loss"] != a.history[0]["loss"]   # the same examples, other batches
    with pytest.raises(ValueError, match="batch_order"):
        default.replace(train__batch_order="sorted")


def test_trained_by_commits_lists_each_commit_that_trained_an_epoch_in_first_use_order():
    history = [{"epoch": 1}, {"epoch": 2, "commit": "a"}, {"epoch": 3, "commit": "b"}, {"epoch": 4, "commit": "a"}]
    assert runs.trained_by_commits(history) == ["unrecorded", "a", "b"]
    assert runs.trained_by_commits(history[1:2]) == ["a"]
