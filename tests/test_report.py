"""Tables of the EMKD chapters, on hand-made results with known answers.

Ranks are 0-based (rank 0 = first place, NDCG = 1 / log2(rank + 2))."""
import types

import numpy as np
import pandas as pd
import pytest

import helpers

from emkd_lib.evaluation import metrics_from_ranks
from emkd_lib.profiles import profile_config
from emkd_lib.report import (ablation_table, ensemble_gain_table, grouped_ablation_table, mean_differences_over_seeds, method_label,
                             runs_by_method_and_seed,
                             per_seed_table, significance_table, significant_changes, stopping_table)
from emkd_lib.store import RunResult
from emkd_lib.studies.emkd import ABLATIONS, ablation_grid, depth_grid


def fake_run(ranks, method="emkd", dataset="beauty", seed=0, epochs=20, history_len=20, best=10,
             stopped_by="epoch cap", encoder=None):
    ranks = np.asarray(ranks)
    config = profile_config("cpu", dataset, method, seed=seed, encoder=encoder, train__epochs=epochs)
    metrics = metrics_from_ranks(ranks)
    return RunResult(config=config, key=f"{method}{seed}", valid_metrics=metrics, test_metrics=metrics,
                     history=[{"epoch": e + 1, "loss": 1.0} for e in range(history_len)], best_epoch=best,
                     n_params=1, train_seconds=1.0, eval_seconds=1.0, peak_memory_mb=1.0,
                     provenance={"commit": "abc"},
                     flags={"stopped_by": stopped_by, "below_popularity": False, "popularity_valid_ndcg10": 0.01,
                            "dirty": False},
                     arrays={"test_ranks": ranks, "valid_ranks": ranks})


def test_ablation_table_changes_and_paired_test_against_the_reference():
    rng = np.random.default_rng(0)
    good = rng.integers(1, 5, 400)           # NDCG@10 well above zero
    bad = good + 20                          # every user worse: out of the top 10
    runs = {"EMKD": fake_run(good), "w/o KD": fake_run(bad), "w/o ICL": fake_run(good), "x4": None}
    table = ablation_table(runs, reference="EMKD")
    assert table.loc["w/o KD", "NDCG@10"] == 0.0
    assert table.loc["w/o KD", "NDCG@10 change %"] == pytest.approx(-100.0)
    assert table.loc["w/o KD", "p"] < 1e-10
    assert table.loc["w/o ICL", "NDCG@10 change %"] == pytest.approx(0.0)
    assert table.loc["x4", "status"] == "not run"
    assert table.loc["EMKD", "status"] == "best epoch 10/20 (cap)"
    assert significant_changes(table, "EMKD") == \
        "1 of 2 rows differs from EMKD in NDCG@10 at p < 0.01: w/o KD (-100.0%)"
    assert significant_changes(ablation_table({"EMKD": fake_run(good), "w/o ICL": fake_run(good)}, "EMKD"), "EMKD") \
        == "no row differs from EMKD in NDCG@10 at p < 0.01 (1 tested)"
    assert significant_changes(ablation_table({"EMKD": None, "x2": fake_run(good)}, "EMKD"), "EMKD") == \
        "no comparison: EMKD has not been run"
    assert significant_changes(ablation_table({"EMKD": fake_run(good), "x2": None}, "EMKD"), "EMKD") == \
        "no comparison: no other row has been run beside EMKD"
    # a run at the epoch cap with its best there ended still rising: its status and the line say so
    rising = fake_run(bad, history_len=20, best=20)
    table = ablation_table({"EMKD": fake_run(good), "w/o KD": rising}, "EMKD")
    assert table.loc["w/o KD", "status"] == "best epoch 20/20 (cap), still rising"
    assert significant_changes(table, "EMKD") == \
        "1 of 1 row differs from EMKD in NDCG@10 at p < 0.01: w/o KD (-100.0%, still rising)"
    # a sweep trains every row the same few epochs: the line names the budget instead of a lower bound
    sweep = ablation_table({"EMKD": fake_run(good, history_len=20, best=20), "w/o KD": rising}, "EMKD")
    assert significant_changes(sweep, "EMKD", fixed_budget=True) == (
        "1 of 1 row differs from EMKD in NDCG@10 at p < 0.01: w/o KD (-100.0%); every row trained the same fixed "
        "number of epochs, so the rows are compared at that budget, not converged")
    table = ablation_table({"EMKD": fake_run(good, history_len=20, best=20), "w/o ICL": fake_run(good)}, "EMKD")
    assert significant_changes(table, "EMKD") == ("no row differs from EMKD in NDCG@10 at p < 0.01 (1 tested); EMKD "
                                                  "itself ended still rising, so every change is read against a "
                                                  "lower bound")


def test_ablation_table_tests_the_metric_it_is_asked_to():
    rng = np.random.default_rng(0)
    good = rng.integers(1, 5, 400)
    runs = {"full": fake_run(good), "lower": fake_run(good + 12)}  # ranks 13-16: out of the top 10, inside the top 20
    table = ablation_table(runs, reference="full", metrics=("HR@20", "NDCG@20"), tested="NDCG@20")
    assert list(table.columns) == ["HR@20", "NDCG@20", "status", "NDCG@20 change %", "p"]
    ndcg20 = {label: np.mean(1 / np.log2(ranks[ranks < 20] + 2)) * np.mean(ranks < 20)
              for label, ranks in (("full", good), ("lower", good + 12))}   # by hand: 0-based ranks, all under 20
    assert table.loc["full", "NDCG@20"] == pytest.approx(ndcg20["full"])
    assert table.loc["lower", "NDCG@20"] == pytest.approx(ndcg20["lower"])
    expected = 100 * (ndcg20["lower"] / ndcg20["full"] - 1)
    assert -100 < expected < 0
    assert table.loc["lower", "NDCG@20 change %"] == pytest.approx(expected)
    assert significant_changes(table, "full").startswith("1 of 1 row differs from full in NDCG@20 at p < 0.01: lower (")
    # the default tests NDCG@10, where the same run loses everything
    assert ablation_table(runs, reference="full").loc["lower", "NDCG@10 change %"] == pytest.approx(-100.0)


def test_grouped_ablation_table_pairs_each_group_against_its_own_reference():
    rng = np.random.default_rng(1)
    good = rng.integers(1, 5, 300)
    groups = {"S4Rec": {"length buckets": fake_run(good), "shuffled": fake_run(good + 20)},
              "ICLRec": {"length buckets": fake_run(good + 3), "shuffled": fake_run(good)},
              "DuoRec": {"length buckets": None, "shuffled": fake_run(good)}}
    table = grouped_ablation_table(groups, reference="length buckets")
    assert table.index.names == ["method", "variant"]
    assert table.loc[("S4Rec", "shuffled"), "NDCG@10 change %"] == pytest.approx(-100.0)
    assert table.loc[("S4Rec", "shuffled"), "p"] < 1e-10
    assert table.loc[("ICLRec", "shuffled"), "NDCG@10 change %"] > 0     # its own reference, not S4Rec's
    assert table.loc[("ICLRec", "shuffled"), "p"] < 1e-10
    assert table.loc[("DuoRec", "length buckets"), "status"] == "not run"
    assert np.isnan(table.loc[("DuoRec", "shuffled"), "p"])   # no reference stored: no test
    assert grouped_ablation_table({}, "length buckets").empty
    unrun_first = grouped_ablation_table({"DuoRec": {"length buckets": None}, **groups}, reference="length buckets")
    assert list(unrun_first.columns) == list(table.columns)   # the order does not follow the first group


def test_quoted_statistics_sets_each_printed_statistic_beside_ours_sparsity_in_percent():
    from emkd_lib.report import quoted_statistics
    stats = pd.DataFrame({"users": [6040.0], "items": [3706.0], "sparsity": [0.9553]}, index=["ml-1m"])
    beside = quoted_statistics(stats, [("EMKD", 2)]).set_index("statistic")
    assert beside.loc["users", "quoted"] == 6040 and beside.loc["items", "ours"] == 3706
    # EMKD prints 95.81 for ML-1M: 1 - 1,000,209 / (6,040 x 3,953), its item count
    assert beside.loc["sparsity (%)", "quoted"] == 95.81 and beside.loc["sparsity (%)", "ours"] == pytest.approx(95.53)
    renamed = quoted_statistics(stats.rename(columns={"sparsity": "sparsity (%)"}).assign(**{"sparsity (%)": [95.53]}),
                                [("EMKD", 2)])
    assert renamed.equals(beside.reset_index()[renamed.columns])


def test_statistics_apart_names_the_rows_beyond_the_tolerance_as_the_table_prints_them():
    from emkd_lib.report import statistics_apart
    beside = pd.DataFrame({"source": ["EMKD Table 2"] * 3, "dataset": ["ml-1m", "beauty", "toys"],
                           "statistic": ["items", "attributes per item", "users"],
                           "quoted": [3953.0, 5.1, 0.0], "ours": [3706.0, 3.721, 19412.0],
                           "ratio": [3706 / 3953, 3.721 / 5.1, np.nan]})
    assert statistics_apart(beside.iloc[:0]) == "all 0 statistics are within 5% of the quoted values"
    line = statistics_apart(beside)
    assert line == ("3 of 3 statistics are more than 5% from the quoted value: ml-1m items (EMKD Table 2: 3,953 quoted, "
                    "3,706 ours); beauty attributes per item (EMKD Table 2: 5.1 quoted, 3.7 ours); toys users "
                    "(EMKD Table 2: 0 quoted, 19,412 ours)")
    assert statistics_apart(beside.iloc[:1], tolerance=0.1) == "all 1 statistics are within 10% of the quoted values"
    # a statistic within the tolerance on every row is named once, after the others
    beside.loc[3] = ["EMKD Table 2", "beauty", "users", 100.0, 103.0, 1.03]
    assert statistics_apart(beside.iloc[[0, 3]]).endswith(". Within 5% in every paper and dataset: users")
    assert not statistics_apart(beside).endswith("users")   # toys' users are not within
    assert statistics_apart(pd.DataFrame({"status": ["none"]})) == "no quoted statistics to compare"


def test_ensemble_gain_table_means_seeds_and_tests_against_the_better_member():
    a, b, c = fake_run([0] * 50 + [10] * 50, "sasrec", seed=0), fake_run([1] * 100, "sasrec", seed=1), \
        fake_run([10] * 100, "sasrec", seed=2)
    ens = types.SimpleNamespace(members=[b.config, c.config], test_ranks=np.zeros(100, dtype=int),
                                test_metrics=metrics_from_ranks(np.zeros(100, dtype=int)))
    table = ensemble_gain_table({("beauty", "sasrec"): [a, b, c]}, {("beauty", "sasrec"): ens})
    row = table.loc[("beauty", "SASRec")]
    single = [0.5, 1 / np.log2(3), 0.0]
    assert row["single NDCG@10 (mean)"] == pytest.approx(np.mean(single))
    assert row["single std"] == pytest.approx(np.std(single, ddof=1))
    assert row["ensemble x2 NDCG@10"] == 1.0
    # the gain is over the models the ensemble averages, seeds 1 and 2, not over every seed
    assert row["members' mean"] == pytest.approx(np.mean(single[1:]))
    assert row["gain over members' mean %"] == pytest.approx(100 * (1 / np.mean(single[1:]) - 1))
    assert row["better member"] == pytest.approx(single[1])   # seed 1 (every target at 0-based rank 1) beats seed 2 (rank 10)
    assert row["p vs better member (Wilcoxon)"] < 1e-10  # against seed 1: every user gains


