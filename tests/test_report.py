"""Tables of the EMKD chapters, on hand-made results with known answers.

Ranks are 0-based (rank 0 = first place, NDCG = 1 / log2(rank + 2))."""
import dataclasses
import types

import numpy as np
import pytest

from emkd_lib import experiments
from emkd_lib.evaluation import metrics_from_ranks
from emkd_lib.experiments import (EMKD_ABLATIONS, EMKD_ABLATION_PRIORITY, EMKD_SENSITIVITY, SENSITIVITY_EPOCHS,
                                  emkd_ablation_grid, emkd_depth_grid, emkd_sensitivity_grid, emkd_sensitivity_points, emkd_variant,
                                  profile_config)
from emkd_lib.methods import EMKDParams
from emkd_lib.report import (ablation_table, ensemble_gain_table, mean_differences_over_seeds, per_seed_table,
                             significance_table, significant_changes)


def fake_run(ranks, method="emkd", dataset="beauty", seed=0, epochs=20, history_len=20, best=10):
    ranks = np.asarray(ranks)
    config = profile_config("cpu", dataset, method, seed=seed, epochs=epochs)
    return types.SimpleNamespace(config=config, test_ranks=ranks, test_metrics=metrics_from_ranks(ranks),
                                 history=[{}] * history_len, best_epoch=best)


def test_ablation_table_changes_and_paired_test_against_the_reference():
    rng = np.random.default_rng(0)
    good = rng.integers(1, 5, 400)           # NDCG@10 well above zero
    bad = good + 20                          # every user worse: out of the top 10
    runs = {"EMKD": fake_run(good), "w/o KD": fake_run(bad), "w/o ICL": fake_run(good), "x4": None}
    table = ablation_table(runs, reference="EMKD")
    assert table.loc["w/o KD", "NDCG@10"] == 0.0
    assert table.loc["w/o KD", "NDCG@10 change %"] == pytest.approx(-100.0)
    assert table.loc["w/o KD", "p vs EMKD"] < 1e-10
    assert table.loc["w/o ICL", "NDCG@10 change %"] == pytest.approx(0.0)
    assert table.loc["x4", "status"] == "not run"
    assert table.loc["EMKD", "status"] == "best epoch 10/20 (cap)"
    assert significant_changes(table, "EMKD") == "1 of 2 rows differ from EMKD at p < 0.01: w/o KD (-100.0%)"
    assert significant_changes(ablation_table({"EMKD": fake_run(good), "w/o ICL": fake_run(good)}, "EMKD"), "EMKD") \
        == "no row differs from EMKD at p < 0.01 (1 tested)"
    assert significant_changes(ablation_table({"EMKD": None, "x2": fake_run(good)}, "EMKD"), "EMKD") == \
        "no comparison: EMKD has not been run"
    assert significant_changes(ablation_table({"EMKD": fake_run(good), "x2": None}, "EMKD"), "EMKD") == \
        "no comparison: no other row has been run beside EMKD"


def test_ensemble_gain_table_means_seeds_and_tests_against_the_better_member():
    a, b, c = fake_run([0] * 50 + [10] * 50, "sasrec", seed=0), fake_run([1] * 100, "sasrec", seed=1), \
        fake_run([10] * 100, "sasrec", seed=2)
    ens = types.SimpleNamespace(members=[b.config, c.config], test_ranks=np.zeros(100, dtype=int),
                                test_metrics=metrics_from_ranks(np.zeros(100, dtype=int)))
    table = ensemble_gain_table({("beauty", "sasrec"): [a, b, c]}, {("beauty", "sasrec"): ens})
    row = table.loc[("beauty", "sasrec")]
    single = [0.5, 1 / np.log2(3), 0.0]
    assert row["single NDCG@10 (mean)"] == pytest.approx(np.mean(single))
    assert row["single std"] == pytest.approx(np.std(single, ddof=1))
    assert row["ensemble x2 NDCG@10"] == 1.0
    assert row["gain over mean single %"] == pytest.approx(100 * (1 / np.mean(single) - 1))
    assert row["p vs better member (Wilcoxon)"] < 1e-10  # against seed 1: every user gains


