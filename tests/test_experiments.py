import dataclasses
import json

import numpy as np
import pytest
import torch

from emkd_lib import experiments
from emkd_lib.data import leave_one_out, resolve_dataset_dir
from emkd_lib.encoders import build_encoder
from emkd_lib.experiments import RunConfig, load_result, profile_config, run_or_load
from emkd_lib.methods import baseline_recipe
from emkd_lib.train import TrainSettings, fit


def successor_sequences(n_users=120, n_items=20, length=8, seed=0):
    """Histories that walk a fixed cycle of items: the next item is a function
    of the current one, so a working model must learn to rank it first."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n_items, n_users)
    return [((s + np.arange(length)) % n_items + 1).astype(np.int64) for s in starts], n_items


@pytest.mark.parametrize("method", ["sasrec", "gru4rec", "bert4rec", "caser"])
def test_training_learns_a_deterministic_successor(method):
    seqs, n_items = successor_sequences()
    split = leave_one_out(seqs)
    torch.manual_seed(0)
    model = build_encoder(method, n_items, 10, hidden=32, n_blocks=1, n_heads=1, dropout=0.0, window=3)
    recipe = baseline_recipe(method, 10, None, 0.3)
    settings = TrainSettings(epochs=40 if method == "bert4rec" else 15, batch_size=32, lr=5e-3,
                             patience=40, seed=0)
    result = fit(model, recipe, split, settings, progress=False)
    assert result.test_metrics["HR@1" if False else "HR@5"] > 0.9
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_fit_is_deterministic_under_a_seed():
    seqs, n_items = successor_sequences(n_users=60)
    split = leave_one_out(seqs)
    outcomes = []
    for _ in range(2):
        torch.manual_seed(123)  # different global state must not matter: fit seeds everything
        model = build_encoder("bert4rec", n_items, 10, hidden=16, n_blocks=1, dropout=0.1)
        recipe = baseline_recipe("bert4rec", 10, 1, 0.3)
        result = fit(model, recipe, split, TrainSettings(epochs=3, batch_size=16, lr=1e-3, seed=7),
                     progress=False)
        outcomes.append(([h["loss"] for h in result.history], result.test_ranks))
    assert outcomes[0][0] == outcomes[1][0]
    np.testing.assert_array_equal(outcomes[0][1], outcomes[1][1])


def test_config_key_is_stable_and_sensitive():
    a = profile_config("cpu", "beauty", "sasrec")
    assert a.key() == profile_config("cpu", "beauty", "sasrec").key()
    assert a.key() != profile_config("cpu", "beauty", "sasrec", seed=1).key()
    assert a.key() != profile_config("cpu", "beauty", "sasrec", lr=2e-3).key()
    assert RunConfig.from_dict(json.loads(json.dumps(a.to_dict()))) == a


@pytest.mark.parametrize("field,value,message", [
    ("hidden", 64.0, "hidden must be an int"),
    ("hidden", 0, "hidden must be positive"),
    ("dropout", 1.5, r"dropout must be in \[0, 1\)"),
    ("lr", -1.0, "lr must be positive"),
    ("method", "transformer", "unknown method 'transformer'"),
    ("profile", "gpu", "unknown profile 'gpu'"),
    ("window_step", 0, "window_step must be None or a positive int"),
    ("seed", True, "seed must be an int"),
])
def test_bad_config_values_are_clear_errors(field, value, message):
    kwargs = dict(dataset="beauty", method="sasrec", profile="cpu")
    kwargs[field] = value
    with pytest.raises(ValueError, match=message):
        RunConfig(**kwargs)


def tiny_config():
    try:
        resolve_dataset_dir("beauty", download=False)
    except FileNotFoundError:
        pytest.skip("the Beauty dataset is not available offline here")
    return profile_config("smoke", "beauty", "sasrec", max_users=40, epochs=1, hidden=8)


def test_run_or_load_stores_then_loads_without_training(tmp_path, monkeypatch):
    monkeypatch.setenv("EMKD_RESULTS_DIR", str(tmp_path))
    config = tiny_config()
    first = run_or_load(config, device="cpu", progress=False)
    path = experiments.result_path(config)
    assert path.exists() and path.with_suffix(".npz").exists()
    record = json.loads(path.read_text())
    for key in ("commit", "machine", "torch", "date", "data_source"):
        assert record["provenance"][key]
    assert record["config"] == config.to_dict()

    monkeypatch.setattr(experiments, "fit", lambda *a, **k: pytest.fail("must not retrain"))
    second = run_or_load(config, device="cpu", progress=False)
    assert second.test_metrics == first.test_metrics
    np.testing.assert_array_equal(second.test_ranks, first.test_ranks)
    assert len(second.test_ranks) == 40


def test_require_cached_raises_instead_of_training(tmp_path, monkeypatch):
    monkeypatch.setenv("EMKD_RESULTS_DIR", str(tmp_path))
    monkeypatch.setenv("EMKD_REQUIRE_CACHED", "1")
    with pytest.raises(FileNotFoundError, match="EMKD_REQUIRE_CACHED=1"):
        run_or_load(tiny_config(), progress=False)
    assert not any(tmp_path.rglob("*.json"))


def test_a_failed_write_leaves_no_partial_file_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")

    def crash(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        experiments._atomic_write(target, crash)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_corrupt_result_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="unreadable or incomplete"):
        load_result(bad)


def test_ensemble_of_stored_runs_averages_their_logits(tmp_path, monkeypatch):
    from emkd_lib.data import load_dataset, subsample_users
    from emkd_lib.evaluation import evaluate, metrics_from_ranks
    from emkd_lib.methods import build_method
    monkeypatch.setenv("EMKD_RESULTS_DIR", str(tmp_path))
    members = [dataclasses.replace(tiny_config(), seed=s) for s in (0, 1)]
    for config in members:
        run_or_load(config, device="cpu", progress=False)
    assert experiments.stored_ensemble(members) is None
    result = experiments.ensemble_run_or_load(members, device="cpu")

    split = leave_one_out(subsample_users(load_dataset("beauty"), 40, seed=0).sequences)
    models = []
    for config in members:
        model, recipe = build_method(config, load_dataset("beauty"))
        model.load_state_dict(torch.load(experiments.result_path(config).with_suffix(".pt")))
        models.append(model.eval())
    mean_logits = lambda ids: sum(recipe.score(m, ids) for m in models) / 2
    ranks = evaluate(mean_logits, split.test_inputs, split.test_targets, max_len=recipe.eval_max_len)
    np.testing.assert_array_equal(result.test_ranks, ranks)
    assert result.test_metrics == metrics_from_ranks(ranks)
    # stored: loads without evaluating again
    monkeypatch.setattr(experiments, "build_method", lambda *a: pytest.fail("must not rebuild"))
    again = experiments.ensemble_run_or_load(members)
    assert again.test_metrics == result.test_metrics
    assert experiments.stored_ensemble(members).test_metrics == result.test_metrics
    experiments.ensemble_path(members).write_text('{"members": []}')
    with pytest.raises(ValueError, match="ensemble file .* unreadable or incomplete"):
        experiments.stored_ensemble(members)


def test_ensemble_member_without_weights_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("EMKD_RESULTS_DIR", str(tmp_path))
    members = [dataclasses.replace(tiny_config(), seed=s) for s in (0, 1)]
    run_or_load(members[0], device="cpu", progress=False)
    with pytest.raises(FileNotFoundError, match="has no stored weights.*--seed 1"):
        experiments.ensemble_run_or_load(members, device="cpu")
    with pytest.raises(ValueError, match="at least 2 members"):
        experiments.ensemble_run_or_load(members[:1])


def test_cli_list_shows_runs_and_ensembles(tmp_path, monkeypatch, capsys):
    from emkd_lib.__main__ import main
    monkeypatch.setenv("EMKD_RESULTS_DIR", str(tmp_path))
    members = [dataclasses.replace(tiny_config(), seed=s) for s in (0, 1)]
    for config in members:
        run_or_load(config, device="cpu", progress=False)
    experiments.ensemble_run_or_load(members, device="cpu")
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and sum(line.startswith("beauty/ensemble2-sasrec") for line in lines) == 1


def test_cli_grid_shards_split_the_grid_without_overlap(monkeypatch):
    from emkd_lib import __main__ as cli
    seen = {}

    def fake_run_grid(configs, device=None):
        seen[shard] = [c.key() for c in configs]
        return []
    monkeypatch.setattr(cli, "run_grid", fake_run_grid)
    for shard in ("0/2", "1/2"):
        assert cli.main(["grid", "emkd-encoders", "--profile", "cpu", "--shard", shard]) == 0
    grid = [c.key() for c in experiments.emkd_encoder_grid("cpu")]
    assert seen["0/2"] == grid[0::2] and seen["1/2"] == grid[1::2]
    for bad in ("2/2", "one/two"):
        with pytest.raises(SystemExit, match="--shard"):
            cli.main(["grid", "emkd-encoders", "--profile", "cpu", "--shard", bad])


def test_popularity_floor_uses_the_runs_users_and_split():
    from emkd_lib.data import load_dataset, subsample_users
    from emkd_lib.evaluation import popularity_ranks
    config = tiny_config()
    dataset = subsample_users(load_dataset("beauty"), config.max_users, seed=0)
    split = leave_one_out(dataset.sequences)
    expected = popularity_ranks(split.train, split.test_inputs, split.test_targets, dataset.n_items)
    ranks = experiments.popularity_test_ranks(config)
    assert len(ranks) == config.max_users
    np.testing.assert_array_equal(ranks, expected)


@pytest.mark.skipif(not hasattr(__import__("ctypes").CDLL(None), "gnu_get_libc_version"), reason="glibc only")
def test_freed_tensor_memory_is_reused_without_new_page_faults():
    import resource
    from emkd_lib.train import keep_freed_cpu_memory

    def faults_of_a_fresh_256mb_tensor():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.ones(64 * 2**20)  # written, so every page is touched, then freed
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    assert keep_freed_cpu_memory()
    faults_of_a_fresh_256mb_tensor()  # the heap grows to hold it
    # 256 MB is 65,536 pages of 4 KiB: served by a new mmap, each of the eight
    # would fault them all again. From the heap most are reused; a few may not
    # be, when small objects were carved out of the freed block in between and
    # the heap must grow once more.
    assert sum(faults_of_a_fresh_256mb_tensor() for _ in range(8)) < 3 * 65_536


def test_encoder_grid_adds_points_without_early_stopping_after_the_sweep():
    grid = experiments.emkd_encoder_grid("cpu")
    sweep, extra = grid[:12], grid[12:]
    assert [(c.method, dict(c.params).get("n_networks", 1)) for c in extra] == \
        [("emkd-sasrec", 4), ("gru4rec", 1), ("caser", 1)]
    for again in extra:  # the same point as in the sweep, with patience = epochs only
        (point,) = [c for c in sweep if c.method == again.method and c.params == again.params]
        assert again == dataclasses.replace(point, patience=point.epochs) and again.key() != point.key()
    assert len(experiments.emkd_encoder_grid("cpu", methods=("gru4rec",))) == 5
    assert len(experiments.emkd_encoder_grid("cpu", methods=("gru4rec",), networks=(2, 3))) == 2


def test_keeping_freed_memory_can_be_switched_off(monkeypatch):
    from emkd_lib.train import keep_freed_cpu_memory
    monkeypatch.setenv("EMKD_KEEP_FREED_MEMORY", "0")
    assert keep_freed_cpu_memory() is False


def test_cpu_profile_runs_the_plateauing_ml1m_baselines_to_the_epoch_cap():
    """On ML-1M, BERT4Rec, GRU4Rec and Caser sit near popularity level for
    their first epochs; patience must not end them there. Elsewhere, and for
    SASRec and EMKD on ML-1M, patience stays (their stored runs depend on it)."""
    for method in ("bert4rec", "gru4rec", "caser"):
        c = profile_config("cpu", "ml-1m", method)
        assert c.patience == c.epochs
        assert profile_config("cpu", "beauty", method).patience == 3
    for method in ("sasrec", "emkd"):
        c = profile_config("cpu", "ml-1m", method)
        assert c.patience < c.epochs