def test_per_seed_table_keeps_each_seed_and_compares_means_with_the_pooled_std():
    ndcg = {0: 1.0, 1: 0.5, 2: 1 / np.log2(3), 30: 0.0}  # NDCG@10 of a user at rank r
    runs = {"EMKD": {0: fake_run([0] * 10), 1: fake_run([1] * 10, seed=1), 2: fake_run([2] * 10, seed=2)},
            "far": {0: fake_run([30] * 10), 1: fake_run([30] * 10, seed=1), 2: None},
            "near": {0: fake_run([1] * 10), 1: fake_run([0] * 10, seed=1), 2: fake_run([2] * 10, seed=2)},
            "one seed": {0: fake_run([0] * 10), 1: None, 2: None}}
    table = per_seed_table(runs)
    assert list(table.columns) == ["seeds", "seed 0", "seed 1", "seed 2", "mean", "std"]
    emkd = [ndcg[0], ndcg[1], ndcg[2]]
    assert table.loc["EMKD", "mean"] == pytest.approx(np.mean(emkd))
    assert table.loc["EMKD", "std"] == pytest.approx(np.std(emkd, ddof=1))
    assert table.loc["far", "seeds"] == 2 and np.isnan(table.loc["far", "seed 2"])
    assert table.loc["far", "std"] == 0.0
    assert np.isnan(table.loc["one seed", "std"])
    pooled_far = np.sqrt(np.var(emkd, ddof=1) / 2)
    assert mean_differences_over_seeds(table, "EMKD") == [
        f"far's mean over 2 seeds is {np.mean(emkd):.4f} below EMKD's (0.0000 against {np.mean(emkd):.4f}), more than "
        f"one pooled seed standard deviation ({pooled_far:.4f})",
        f"near's mean over 3 seeds is equal to EMKD's ({np.mean(emkd):.4f} against {np.mean(emkd):.4f}), within one "
        f"pooled seed standard deviation ({np.std(emkd, ddof=1):.4f})"]
    assert mean_differences_over_seeds(table, "one seed") == [
        "one seed has fewer than two seeds stored: no comparison of means over seeds yet"]


def test_runs_by_method_and_seed_groups_a_grid_by_its_configs_not_its_keys():
    grid = {(d, m, s): profile_config("cpu", d, m, seed=s) for d in ("beauty",) for s in (0, 1) for m in ("sasrec", "emkd")}
    runs = {key: (fake_run([0] * 5, key[1], seed=key[2]) if key != ("beauty", "emkd", 1) else None) for key in grid}
    by_method = runs_by_method_and_seed(grid, runs)
    assert list(by_method) == [method_label(grid[("beauty", "sasrec", 0)]), method_label(grid[("beauty", "emkd", 0)])]
    assert by_method["EMKD"] == {0: runs[("beauty", "emkd", 0)], 1: None}
    assert by_method["SASRec"][1] is runs[("beauty", "sasrec", 1)]
    assert per_seed_table(by_method).loc["EMKD", "seeds"] == 1
    grid[("toys", "emkd", 0)] = profile_config("cpu", "toys", "emkd", seed=0)
    with pytest.raises(ValueError, match="two runs of EMKD with seed 0 in one grid"):
        runs_by_method_and_seed(grid, {**runs, ("toys", "emkd", 0): None})


def test_significance_table_with_a_reference_compares_it_with_every_other_method():
    runs = [fake_run([0] * 60, "emkd"), fake_run([2] * 60, "sasrec"), fake_run([30] * 60, "bert4rec")]
    table = significance_table(runs, reference="EMKD")
    assert list(table["other"]) == ["SASRec", "BERT4Rec"]
    assert (table["reference"] == "EMKD").all()
    assert table.loc[table.other == "SASRec", "change %"].item() == pytest.approx(100 * (1 / 0.5 - 1))
    assert significance_table(runs[1:], reference="EMKD").empty


def test_ablation_grid_rows_switch_exactly_their_terms():
    grid = ablation_grid("cpu")
    configs = list(grid.values())
    assert list(grid) == [("beauty", row, 0) for row in ABLATIONS]
    reference = profile_config("cpu", "beauty", "emkd", train__precision="bf16")
    assert configs[0] == reference  # the reference row is the main run, trained in bf16 like every row
    base = reference.params
    # What each row's name says it removes or changes, written out here rather than read from ABLATIONS.
    networks = {"single encoder": 1, "EMKD x2": 2, "EMKD x4": 4}
    removed = {"single encoder": {"ccl", "kd"}, "independent training": {"icl", "ccl", "kd"}, "w/o KD": {"kd"},
               "w/o CCL": {"ccl"}, "w/o ICL": {"icl"}, "w/o AP": {"ap"}}
    everything = base.active_terms(base.n_networks, has_attributes=True)
    assert everything == {"mip", "ap", "icl", "ccl", "kd"}
    for (_, row, _), config in grid.items():
        p = config.params
        assert p.n_networks == networks.get(row, 3), row
        assert p.active_terms(p.n_networks, has_attributes=True) == everything - removed.get(row, set()), row
        changed = {k for k, v in vars(p).items() if getattr(base, k) != v}
        assert changed <= {"n_networks", "icl", "ccl", "kd", "ap"}, row
        assert (config.encoder_config, config.train, config.data) == (reference.encoder_config, reference.train,
                                                                        reference.data)


def test_unknown_variant_param_is_a_clear_error():
    from emkd_lib.studies.emkd import emkd_variant
    with pytest.raises(ValueError, match=r"EMKDParams: unknown key\(s\) \['lambda'\]"):
        emkd_variant("cpu", "beauty", **{"lambda": 0.1})
    with pytest.raises(ValueError, match="n_networks must be"):
        emkd_variant("cpu", "beauty", n_networks=0)


def test_depth_grid_changes_only_the_number_of_blocks():
    grid = depth_grid("cpu")
    assert [(m, b) for (_, m, b, _) in grid] == [(m, b) for m in ("sasrec", "bert4rec") for b in (3, 4, 1)]
    for (_, method, blocks, _), config in grid.items():
        base = profile_config("cpu", "beauty", method)
        assert config.encoder_config.n_blocks == blocks != base.encoder_config.n_blocks
        assert config == base.replace(encoder_config__n_blocks=blocks)


def test_table5_singles_joins_the_baselines_depth_to_the_depth_grid_in_table_order():
    from emkd_lib.studies.emkd import table5_singles
    singles = table5_singles("cpu", "beauty", 0)
    assert list(singles) == [(m, b) for m in ("sasrec", "bert4rec") for b in (1, 2, 3, 4)]
    for (method, blocks), config in singles.items():
        assert config == profile_config("cpu", "beauty", method).replace(encoder_config__n_blocks=blocks)
    # the profile's own depth is the baseline chapter's run itself (same key)
    assert singles[("sasrec", 2)] == profile_config("cpu", "beauty", "sasrec", seed=0)
    assert list(table5_singles("smoke", "beauty", 0, depths=False)) == [
        ("sasrec", profile_config("smoke", "beauty", "sasrec").encoder_config.n_blocks),
        ("bert4rec", profile_config("smoke", "beauty", "bert4rec").encoder_config.n_blocks)]



@helpers.needs_dataset("beauty")
def test_table5_rows_size_every_row_and_name_the_ensembles_one_way(tmp_path, monkeypatch):
    """The rows chapter 04's Table 5 shows and the labels its per-network line
    looks up come from one function each, so the line always finds its rows."""
    from emkd_lib.studies.emkd import ensemble_size_label, table5_rows
    monkeypatch.setenv("EMKD_RESULTS_DIR", str(tmp_path / "results"))   # an empty store
    assert ensemble_size_label(3, 2) == "EMKD x3 (2 blocks a network)"
    marker = fake_run([1, 2], best=1)
    depth_runs, singles, ensembles = table5_rows("smoke", "beauty", 0, {"EMKD": marker})
    assert [m for m, _ in depth_runs] == ["sasrec", "bert4rec"] and set(depth_runs.values()) == {None}
    assert [label.split(" (")[0] for label in ensembles] == ["EMKD x1", "EMKD x2", "EMKD x3"]
    counts = [n for n, _ in ensembles.values()]
    assert counts == sorted(counts) and counts[0] > 0          # more networks, more parameters
    assert list(ensembles.values())[-1][1] is marker           # EMKD x3 is Table 4's "EMKD" row
    assert list(ensembles.values())[0][1] is None              # "single encoder" not stored
    assert all(isinstance(n, int) and n > 0 for n, _ in singles.values())


def test_size_table_shows_parameters_and_ndcg_or_nan():
    from emkd_lib.report import size_table
    table = size_table({"a": (10, fake_run([1, 2], best=1)), "b": (20, None)})
    assert table.loc["a", "parameters"] == 10 and table.loc["a", "test NDCG@10"] == pytest.approx(
        fake_run([1, 2], best=1).test_metrics["NDCG@10"])
    assert np.isnan(table.loc["b", "test NDCG@10"]) and table.loc["b", "parameters"] == 20


def test_stopping_table_flags_runs_still_improving_at_the_cap():
    good = [0] * 10
    runs = {"capped, best at the cap": fake_run(good, history_len=20, best=20),
            "capped, best earlier": fake_run(good, history_len=20, best=10),
            "patience": fake_run(good, history_len=12, best=7, stopped_by="patience"),
            ("beauty", "x", 1): fake_run(good, history_len=5, best=5, stopped_by="patience"),
            "not run": None}
    table = stopping_table(runs)
    assert list(table.index) == ["capped, best at the cap", "capped, best earlier", "patience", "beauty / x / 1"]
    assert table["best at the cap"].tolist() == [True, False, False, False]
    assert table.loc["capped, best at the cap", "epochs"] == 20
    assert table.loc["patience", "best epoch"] == 7 and table.loc["patience", "stopped by"] == "patience"
    assert table.loc["patience", "popularity valid NDCG@10"] == 0.01
    assert stopping_table({"x": None}).empty
    # patience 5 from epoch 7 ends at 12; a run that went on to 30 was held by the min-steps floor
    held = stopping_table({"held": fake_run(good, history_len=30, best=7, stopped_by="patience")})
    assert held.loc["held", "stopped by"] == "patience, after min steps"


def test_stopping_table_shows_a_grid_key_as_row_levels_with_the_method_under_its_name():
    runs = {("beauty", "sasrec", 0): fake_run([0] * 4, method="sasrec", stopped_by="patience"),
            ("toys", "gru4rec", 1): fake_run([0] * 4, method="gru4rec", dataset="toys", seed=1),
            ("toys", "bert4rec", 0): None}
    table = stopping_table(runs)
    assert list(table.index) == [("beauty", "SASRec", 0), ("toys", "GRU4Rec", 1)]
    assert list(table.index.names) == ["dataset", "method", "seed"]
    assert table.loc[("toys", "GRU4Rec", 1), "stopped by"] == "epoch cap"
    one_seed = stopping_table({("beauty", "sasrec", 0): runs[("beauty", "sasrec", 0)],
                               ("beauty", "bert4rec", 0): fake_run([0] * 4, method="bert4rec")})
    assert list(one_seed.index) == ["SASRec", "BERT4Rec"]   # the same dataset and seed in every row: not shown


