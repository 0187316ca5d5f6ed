"""The S^4Rec chapters' grids: sizes, unique labels, configs that validate,
build and round-trip, and the command line's access to them."""
import shlex

import numpy as np
import pytest

from emkd_lib.config import RunConfig
from emkd_lib.data import SequenceDataset
from emkd_lib.methods import build_method
from emkd_lib.methods.s4rec import TABLE3_ABLATIONS
from emkd_lib.profiles import profile_config
from emkd_lib.studies import GRIDS
from emkd_lib.studies.s4rec import (DATASETS, FIGURE5_K, FIGURE6_WEIGHTS, METHODS, PAPER_TABLE2_COLUMNS,
                                    ablation_grid, main_grid, sensitivity_grid)

PROFILES = ("smoke", "cpu", "paper")


def tiny_dataset():
    seqs = [np.arange(1, n + 1) % 15 + 1 for n in (4, 6, 9, 12, 5, 7)]
    return SequenceDataset(name="toy", user_ids=np.arange(6), sequences=seqs, n_items=15, attributes=None,
                           source="synthetic")


def _capped(config, profile):
    from emkd_lib.studies.s4rec import SENSITIVITY_EPOCHS
    epochs = SENSITIVITY_EPOCHS.get(profile)
    return config.replace(train__epochs=epochs) if epochs else config


def all_grids(profile):
    return {"main": main_grid(profile), "ablations": ablation_grid(profile), "sensitivity": sensitivity_grid(profile)}


@pytest.mark.parametrize("profile", PROFILES)
def test_grid_sizes_and_labels(profile):
    grids = all_grids(profile)
    assert len(grids["main"]) == len(DATASETS) * len(METHODS) == 20
    assert set(grids["main"]) == {(d, m, 0) for d in DATASETS for m in METHODS}
    assert len(grids["ablations"]) == len(TABLE3_ABLATIONS) == 6
    assert len(grids["sensitivity"]) == len(FIGURE5_K) + 4 * len(FIGURE6_WEIGHTS) == 22
    for grid in grids.values():
        labels = list(grid)
        assert len(set(labels)) == len(labels)
        assert all(isinstance(c, RunConfig) and c.profile == profile for c in grid.values())
    # every main config is distinct (a run key per cell); each method on its own encoder
    main = grids["main"]
    assert len({repr(c.to_dict()) for c in main.values()}) == 20
    assert all(c.dataset == d and c.method == m and c.encoder == "sasrec" for (d, m, _), c in main.items())
    # the ablation rows are distinct; "S4Rec" is the profile's S^4Rec
    ablations = grids["ablations"]
    assert len({repr(c.to_dict()) for c in ablations.values()}) == 6
    assert ablations[("beauty", "S4Rec", 0)] == profile_config(profile, "beauty", "s4rec")
    # sensitivity: defaults coincide with the full model (one run; capped at the
    # profile's sensitivity epochs where it has them), the rest differ
    sens = grids["sensitivity"]
    assert len({repr(c.to_dict()) for c in sens.values()}) == 1 + 5 + 3 * 4
    default = _capped(profile_config(profile, "beauty", "s4rec"), profile)
    for name, value in (("alpha", 0.01), ("beta1", 0.1), ("beta2", 0.1), ("lam", 1.0)):
        assert sens[("beauty", name, value, 0)] == default
        assert getattr(sens[("beauty", name, 0.0, 0)].params, name) == 0.0
    assert [sens[("beauty", "n_prototypes", k, 0)].params.n_prototypes for k in FIGURE5_K] == list(FIGURE5_K)


def test_seeds_datasets_and_methods_multiply():
    assert len(main_grid("cpu", datasets=("beauty",), seeds=(0, 1), methods=("iclrec", "duorec"))) == 4
    assert len(ablation_grid("cpu", datasets=("beauty", "toys"), seeds=(0, 1, 2))) == 36
    sens = sensitivity_grid("cpu", dataset="toys", seeds=(0, 1))
    assert len(sens) == 44 and {k[0] for k in sens} == {"toys"}
    assert len(sensitivity_grid("cpu", datasets=("beauty", "toys"))) == 44
    assert {c.train.epochs for c in sensitivity_grid("cpu", epochs=3).values()} == {3}
    assert set(PAPER_TABLE2_COLUMNS) == set(METHODS)


