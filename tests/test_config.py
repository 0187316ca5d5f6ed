"""Run configs are typed and closed: unknown keys and wrong types are errors
that name what is allowed, and a run's key is its identity (not its label)."""
import json
from pathlib import Path

import pytest

from emkd_lib.config import DataConfig, EvalConfig, RunConfig, TrainConfig
from emkd_lib.methods.baselines import ClozeParams, NextItemParams
from emkd_lib.methods.emkd import EMKDParams
from emkd_lib.models.encoders import GRU4RecConfig, TransformerConfig
from emkd_lib.profiles import profile_config
from emkd_lib.store import CORE_VERSION, run_key

FILES = {"Beauty.txt": "a" * 64, "Beauty_item2attributes.json": "b" * 64}


def test_unknown_param_in_a_dict_names_the_key_and_the_allowed_ones():
    d = profile_config("cpu", "beauty", "emkd").to_dict()
    d["params"]["lambda"] = 0.1
    with pytest.raises(ValueError, match=r"EMKDParams: unknown key\(s\) \['lambda'\]; allowed: \[.*'lam'.*\]"):
        RunConfig.from_dict(d)
    d = profile_config("cpu", "beauty", "sasrec").to_dict()
    d["train"]["epoch"] = 3
    with pytest.raises(ValueError, match=r"TrainConfig: unknown key\(s\) \['epoch'\]; allowed: \[.*'epochs'.*\]"):
        RunConfig.from_dict(d)
    with pytest.raises(ValueError, match=r"RunConfig: unknown key\(s\) \['hidden'\]; allowed: .*'encoder_config'"):
        RunConfig.from_dict({**d, "hidden": 64})


def test_unknown_override_names_the_key_and_the_allowed_ones():
    with pytest.raises(ValueError, match=r"EMKDParams: unknown key\(s\) \['bogus'\]; allowed: \[.*'n_networks'"):
        profile_config("cpu", "beauty", "emkd", params__bogus=1)
    with pytest.raises(ValueError, match=r"NextItemParams: unknown key\(s\) \['n_networks'\]; allowed: \['loss_reduction'\]"):
        profile_config("cpu", "beauty", "sasrec", params__n_networks=2)
    # GRU4Rec has no attention heads: n_heads is not a key of its config
    with pytest.raises(ValueError, match=r"GRU4RecConfig: unknown key\(s\) \['n_heads'\]; allowed: "
                                         r"\['hidden', 'n_layers', 'dropout'\]"):
        profile_config("cpu", "beauty", "gru4rec", encoder_config__n_heads=2)
    with pytest.raises(ValueError, match="RunConfig: no nested config 'optim'"):
        profile_config("cpu", "beauty", "sasrec", optim__lr=1e-3)
    with pytest.raises(ValueError, match=r"RunConfig: unknown key\(s\) \['epochs'\]"):
        profile_config("cpu", "beauty", "sasrec", epochs=5)


@pytest.mark.parametrize("override,message", [
    (dict(train__epochs="3"), "TrainConfig: epochs must be int, got str '3'"),
    (dict(train__epochs=0), "TrainConfig: epochs must be >= 1, got 0"),
    (dict(train__epochs=3.0), "TrainConfig: epochs must be int, got float"),
    (dict(train__lr=-1.0), "TrainConfig: lr must be > 0"),
    (dict(train__lr=float("nan")), "TrainConfig: lr must be float"),
    (dict(train__grad_clip=0.0), "TrainConfig: grad_clip must be > 0"),
    (dict(data__max_len=0), "DataConfig: max_len must be >= 1, got 0"),
    (dict(data__windows="all"), r"DataConfig: windows must be one of \('sliding', 'tail'\)"),
    (dict(data__window_step=0), "DataConfig: window_step must be >= 1"),
    (dict(data__max_users=True), "DataConfig: max_users must be int or None, got bool"),
    (dict(data__on_short="drop"), "DataConfig: on_short must be one of"),
    (dict(evaluation__history_exclusion="some"), "EvalConfig: history_exclusion must be one of"),
    (dict(encoder_config__hidden=64.0), "TransformerConfig: hidden must be int"),
    (dict(encoder_config__hidden=0), "TransformerConfig: hidden must be >= 1"),
    (dict(encoder_config__dropout=1.5), "TransformerConfig: dropout must be < 1"),
    (dict(encoder_config__n_heads=3), "hidden 64 is not divisible by n_heads 3"),
    (dict(seed=True), "RunConfig: seed must be an int >= 0"),
    (dict(seed=-1), "RunConfig: seed must be an int >= 0"),
    (dict(profile="gpu"), "RunConfig: unknown profile 'gpu'"),
    (dict(dataset=""), "RunConfig: dataset must be a non-empty string"),
])
def test_wrong_types_and_ranges_are_clear_errors(override, message):
    with pytest.raises(ValueError, match=message):
        profile_config("cpu", "beauty", "sasrec").replace(**override)
    if not {"dataset", "profile"} & set(override):
        with pytest.raises(ValueError, match=message):
            profile_config("cpu", "beauty", "sasrec", **override)