def test_per_seed_table_keeps_each_seed_and_compares_means_with_the_pooled_std():
    ndcg = {0: 1.0, 1: 0.5, 2: 1 / np.log2(3), 30: 0.0}  # NDCG@10 of a user at rank r
    runs = {"EMKD": {0: fake_run([0] * 10), 1: fake_run([1] * 10, seed=1), 2: fake_run([2] * 10, seed=2)},
            "far": {0: fake_run([30] * 10), 1: fake_run([30] * 10, seed=1), 2: None},
            "near": {0: fake_run([1] * 10), 1: fake_run([0] * 10, seed=1), 2: fake_run([2] * 10, seed=2)},
            "one seed": {0: fake_run([0] * 10), 1: None, 2: None}}
    table = per_seed_table(runs)
    assert list(table.columns) == ["seeds run", "seed 0", "seed 1", "seed 2", "mean", "std"]
    emkd = [ndcg[0], ndcg[1], ndcg[2]]
    assert table.loc["EMKD", "mean"] == pytest.approx(np.mean(emkd))
    assert table.loc["EMKD", "std"] == pytest.approx(np.std(emkd, ddof=1))
    assert table.loc["far", "seeds run"] == [0, 1] and np.isnan(table.loc["far", "seed 2"])
    assert table.loc["far", "std"] == 0.0
    assert np.isnan(table.loc["one seed", "std"])
    pooled_far = np.sqrt(np.var(emkd, ddof=1) / 2)
    assert mean_differences_over_seeds(table, "EMKD") == [
        f"far minus EMKD, means over seeds: {-np.mean(emkd):+.4f} (more than one pooled seed std, {pooled_far:.4f})",
        f"near minus EMKD, means over seeds: +0.0000 (within one pooled seed std, {np.std(emkd, ddof=1):.4f})"]


def test_significance_table_with_a_reference_compares_it_with_every_other_method():
    runs = [fake_run([0] * 60, "emkd"), fake_run([2] * 60, "sasrec"), fake_run([30] * 60, "bert4rec")]
    table = significance_table(runs, reference="emkd")
    assert list(table["other"]) == ["sasrec", "bert4rec"]
    assert (table["reference"] == "emkd").all()
    assert table.loc[table.other == "sasrec", "change %"].item() == pytest.approx(100 * (1 / 0.5 - 1))
    assert significance_table(runs[1:], reference="emkd").empty


def test_ablation_grid_rows_switch_exactly_their_terms():
    grid = emkd_ablation_grid("cpu")
    assert len(grid) == len(EMKD_ABLATIONS) == len(EMKD_ABLATION_PRIORITY)
    assert grid[0] == profile_config("cpu", "beauty", "emkd")  # the reference row is the main run
    base = dict(grid[0].params)
    for row, config in zip(EMKD_ABLATION_PRIORITY, grid):
        changed = {k: v for k, v in dict(config.params).items() if base[k] != v}
        assert changed == EMKD_ABLATIONS[row]
        assert (config.hidden, config.epochs, config.max_users) == (grid[0].hidden, grid[0].epochs, None)


def test_sensitivity_grid_starts_at_the_default_and_moves_one_parameter():
    base = EMKDParams.from_params(emkd_variant("cpu", "beauty").params)
    grid = emkd_sensitivity_grid("cpu")
    assert len(grid) == 1 + sum(len([v for v in vs if v != getattr(base, k)]) for k, vs in EMKD_SENSITIVITY.items())
    assert grid[0] == dataclasses.replace(emkd_variant("cpu", "beauty"), epochs=SENSITIVITY_EPOCHS["cpu"])
    for config in grid[1:]:
        params = EMKDParams.from_params(config.params)
        moved = [k for k in EMKD_SENSITIVITY if getattr(params, k) != getattr(base, k)]
        assert len(moved) == 1
    assert {(c.epochs, c.max_users) for c in grid} == {(SENSITIVITY_EPOCHS["cpu"], None)}
    assert len({c.key() for c in grid}) == len(grid)
    assert {c.epochs for c in emkd_sensitivity_grid("paper")} == {emkd_variant("paper", "beauty").epochs}
    assert {c.epochs for c in emkd_sensitivity_grid("cpu", epochs=2)} == {2}



def test_sensitivity_points_cover_every_value_and_share_the_default():
    base = EMKDParams.from_params(emkd_variant("cpu", "beauty").params)
    points = emkd_sensitivity_points("cpu", "beauty")
    assert set(points) == {(k, v) for k, vs in EMKD_SENSITIVITY.items() for v in vs}
    for (name, value), config in points.items():
        assert getattr(EMKDParams.from_params(config.params), name) == value
        assert config.epochs == SENSITIVITY_EPOCHS["cpu"]
    defaults = {points[(k, getattr(base, k))].key() for k in EMKD_SENSITIVITY}
    assert len(defaults) == 1
    assert {c.key() for c in points.values()} == {c.key() for c in emkd_sensitivity_grid("cpu")}

def test_unknown_variant_param_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown emkd params \['lambda'\]"):
        emkd_variant("cpu", "beauty", **{"lambda": 0.1})
    with pytest.raises(ValueError, match="n_networks must be"):
        emkd_variant("cpu", "beauty", n_networks=0)


def test_depth_grid_changes_only_the_number_of_blocks():
    grid = emkd_depth_grid("cpu")
    assert [(c.method, c.n_blocks) for c in grid] == [(m, b) for m in ("sasrec", "bert4rec") for b in (3, 4, 1)]
    for config in grid:
        base = profile_config("cpu", "beauty", config.method)
        assert config == dataclasses.replace(base, n_blocks=config.n_blocks) and config.n_blocks != base.n_blocks