def test_every_config_builds_and_round_trips():
    dataset = tiny_dataset()
    for profile in PROFILES:
        for grid in all_grids(profile).values():
            for config in grid.values():
                assert RunConfig.from_dict(config.to_dict()) == config
                model, recipe = build_method(config, dataset)
                assert recipe.eval_max_len == config.data.max_len - 1


def test_the_grids_are_registered_for_the_command_line():
    from emkd_lib.__main__ import _grid_configs, build_parser
    from emkd_lib.runs import command_for

    assert GRIDS["s4rec-main"] is main_grid and GRIDS["s4rec-ablations"] is ablation_grid
    assert GRIDS["s4rec-sensitivity"] is sensitivity_grid
    parser = build_parser()
    args = parser.parse_args(["grid", "s4rec-sensitivity", "--profile", "cpu", "--datasets", "toys"])
    assert _grid_configs(args) == list(sensitivity_grid("cpu", dataset="toys").values())
    args = parser.parse_args(["grid", "s4rec-main", "--profile", "cpu", "--methods", "iclrec"])
    assert [c.method for c in _grid_configs(args)] == ["iclrec"] * 4
    # the command a run records rebuilds its exact config
    from emkd_lib.__main__ import _data_overrides, _parse_sets
    for config in [*main_grid("cpu").values(), *ablation_grid("cpu").values(), *sensitivity_grid("cpu").values()]:
        a = parser.parse_args(shlex.split(command_for(config))[3:])
        rebuilt = profile_config(a.profile, a.dataset, a.method, seed=a.seed, encoder=a.encoder,
                                 **_data_overrides(a), **_parse_sets(a.set))
        assert rebuilt == config, command_for(config)


@pytest.mark.parametrize("profile", ["smoke", "cpu"])
def test_each_sweeps_default_is_a_point_of_its_sweep_and_the_full_models_run(profile):
    """The sensitivity chapter pairs every point against the run at the
    defaults: that run must be in each sweep and be Table 3's full model."""
    from emkd_lib.studies.s4rec import SENSITIVITY, sensitivity_defaults, sensitivity_grid
    defaults = sensitivity_defaults(profile)
    grid = sensitivity_grid(profile)
    full = _capped(profile_config(profile, "beauty", "s4rec"), profile)
    assert set(defaults) == set(SENSITIVITY)
    for name, value in defaults.items():
        assert value in SENSITIVITY[name]
        assert grid[("beauty", name, value, 0)] == full


def test_only_the_cpu_sensitivity_sweep_is_capped_and_only_in_epochs():
    """Figures 5-6 in the cpu profile: every point, the default included, is
    the converged config with the epoch cap changed and nothing else; smoke
    and paper train every point as Table 3 does."""
    from emkd_lib.studies.s4rec import SENSITIVITY_EPOCHS
    assert SENSITIVITY_EPOCHS["cpu"] < profile_config("cpu", "beauty", "s4rec").train.epochs
    for profile in PROFILES:
        for (d, name, value, seed), config in sensitivity_grid(profile).items():
            uncapped = profile_config(profile, d, "s4rec", seed=seed, **{f"params__{name}": value})
            assert config == _capped(uncapped, profile)
            assert config.train.epochs == SENSITIVITY_EPOCHS.get(profile, uncapped.train.epochs)


def test_duorecs_control_is_duorec_without_its_contrastive_terms():
    """The control differs from the profile's DuoRec only by the two
    contrastive weights, so that DuoRec against it isolates those terms; its
    loss is the next-item loss alone, and the CLI rebuilds it from its command."""
    from emkd_lib.__main__ import _data_overrides, _parse_sets, build_parser
    from emkd_lib.runs import command_for
    from emkd_lib.studies.s4rec import duorec_control_grid
    assert GRIDS["s4rec-controls"] is duorec_control_grid
    grid = duorec_control_grid("cpu", datasets=("beauty", "toys"), seeds=(0, 1))
    assert set(grid) == {(d, s) for d in ("beauty", "toys") for s in (0, 1)}
    for (dataset, seed), config in grid.items():
        duorec = profile_config("cpu", dataset, "duorec", seed=seed)
        assert config.params.active_terms() == set() and duorec.params.active_terms() == {"scl"}
        assert config == duorec.replace(params__lam=0.0, params__lam_sem=0.0) != duorec
        a = build_parser().parse_args(shlex.split(command_for(config))[3:])
        assert profile_config(a.profile, a.dataset, a.method, seed=a.seed, encoder=a.encoder,
                              **_data_overrides(a), **_parse_sets(a.set)) == config