def test_unknown_profile_and_method_are_clear_errors():
    with pytest.raises(ValueError, match="unknown profile 'gpu'"):
        profile_config("gpu", "beauty", "sasrec")
    with pytest.raises(ValueError, match=r"unknown method 'transformer'; known: \[.*'sasrec'"):
        profile_config("cpu", "beauty", "transformer")
    with pytest.raises(ValueError, match="unknown method 'emkd-sasrec'"):
        RunConfig(dataset="beauty", method="emkd-sasrec", profile="cpu")


def test_nested_configs_must_have_the_methods_and_encoders_types():
    with pytest.raises(ValueError, match="encoder_config of sasrec/sasrec must be a TransformerConfig, got GRU4RecConfig"):
        RunConfig(dataset="beauty", method="sasrec", profile="cpu", encoder_config=GRU4RecConfig())
    with pytest.raises(ValueError, match="params of emkd/bert4rec must be a EMKDParams, got ClozeParams"):
        RunConfig(dataset="beauty", method="emkd", profile="cpu", encoder="bert4rec", params=ClozeParams())
    with pytest.raises(ValueError, match="train of sasrec/sasrec must be a TrainConfig, got dict"):
        RunConfig(dataset="beauty", method="sasrec", profile="cpu", train={"epochs": 3})


def test_defaults_fill_the_nested_configs():
    c = RunConfig(dataset="beauty", method="bert4rec", profile="cpu", encoder="bert4rec")
    assert c.encoder_config == TransformerConfig() and c.params == ClozeParams()
    assert (c.train, c.data, c.evaluation) == (TrainConfig(), DataConfig(), EvalConfig())
    assert RunConfig(dataset="beauty", method="sasrec", profile="cpu").params == NextItemParams()


def test_the_profile_label_is_not_part_of_the_run_key():
    smoke = profile_config("smoke", "beauty", "sasrec")
    relabelled = smoke.replace(profile="cpu")
    assert relabelled != smoke and relabelled.label() != smoke.label()
    assert relabelled.identity() == smoke.identity()
    assert run_key(relabelled, FILES) == run_key(smoke, FILES)


def test_the_run_key_is_stable_and_sensitive():
    a = profile_config("cpu", "beauty", "sasrec")
    key = run_key(a, FILES)
    assert len(key) == 16 and key == run_key(profile_config("cpu", "beauty", "sasrec"), dict(FILES))
    assert key != run_key(profile_config("cpu", "beauty", "sasrec", seed=1), FILES)
    assert key != run_key(profile_config("cpu", "beauty", "sasrec", train__lr=2e-3), FILES)
    assert key != run_key(profile_config("cpu", "beauty", "sasrec", encoder_config__n_blocks=3), FILES)
    assert key != run_key(profile_config("cpu", "beauty", "sasrec", data__max_users=300), FILES)
    assert key != run_key(profile_config("cpu", "beauty", "sasrec", evaluation__history_exclusion="none"), FILES)
    # a different checksum of a data file is a different run
    assert key != run_key(a, {**FILES, "Beauty.txt": "c" * 64})
    assert key != run_key(a, {"Beauty.txt": "a" * 64})
    assert CORE_VERSION == "2"


@pytest.mark.parametrize("method,encoder", [("sasrec", None), ("bert4rec", None), ("gru4rec", None),
                                            ("caser", None), ("emkd", None), ("emkd", "gru4rec"),
                                            ("emkd", "caser"), ("emkd", "sasrec")])
@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
def test_to_dict_from_dict_round_trip(profile, method, encoder):
    c = profile_config(profile, "ml-1m", method, seed=2, encoder=encoder)
    d = json.loads(json.dumps(c.to_dict()))
    assert RunConfig.from_dict(d) == c
    assert RunConfig.from_dict(d).to_dict() == c.to_dict()
    assert c.encoder == (encoder or ("bert4rec" if method == "emkd" else method))


def test_from_dict_fills_what_is_missing_with_defaults():
    c = RunConfig.from_dict({"dataset": "beauty", "method": "emkd", "profile": "cpu"})
    assert c.encoder == "bert4rec" and c.params == EMKDParams() and c.train == TrainConfig()
    c = RunConfig.from_dict({"dataset": "beauty", "method": "emkd", "profile": "cpu", "encoder": "gru4rec",
                             "encoder_config": {"n_layers": 2}})
    assert c.encoder_config == GRU4RecConfig(n_layers=2)