def test_a_run_stopped_by_patience_on_a_rising_curve_is_still_rising():
    """DuoRec on Beauty climbed for 118 epochs until a noisy step ended it by
    patience: its best rose 15.6% in the run's last quarter. A run that has
    peaked gains nothing there, and both were stopped by patience."""
    from emkd_lib.report import still_rising_found, still_rising_runs
    from emkd_lib.report.tables import LATE_GAIN_COLUMN, STILL_RISING_PERCENT, late_gain

    def with_curve(values, stopped_by="patience", method="emkd", seed=0):
        run = fake_run([0] * 10, method, seed=seed, history_len=len(values), best=int(np.argmax(values)) + 1,
                       stopped_by=stopped_by)
        run.history = [{"epoch": e + 1, "valid_ndcg10": v} for e, v in enumerate(values)]
        return run

    rising = [0.02 + 0.001 * e for e in range(38)] + [0.05, 0.05]  # 40 evaluations, a last step down
    peaked = [0.03, 0.05, 0.06, 0.061, 0.06, 0.059, 0.06, 0.058]   # best at 4 of 8
    # hand-checked: 40 evaluations, the first 30 have best 0.049; all have best 0.057
    assert late_gain(with_curve(rising).history) == pytest.approx(100 * (0.057 / 0.049 - 1))
    assert late_gain(with_curve(peaked).history) == 0.0
    assert np.isnan(late_gain(with_curve([0.1, 0.2, 0.3]).history))
    table = stopping_table({"rising": with_curve(rising), "peaked": with_curve(peaked)})
    assert table.loc["rising", LATE_GAIN_COLUMN] > STILL_RISING_PERCENT
    assert table["still rising"].tolist() == [True, False]
    assert table["best at the cap"].tolist() == [False, False]
    (line,) = still_rising_found(table)
    assert line.startswith("1 of 2 runs was still rising when it stopped (not converged: its number is a lower bound)")
    assert "rising (stopped by patience at epoch 40" in line
    assert "peaked" not in line
    # (dataset, method) once however many seeds rose; a peaked run, or a curve too short to judge, is not named
    runs = {("sasrec", 0): with_curve(rising, method="sasrec"), ("sasrec", 1): with_curve(rising, method="sasrec", seed=1),
            ("emkd", 0): with_curve(peaked), ("bert4rec", 0): with_curve([0.1, 0.2, 0.3], method="bert4rec"), ("x", 0): None}
    assert still_rising_runs(runs) == [("beauty", "SASRec")]
    # best at the cap counts as still rising, however flat its last quarter
    assert still_rising_runs({"capped": with_curve(peaked[:4], stopped_by="epoch cap")}) == [("beauty", "EMKD")]
    assert still_rising_found(table.loc[["peaked"]]) == [
        "no run of the 1 was still rising when it stopped (each ended on a plateau)"]


def test_method_label_names_emkd_by_its_encoder():
    assert method_label(profile_config("cpu", "beauty", "emkd")) == "EMKD"
    assert method_label(profile_config("cpu", "beauty", "emkd", encoder="sasrec")) == "EMKD (SASRec)"
    assert method_label(profile_config("cpu", "beauty", "emkd", encoder="gru4rec")) == "EMKD (GRU4Rec)"
    assert method_label(profile_config("cpu", "beauty", "bert4rec")) == "BERT4Rec"
    assert method_label(profile_config("cpu", "beauty", "caser")) == "Caser"


# --- conclusions in words and the scorecard ---------------------------------

from emkd_lib.report import (comparison_sentences, ensemble_gain_sentences, reproduction_cells, scorecard,  # noqa: E402
                             scorecard_summary, verdict)


def test_comparison_sentences_read_the_significance_table():
    runs = [fake_run([0] * 60, "emkd"), fake_run([2] * 60, "sasrec")]
    sig = significance_table(runs, reference="EMKD")
    text = comparison_sentences(sig, ["beauty", "toys"], others=("SASRec", "BERT4Rec"))
    lines = text.split("\n")
    assert lines[0].startswith("- EMKD vs SASRec on beauty: +100.0% NDCG@10 (1.0000 vs 0.5000), p = ")
    assert lines[0].endswith("significant at 0.01")
    assert lines[1:] == ["- EMKD vs BERT4Rec on beauty: not run yet", "- EMKD vs SASRec on toys: not run yet",
                         "- EMKD vs BERT4Rec on toys: not run yet"]
    zero = significance_table([fake_run([30] * 60, "emkd"), fake_run([30] * 60, "sasrec")], reference="EMKD")
    assert comparison_sentences(zero, ["beauty"], others=("SASRec",)).startswith(
        "- EMKD vs SASRec on beauty: no relative change (SASRec scores 0) NDCG@10 (0.0000 vs 0.0000), p = ")
    empty = significance_table(runs[1:], reference="EMKD")
    assert comparison_sentences(empty, ["beauty"], others=("SASRec",)) == "- EMKD vs SASRec on beauty: not run yet"


def test_ensemble_gain_sentences_name_the_gain_and_the_test():
    a, b = fake_run([1] * 100, "sasrec", seed=1), fake_run([10] * 100, "sasrec", seed=2)
    ens = types.SimpleNamespace(members=[a.config, b.config], test_ranks=np.zeros(100, dtype=int),
                                test_metrics=metrics_from_ranks(np.zeros(100, dtype=int)))
    gains = ensemble_gain_table({("beauty", "sasrec"): [a, b], ("toys", "sasrec"): []},
                                {("beauty", "sasrec"): ens, ("toys", "sasrec"): None})
    lines = ensemble_gain_sentences(gains).split("\n")
    single = (1 / np.log2(3) + 0.0) / 2  # rank 1 and rank 10 (outside the top 10)
    assert lines[0].startswith(f"- SASRec on beauty: the ensemble of two is {100 * (1 / single - 1):+.1f}% NDCG@10"
                               f" over the mean of its two members (1.0000 vs {single:.4f}), "
                               f"{100 * (np.log2(3) - 1):+.1f}% over the better one ({1 / np.log2(3):.4f}); against its "
                               f"better member p = ")
    assert lines[0].endswith(", significant at 0.01")
    assert lines[1] == "- SASRec on toys: not run yet"
    assert lines[2] == "- in all: 1 of 1 ensembles differ from their better member at p < 0.01"


@pytest.mark.parametrize("ours, quoted, expected", [
    (0.050, 0.050, "reproduced"), (0.0455, 0.050, "reproduced"), (0.055, 0.050, "reproduced"),
    (0.044, 0.050, "below the paper"), (0.056, 0.050, "above the paper"),
    (np.nan, 0.050, "not run yet"), (None, 0.05, "not run yet"), (0.05, np.nan, "not in the paper")])
def test_verdict_within_ten_percent(ours, quoted, expected):
    assert verdict(ours, quoted) == expected


def test_scorecard_sets_ours_beside_the_quoted_csv_and_counts_verdicts(tmp_path, monkeypatch):
    _papers_csv(tmp_path, monkeypatch, [("beauty", "SASRec", "NDCG@10", 0.05), ("beauty", "EMKD", "NDCG@10", 0.05),
                                        ("toys", "SASRec", "NDCG@10", 0.04), ("toys", "EMKD", "NDCG@10", 0.04)])
    good = fake_run([0] * 10 + [30] * 10, "sasrec")          # NDCG@10 = 0.5
    cells = reproduction_cells("X", 3, {("beauty", "SASRec"): [good, good], ("beauty", "EMKD"): None,
                                        ("toys", "SASRec"): good, ("toys", "EMKD"): []}, ("NDCG@10",))
    assert cells["value"].tolist()[0] == pytest.approx(0.5) and cells["value"].isna().tolist() == [False, True, False, True]
    card = scorecard(cells)
    assert list(card.columns) == ["ours", "quoted", "ratio", "verdict"]
    assert card.loc[("X Table 3", "beauty", "SASRec", "NDCG@10"), "quoted"] == 0.05
    assert card.loc[("X Table 3", "beauty", "SASRec", "NDCG@10"), "ratio"] == pytest.approx(10.0)
    assert card["verdict"].tolist() == ["above the paper", "not run yet", "above the paper", "not run yet"]
    assert scorecard_summary(card) == ("Of 4 cells quoted from the papers, 2 have a stored result of ours: "
                                       "0 reproduced (within 10% of the paper), 0 below the paper, 2 above it, "
                                       "2 not run yet.")
    # the same stored result against the same quoted value in a second table repeats a comparison
    repeated = pd.concat([card, card.rename(index={"X Table 3": "X Table 4"}, level="source")])
    assert scorecard_summary(repeated).endswith("4 not run yet; 2 of the 4 repeat a comparison another table already "
                                                "makes (the same result of ours against the same quoted value), so "
                                                "2 are distinct.")
    # the chapter's findings: the count first, then one ratio line per table with a result
    from emkd_lib.report import ratio_summary, scorecard_found
    found = scorecard_found(card, 0.10, {"X Table 3": "EMKD"})
    assert found[:2] == [scorecard_summary(card), ratio_summary(card.loc["X Table 3"], "X Table 3")]
    assert scorecard_found(card[card["verdict"] == "not run yet"], 0.10, {}) == []   # nothing run: nothing said


def test_beside_paper_rows_reads_the_papers_table_and_divides():
    import pytest
    from emkd_lib.paper_tables import quoted_table
    from emkd_lib.report import beside_paper_rows
    from emkd_lib.studies.emkd import PAPER_TABLE4_ROWS
    try:
        quoted = quoted_table("EMKD", 4, dataset="beauty", metric="NDCG@10").set_index("method")["value"]
    except FileNotFoundError:
        pytest.skip("the papers' tables are not here")

    class Run:
        test_metrics = {"NDCG@10": 0.03}
    table = beside_paper_rows({"EMKD": Run(), "w/o KD": None}, "EMKD", 4, "beauty", PAPER_TABLE4_ROWS)
    assert list(table.index) == list(PAPER_TABLE4_ROWS)
    assert table.loc["EMKD", "quoted (EMKD Table 4)"] == quoted["EMKD(x3)"]
    assert table.loc["EMKD", "ratio"] == pytest.approx(0.03 / quoted["EMKD(x3)"])
    assert np.isnan(table.loc["w/o KD", "ours NDCG@10"]) and np.isnan(table.loc["w/o KD", "ratio"])
    assert table.loc["EMKD", "paper's row"] == "EMKD(x3)"
    # where every row carries the paper's own label, the column would repeat the index: it is left out
    same = beside_paper_rows({"EMKD(x3)": Run()}, "EMKD", 4, "beauty", {"EMKD(x3)": "EMKD(x3)"})
    assert "paper's row" not in same and same.loc["EMKD(x3)", "ratio"] == pytest.approx(0.03 / quoted["EMKD(x3)"])


def test_equal_time_table_reads_each_curve_at_the_shortest_total_time():
    from emkd_lib.report import equal_time_table

    class Run:
        def __init__(self, seconds, scores):
            self.history = [{"train_seconds": s, "valid_ndcg10": v} for s, v in zip(seconds, scores)]
    fast = Run([10, 10, 10], [0.01, 0.03, 0.02])       # 30 s in all
    slow = Run([20, 20, 20, 20], [0.02, 0.04, 0.05, 0.06])  # 80 s in all
    table = equal_time_table({"fast": fast, "slow": slow, "missing": None})
    assert list(table.index) == ["fast", "slow"]
    assert table.loc["fast", "valid NDCG@10 within 30 s"] == 0.03   # best so far, not the last
    assert table.loc["slow", "valid NDCG@10 within 30 s"] == 0.02   # only its first epoch ends by 30 s
    assert table.loc["slow", "best valid NDCG@10"] == 0.06 and table.loc["slow", "training (s, total)"] == 80
    assert np.isnan(equal_time_table({"slow": slow}, seconds=5).iloc[0, 0])


# --- setting differences, the scorecard figure, narrative helpers ----------

def _papers_csv(tmp_path, monkeypatch, rows, paper="X", table=3):
    """A papers folder holding one tidy table of (dataset, method, metric, value) rows."""
    pd = pytest.importorskip("pandas")
    pd.DataFrame([{"paper": paper, "table": table, "dataset": d, "method": m, "metric": k, "value": v}
                  for d, m, k, v in rows]).to_csv(tmp_path / f"{paper.lower()}.csv", index=False)
    monkeypatch.setenv("EMKD_PAPERS_DIR", str(tmp_path))


def _tiny_papers(tmp_path, monkeypatch):
    _papers_csv(tmp_path, monkeypatch, [("beauty", "SASRec", "NDCG@10", 0.05),
                                        ("beauty", "EMKD", "NDCG@10", 0.0594), ("toys", "EMKD", "NDCG@10", 0.0622)])