def test_the_settings_control_is_s4rec_with_every_added_term_off_in_s4recs_settings():
    """Table 3's "SR only" row on the control's datasets: the profile's S^4Rec
    with clustering, contrast, distillation and adversary off (its loss is the
    next-item loss alone), still in S^4Rec's dropout and batch, which differ
    from SASRec's; the CLI rebuilds it from its command."""
    from emkd_lib.__main__ import _data_overrides, _parse_sets, build_parser
    from emkd_lib.runs import command_for
    from emkd_lib.studies.s4rec import SETTINGS_CONTROL_DATASETS, settings_control_grid
    assert GRIDS["s4rec-settings"] is settings_control_grid
    grid = settings_control_grid("cpu", seeds=(0, 1))
    assert set(grid) == {(d, s) for d in SETTINGS_CONTROL_DATASETS for s in (0, 1)}
    for (dataset, seed), config in grid.items():
        s4rec, sasrec = (profile_config("cpu", dataset, m, seed=seed) for m in ("s4rec", "sasrec"))
        assert config == ablation_grid("cpu", (dataset,), (seed,))[(dataset, "SR only", seed)]
        assert config.params.active_terms() == set() and config != s4rec
        assert config.replace(params__clust=True, params__scl=True, params__csd=True, params__adv=True) == s4rec
        assert config.encoder_config.dropout != sasrec.encoder_config.dropout
        assert config.train.batch_size != sasrec.train.batch_size
        a = build_parser().parse_args(shlex.split(command_for(config))[3:])
        assert profile_config(a.profile, a.dataset, a.method, seed=a.seed, encoder=a.encoder,
                              **_data_overrides(a), **_parse_sets(a.set)) == config


def test_the_batch_order_check_is_table_2s_run_with_shuffled_batches():
    """Each check run differs from its Table 2 run only in the batch order,
    has its own key, and the CLI rebuilds it from its recorded command."""
    from emkd_lib.__main__ import _data_overrides, _parse_sets, build_parser
    from emkd_lib.runs import command_for
    from emkd_lib.studies.s4rec import batch_order_grid, main_grid
    assert GRIDS["s4rec-batch-order"] is batch_order_grid
    grid = batch_order_grid("cpu")
    assert set(grid) == {("beauty", "s4rec", 0), ("beauty", "iclrec", 0), ("beauty", "sasrec", 0)}
    table2 = main_grid("cpu", datasets=("beauty",))
    for key, config in grid.items():
        assert table2[key].train.batch_order == "length-buckets" and config.train.batch_order == "shuffled"
        assert config == table2[key].replace(train__batch_order="shuffled")
        a = build_parser().parse_args(shlex.split(command_for(config))[3:])
        assert profile_config(a.profile, a.dataset, a.method, seed=a.seed, encoder=a.encoder,
                              **_data_overrides(a), **_parse_sets(a.set)) == config


def test_the_equal_weight_control_is_the_shuffled_sasrec_run_with_windows_weighed_equally():
    from emkd_lib.methods.baselines import NextItemParams
    from emkd_lib.studies.s4rec import EQUAL_WEIGHTS, batch_order_grid, batch_order_pairs, equal_weight_grid
    assert GRIDS["s4rec-equal-weights"] is equal_weight_grid
    grid = equal_weight_grid("cpu")
    shuffled = batch_order_grid("cpu")[("beauty", "sasrec", 0)]
    assert set(grid) == {("beauty", "sasrec", 0)}
    assert grid[("beauty", "sasrec", 0)] == shuffled.replace(params__loss_reduction="windows")
    assert grid[("beauty", "sasrec", 0)].identity()["params"] == {"loss_reduction": "windows"}
    # the option's default leaves every stored run's key as it was
    assert shuffled.params == NextItemParams() and "loss_reduction" not in shuffled.identity()["params"]
    with pytest.raises(ValueError, match="loss_reduction"):
        NextItemParams(loss_reduction="users")
    pairs = batch_order_pairs({("beauty", "sasrec", 0): "s", ("beauty", "iclrec", 0): "i"},
                              {("beauty", "sasrec", 0): "b"}, {("beauty", "sasrec", 0): "e"})
    assert pairs["SASRec"] == {"length buckets": "b", "shuffled": "s", EQUAL_WEIGHTS: "e"}
    assert pairs["ICLRec"] == {"length buckets": None, "shuffled": "i"}