def test_replace_changes_nested_fields_and_leaves_the_original():
    a = profile_config("cpu", "beauty", "emkd")
    b = a.replace(train__epochs=5, params__n_networks=2, data__max_users=300, encoder_config__n_blocks=3, seed=4)
    assert (b.train.epochs, b.params.n_networks, b.data.max_users, b.encoder_config.n_blocks, b.seed) == \
        (5, 2, 300, 3, 4)
    assert (a.train.epochs, a.params.n_networks, a.data.max_users, a.encoder_config.n_blocks, a.seed) == \
        (200, 3, None, 2, 0)
    assert b.train.batch_size == a.train.batch_size and b.params.tau == a.params.tau


def test_profile_layers_generic_then_method_then_overrides():
    smoke = profile_config("smoke", "beauty", "sasrec")
    assert (smoke.encoder_config.hidden, smoke.encoder_config.n_blocks, smoke.data.max_len, smoke.data.max_users,
            smoke.train.batch_size, smoke.train.epochs, smoke.train.patience) == (16, 1, 20, 300, 128, 2, 2)
    assert profile_config("smoke", "beauty", "gru4rec").encoder_config == GRU4RecConfig(hidden=16)
    assert profile_config("cpu", "ml-1m", "sasrec").data.max_len == 40
    assert profile_config("paper", "beauty", "bert4rec").encoder_config.n_heads == 2
    assert profile_config("cpu", "beauty", "bert4rec").data.window_step == 1
    assert profile_config("cpu", "beauty", "sasrec", train__epochs=3).train.epochs == 3


def test_overrides_win_over_the_methods_profile_defaults():
    """(Failed with TypeError before profiles.py merged ``own`` and ``overrides`` into one dict.)"""
    assert profile_config("cpu", "beauty", "emkd", train__epochs=3).train.epochs == 3
    assert profile_config("smoke", "beauty", "emkd", params__n_networks=3).params.n_networks == 3


def test_the_sensitivity_grid_builds():
    """Every point overrides one of EMKD's profile defaults (tau, n_views)."""
    from emkd_lib.studies.emkd import SENSITIVITY, SENSITIVITY_EPOCHS, emkd_variant, sensitivity_grid
    grid = sensitivity_grid("cpu")
    assert set(grid) == {("beauty", k, v, 0) for k, vs in SENSITIVITY.items() for v in vs}
    base = emkd_variant("cpu", "beauty").params
    for (_, name, value, _), config in grid.items():
        assert getattr(config.params, name) == value
        assert config.train.epochs == SENSITIVITY_EPOCHS["cpu"]
        moved = [k for k in SENSITIVITY if getattr(config.params, k) != getattr(base, k)]
        assert moved in ([], [name])
    defaults = {run_key(grid[("beauty", k, getattr(base, k), 0)], FILES) for k in SENSITIVITY}
    assert len(defaults) == 1  # every hyperparameter's default is the same run
    assert {c.train.epochs for c in sensitivity_grid("paper").values()} == {emkd_variant("paper", "beauty").train.epochs}
    assert {c.train.epochs for c in sensitivity_grid("cpu", epochs=2).values()} == {2}


def test_the_fair_rule_gives_every_method_of_a_dataset_the_same_windows():
    for dataset in ("beauty", "toys", "ml-1m"):
        configs = [profile_config("cpu", dataset, m) for m in ("gru4rec", "caser", "sasrec", "bert4rec", "emkd")]
        configs += [profile_config("cpu", dataset, "emkd", encoder=e) for e in ("sasrec", "gru4rec", "caser")]
        assert len({c.data for c in configs}) == 1
        assert configs[0].data.windows == "tail"
    assert (profile_config("cpu", "beauty", "sasrec").data.max_len,
            profile_config("cpu", "ml-1m", "sasrec").data.window_step) == (15, 10)