def test_setting_differences_reads_profile_d_epochs_and_m_off_the_configs():
    from emkd_lib.report import setting_differences
    from emkd_lib.studies.emkd import emkd_variant
    cpu, paper = emkd_variant("cpu", "beauty"), emkd_variant("paper", "beauty")
    text = setting_differences(cpu, paper)
    assert text.startswith("profile cpu;")
    for name, get in (("d", lambda c: c.encoder_config.hidden), ("M", lambda c: c.params.n_views),
                      ("epochs cap", lambda c: c.train.epochs)):
        if get(cpu) != get(paper):
            assert f"{name} {get(cpu)} (paper profile: {get(paper)})" in text
        else:
            assert f"{name} " not in text
    assert setting_differences(paper, paper) == "none"
    assert setting_differences(None, paper) == ""
    sasrec = profile_config("cpu", "beauty", "sasrec")
    assert "M " not in setting_differences(sasrec, profile_config("paper", "beauty", "sasrec"))  # no views
    # a user sample and a window length are settings too
    sample = profile_config("cpu", "beauty", "sasrec", data__max_users=100, data__max_len=7)
    text = setting_differences(sample, sasrec)
    assert "users 100 (paper profile: all)" in text and f"length 7 (paper profile: {sasrec.data.max_len})" in text
    # ML-1M's EMKD keeps fewer attention heads than the paper profile's
    ml_cpu, ml_paper = emkd_variant("cpu", "ml-1m"), emkd_variant("paper", "ml-1m")
    assert (f"heads {ml_cpu.encoder_config.n_heads} (paper profile: {ml_paper.encoder_config.n_heads})"
            in setting_differences(ml_cpu, ml_paper))
    assert "heads" not in setting_differences(cpu, paper)       # Beauty's heads agree


def test_scorecard_carries_the_setting_column_from_stored_or_planned_configs(tmp_path, monkeypatch):
    _tiny_papers(tmp_path, monkeypatch)
    run = fake_run([0] * 20, "sasrec")
    planned = profile_config("cpu", "beauty", "emkd", encoder="bert4rec")
    reference = {("beauty", "SASRec"): profile_config("paper", "beauty", "sasrec"),
                 ("beauty", "EMKD"): planned}
    cells = reproduction_cells("X", 3, {("beauty", "SASRec"): run, ("beauty", "EMKD"): None}, ("NDCG@10",),
                               configs={("beauty", "EMKD"): planned}, reference=reference)
    card = scorecard(cells)
    assert list(card.columns) == ["ours", "quoted", "ratio", "verdict", "setting differs"]
    assert card["setting differs"].iloc[0].startswith("profile cpu;")
    assert card["setting differs"].iloc[1] == "none"