def test_the_patience_check_is_table_2s_run_with_only_its_patience_longer():
    """Each check is a Table 2 run with a longer patience and nothing else
    changed (so it repeats that run's epochs), under its own key; a chapter gets
    only the checks of its own datasets."""
    from emkd_lib.studies.s4rec import PATIENCE_CHECK_RUNS, patience_check_grid
    assert GRIDS["s4rec-patience"] is patience_check_grid
    toys = {(d, m, 0) for d, m in PATIENCE_CHECK_RUNS if d == "toys"}
    assert toys and set(patience_check_grid("cpu", datasets=("toys", "no-such-dataset"))) == toys
    grid = patience_check_grid("cpu", seeds=(0, 1))
    assert set(grid) == {(d, m, s) for d, m in PATIENCE_CHECK_RUNS for s in (0, 1)}
    table2 = main_grid("cpu")
    for (d, m, s), check in grid.items():
        main = main_grid("cpu", datasets=(d,), methods=(m,), seeds=(s,))[(d, m, s)]
        assert check.train.patience > main.train.patience
        assert check.replace(train__patience=main.train.patience) == main and check != main
        assert (d, m, 0) in table2


def test_patience_check_lines_pair_each_stored_check_with_the_run_it_continues():
    from types import SimpleNamespace

    from emkd_lib.studies.patience import patience_check_lines
    main_config = profile_config("cpu", "toys", "cl4srec")
    check_config = main_config.replace(train__patience=20)
    ranks = np.arange(1, 201)
    main = SimpleNamespace(config=main_config, test_ranks=ranks + 1)     # every user ranked one lower
    check = SimpleNamespace(config=check_config, test_ranks=ranks)
    runs = {("toys", "cl4srec", 0): main}
    (line,) = patience_check_lines(runs, {("toys", "cl4srec", 0): check}, metric="NDCG@20")
    assert line.startswith("toys: CL4SRec with patience 20: NDCG@20 ") and "with patience 5," in line
    assert "significant" in line
    # a check not stored yet, or one whose table run is missing: no line
    assert patience_check_lines(runs, {("toys", "cl4srec", 0): None}) == []
    assert patience_check_lines({}, {("toys", "cl4srec", 0): check}) == []



def test_the_runs_a_check_replaced_are_named_for_provenance():
    from types import SimpleNamespace

    from emkd_lib.studies.patience import check_name, replaced_runs
    first, check, kept = SimpleNamespace(), SimpleNamespace(), SimpleNamespace()
    runs = {("toys", "duorec", 0): first, ("toys", "sasrec", 0): kept, ("ml-1m", "duorec", 0): None}
    table = {("toys", "duorec", 0): check, ("toys", "sasrec", 0): kept, ("ml-1m", "duorec", 0): None}
    assert replaced_runs(runs, table) == {("toys", "duorec", 0): first}
    assert check_name(("ml-1m", "duorec", 0)) == "ml-1m / DuoRec"