def test_a_dataset_no_paper_used_takes_the_settings_of_the_dataset_its_spec_names(tmp_path):
    from emkd_lib.data.registry import BUNDLED, settings_like
    from emkd_lib.methods.emkd import PAPER_SETTINGS
    from emkd_lib.profiles import FAIR_WINDOWS
    for name, spec in BUNDLED.items():
        assert spec.settings_like in FAIR_WINDOWS and spec.settings_like in PAPER_SETTINGS, name
    emkd = {d: profile_config("cpu", d, "emkd") for d in ("ml-100k", "ml-1m", "sports", "beauty")}
    assert emkd["ml-100k"].params.tau == emkd["ml-1m"].params.tau != emkd["beauty"].params.tau
    assert emkd["ml-100k"].data.window_step == 10 and emkd["sports"].data == emkd["beauty"].data
    # A user's dataset: what its registration says (Beauty's by default), not what its name suggests;
    # entries registered before the choice was recorded keep what their name gave them then.
    import json
    from emkd_lib.data import register_dataset
    tiny = Path(__file__).parent / "fixtures" / "tiny_sequences.txt"
    register_dataset("ml-mine", tiny, None, tmp_path)
    register_dataset("dense", tiny, None, tmp_path, settings_like="ml-1m")
    assert settings_like("ml-mine", tmp_path) == "beauty" and settings_like("dense", tmp_path) == "ml-1m"
    registry = json.loads((tmp_path / "registry.json").read_text())
    for entry in registry.values():
        del entry["settings_like"]
    (tmp_path / "registry.json").write_text(json.dumps(registry))
    assert settings_like("ml-mine", tmp_path) == "ml-1m" and settings_like("dense", tmp_path) == "beauty"
    assert settings_like("unregistered", tmp_path) == "beauty"


def test_ml1m_in_the_cpu_profile_is_one_user_sample_for_every_method_and_the_paper_profile_keeps_all_users():
    from emkd_lib.methods import METHODS
    from emkd_lib.profiles import ML1M_CPU_USERS
    samples = {profile_config("cpu", "ml-1m", m, seed=s).data.max_users for m in METHODS for s in (0, 1)}
    assert samples == {ML1M_CPU_USERS} and ML1M_CPU_USERS < 6040
    assert {profile_config("paper", "ml-1m", m).data.max_users for m in METHODS} == {None}
    assert profile_config("cpu", "beauty", "emkd").data.max_users is None


def test_the_bf16_emkd_grids_share_one_bf16_reference_and_leave_single_models_and_the_paper_profile_fp32():
    from emkd_lib.studies.baselines import precision_grid
    from emkd_lib.studies.emkd import (BUDGET_PRECISION, ablation_grid, emkd_variant, encoder_grid, fidelity_grid,
                                       main_grid, sensitivity_grid, spread_grid)
    assert BUDGET_PRECISION["cpu"] == "bf16"
    budget = [*main_grid("cpu").values(), *ablation_grid("cpu").values(), *fidelity_grid("cpu").values(),
              *sensitivity_grid("cpu").values(), *(c for (d, m, s), c in spread_grid("cpu").items() if m == "emkd"),
              *encoder_grid("cpu").values()]   # Figure 4: its encoders alone too, compared within the figure
    assert {c.train.precision for c in budget} == {"bf16"}
    # the single models of the baseline chapters and the paper profile stay fp32
    kept = [*encoder_grid("paper").values(), *main_grid("paper").values(), *ablation_grid("paper").values(),
            *fidelity_grid("paper").values(), *(c for (d, m, s), c in spread_grid("cpu").items() if m == "sasrec")]
    assert {c.train.precision for c in kept} == {"fp32"}
    # one bf16 EMKD run is Table 3's, Table 4's reference, the fidelity default and the precision check's
    reference = run_key(main_grid("cpu")[("beauty", 0)], FILES)
    assert run_key(ablation_grid("cpu")[("beauty", "EMKD", 0)], FILES) == reference
    assert run_key(fidelity_grid("cpu")[("beauty", "printed equations (default)", 0)], FILES) == reference
    checks = precision_grid("cpu")
    assert run_key(checks[("beauty", "emkd", "bf16", 0)], FILES) == reference
    # which it sets beside the same EMKD in fp32, and SASRec in both
    assert checks[("beauty", "emkd", "fp32", 0)] == emkd_variant("cpu", "beauty", 0)
    assert checks[("beauty", "emkd", "fp32", 0)].replace(train__precision="bf16") == main_grid("cpu")[("beauty", 0)]
    assert {(m, p) for (d, m, p, s) in checks} == {(m, p) for m in ("sasrec", "emkd") for p in ("fp32", "bf16")}


def test_every_registered_method_names_itself_for_the_book():
    """Tables and the performance chapter name methods from their specs; a
    new method without a display name would appear as its registry key."""
    from emkd_lib.methods import METHODS
    from emkd_lib.report.tables import method_label
    for name, spec in METHODS.items():
        assert spec.display_name or spec.label, name
    assert method_label(profile_config("cpu", "beauty", "emkd", encoder="sasrec")) == "EMKD (SASRec)"
    assert method_label(profile_config("cpu", "beauty", "sasrec-lf")) == "SASRec+LF"