def test_scorecard_figure_has_the_diagonal_and_one_marker_per_result(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    from emkd_lib.report import scorecard_figure
    _tiny_papers(tmp_path, monkeypatch)
    cells = reproduction_cells("X", 3, {("beauty", "SASRec"): fake_run([0] * 20, "sasrec"),
                                        ("beauty", "EMKD"): None, ("toys", "EMKD"): fake_run([3] * 20)}, ("NDCG@10",))
    fig = scorecard_figure(scorecard(cells))
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    diagonal = ax.lines[0]
    assert list(diagonal.get_xdata()) == list(diagonal.get_ydata())
    assert sum(len(c.get_offsets()) for c in ax.collections) == 2
    empty = scorecard_figure(scorecard(reproduction_cells("X", 3, {("beauty", "EMKD"): None}, ("NDCG@10",))))
    assert len(empty.axes[0].lines) == 1 and not empty.axes[0].collections
    assert "no result" in empty.axes[0].texts[0].get_text()


def test_quoted_claim_reads_the_csv(tmp_path, monkeypatch):
    from emkd_lib.report import quoted_claim
    _tiny_papers(tmp_path, monkeypatch)
    assert quoted_claim("X", 3, "EMKD", "NDCG@10", ["beauty", "toys"]) == \
        "X reports NDCG@10 of 0.0594 on beauty and 0.0622 on toys for EMKD (quoted, X Table 3)."
    assert quoted_claim("X", 3, ["SASRec", "EMKD"], "NDCG@10", ["beauty"]) == \
        "X reports NDCG@10 on beauty 0.0594 (EMKD), 0.0500 (SASRec) (quoted, X Table 3)."
    assert quoted_claim("X", 3, "SASRec", "NDCG@10", ["toys"]) == \
        "X Table 3 reports no NDCG@10 for SASRec on toys."


def test_quoted_first_counts_the_cells_a_method_leads_and_names_the_others(tmp_path, monkeypatch):
    from emkd_lib.report import quoted_first
    _papers_csv(tmp_path, monkeypatch, [("beauty", "A", "HR@5", 0.30), ("beauty", "B", "HR@5", 0.20),
                                        ("beauty", "A", "NDCG@5", 0.10), ("beauty", "B", "NDCG@5", 0.10),  # a tie
                                        ("toys", "A", "HR@5", 0.10), ("toys", "B", "HR@5", 0.25),
                                        ("toys", "B", "NDCG@5", 0.20)])  # A not reported: not a cell
    assert quoted_first("X", 3, "A", ["beauty", "toys"], ["HR@5", "NDCG@5"]) == (
        "X's Table 3 puts A first in 2 of its 3 dataset-metric cells; not in toys HR@5, "
        "where B reports 0.2500 against 0.1000 (quoted, X Table 3).")
    assert quoted_first("X", 3, "A", ["beauty"], ["HR@5", "NDCG@5"]) == \
        "X's Table 3 puts A first in all 2 of its dataset-metric cells (quoted, X Table 3)."
    assert quoted_first("X", 3, "C", ["beauty"], ["HR@5"]) == "X Table 3 reports no HR@5 for C on beauty."


def test_found_section_best_per_dataset_and_ratio_summary():
    pd = pytest.importorskip("pandas")
    from emkd_lib.report import best_per_dataset, found_section, metrics_table, ratio_summary
    assert found_section([]).startswith("- not run yet")
    assert found_section(["a", "", "- b"]) == "- a\n- b"
    table = metrics_table([fake_run([0] * 10, "sasrec"), fake_run([20] * 10, "gru4rec")])
    assert best_per_dataset(table) == ["on beauty the best by test NDCG@10 is SASRec (1.0000), "
                                       "ahead of GRU4Rec (0.0000)"]
    table = metrics_table([fake_run([0] * 10, "sasrec"), fake_run([0] * 5 + [20] * 5, "gru4rec")])
    assert best_per_dataset(table) == ["on beauty the best by test NDCG@10 is SASRec (1.0000), "
                                       "+100.0% over GRU4Rec (0.5000)"]
    assert best_per_dataset(metrics_table([])) == []
    assert best_per_dataset(metrics_table([fake_run([0] * 10, "sasrec")])) == \
        ["on beauty only SASRec is stored so far (test NDCG@10 1.0000)"]
    df = pd.DataFrame({"ratio": [0.5, float("nan"), 1.0, 0.8]})
    assert ratio_summary(df, "Table 4") == \
        "Table 4: ours / the paper's value has median 0.80 over 3 cells (from 0.50 to 1.00)"
    assert ratio_summary(df.iloc[[1]], "Table 4") == "Table 4: nothing run yet to set beside the paper"
    assert ratio_summary(pd.DataFrame({"status": ["x"]}), "T") == "T: nothing run yet to set beside the paper"


def test_reference_and_ensemble_found_count_the_tests():
    from emkd_lib.report import ensemble_found, reference_found
    rng = np.random.default_rng(0)
    good = rng.integers(0, 5, 300)
    results = [fake_run(good), fake_run(good + 30, "sasrec"), fake_run(good, "bert4rec")]
    sig = significance_table(results, reference="EMKD")
    line = reference_found(sig)
    assert line.startswith("EMKD is significantly above the other method in 1, below it in 0 and not different "
                           "in 1 of 2 paired comparisons (p < 0.01)")
    assert reference_found(significance_table([], reference="EMKD")) == ""
    # a win over a run that ended still rising is named; a tie with one, or another dataset's run, is not
    flagged = "; 1 of its 1 wins is over a run still rising when it stopped, whose number is a lower bound (beauty / SASRec)"
    for still_rising in ([("beauty", "SASRec")], [("beauty", "SASRec"), ("beauty", "BERT4Rec")]):
        assert reference_found(sig, still_rising=still_rising) == line + flagged
    for still_rising in ([("toys", "SASRec")], [("beauty", "BERT4Rec")], [("beauty", "EMKD")], []):
        assert reference_found(sig, still_rising=still_rising) == line
    # a win over a run awaiting its patience check is named apart, and once only where it is also still rising
    waiting = "; 1 is over a run that patience stopped without the flag and that waits on a longer-patience check, " \
              "which may change it (beauty / SASRec)"
    assert reference_found(sig, awaiting_check=[("beauty", "SASRec")]) == line + waiting
    assert reference_found(sig, awaiting_check=[("beauty", "BERT4Rec"), ("toys", "SASRec")]) == line
    assert reference_found(sig, still_rising=[("beauty", "SASRec")], awaiting_check=[("beauty", "SASRec")]) == \
        line + flagged
    a, b = fake_run([0] * 50 + [10] * 50, "sasrec", seed=0), fake_run([1] * 100, "sasrec", seed=1)
    ens = types.SimpleNamespace(members=[a.config, b.config], test_ranks=np.zeros(100, dtype=int),
                                test_metrics=metrics_from_ranks(np.zeros(100, dtype=int)))
    gains = ensemble_gain_table({("beauty", "sasrec"): [a, b]}, {("beauty", "sasrec"): ens})
    assert ensemble_found(gains).startswith("the ensemble of two beats the mean of its two members in 1 of 1")
    assert ensemble_found(ensemble_gain_table({("beauty", "sasrec"): [a]}, {("beauty", "sasrec"): None})) == ""


def test_ensemble_found_leaves_out_a_gain_over_a_zero_single_model():
    from emkd_lib.report import ensemble_found
    a, b = fake_run([20] * 100, "sasrec", seed=0), fake_run([30] * 100, "sasrec", seed=1)
    ens = types.SimpleNamespace(members=[a.config, b.config], test_ranks=np.zeros(100, dtype=int),
                                test_metrics=metrics_from_ranks(np.zeros(100, dtype=int)))
    line = ensemble_found(ensemble_gain_table({("beauty", "sasrec"): [a, b]}, {("beauty", "sasrec"): ens}))
    assert line.startswith("the ensemble of two beats the mean of its two members in 1 of 1 (dataset, method) pairs")
    assert "nan" not in line and "median gain" not in line


def test_gains_beside_paper_and_gain_found_read_ours_and_the_quoted_csv(tmp_path, monkeypatch):
    from emkd_lib.report import gain_found, gains_beside_paper
    _papers_csv(tmp_path, monkeypatch, [("arts", "ODMT", "NDCG@10", 0.0787),
                                        ("arts", "SASRec+LF", "NDCG@10", 0.0709),
                                        ("stream", "ODMT", "NDCG@10", 0.0672),
                                        ("stream", "SASRec+LF", "NDCG@10", 0.0607)], paper="ODMT", table=2)
    # rank 0 -> NDCG 1, rank 1 -> 1/log2(3): ODMT better on half the users
    runs = [fake_run([0] * 30 + [1] * 30, "odmt", dataset="ml-100k-odmt"),
            fake_run([1] * 60, "sasrec-lf", dataset="ml-100k-odmt")]
    gains = gains_beside_paper(runs, "ODMT", 2, "ODMT", "SASRec+LF", metrics=("NDCG@10",))
    ours = gains.loc[("ours", "ml-100k-odmt", "NDCG@10")]
    b = 1 / np.log2(3)
    assert ours["gain %"] == pytest.approx(100 * ((0.5 + 0.5 * b) / b - 1))
    assert gains.loc[("quoted (ODMT Table 2)", "arts", "NDCG@10"), "gain %"] == pytest.approx(100 * (0.0787 / 0.0709 - 1))
    sig = significance_table(runs, reference="ODMT")
    lines = gain_found(gains, sig, "ODMT", "SASRec+LF")
    assert lines[0].startswith("ml-100k-odmt: ODMT NDCG@10") and "(significant)" in lines[0]
    assert "+10.7% to +11.0%" in lines[1] and "2 datasets" in lines[1]
    assert lines[1].endswith("(quoted; other datasets than ours)")
    noted = gain_found(gains, sig, "ODMT", "SASRec+LF", setup_differs="ours trains otherwise")
    assert noted[1].endswith("(quoted; other datasets than ours; ours trains otherwise)")
    # nothing run: a status row, and a sentence saying so
    empty = gains_beside_paper([], "ODMT", 2, "Nope", "SASRec+LF", metrics=("NDCG@10",))
    assert gain_found(empty, sig.iloc[0:0], "Nope", "SASRec+LF") == ["Nope against SASRec+LF: not both run yet"]


def test_curves_found_names_the_lowest_loss_the_best_validation_and_the_best_tested_run():
    from emkd_lib.report import curves_found

    def run(losses, valid, hits, users=200):
        """``hits`` of ``users`` test users at rank 0, the rest at rank 50 (no HR@10)."""
        ranks = np.where(np.arange(users) < hits, 0, 50)
        return types.SimpleNamespace(history=[{"loss": l, "valid_ndcg10": v} for l, v in zip(losses, valid)],
                                     test_metrics={"HR@10": hits / users}, test_ranks=ranks)

    # id ran one epoch longer: its loss is compared at epoch 2, where text stopped
    runs = {"id": run([5.0, 3.0, 1.0], [0.01, 0.02, 0.06], 10), "text": run([5.0, 4.0], [0.02, 0.05], 60),
            "image": None}
    loss_line, test_line = curves_found(runs, "Figure 2")
    # id's validation score of epoch 3 (0.06) comes after the common epoch: it does not count
    assert loss_line.startswith("Figure 2: at epoch 2, the last that every run reached, the lowest training loss is "
                                "id's (3.000; text 4.000); the best validation NDCG@10 up to that epoch is text's "
                                "(0.0500; id 0.0200)")
    assert loss_line.endswith("the run with the lowest loss is not the one with the best validation score, as in "
                              "the paper's Figure 2")
    assert test_line.startswith("Figure 2: the best test HR@10 (at each run's selected epoch) is text's "
                                "(0.3000; id 0.0500); against id, p = ")
    assert test_line.endswith("(significant)")
    # the lowest loss and the best validation score in one run; a test gap of one user orders nothing
    runs = {"id": run([5.0, 2.0], [0.01, 0.06], 31), "text": run([5.0, 4.0], [0.02, 0.05], 30)}
    loss_line, test_line = curves_found(runs, "F")
    assert loss_line.endswith(": the run with the lowest loss is also the one with the best validation score, unlike "
                              "the paper's Figure 2, where the input with the lowest training loss is not the one "
                              "that ranks best")
    assert test_line.endswith("(not significant: the test users do not order id and text)")
    assert "not enough runs" in curves_found({"id": runs["id"]}, "F")[0]


def test_progress_at_epoch_reads_the_validation_curve_at_that_epoch():
    from emkd_lib.report import progress_at_epoch
    run = types.SimpleNamespace(history=[{"valid_ndcg10": v} for v in (0.01, 0.03, 0.04, 0.05, 0.045)])
    assert progress_at_epoch(run, 2, "S4Rec") == (
        "S4Rec: after 2 epochs its validation NDCG@10 was 0.0300, 60% of its best (0.0500, epoch 4 of 5)")
    assert progress_at_epoch(run, 6, "S4Rec") == "S4Rec: it stopped at epoch 5, before epoch 6"
    assert progress_at_epoch(None, 2, "S4Rec") == "S4Rec: not run yet"


def test_a_bf16_run_is_labelled_apart_from_its_fp32_twin_only_where_asked():
    from emkd_lib.profiles import profile_config
    from emkd_lib.report import performance
    config = profile_config("cpu", "beauty", "sasrec")
    bf16 = config.replace(train__precision="bf16")
    assert method_label(config) == method_label(bf16) == "SASRec"   # a table of methods: the paper's names
    assert method_label(config, with_precision=True) == "SASRec"
    assert method_label(bf16, with_precision=True) == "SASRec (bf16)"
    # the performance tables hold both precisions of a method: they name them apart
    run = lambda c: types.SimpleNamespace(config=c, history=[{"steps": 10}], train_seconds=5.0, provenance={
        "machine": "AMD EPYC x2 (torch threads 1)", "examples_per_epoch": 100})
    table = performance.stored_throughput([run(config), run(bf16)])
    assert sorted(table.index.get_level_values("method")) == ["SASRec", "SASRec (bf16)"]


def test_control_found_pairs_a_run_with_its_control():
    from emkd_lib.report import control_found
    ranks_a = np.array([1, 1, 2, 30, 1] * 20)
    ranks_b = np.array([2, 30, 30, 30, 1] * 20)
    run, control = fake_run(ranks_a), fake_run(ranks_b)
    (line,) = control_found(run, control, "distillation")
    ndcg = lambda ranks: np.mean([1 / np.log2(r + 2) if r < 10 else 0 for r in ranks])  # 0-based ranks  # noqa: E731
    assert line.startswith(f"distillation: NDCG@10 {ndcg(ranks_a):.4f} against {ndcg(ranks_b):.4f} without it")
    assert line.endswith("(significant)")
    assert control_found(run, None, "distillation") == ["distillation: not both run yet"]
    (line,) = control_found(run, control, "SR only", control_is="for SASRec")
    assert f"{ndcg(ranks_a):.4f} against {ndcg(ranks_b):.4f} for SASRec, " in line
    # a control stopped at its epoch cap with its best there ended still rising: the line says so
    rising = fake_run(ranks_b, history_len=20, best=20, stopped_by="epoch cap")
    (line,) = control_found(run, rising, "SR only", control_is="for SASRec")
    assert line.endswith("(significant); the run for SASRec ended still rising (a lower bound), so the difference "
                         "is partly one of training")
    (line,) = control_found(rising, rising, "x")
    assert "; the run and the run without it ended still rising" in line


def test_gap_closed_places_a_control_between_the_two_runs_it_separates():
    from emkd_lib.report import gap_closed
    ndcg = lambda ranks: np.mean([1 / np.log2(r + 2) if r < 20 else 0 for r in ranks])  # noqa: E731
    reference, variant = np.array([0, 0, 1, 40] * 50), np.array([3, 3, 30, 40] * 50)
    control = np.array([0, 3, 30, 40] * 50)
    runs = [types.SimpleNamespace(test_ranks=r) for r in (reference, variant, control)]
    (line,) = gap_closed(*runs, "SASRec, windows weighed equally")
    share = 100 * (ndcg(control) - ndcg(variant)) / (ndcg(reference) - ndcg(variant))
    assert 0 < share < 100
    assert line.startswith(f"SASRec, windows weighed equally: NDCG@20 {ndcg(control):.4f}, against "
                           f"{ndcg(reference):.4f} in length buckets and {ndcg(variant):.4f} in shuffled: "
                           f"it lies {share:.0f}% of the way from shuffled back to length buckets; against length buckets -")
    assert line.count("(significant)") == 2
    assert gap_closed(runs[0], None, runs[2], "x") == ["x: not all three run yet"]
    (same,) = gap_closed(runs[0], runs[0], runs[2], "x")
    assert "the two do not differ significantly" in same and "of the way" not in same
    near = types.SimpleNamespace(test_ranks=np.array([0, 0, 1, 40] * 49 + [3, 0, 1, 40]))   # one user apart
    (small,) = gap_closed(runs[0], near, runs[2], "x")
    assert "no gap to close" in small and "of the way" not in small
    # a control outside the gap is placed beyond the run it passed, not at a share above 100% or below 0%
    (beyond,) = gap_closed(*runs[:2], types.SimpleNamespace(test_ranks=np.array([0, 0, 0, 40] * 50)), "x")
    assert "it lies beyond length buckets, on the side away from shuffled" in beyond and "%" not in beyond.split(";")[0]
    (below,) = gap_closed(*runs[:2], types.SimpleNamespace(test_ranks=np.array([9, 9, 30, 40] * 50)), "x")
    assert "it lies beyond shuffled, on the side away from length buckets" in below


def test_sweep_found_reads_each_parameters_range_with_the_shared_default():
    import pandas as pd
    from emkd_lib.report import sweep_found
    table = pd.DataFrame({"NDCG@10": [0.0800, 0.0760, 0.0840, 0.0900, None, None],
                          "status": ["best epoch 5/9", "best epoch 4/8", "best epoch 6/9", "best epoch 7/9",
                                     "not run", "not run"]},
                         index=["temperature=0.3", "temperature=0.1", "temperature = 0.5", "rampup_epochs=10",
                                "rampup_epochs=30", "dropout=0.2"])
    lines = sweep_found(table, "temperature=0.3", {"temperature": 0.3, "rampup_epochs": 20, "dropout": 0.1},
                        "Table 4")
    assert lines == [
        "Table 4, temperature over 3 values: test NDCG@10 from 0.0760 (temperature = 0.1) to 0.0840 "
        "(temperature = 0.5), a spread of 10.0% of the default's 0.0800 (temperature = 0.3)",
        "Table 4, rampup_epochs over 2 values: test NDCG@10 from 0.0800 (rampup_epochs = 20) to 0.0900 "
        "(rampup_epochs = 10), a spread of 12.5% of the default's 0.0800 (rampup_epochs = 20)",
        "Table 4: only the default run yet for dropout (0.1)"]
    # a default that scores 0 (a smoke run's HR@5) gives no relative spread, and no division by zero
    zero = table.assign(**{"NDCG@10": [0.0, 0.0, 0.01, 0.0, None, None]})
    assert sweep_found(zero, "temperature=0.3", {"temperature": 0.3}, "T") == [
        "T, temperature over 3 values: test NDCG@10 from 0.0000 (temperature = 0.3) to 0.0100 (temperature = 0.5), "
        "the default scoring 0 (temperature = 0.3)"]
    assert sweep_found(table.drop(["temperature=0.1", "temperature = 0.5"]).assign(**{"NDCG@10": 0.08}),
                       "temperature=0.3", {"rampup_epochs": 20}, "Table 4") == [
        "Table 4, rampup_epochs over 2 values: test NDCG@10 0.0800 at every value"]
    # against the paper's best: the highest value and the paired test's verdict on it
    table["p"] = [np.nan, 0.5, 0.2, 0.001, np.nan, np.nan]
    lines = sweep_found(table, "temperature=0.3", {"temperature": 0.3, "rampup_epochs": 20}, "Table 4",
                        default_is="the paper's best")
    assert lines[0].endswith("; the default is the paper's best, but temperature = 0.5 is +5.0% above it, "
                             "p = 0.200 (not significant)")
    assert lines[1].endswith("but rampup_epochs = 10 is +12.5% above it, p = 0.001 (significant)")
    highest = table.assign(**{"NDCG@10": [0.0800, 0.0700, 0.0700, 0.0700, None, None]})
    assert sweep_found(highest, "temperature=0.3", {"temperature": 0.3}, "T", default_is="the paper's best")[0].endswith(
        "; the default, the paper's best, is the highest")
    table.loc["temperature=0.3", "status"] = "not run"
    assert sweep_found(table, "temperature=0.3", {"temperature": 0.3}, "Table 4") == [
        "Table 4: the default has not been run"]


def test_ablation_gaps_found_sets_our_changes_beside_the_papers():
    import pandas as pd
    from emkd_lib.report import ablation_gaps_found
    beside = pd.DataFrame({"paper's row": ["a", "b", "c", "full"], "ours NDCG@20": [0.0450, 0.0550, np.nan, 0.0500],
                           "quoted (X Table 3)": [0.0300, 0.0360, 0.0390, 0.0400], "ratio": [1.5, 1.5, np.nan, 1.25]},
                          index=["a", "b", "c", "full"])
    assert ablation_gaps_found(beside, "full", "Table 3") == [
        "Table 3: against the full model, the paper's 2 rows change NDCG@20 by -25.0% to -10.0% (quoted), "
        "ours by -10.0% to +10.0%"]
    assert ablation_gaps_found(beside.assign(**{"ours NDCG@20": np.nan}), "full", "T") == [
        "T: the full model has not been run"]
    assert ablation_gaps_found(beside.assign(**{"ours NDCG@20": [np.nan, np.nan, np.nan, 0.05]}), "full", "T") == [
        "T: no ablation row run yet"]


def test_parameters_found_sets_each_ensemble_beside_the_best_single_model():
    from emkd_lib.report import parameters_found
    first = np.zeros(300, dtype=int)              # every user's target ranked first: NDCG@10 = 1
    second = np.ones(300, dtype=int)              # ranked second: 1 / log2(3)
    singles = {"sasrec (2 blocks)": (800, fake_run(second, method="sasrec")),
               "sasrec (4 blocks)": (900, fake_run(first, method="sasrec")),
               "bert4rec (1 block)": (700, None)}
    ensembles = {"EMKD x2": (2000, fake_run(second)), "EMKD x3": (3000, None)}
    (line,) = parameters_found(ensembles, singles, "Table 5")
    change = 100 * (1 / np.log2(3) - 1)
    assert line.startswith(f"Table 5: EMKD x2 (2,000 parameters) NDCG@10 {1 / np.log2(3):.4f}, {change:+.1f}% against "
                           "the best single model, sasrec (4 blocks) (900 parameters, 1.0000; paired Wilcoxon p = ")
    assert parameters_found(ensembles, {"x": (1, None)}, "Table 5") == ["Table 5: no single model stored yet"]


def test_provenance_table_names_the_earlier_commits_of_a_run_resumed_by_other_code():
    from emkd_lib.report import provenance_table
    same, resumed, old = fake_run([0, 1]), fake_run([0, 1], seed=1), fake_run([0, 1], seed=2)
    for run in (same, resumed, old):
        run.provenance = {**run.provenance, "machine": "cpu x2", "date": "2026-12-03"}
    same.flags = {**same.flags, "trained_by_commits": ["abc"]}
    resumed.flags = {**resumed.flags, "trained_by_commits": ["unrecorded", "abc"]}
    table = provenance_table([same, resumed, old]).set_index("seed")
    assert table.loc[0, "commit"] == "abc" and table.loc[2, "commit"] == "abc"   # old records: no flag
    assert table.loc[1, "commit"] == "abc (resumed; earlier epochs: unrecorded)"


def test_provenance_table_lists_a_run_that_backs_several_rows_once_with_all_its_labels():
    from emkd_lib.report import provenance_table
    shared, other = fake_run([0, 1]), fake_run([0, 1], seed=1)
    for run in (shared, other):
        run.provenance = {**run.provenance, "machine": "cpu x2", "date": "2026-12-03"}
    other.key = "other"
    table = provenance_table({"Table 4 / EMKD": shared, ("beauty", "emkd", 1): other, "Figure 3 / default": shared,
                              "Table 4 / w/o AP": None})
    assert list(table["run"]) == ["Table 4 / EMKD; Figure 3 / default", "beauty / emkd / 1"]
    assert list(table["key"]) == [shared.key, "other"]
    from emkd_lib.report import labelled_runs
    pairs = [*labelled_runs("Table 3", {("beauty", "emkd", 0): shared, ("beauty", "emkd", 1): other,
                                        ("beauty", "emkd", 2): None}),
             *labelled_runs("Table 4", {"w/o KD": other}, lambda row, run: row)]
    assert pairs == [("Table 3 / beauty / EMKD", shared), ("Table 3 / beauty / EMKD", other), ("Table 4 / w/o KD", other)]
    assert list(provenance_table(pairs)["run"]) == ["Table 3 / beauty / EMKD", "Table 3 / beauty / EMKD; Table 4 / w/o KD"]


def test_setup_table_shows_a_setting_that_is_none_in_some_configs_and_hides_method_settings_that_agree():
    from emkd_lib.report import setup_table
    grid = {1: profile_config("cpu", "beauty", "sasrec"), 2: profile_config("cpu", "beauty", "gru4rec"),
            3: profile_config("cpu", "toys", "sasrec", data__max_users=500, train__grad_clip=None)}
    table = setup_table(grid)
    assert list(table["max_users"]) == ["all", "all", 500]      # None is "all users", not a missing value
    assert list(table["grad_clip"]) == [5.0, 5.0, "off"]
    assert "n_layers" not in table   # GRU4Rec's own setting, the same wherever it exists


def test_sweep_points_keep_one_hyperparameter_sorted_by_value_and_skip_missing_runs():
    from emkd_lib.report import sweep_points
    run = lambda ndcg, hr: types.SimpleNamespace(test_metrics={"NDCG@10": ndcg, "HR@10": hr, "NDCG@20": ndcg * 2})
    runs = {("beauty", "tau", 1.0, 0): run(0.3, 0.5), ("beauty", "tau", 0.1, 0): run(0.1, 0.2),
            ("beauty", "mu", 0.01, 0): run(0.9, 0.9), ("beauty", "tau", 0.3, 0): None}
    assert sweep_points(runs, "tau") == [(0.1, 0.1, 0.2), (1.0, 0.3, 0.5)]
    assert sweep_points(runs, "tau", metrics=("NDCG@20",)) == [(0.1, 0.2), (1.0, 0.6)]
    assert sweep_points(runs, "lam") == []


def test_sweep_rows_name_each_point_once_and_share_the_default():
    from emkd_lib.report import sweep_rows
    default = types.SimpleNamespace(lam=0.01, tau=0.3)
    runs = {("beauty", "lam", 0.01, 0): "D", ("beauty", "lam", 0.1, 0): "L",
            ("beauty", "tau", 0.3, 0): "D", ("beauty", "tau", 1.0, 0): None}
    assert sweep_rows(runs, default, {"lam": "lambda", "tau": "tau"}) == {
        "default": "D", "lambda = 0.1": "L", "tau = 1.0": None}
    # The default is stored once, under whichever sweep trained it.
    runs[("beauty", "lam", 0.01, 0)] = None
    assert sweep_rows(runs, default, {"lam": "lambda", "tau": "tau"})["default"] == "D"
    assert sweep_rows({}, default, {})["default"] is None


def test_figure4_grid_is_the_encoder_grid_except_in_smoke():
    from emkd_lib.studies.emkd import encoder_grid, figure4_grid
    assert figure4_grid("cpu", "beauty", 0) == encoder_grid("cpu", ("beauty",), (0,))
    smoke = figure4_grid("smoke", "beauty", 0)
    assert sorted(smoke) == [("beauty", "sasrec", 1, 0), ("beauty", "sasrec", 2, 0)]
    assert {(c.train.epochs, c.data.max_users) for c in smoke.values()} == {(1, 100)}


def test_setup_tables_show_each_setting_once_by_what_it_depends_on():
    from emkd_lib.report import setup_tables
    grid = {(d, m): profile_config("cpu", d, m, **({"data__max_users": 500} if d == "toys" else {}),
                                   **({"train__grad_clip": 1.0} if (d, m) == ("toys", "sasrec") else {}))
            for d in ("beauty", "toys") for m in ("sasrec", "bert4rec")}
    parts = setup_tables(grid)
    per_dataset = parts["settings per dataset (every method)"]
    assert list(per_dataset.index) == ["beauty", "toys"] and list(per_dataset["users"]) == ["all", 500]
    assert list(per_dataset["max length"]) == [15, 20]               # readable labels
    per_method = parts["settings per method (every dataset)"]
    assert list(per_method.index) == ["SASRec", "BERT4Rec"] and list(per_method["heads"]) == [1, 2]
    both = parts["settings per dataset and method"]
    assert list(both.columns) == ["grad clip"] and both.loc[("toys", "SASRec"), "grad clip"] == 1.0
    shared = parts["settings shared by every run"]
    assert shared.loc["dropout", "every run"] == grid[("beauty", "sasrec")].encoder_config.dropout
    assert shared.loc["min steps", "every run"] == grid[("beauty", "sasrec")].train.min_steps
    assert not {"grad clip", "max length", "heads", "activation checkpointing"} & set(shared.index)
    shown = [c for caption, df in parts.items() for c in (df.index if caption == "settings shared by every run"
                                                          else df.columns)]
    assert len(shown) == len(set(shown)), "no setting is shown twice"


def test_pending_line_counts_stored_runs_and_names_the_missing_ones_by_method():
    from emkd_lib.report import pending_line, pending_sentence
    run = object()
    assert pending_line({("beauty", "emkd"): run}) == "the one run is stored"
    assert pending_line({"a": run, "b": object()}) == "all 2 runs are stored"
    line = pending_line({("beauty", "emkd"): run, ("toys", "emkd"): None, ("ml-1m", "gru4rec", 2): None,
                         "w/o AP": None})
    assert line == '1 of 4 runs is stored; still to train: toys / EMKD, ml-1m / GRU4Rec / 2, "w/o AP"'
    shared = types.SimpleNamespace(key="default")
    assert pending_line({("tau", 0.3): shared, ("mu", 0.001): types.SimpleNamespace(key="default"),
                         ("tau", 1.0): types.SimpleNamespace(key="other")}) == "all 2 runs are stored"
    # a grid named, its missing runs named by the caller, and the sentence form
    assert pending_line({"a": run, ("caser", 2): None}, "of Figure 4", name=lambda k: f"{k[0]} x{k[1]}") == (
        "1 of 2 runs of Figure 4 is stored; still to train: caser x2")
    assert pending_sentence({"a": run, "b": object()}, "of Table 3") == "All 2 runs of Table 3 are in the result store."
    assert pending_sentence({"a": run, "b": None, "c": None}) == (
        '1 of 3 runs is in the result store; still to train: "b", "c".')
    assert pending_sentence({"a": run, "b": object(), "c is stored": None}) == (
        '2 of 3 runs are in the result store; still to train: "c is stored".')


def test_settings_apart_says_each_differing_setting_once_with_where_it_holds():
    from emkd_lib.report import settings_apart
    index = pd.MultiIndex.from_tuples([("beauty", "SASRec", "NDCG@10"), ("beauty", "EMKD", "NDCG@10"),
                                       ("toys", "SASRec", "NDCG@10"), ("ml-1m", "SASRec", "NDCG@10"),
                                       ("ml-1m", "EMKD", "NDCG@10")], names=["dataset", "method", "metric"])
    part = pd.DataFrame({"ours": [0.1, 0.2, 0.3, 0.4, 0.5],
                         "setting differs": ["d 64", "d 64", "d 64", "d 64; users 2000", ""]}, index=index)
    table, lines = settings_apart(part)
    assert list(table.columns) == ["ours"] and len(table) == 5
    assert lines == ["beauty, toys: d 64", "ml-1m (SASRec): d 64; users 2000", "ml-1m (EMKD): the paper’s settings"]
    assert settings_apart(part.drop(columns="setting differs"))[1] == []


def test_quoted_claim_table_holds_the_quoted_csv_cells_in_the_order_asked():
    from emkd_lib.paper_tables import quoted_table
    from emkd_lib.report import quoted_claim_table
    table = quoted_claim_table("EMKD", 3, ["EMKD", "SASRec", "No Such Method"], "NDCG@10", ["toys", "beauty", "nowhere"])
    assert list(table.index) == ["EMKD", "SASRec"] and list(table.columns) == ["toys", "beauty"]
    q = quoted_table("EMKD", 3)
    for method in table.index:
        for dataset in table.columns:
            (value,) = q[(q["method"] == method) & (q["dataset"] == dataset) & (q["metric"] == "NDCG@10")]["value"]
            assert table.loc[method, dataset] == value


def test_sweep_rows_take_the_defaults_as_a_mapping_too():
    from emkd_lib.report import sweep_rows
    runs = {("beauty", "alpha", 0.1, 0): "default run", ("beauty", "alpha", 1.0, 0): "alpha 1",
            ("beauty", "lam", 0.1, 0): "default run", ("beauty", "lam", 0.0, 0): None}
    rows = sweep_rows(runs, {"alpha": 0.1, "lam": 0.1}, {"alpha": "α", "lam": "λ"})
    assert rows == {"default": "default run", "α = 1.0": "alpha 1", "λ = 0.0": None}
    assert rows == sweep_rows(runs, types.SimpleNamespace(alpha=0.1, lam=0.1), {"alpha": "α", "lam": "λ"})
    # A control that is not one of the swept parameters (ODMT's "fusion = independent") is a row of its own.
    runs[("beauty", "fusion", "independent", 0)] = "control"
    assert sweep_rows(runs, {"alpha": 0.1, "lam": 0.1}, {"alpha": "α", "lam": "λ", "fusion": "fusion"}) == \
        {**rows, "fusion = independent": "control"}


def test_later_stops_found_bounds_a_still_rising_run_by_the_longer_runs_of_its_method():
    """EMKD on Beauty stopped still rising, 20% under SASRec; its other seeds
    and variants trained longer. The line names the longer runs only, takes
    the one with the highest validation NDCG@10 among them (not the highest
    test NDCG@10) and tests it against the rival."""
    from emkd_lib.report import later_stops_found

    def run(ranks, values, method="emkd", seed=0):
        r = fake_run(ranks, method, seed=seed, history_len=len(values), best=int(np.argmax(values)) + 1,
                     stopped_by="patience")
        r.history = [{"epoch": e + 1, "valid_ndcg10": v} for e, v in enumerate(values)]
        return r

    rising = [0.02 + 0.001 * e for e in range(30)]           # best at its last epoch: still rising
    peaked = [0.03, 0.05, 0.06, 0.061, 0.06, 0.059, 0.06, 0.058] * 5
    users = np.arange(400) % 8                               # ranks 0-7: every user in the top 10
    sasrec = run(users, peaked, method="sasrec")
    stopped, worse, better = run(users + 1, rising), run(users + 3, peaked, seed=1), run(users + 2, peaked, seed=2)
    shorter = run(users, peaked[:20], seed=3)               # the best of all, but stopped sooner: not a later stop
    # validation picks seed 2, though seed 1 is higher on the test split
    worse.test_metrics = {**worse.test_metrics, "NDCG@10": 1.0}
    better.valid_metrics, worse.valid_metrics = {"NDCG@10": 0.06}, {"NDCG@10": 0.05}
    shorter.valid_metrics = {"NDCG@10": 0.09}
    (line,) = later_stops_found(stopped, {"seed 1": worse, "seed 2": better, "seed 3": shorter, "seed 4": None},
                                sasrec, "beauty / EMKD")
    ndcg = {shift: np.mean(1 / np.log2(users + shift + 2)) for shift in (0, 1, 2)}   # brute force
    assert line.startswith(f"beauty / EMKD stopped still rising at epoch 30, {100 * (ndcg[1] / ndcg[0] - 1):+.1f}% "
                           f"against SASRec in test NDCG@10 ({ndcg[1]:.4f} vs {ndcg[0]:.4f})")
    assert ("2 other runs on the same data (its other seeds, or variants with one part switched) trained longer "
            "(stopping at epoch 40: seed 1, seed 2)") in line
    assert (f"the one with the highest validation NDCG@10 among them (seed 2, best epoch 4 of 40) has test "
            f"NDCG@10 {ndcg[2]:.4f}, {100 * (ndcg[2] / ndcg[0] - 1):+.1f}% against SASRec, p = ") in line
    assert line.endswith("(significant)")                    # every user ranks the rival's item higher
    # nothing to say of a run that peaked, or without the rival; a run with no longer sibling says so
    assert later_stops_found(run(users, peaked), {"seed 1": worse}, sasrec, "x") == []
    assert later_stops_found(stopped, {"seed 1": worse}, None, "x") == []
    assert later_stops_found(stopped, {"seed 3": shorter}, sasrec, "x") == [
        "x stopped still rising at epoch 30; no other run of it trained longer"]


def test_claim_found_counts_the_datasets_where_the_reference_beats_every_other_method():
    """Beauty: the reference is significantly above both others; toys: above
    GRU4Rec but below SASRec, the strongest there; ml-1m not stored."""
    from emkd_lib.report import claim_found
    rows = [("beauty", "SASRec", 0.050, 0.040, 1e-5), ("beauty", "GRU4Rec", 0.050, 0.030, 1e-9),
            ("toys", "SASRec", 0.030, 0.045, 1e-6), ("toys", "GRU4Rec", 0.030, 0.020, 0.002)]
    sig = pd.DataFrame([{"dataset": d, "reference": "EMKD", "other": o, "reference NDCG@10": a, "other NDCG@10": b,
                         "change %": 100 * (a / b - 1), "p (Wilcoxon)": p} for d, o, a, b, p in rows])
    line = claim_found(sig, ["beauty", "toys", "ml-1m"], "EMKD")
    assert line == ("the paper's claim, EMKD above every other method: it holds on 1 of the 2 datasets where EMKD is "
                    "stored (not yet trained on ml-1m); EMKD in test NDCG@10 against the strongest other method on "
                    "each: beauty SASRec +25.0% (p = 1.0e-05, significant), toys SASRec -33.3% (p = 1.0e-06, significant)")
    # a dataset where another method is not stored yet: its verdict is over the methods stored
    assert claim_found(sig, ["toys"], "EMKD", not_stored={"toys": ["ICLRec"], "beauty": []}).endswith(
        "toys SASRec -33.3% (p = 1.0e-06, significant; ICLRec not stored there yet)")
    from emkd_lib.report import not_stored_by_dataset
    grid = {(d, m, 0): profile_config("cpu", d, m) for d in ("beauty", "toys") for m in ("sasrec", "iclrec")}
    runs = {**dict.fromkeys(grid), ("beauty", "sasrec", 0): object(), ("beauty", "iclrec", 0): object()}
    assert not_stored_by_dataset(runs, grid) == {"toys": ["SASRec", "ICLRec"]}
    # a win that is not significant does not count
    sig.loc[1, "p (Wilcoxon)"] = 0.2
    assert "it holds on 0 of the 2 datasets" in claim_found(sig, ["beauty", "toys"], "EMKD")
    assert claim_found(sig.iloc[:0], ["beauty"], "EMKD").startswith("the paper's claim, EMKD above every other "
                                                                     "method: it holds on 0 of the 0 datasets")


def test_shared_stop_found_names_rows_that_patience_ended_at_one_common_peak():
    """Three rows peak at epoch 4 (a bump every row shares) and stop at 6;
    one trains past it; one peaks elsewhere. Hand-computed steps."""
    from emkd_lib.report import shared_stop_found

    def run(values, stopped_by="patience"):
        r = fake_run(np.arange(10), history_len=len(values), best=int(np.argmax(values)) + 1, stopped_by=stopped_by)
        r.history = [{"epoch": e + 1, "valid_ndcg10": v} for e, v in enumerate(values)]
        return r

    bump = [0.10, 0.20, 0.30, 0.40, 0.36, 0.35]
    rows = {"a": run(bump), "b": run([0.10, 0.20, 0.30, 0.50, 0.40, 0.40]), "c": run(bump),
            "longer": run(bump + [0.45, 0.44, 0.44]), "other": run([0.1, 0.3, 0.2, 0.2, 0.2]), "missing": None}
    (line,) = shared_stop_found(rows, "Table 4")
    into = np.mean([100 * (0.40 / 0.30 - 1), 100 * (0.50 / 0.30 - 1), 100 * (0.40 / 0.30 - 1)])
    out = np.mean([-10.0, -20.0, -10.0])
    assert line.startswith(f"Table 4: 3 of 5 rows select epoch 4 and stop at epoch 6; their validation NDCG@10 "
                           f"steps {into:+.1f}% into epoch 4 and {out:+.1f}% out of it")
    assert line.endswith("; 1 row trained past it (longer: best epoch 7 of 9)")
    # fewer rows than asked, or stopped by the cap: no line
    assert shared_stop_found(rows, "t", min_rows=4) == []
    assert shared_stop_found({k: run(bump, "epoch cap") for k in "abc"}, "t") == []


def test_per_network_parameters_found_divides_the_quoted_ensemble_by_its_networks():
    """The paper's EMKD(x3) on Beauty against its SASRec-2 Layers, read from
    the quoted CSV; ours from the counts given."""
    from emkd_lib.paper_tables import quoted_table
    from emkd_lib.report import per_network_parameters_found
    q = quoted_table("EMKD", 5, dataset="beauty", metric="params_M").set_index("method")["value"]
    (line,) = per_network_parameters_found(("EMKD x3", 300), ("SASRec", 50), 3, "beauty",
                                           ("EMKD(x3)", "SASRec-2 Layers"))
    assert line == (f"beauty: one of the 3 networks of the paper's EMKD(x3) holds {q['EMKD(x3)'] / 3:.2f}M parameters, "
                    f"{q['EMKD(x3)'] / 3 / q['SASRec-2 Layers']:.2f} times its SASRec-2 Layers "
                    f"({q['SASRec-2 Layers']:.2f}M, quoted from EMKD Table 5); one of ours (EMKD x3) holds 100, "
                    f"2.00 times our SASRec (50): as if the paper's network has no output matrix of its own and "
                    f"ours has one")
    # the reading turns at OWN_OUTPUT_RATIO, halfway between 1 and 2
    (line,) = per_network_parameters_found(("EMKD x3", 3 * 74), ("SASRec", 50), 3, "beauty",
                                           ("EMKD(x3)", "SASRec-2 Layers"))
    assert line.endswith("1.48 times our SASRec (50): as if both networks have no output matrix of their own")
    (line,) = per_network_parameters_found(("EMKD x3", 3 * 75), ("SASRec", 50), 3, "beauty",
                                           ("EMKD(x3)", "SASRec-2 Layers"))
    assert line.endswith("1.50 times our SASRec (50): as if the paper's network has no output matrix of its own "
                         "and ours has one")
    assert per_network_parameters_found(("x", 3), ("y", 1), 3, "beauty", ("EMKD(x3)", "No Such Row")) == []


def test_proposed_against_baselines_compares_median_ratios_within_each_table():
    from emkd_lib.report import proposed_against_baselines
    rows = [("EMKD Table 3", "beauty", "EMKD", "NDCG@10", 0.6), ("EMKD Table 3", "toys", "EMKD", "NDCG@10", 0.7),
            ("EMKD Table 3", "beauty", "SASRec", "NDCG@10", 1.7), ("EMKD Table 3", "beauty", "GRU4Rec", "NDCG@10", 2.0),
            ("EMKD Table 3", "toys", "SASRec", "NDCG@10", np.nan),
            ("S4Rec Table 2", "beauty", "S4Rec", "NDCG@20", 1.2), ("S4Rec Table 2", "beauty", "SASRec", "NDCG@20", 1.1)]
    card = pd.DataFrame(rows, columns=["source", "dataset", "method", "metric", "ratio"]).set_index(
        ["source", "dataset", "method", "metric"])
    from emkd_lib.report import scorecard
    assert proposed_against_baselines(scorecard(pd.DataFrame()), {"EMKD Table 3": "EMKD"}) == []
    lines = proposed_against_baselines(card, {"EMKD Table 3": "EMKD", "S4Rec Table 2": "S4Rec", "Nowhere": "X"})
    assert lines == ["EMKD Table 3: ours / the paper's value has median 0.65 for EMKD (2 cells) against 1.85 for the "
                     "other methods (2 cells): the paper's margin over its baselines shrinks here",
                     "S4Rec Table 2: ours / the paper's value has median 1.20 for S4Rec (1 cell) against 1.10 for the "
                     "other methods (1 cell): the paper's margin over its baselines holds or grows here"]


def test_ensemble_gains_beside_paper_reads_the_quoted_gain_of_each_method():
    from emkd_lib.paper_tables import quoted_table
    from emkd_lib.report import ensemble_gains_beside_paper, ensemble_pattern_found
    gains = pd.DataFrame({"dataset": ["beauty", "beauty"], "method": ["GRU4Rec", "SASRec"],
                          "gain over members' mean %": [13.0, 5.4]}).set_index(["dataset", "method"])
    beside = ensemble_gains_beside_paper(gains)
    q = quoted_table("EMKD", 1, dataset="beauty", metric="NDCG@10").set_index("method")["value"]
    quoted = 100 * (q["SASRec Ensemble(2x)"] / q["SASRec"] - 1)
    assert beside.loc[("beauty", "SASRec"), "quoted gain % (EMKD Table 1)"] == pytest.approx(quoted)
    (line,) = ensemble_pattern_found(beside)
    theirs = beside["quoted gain % (EMKD Table 1)"].idxmax()[1]
    assert theirs == "SASRec"
    assert line.startswith(f"beauty: the ensemble of two gains most for SASRec in the paper (+{quoted:.1f}%, quoted) "
                           f"but for another method here, GRU4Rec (+13.0%); each method's gain here against the "
                           f"paper's: GRU4Rec +13.0% against ")
    same = beside.assign(**{"ours gain %": [5.4, 13.0]})
    (line,) = ensemble_pattern_found(same)
    assert line.startswith(f"beauty: the ensemble of two gains most for SASRec both in the paper (+{quoted:.1f}%, "
                           f"quoted) and here (+13.0%)")


def test_ordering_found_counts_the_pairs_of_methods_in_the_same_order():
    from emkd_lib.report import ordering_found
    rows = [("beauty", "A", "NDCG@10", 0.05, 0.03), ("beauty", "B", "NDCG@10", 0.04, 0.04),
            ("beauty", "C", "NDCG@10", 0.03, 0.02), ("beauty", "A", "HR@10", 0.9, 0.1),
            ("toys", "A", "NDCG@10", 0.05, np.nan)]
    beside = pd.DataFrame(rows, columns=["dataset", "method", "metric", "ours", "quoted (X Table 3)"]).set_index(
        ["dataset", "method", "metric"])
    assert ordering_found(pd.DataFrame({"status": ["no run yet"]})) == []
    # pairs: A-B disagree (ours A > B, paper B > A), A-C agree, B-C agree
    assert ordering_found(beside) == ["beauty: by NDCG@10 the paper orders B > A > C (quoted), ours A > B > C: "
                                      "2 of 3 pairs of methods in the same order"]


def test_equal_time_found_places_the_reference_at_the_common_time():
    from emkd_lib.report import equal_time_found
    table = pd.DataFrame({"valid NDCG@10 within 1300 s": [0.0601, 0.0216], "best valid NDCG@10": [0.0602, 0.0512],
                          "training (s, total)": [1857.5, 4636.6]}, index=["SASRec", "EMKD"])
    assert equal_time_found(table, "EMKD", "beauty") == [
        "beauty: within 1300 s, the training time every run reached, EMKD had reached validation NDCG@10 0.0216, "
        "42% of its best (0.0512; the run trained 4637 s in all); the highest then was SASRec's 0.0601"]
    assert equal_time_found(table, "BERT4Rec", "beauty") == []


def test_seed_scale_found_reads_a_table_against_its_reference_seeds():
    from emkd_lib.report import seed_scale_found
    table = pd.DataFrame({"NDCG@10": [0.0750, 0.0760, 0.0800, 0.0682, np.nan]},
                         index=["default", "a", "b", "c", "not run"])
    seeds = [types.SimpleNamespace(test_metrics={"NDCG@10": v}) for v in (0.0750, 0.0822, 0.0806)] + [None]
    std = np.std([0.0750, 0.0822, 0.0806], ddof=1)             # 0.0038
    assert seed_scale_found(table, "default", seeds, "Table 3") == [
        f"Table 3: 1 of 3 rows lie within one seed standard deviation ({std:.4f}) of the reference's 0.0750; over 3 "
        "seeds the reference scores 0.0750 to 0.0822, and the table's run is the lowest of them"]
    assert seed_scale_found(table, "default", seeds[:1], "T") == []


def test_claim_found_says_no_relative_change_against_a_method_that_scores_zero():
    from emkd_lib.report import claim_found
    sig = pd.DataFrame([{"dataset": "beauty", "reference": "EMKD", "other": "Pop", "reference NDCG@10": 0.05,
                         "other NDCG@10": 0.0, "change %": float("nan"), "p (Wilcoxon)": 1e-5}])
    assert claim_found(sig, ["beauty"], "EMKD").endswith("beauty Pop no relative change (Pop scores 0) "
                                                         "(p = 1.0e-05, significant)")


def test_scale_found_names_where_the_profiles_emkd_is_smaller_than_the_papers():
    from emkd_lib.studies.emkd import SENSITIVITY_EPOCHS, scale_found
    cpu, paper = profile_config("cpu", "beauty", "emkd"), profile_config("paper", "beauty", "emkd")
    cpu_ml, paper_ml = profile_config("cpu", "ml-1m", "emkd"), profile_config("paper", "ml-1m", "emkd")
    assert cpu.encoder_config.n_heads == paper.encoder_config.n_heads      # only ML-1M's heads differ
    assert cpu_ml.encoder_config.n_heads != paper_ml.encoder_config.n_heads
    (line,) = scale_found("cpu", ("beauty", "ml-1m"))
    assert (f"(hidden size d = {cpu.encoder_config.hidden} against {paper.encoder_config.hidden}; "
            f"attention heads = {cpu_ml.encoder_config.n_heads} against {paper_ml.encoder_config.n_heads} "
            f"on ml-1m; masked views M = {cpu.params.n_views} against {paper.params.n_views})") in line
    assert "a smaller model than the paper profile's, which takes the public code's settings" in line
    assert f"trains each point for {SENSITIVITY_EPOCHS['cpu']} epochs" in line
    assert "attention heads" not in scale_found("cpu", ("beauty",))[0]
    assert scale_found("paper") == []


def test_convergence_found_counts_training_seconds_and_epochs_to_each_selected_epoch():
    from emkd_lib.studies.emkd import convergence_found, seconds_to_best

    def run(best, seconds, valid, stopped_by="patience"):
        history = [{"epoch": e + 1, "train_seconds": s, "valid_ndcg10": v}
                   for e, (s, v) in enumerate(zip(seconds, valid))]
        return types.SimpleNamespace(best_epoch=best, history=history, flags={"stopped_by": stopped_by},
                                     config=types.SimpleNamespace(train=types.SimpleNamespace(epochs=100)))
    emkd = run(2, [10.0, 30.0, 50.0], [0.01, 0.03, 0.02])      # selected epoch 2: 40 s
    duorec = run(4, [5.0] * 8, [0.01, 0.02, 0.03, 0.04, 0.035, 0.03, 0.03, 0.03])  # selected epoch 4: 20 s
    assert seconds_to_best(emkd) == 40.0 and seconds_to_best(duorec) == 20.0
    (line,) = convergence_found({"EMKD": emkd, "DuoRec": duorec}, "EMKD", "DuoRec", "beauty")
    assert line == ("beauty: EMKD reached its selected epoch (2, validation NDCG@10 0.0300) after 40 s of training, "
                    "DuoRec its own (4, 0.0400) after 20 s: EMKD took 2.00 times DuoRec's time and 0.50 times its "
                    "epochs, where the paper's Figure 5 calls their convergence speed comparable (quoted)")
    # a dataset the paper's figure does not plot: the caption is not quoted beside it
    (line,) = convergence_found({"EMKD": emkd, "DuoRec": duorec}, "EMKD", "DuoRec", "ml-1m")
    assert line.endswith("0.50 times its epochs (the paper's Figure 5 plots beauty and toys only: nothing to set "
                         "beside on ml-1m)")
    assert convergence_found({"EMKD": emkd, "DuoRec": None}, "EMKD", "DuoRec", "d") == []
    # a run whose best is its last epoch, at the cap, ended still rising: the line says so
    capped = run(3, [5.0] * 3, [0.01, 0.02, 0.03], stopped_by="epoch cap")
    capped.config.train.epochs = 3
    (both,) = convergence_found({"EMKD": capped, "DuoRec": capped}, "EMKD", "DuoRec", "d")
    assert "ended still rising, so both times are lower bounds on the time to converge" in both
    (line,) = convergence_found({"EMKD": emkd, "DuoRec": capped}, "EMKD", "DuoRec", "d")
    assert line.endswith("; DuoRec's run (stopped by its epoch cap) ended still rising, so its time is a lower bound "
                         "on the time to converge, and the ratios are not yet the paper's comparison")


@helpers.needs_dataset("beauty")
def test_figure5_peers_are_looked_up_on_emkds_windows_and_refused_on_others(monkeypatch, empty_store):
    from emkd_lib.studies import emkd as study
    from emkd_lib.studies import s4rec
    # nothing stored: every peer is None, and nothing is trained
    assert study.figure5_peers("cpu", ["beauty", "ml-100k-odmt"]) == {("beauty", "duorec"): None}
    other_windows = profile_config("cpu", "beauty", "duorec").replace(data__max_len=50)
    monkeypatch.setattr(s4rec, "with_table2_patience_checks",
                        lambda runs, *a: ({k: types.SimpleNamespace(config=other_windows) for k in runs}, {}, []))
    with pytest.raises(ValueError, match="beauty / duorec: its windows or evaluation differ from EMKD's"):
        study.figure5_peers("cpu", ["beauty"])


@helpers.needs_dataset("beauty")
def test_fidelity_runs_list_every_row_and_look_up_an_empty_store(tmp_path, monkeypatch):
    """Chapter 03's fidelity table has one entry per row of FIDELITY, its
    reference first, and an empty store gives None for each (nothing trains)."""
    from emkd_lib.studies.emkd import FIDELITY, FIDELITY_REFERENCE, fidelity_runs
    monkeypatch.setenv("EMKD_RESULTS_DIR", str(tmp_path / "results"))
    runs = fidelity_runs("cpu", "beauty", 0)
    assert list(runs) == list(FIDELITY) and next(iter(runs)) == FIDELITY_REFERENCE == "printed equations (default)"
    assert set(runs.values()) == {None}


@helpers.needs_dataset("beauty")
def test_fidelity_runs_add_the_reference_in_fp32_where_a_row_was_read_in_fp32(tmp_path, monkeypatch):
    """A row stored only in fp32 (a CPU without bf16 units) brings the bf16
    reference's fp32 twin into the table as a last row; without such a row,
    the table is as before."""
    from emkd_lib.studies.emkd import (FALLBACK_REFERENCE, FIDELITY, FIDELITY_REFERENCE, at_precision,
                                       fidelity_grid, fidelity_runs)
    monkeypatch.setenv("EMKD_RESULTS_DIR", str(tmp_path / "results"))
    grid = fidelity_grid("cpu", ("beauty",), (0,))
    reference, row = grid[("beauty", FIDELITY_REFERENCE, 0)], list(FIDELITY)[-1]
    helpers.store_stub_run(reference)
    helpers.store_stub_run(at_precision(reference, "fp32"))
    assert list(fidelity_runs("cpu", "beauty", 0)) == list(FIDELITY)
    helpers.store_stub_run(at_precision(grid[("beauty", row, 0)], "fp32"))
    runs = fidelity_runs("cpu", "beauty", 0)
    assert list(runs) == [*FIDELITY, FALLBACK_REFERENCE] and FALLBACK_REFERENCE == "printed equations (default) in fp32"
    assert runs[FALLBACK_REFERENCE].config == at_precision(reference, "fp32") != reference
    assert runs[row].config.train.precision == "fp32" and runs[FIDELITY_REFERENCE].config == reference


def test_ensemble_provenance_names_members_seeds_and_skips_missing():
    from emkd_lib.report import ensemble_provenance_table
    config = types.SimpleNamespace(dataset="toys", method="sasrec")
    members = [types.SimpleNamespace(seed=1), types.SimpleNamespace(seed=2)]
    ensemble = types.SimpleNamespace(config=config, members=members, eval_seconds=12.345,
                                     provenance={"commit": "abc", "machine": "m", "date": "d"})
    table = ensemble_provenance_table([ensemble, None])
    assert table.to_dict("records") == [{"dataset": "toys", "method": "SASRec", "seeds": "1, 2", "evaluation (s)": 12.3,
                                         "commit": "abc", "machine": "m", "date": "d"}]
    assert ensemble_provenance_table([None]).empty