def test_a_check_trained_on_another_cpu_type_replaces_the_run_only_if_it_repeats_it_to_within_rounding():
    """Toys DuoRec's check trained on an Intel Xeon, its Table 2 run on an AMD
    EPYC: their 39 shared epochs agree to 4e-7 in the loss, not bit for bit.
    Within the rounding tolerance and across CPU types the check replaces the
    run and says how it repeats it; the same difference on one CPU type (one
    name and, where the rows record them, the same vector units), or a
    seed-sized one across types, is refused."""
    from types import SimpleNamespace

    from emkd_lib.studies.patience import ROUNDING_TOLERANCE, with_patience_checks
    main_config = profile_config("cpu", "toys", "duorec")
    check_config = main_config.replace(train__patience=20)
    amd, intel = "AMD EPYC x2 (torch threads 1)", "Intel(R) Xeon(R) Processor x2 (torch threads 1)"
    history = [{"valid_ndcg10": 0.01 + 0.001 * e, "loss": 9.0 - 0.1 * e} for e in range(10)]

    def check(scale: float, machine: str):
        moved = [{"valid_ndcg10": h["valid_ndcg10"], "loss": h["loss"] * (1 + scale)} for h in history]
        return SimpleNamespace(config=check_config, history=moved + [{"valid_ndcg10": 0.5, "loss": 1.0}],
                               best_epoch=11, provenance={"machine": machine})
    main = SimpleNamespace(config=main_config, history=history, best_epoch=10, provenance={"machine": amd})
    runs = {("toys", "duorec", 0): main}
    rounding = ROUNDING_TOLERANCE["loss"] / 25                              # as the stored pair
    used = check(rounding, intel)
    out, (line,) = with_patience_checks(runs, {("toys", "duorec", 0): used})
    assert out[("toys", "duorec", 0)] is used
    assert "repeats the main run's 10 epochs to within rounding (trained on Intel(R) Xeon(R) Processor, the main run " \
           "on AMD EPYC: loss within 1e-05 and validation NDCG@10 within 1e-03, relative) and selects epoch 11" in line
    out, (line,) = with_patience_checks(runs, {("toys", "duorec", 0): check(2e-4, intel)})   # a seed's difference
    assert out[("toys", "duorec", 0)] is main and "does not repeat the main run's epochs" in line
    # one CPU name covers machines with other vector units: where the rows do not name them, rounding may be theirs
    out, (line,) = with_patience_checks(runs, {("toys", "duorec", 0): check(rounding, amd)})
    assert out[("toys", "duorec", 0)].history[0]["loss"] != history[0]["loss"]
    assert "to within rounding (both on AMD EPYC, a name that machines with other vector units share, and not every " \
           "epoch's record names the units: loss within 1e-05" in line

    def with_units(run, units):
        return SimpleNamespace(**{**vars(run), "history": [{**h, "cpu_features": units} for h in run.history]})
    avx2, avx512 = ["avx2", "fma"], ["avx2", "fma", "avx512f", "avx512_bf16"]
    one_type = {("toys", "duorec", 0): with_units(main, avx2)}
    out, (line,) = with_patience_checks(one_type, {("toys", "duorec", 0): with_units(check(rounding, amd), avx2)})
    assert out[("toys", "duorec", 0)] is one_type[("toys", "duorec", 0)]    # one name, one set of units: refused
    assert "does not repeat the main run's epochs" in line
    out, (line,) = with_patience_checks(one_type, {("toys", "duorec", 0): with_units(check(rounding, amd), avx512)})
    assert "to within rounding (both on AMD EPYC, with other vector units: avx2, fma, avx512f, avx512_bf16, the " \
           "main run avx2, fma; loss within" in line
    # resumed across two machines of one name: epoch for epoch the same units refuse, shifted units accept
    mixed = [avx2] * 5 + [avx512] * 5

    def with_epoch_units(run, units):
        return SimpleNamespace(**{**vars(run), "history": [{**h, "cpu_features": u} for h, u in
                                                           zip(run.history, units + [avx512] * len(run.history))]})
    resumed_main = {("toys", "duorec", 0): with_epoch_units(main, mixed)}
    out, (line,) = with_patience_checks(resumed_main, {("toys", "duorec", 0): with_epoch_units(check(rounding, amd),
                                                                                               mixed)})
    assert "does not repeat" in line
    out, (line,) = with_patience_checks(resumed_main, {("toys", "duorec", 0): with_epoch_units(check(rounding, amd),
                                                                                               [avx2] * 10)})
    assert "with other vector units: avx2, fma, the main run avx2, fma and avx2, fma, avx512f, avx512_bf16" in line
    # bit for bit on any machines: no rounding clause
    out, (line,) = with_patience_checks(runs, {("toys", "duorec", 0): check(0.0, intel)})
    assert "repeats the main run's 10 epochs and selects epoch 11" in line
    # CPU types read epoch by epoch where the rows are stamped: a main run resumed from AMD onto Intel
    # against a check trained on Intel alone shares the type of its last machine, not of its first epochs
    resumed = SimpleNamespace(config=main_config, best_epoch=10, provenance={"machine": intel},
                              history=[{**h, "machine": amd if e < 5 else intel} for e, h in enumerate(history)])
    out, (line,) = with_patience_checks({("toys", "duorec", 0): resumed}, {("toys", "duorec", 0): used})
    assert out[("toys", "duorec", 0)] is used
    assert "to within rounding (trained on Intel(R) Xeon(R) Processor, the main run on AMD EPYC and Intel(R) Xeon(R) " \
           "Processor: loss within" in line
    same = SimpleNamespace(**{**vars(used), "history": [{**h, "machine": amd if e < 5 else intel}
                                                         for e, h in enumerate(used.history)]})
    out, (line,) = with_patience_checks({("toys", "duorec", 0): with_units(resumed, avx2)},
                                        {("toys", "duorec", 0): with_units(same, avx2)})
    assert "does not repeat" in line     # epoch for epoch on the same types, units and all: rounding is no excuse
    out, (line,) = with_patience_checks({("toys", "duorec", 0): resumed}, {("toys", "duorec", 0): same})
    assert "not every epoch's record names the units" in line   # the same names, units unrecorded


def test_unchecked_lines_name_the_methods_that_kept_the_shorter_patience():
    from types import SimpleNamespace

    from emkd_lib.studies.patience import unchecked_lines

    def run(dataset, method, patience=5):
        return SimpleNamespace(config=profile_config("cpu", dataset, method).replace(train__patience=patience))
    runs = {("toys", m, 0): run("toys", m) for m in ("sasrec", "cl4srec", "duorec", "s4rec")}
    runs[("beauty", "sasrec", 0)] = run("beauty", "sasrec")
    runs[("toys", "iclrec", 0)] = None
    checks = {("toys", "CL4SRec", 0): run("toys", "cl4srec", 20), ("toys", "DuoRec", 0): run("toys", "duorec", 20),
              ("beauty", "CL4SRec", 0): None}
    table = {**runs, ("toys", "cl4srec", 0): checks[("toys", "CL4SRec", 0)],
             ("toys", "duorec", 0): checks[("toys", "DuoRec", 0)]}
    assert unchecked_lines(table, checks) == [
        "toys: only CL4SRec, DuoRec trained on with a longer patience (20); SASRec, S4Rec kept patience 5, so a "
        "comparison with them also holds that difference in training"]
    # a check the table did not use (with_patience_checks refused it) leaves its method at patience 5
    refused = {**runs, ("toys", "duorec", 0): checks[("toys", "DuoRec", 0)]}
    assert unchecked_lines(refused, checks) == [
        "toys: only DuoRec trained on with a longer patience (20); SASRec, CL4SRec, S4Rec kept patience 5, so a "
        "comparison with them also holds that difference in training"]
    assert unchecked_lines(runs, checks) == []      # every check refused: no difference in the table
    assert unchecked_lines(table, {}) == []


def test_awaiting_check_names_the_runs_whose_check_is_not_stored():
    from types import SimpleNamespace

    from emkd_lib.studies.patience import awaiting_check

    def run(dataset, method, patience=5):
        return SimpleNamespace(config=profile_config("cpu", dataset, method).replace(train__patience=patience))
    runs = {("sports", "cl4srec", 0): run("sports", "cl4srec"), ("toys", "duorec", 0): run("toys", "duorec", 20),
            ("ml-1m", "duorec", 0): None}
    checks = {("sports", "cl4srec", 0): None, ("toys", "duorec", 0): runs[("toys", "duorec", 0)],
              ("ml-1m", "duorec", 0): None, ("ml-1m", "cl4srec", 0): None}
    # a stored check, or a check whose main run is not stored either, waits on nothing in the table
    assert awaiting_check(runs, checks) == [("sports", "CL4SRec")]
    assert awaiting_check(runs, {}) == []


def test_the_settings_control_takes_its_rows_from_table_2_and_its_control_from_the_store(tmp_path, monkeypatch):
    """Only the control's datasets get a trio; SASRec and S4Rec come from the
    Table 2 runs handed in, "SR only" from the store (None in an empty one,
    and then its line says so instead of claiming a share)."""
    import helpers
    if not helpers.dataset_available("ml-1m"):
        pytest.skip("ML-1M is not available offline")
    from emkd_lib.studies.s4rec import SETTINGS_CONTROL_ROWS, settings_control
    monkeypatch.setenv("EMKD_RESULTS_DIR", str(tmp_path / "results"))
    sasrec, s4rec = object(), object()
    trios, lines = settings_control("cpu", ["beauty", "ml-1m"], 0,
                                    {("ml-1m", "sasrec", 0): sasrec, ("ml-1m", "s4rec", 0): s4rec})
    assert list(trios) == ["ml-1m"] and list(trios["ml-1m"]) == list(SETTINGS_CONTROL_ROWS)
    assert trios["ml-1m"]["SASRec (its settings)"] is sasrec and trios["ml-1m"]["S4Rec"] is s4rec
    assert trios["ml-1m"]["SR only (S4Rec's settings)"] is None
    assert len(lines) == 1 and lines[0].startswith("ml-1m: 'SR only'") and "not all three run yet" in lines[0]


def test_chapter_07s_grid_is_one_seeds_sweep_and_at_smoke_two_values_a_setting():
    from emkd_lib.studies.s4rec import SENSITIVITY, SMOKE_SENSITIVITY_VALUES, chapter_sensitivity_grid
    assert chapter_sensitivity_grid("cpu", "toys", 1) == sensitivity_grid("cpu", "toys", seeds=(1,))
    smoke = chapter_sensitivity_grid("smoke", "beauty", 0)
    assert set(smoke) < set(sensitivity_grid("smoke", "beauty"))
    for name in SENSITIVITY:
        assert len([k for k in smoke if k[1] == name]) == 2
    assert {k[2] for k in smoke} <= set(SMOKE_SENSITIVITY_VALUES)


def test_the_equal_weight_verdict_separates_the_reweighting_from_the_batches_make_up():
    import types

    from emkd_lib.studies.s4rec import equal_weight_verdict
    ranked = lambda ranks: types.SimpleNamespace(test_ranks=np.array(ranks * 50))  # noqa: E731
    key, other = ("beauty", "sasrec", 0), ("beauty", "s4rec", 0)
    buckets, shuffled = ranked([0, 0, 1, 40]), ranked([3, 3, 30, 40])
    table, batch = {key: buckets, other: buckets}, {key: shuffled, other: shuffled}
    (restores, no_control) = equal_weight_verdict(table, batch, {key: ranked([0, 0, 1, 40])})
    assert restores.startswith("beauty: SASRec, NDCG@20: with the length buckets' weights given back, shuffled "
                               "batches leave it not significantly apart from length buckets")
    assert restores.endswith("the reweighting of the next-item loss accounts for its drop under shuffling, and the "
                             "make-up of the batches does not measurably matter")
    assert no_control == ("beauty: S4Rec has no equal-weight run, so whether the reweighting or the make-up of the "
                          "batches moves it is not measured")
    (stays, _) = equal_weight_verdict(table, batch, {key: shuffled})
    assert "leave it significantly below length buckets still" in stays and stays.endswith("matters too")
    (past, _) = equal_weight_verdict(table, batch, {key: ranked([0, 0, 0, 0])})     # better than length buckets
    assert "significantly above length buckets, past them" in past and past.endswith("moves it the other way")
    # shuffling that helps: a gain, and a control that stays above is on the shuffled side
    (gain, _) = equal_weight_verdict({key: shuffled, other: shuffled}, {key: buckets, other: buckets},
                                     {key: ranked([3, 3, 30, 40])})
    assert "accounts for its gain under shuffling" in gain
    (above, _) = equal_weight_verdict({key: shuffled, other: shuffled}, {key: buckets, other: buckets},
                                      {key: buckets})
    assert "significantly above length buckets still" in above and above.endswith("matters too")
    (calm, _) = equal_weight_verdict(table, {key: buckets, other: buckets}, {key: shuffled})
    assert calm.endswith("shuffling does not move it significantly, so the control has nothing to explain")
    (missing, _) = equal_weight_verdict(table, batch, {key: None})
    assert missing == "beauty: SASRec's equal-weight control: not all three runs stored yet"
