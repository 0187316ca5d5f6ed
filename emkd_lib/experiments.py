"""Run configurations, the three profiles, and the results store.

A run is identified by a hash of its full configuration plus ``CORE_VERSION``,
the version of the training core: change the core in a way that changes
results and bump it, so no stale result is ever shown as current.

The store is a folder of JSON files (``results/<dataset>/<name>.json``: config,
metrics, per-epoch curve, provenance) with a compressed ``.npz`` sidecar holding
per-user ranks. Both are written atomically (temporary file, then rename), the
sidecar first, so a killed run never leaves a JSON that points at nothing.
A run's best weights go to a ``.pt`` file beside it (ignored by git), so
independently trained runs can later be evaluated as an ensemble
(``ensemble_run_or_load``), which is stored the same way.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import platform
import resource
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .data import leave_one_out, load_dataset, subsample_users
from .evaluation import evaluate, metrics_from_ranks, popularity_ranks
from .methods import METHODS, EMKDParams, build_method, ensemble_scores
from .train import FitResult, TrainSettings, fit, resolve_device

CORE_VERSION = "1"
PROFILES = ("smoke", "cpu", "paper")
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's result."""

    dataset: str
    method: str
    profile: str
    seed: int = 0
    hidden: int = 64
    n_blocks: int = 2
    n_heads: int = 1
    dropout: float = 0.2
    max_len: int = 50
    window_step: int | None = None
    mask_prob: float = 0.15
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float | None = 5.0
    epochs: int = 100
    patience: int = 5
    max_users: int | None = None
    params: tuple = ()  # method-specific (name, value) pairs, e.g. Caser's window

    def __post_init__(self):
        _check(isinstance(self.dataset, str) and self.dataset, "dataset must be a non-empty string")
        _check(self.method in METHODS, f"unknown method {self.method!r}; known: {sorted(METHODS)}")
        _check(self.profile in PROFILES, f"unknown profile {self.profile!r}; known: {PROFILES}")
        for name in ("seed", "hidden", "n_blocks", "n_heads", "max_len", "batch_size", "epochs", "patience"):
            value = getattr(self, name)
            _check(isinstance(value, int) and not isinstance(value, bool),
                   f"{name} must be an int, got {type(value).__name__} {value!r}")
            _check(value >= (0 if name == "seed" else 1), f"{name} must be positive, got {value}")
        for name in ("dropout", "mask_prob"):
            value = getattr(self, name)
            _check(isinstance(value, (int, float)) and 0 <= value < 1, f"{name} must be in [0, 1), got {value!r}")
        _check(isinstance(self.lr, (int, float)) and self.lr > 0, f"lr must be positive, got {self.lr!r}")
        _check(self.window_step is None or (isinstance(self.window_step, int) and self.window_step >= 1),
               f"window_step must be None or a positive int, got {self.window_step!r}")
        _check(self.max_users is None or (isinstance(self.max_users, int) and self.max_users >= 1),
               f"max_users must be None or a positive int, got {self.max_users!r}")
        _check(isinstance(self.params, tuple), "params must be a tuple of (name, value) pairs")
        if self.method == "emkd" or self.method.startswith("emkd-"):
            try:
                EMKDParams.from_params(self.params)
            except (ValueError, TypeError) as err:
                raise ValueError(f"RunConfig: {err}") from None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["params"] = dict(self.params)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        d = dict(d)
        d["params"] = tuple(sorted(d.get("params", {}).items()))
        return cls(**d)

    def key(self) -> str:
        """Hash of the full config and the core version: the run's identity."""
        blob = json.dumps({"config": self.to_dict(), "core": CORE_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def name(self) -> str:
        return f"{self.method}-{self.profile}-seed{self.seed}-{self.key()}"


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(f"RunConfig: {message}")


# The cpu profile is what the committed book is built from: full datasets,
# d = 64, one seed, epochs capped with early stopping, so that every run takes
# minutes on two cores. ML-1M's long histories are cut into non-overlapping
# windows of 100 (instead of the papers' 200) and its epochs capped at 15 (one
# ML-1M epoch holds a million training targets) for the same reason; the
# baseline chapter shows that ML-1M runs stop at that cap, not converged.
_CPU_MAX_LEN = {"ml-1m": 100}
_CPU_EPOCHS = {"ml-1m": 15}
_PAPER_MAX_LEN = {"ml-1m": 200}


# EMKD's per-dataset settings (the paper's Section 5; book/emkd.md). Datasets
# the paper did not use borrow those of the closest one it did.
_EMKD_PAPER = {
    "beauty": dict(max_len=15, dropout=0.3, window_step=1, n_heads=2, tau=0.3),
    "toys": dict(max_len=20, dropout=0.3, window_step=1, n_heads=2, tau=0.3),
    "ml-1m": dict(max_len=40, dropout=0.2, window_step=10, n_heads=4, tau=1.0),
}


def _emkd_profile(profile: str, dataset: str) -> dict:
    """EMKD's fields of a profile. Every EMKD param is spelled out, so a stored
    result names all of them; ``kd_temperature=None`` means "= tau"."""
    paper = dict(_EMKD_PAPER.get(dataset) or _EMKD_PAPER["ml-1m" if dataset.startswith("ml-") else "beauty"])
    params = dict(dataclasses.asdict(EMKDParams()), tau=paper.pop("tau"), lam=0.01, mu=0.001)
    if profile == "smoke":
        fields = {}
        params.update(n_networks=2, n_views=2)
    elif profile == "cpu":
        # The paper's lengths and dropout; d = 64 and two heads as the cpu
        # BERT4Rec baseline; M = 2 views instead of 8; non-overlapping windows
        # instead of every prefix (an epoch of step-1 windows on Beauty takes
        # ~8 min on two cores, ~6x the non-overlapping one), with batches of 64
        # so an epoch still makes ~400 updates; at most 20 epochs. All of it
        # to fit two cores; book/emkd.md and notebook 03 list the departures.
        fields = dict(paper, n_heads=2, window_step=None, batch_size=64, epochs=20)
        params.update(n_networks=3, n_views=2)
    else:
        fields = dict(paper, hidden=256, n_blocks=2, batch_size=256, lr=1e-3, epochs=250)
        params.update(n_networks=3, n_views=8)
    return dict(fields, params=tuple(sorted(params.items())))


def profile_config(profile: str, dataset: str, method: str, seed: int = 0, **overrides) -> RunConfig:
    """The configuration of ``method`` on ``dataset`` under a profile.

    EMKD on a next-item encoder (``"emkd-sasrec"`` etc., Figure 4) takes that
    encoder's own settings and EMKD's params of the profile.
    """
    if method.startswith("emkd-"):
        encoder_config = profile_config(profile, dataset, method[5:], seed)
        fields = {k: v for k, v in encoder_config.to_dict().items()
                  if k not in ("dataset", "method", "profile", "seed", "params")}
        fields.update(params=_emkd_profile(profile, dataset)["params"], window_step=None)
        fields.update(overrides)
        return RunConfig(dataset=dataset, method=method, profile=profile, seed=seed, **fields)
    if profile == "smoke":
        base = dict(hidden=16, n_blocks=1, max_len=20, batch_size=128, epochs=2, patience=2,
                    max_users=300)
    elif profile == "cpu":
        base = dict(hidden=64, max_len=_CPU_MAX_LEN.get(dataset, 50), epochs=_CPU_EPOCHS.get(dataset, 30),
                    patience=3,
                    n_heads=2 if method == "bert4rec" else 1)
        if method == "bert4rec" and dataset != "ml-1m":
            base["window_step"] = 1  # every prefix, as in BERT4Rec/EMKD's Amazon setup
        if method in ("bert4rec", "gru4rec", "caser") and dataset == "ml-1m":
            # These validation curves sit near popularity level for the first
            # epochs before they climb, and patience 3 ended runs there:
            # BERT4Rec (~50 updates an epoch) at epoch 5; Caser seeds 1 and 2
            # at epochs 6 and 5 (valid NDCG@10 ~.020), while seed 0 crept up
            # by a hair each epoch, escaped at epoch 7 and reached .083 at the cap. With
            # a cap of 15 epochs, early stopping only saves time when it is
            # wrong, so these run all 15.
            base["patience"] = base["epochs"]
    elif profile == "paper":
        base = dict(hidden=64, max_len=_PAPER_MAX_LEN.get(dataset, 50), epochs=300, patience=20,
                    n_heads=2)
        if method == "bert4rec":
            base["window_step"] = 10 if dataset == "ml-1m" else 1
    else:
        raise ValueError(f"unknown profile {profile!r}; known: {PROFILES}")
    if method == "caser":
        base.setdefault("params", (("window", 5),))
    if method == "emkd":
        base.update(_emkd_profile(profile, dataset))
    base.update(overrides)
    return RunConfig(dataset=dataset, method=method, profile=profile, seed=seed, **base)


class _RankSidecar:
    """Per-user arrays stored in an ``.npz`` beside a result's json, read on first use."""

    def arrays(self) -> dict[str, np.ndarray]:
        """``test_ranks``, ``valid_ranks``: each user's rank of its held-out item."""
        if self._arrays is None:
            self._arrays = _read_sidecar(self.path)
        return self._arrays

    @property
    def test_ranks(self) -> np.ndarray:
        return self.arrays()["test_ranks"]


@dataclass
class RunResult(_RankSidecar):
    config: RunConfig
    valid_metrics: dict
    test_metrics: dict
    history: list[dict]
    best_epoch: int
    n_params: int
    train_seconds: float
    eval_seconds: float
    peak_memory_mb: float
    provenance: dict
    path: Path | None = None
    _arrays: dict | None = field(default=None, repr=False)


def results_dir() -> Path:
    """``$EMKD_RESULTS_DIR`` if set (smoke runs in CI use a scratch folder), else ``results/``."""
    return Path(os.environ.get("EMKD_RESULTS_DIR", REPO_ROOT / "results"))


def result_path(config: RunConfig, root: Path | None = None) -> Path:
    return (root or results_dir()) / config.dataset / f"{config.name()}.json"


def load_result(path: Path) -> RunResult:
    try:
        record = json.loads(Path(path).read_text())
        return RunResult(config=RunConfig.from_dict(record["config"]), path=Path(path),
                         **{k: record[k] for k in ("valid_metrics", "test_metrics", "history", "best_epoch",
                                                   "n_params", "train_seconds", "eval_seconds",
                                                   "peak_memory_mb", "provenance")})
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"result file {path} is unreadable or incomplete: {err}") from err


def count_parameters(config: RunConfig, dataset) -> int:
    """Trainable parameters of the model ``config`` builds on ``dataset``."""
    model, _ = build_method(config, dataset)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def stored(config: RunConfig, root: Path | None = None) -> RunResult | None:
    """The stored result of ``config``, or None if it has not been run."""
    path = result_path(config, root)
    return load_result(path) if path.exists() else None


def run_or_load(config: RunConfig, device: str | None = None, progress: bool = True,
                root: Path | None = None) -> RunResult:
    """Return the stored result of ``config``, training it first if needed.

    With ``EMKD_REQUIRE_CACHED=1`` a missing result raises instead of training,
    so the committed book can only show stored runs.
    """
    path = result_path(config, root)
    if path.exists():
        return load_result(path)
    if os.environ.get("EMKD_REQUIRE_CACHED") == "1":
        raise FileNotFoundError(
            f"no stored result for {config.name()} at {path} and EMKD_REQUIRE_CACHED=1; "
            f"run it with: python -m emkd_lib run --profile {config.profile} "
            f"--dataset {config.dataset} --method {config.method} --seed {config.seed}")
    return execute(config, device=device, progress=progress, path=path)


def execute(config: RunConfig, device: str | None = None, progress: bool = True,
            path: Path | None = None) -> RunResult:
    """Train ``config`` now and store its result (overwriting any previous one)."""
    device = resolve_device(device)
    dataset, split = _run_data(config)
    model, recipe = build_method(config, dataset)
    settings = TrainSettings(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                             weight_decay=config.weight_decay, grad_clip=config.grad_clip,
                             patience=config.patience, seed=config.seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    fitted: FitResult = fit(model, recipe, split, settings, device=device, progress=progress)
    result = RunResult(
        config=config, valid_metrics=fitted.valid_metrics, test_metrics=fitted.test_metrics,
        history=fitted.history, best_epoch=fitted.best_epoch,
        n_params=sum(p.numel() for p in model.parameters()),
        train_seconds=fitted.train_seconds, eval_seconds=fitted.eval_seconds,
        peak_memory_mb=peak_memory_mb(device),
        provenance=provenance(device, dataset.source, fitted.examples_per_epoch),
        path=path or result_path(config),
        _arrays={"test_ranks": fitted.test_ranks, "valid_ranks": fitted.valid_ranks},
    )
    store(result)
    # The best epoch's weights, for ensembles of independently trained models.
    # Not committed (.gitignore): the stored ranks are what the book reads.
    _atomic_write(result.path.with_suffix(".pt"), lambda f: torch.save(model.state_dict(), f))
    return result


def _run_data(config: RunConfig):
    """The dataset a run trains on and its leave-one-out split."""
    dataset = load_dataset(config.dataset)
    if config.max_users:
        # The same users for every seed: the subsample belongs to the data, so
        # seeds can be paired user by user and ensembled.
        dataset = subsample_users(dataset, config.max_users, seed=0)
    return dataset, leave_one_out(dataset.sequences)


def popularity_test_ranks(config: RunConfig) -> np.ndarray:
    """Test ranks of the most-popular recommender on the users ``config``
    trains on (its subsample, if any), popularity counted on their training
    sequences: the floor a trained model should clear."""
    dataset, split = _run_data(config)
    return popularity_ranks(split.train, split.test_inputs, split.test_targets, dataset.n_items)


def store(result: RunResult) -> None:
    """Write the sidecar, then the JSON, each atomically."""
    _write_record(result.path, {
        "config": result.config.to_dict(), "key": result.config.key(), "core_version": CORE_VERSION,
        "valid_metrics": result.valid_metrics, "test_metrics": result.test_metrics,
        "best_epoch": result.best_epoch, "history": result.history, "n_params": result.n_params,
        "train_seconds": result.train_seconds, "eval_seconds": result.eval_seconds,
        "peak_memory_mb": result.peak_memory_mb, "provenance": result.provenance,
    }, result._arrays)


def _write_record(path: Path, record: dict, arrays: dict[str, np.ndarray]) -> None:
    """The ``.npz`` sidecar first, then the JSON that points at it, each atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path.with_suffix(".npz"), lambda f: np.savez_compressed(f, **arrays))
    text = json.dumps(record, indent=1, sort_keys=True)
    _atomic_write(path, lambda f: f.write(text.encode()))


def _read_sidecar(path: Path) -> dict[str, np.ndarray]:
    with np.load(path.with_suffix(".npz")) as f:
        return {k: f[k] for k in f.files}


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide results from other users of a shared checkout
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def machine_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x{os.cpu_count()} (torch threads {torch.get_num_threads()})"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "emkd_lib"], cwd=REPO_ROOT,
                               capture_output=True, text=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# Read once, when the library is imported: the code that runs is the code of
# this moment, whatever is committed while a long campaign is under way.
_COMMIT_AT_IMPORT = git_commit()


def provenance(device: torch.device, data_source: str, examples_per_epoch: int) -> dict:
    return {
        "commit": _COMMIT_AT_IMPORT, "emkd_lib": __version__, "core_version": CORE_VERSION,
        "torch": torch.__version__, "python": platform.python_version(),
        "device": str(device), "machine": machine_name(device),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "data_source": data_source, "examples_per_epoch": examples_per_epoch,
    }


BASELINE_METHODS = ("gru4rec", "caser", "sasrec", "bert4rec")
BASELINE_DATASETS = ("beauty", "toys", "ml-1m")


def baseline_grid(profile: str, datasets=BASELINE_DATASETS, seeds=(0,),
                  methods=BASELINE_METHODS) -> list[RunConfig]:
    """The configs of the baseline chapter (EMKD Table 3's single models)."""
    return [profile_config(profile, d, m, seed=s) for d in datasets for m in methods for s in seeds]


# EMKD Table 4: each row's change to the EMKD params of the profile.
EMKD_ABLATIONS = {
    "EMKD": {},
    "w/o ICL": {"icl": False},
    "w/o CCL": {"ccl": False},
    "w/o KD": {"kd": False},
    "independent training": {"icl": False, "ccl": False, "kd": False},
    "single encoder": {"n_networks": 1},
    "w/o AP": {"ap": False},
    "EMKD x2": {"n_networks": 2},
    "EMKD x4": {"n_networks": 4},
}
# EMKD Figure 3: the values each hyperparameter is swept over, others fixed.
EMKD_SENSITIVITY = {
    "lam": (0.001, 0.01, 0.1),
    "mu": (0.0001, 0.001, 0.01),
    "tau": (0.1, 0.3, 1.0),
    "n_views": (1, 2, 4),
}
# The order in which Table 4's rows are run when the budget allows only some:
# the rows that test EMKD's claims first.
EMKD_ABLATION_PRIORITY = ("EMKD", "single encoder", "independent training", "w/o KD", "EMKD x2",
                          "w/o CCL", "w/o ICL", "w/o AP", "EMKD x4")


def emkd_variant(profile: str, dataset: str, seed: int = 0, max_users: int | None = None,
                 method: str = "emkd", **param_changes) -> RunConfig:
    """The profile's config of ``method`` (EMKD or EMKD on another encoder)
    with some EMKD params changed."""
    base = profile_config(profile, dataset, method, seed=seed)
    params = dict(base.params)
    unknown = set(param_changes) - set(params)
    if unknown:
        raise ValueError(f"unknown emkd params {sorted(unknown)}")
    params.update(param_changes)
    return dataclasses.replace(base, params=tuple(sorted(params.items())),
                               max_users=max_users if profile != "smoke" else base.max_users)


def emkd_ablation_grid(profile: str, datasets=("beauty",), seeds=(0,), methods=None,
                       rows=EMKD_ABLATION_PRIORITY) -> list[RunConfig]:
    """Table 4's runs, most informative rows first."""
    return [emkd_variant(profile, d, s, **EMKD_ABLATIONS[row]) for d in datasets for s in seeds for row in rows]


# Figures 3 and 4 add seventeen runs to Table 4's nine, more than two cores
# can train at Table 4's budget, so the cpu profile shrinks each figure where it
# hurts it least. Figure 3 keeps the full dataset (tried on 3,000 users,
# BERT4Rec-EMKD barely learned and patience stopped it at epoch 6) and gives
# every point, its own default included, 5 of Table 4's 20 epochs. Figure 4's
# next-item EMKD predicts at every position of every view, about seven times the logits of masked positions
# (an epoch of emkd-sasrec x3 on full Beauty takes ~10 min on one core), so it
# runs on a fixed subsample of users (``subsample_users`` with seed 0: the same
# users in every run, all items, the same protocol), each encoder alone
# trained on the same users as its reference. The paper profile changes neither.
SENSITIVITY_EPOCHS = {"cpu": 5}
ENCODER_SWEEP_USERS = {"cpu": 3000}
# Every EMKD-SASRec run on the subsample crosses a plateau of validation
# NDCG@10 between epochs 3 and 8 before it climbs again; x2 and x3 got through
# it and ran to the cap, x4 did not (patience 3 stopped it at epoch 5). These
# (encoder, N) points are also trained without early stopping, i.e. for the
# full epoch budget that the other points of their line actually used. GRU4Rec
# and Caser alone (N = 1) stop at epochs 11-13 near the popularity floor; on
# ML-1M the same encoders crossed such a plateau only when patience let them
# (``profile_config``), so their cheap N = 1 points test whether this one is
# a plateau too before anyone spends hours on their N > 1 points. It is not:
# trained for all 30 epochs they stay at the same level (test NDCG@10 .0074
# and .0079 against .0075 and .0078 with patience).
ENCODER_SWEEP_WITHOUT_EARLY_STOPPING = {"cpu": (("sasrec", 4), ("gru4rec", 1), ("caser", 1))}


def emkd_sensitivity_points(profile: str, dataset: str, seed: int = 0,
                            epochs: int | None = None) -> dict[tuple[str, float], RunConfig]:
    """Figure 3's points: ``(hyperparameter, value)`` -> config, one
    hyperparameter moved at a time, each trained for ``epochs`` (default: the
    profile's ``SENSITIVITY_EPOCHS``). Every hyperparameter's default value
    maps to the same default config."""
    epochs = epochs or SENSITIVITY_EPOCHS.get(profile)
    points = {}
    for name, values in EMKD_SENSITIVITY.items():
        for v in values:
            c = emkd_variant(profile, dataset, seed, **{name: v})
            points[(name, v)] = dataclasses.replace(c, epochs=epochs) if epochs else c
    return points


def emkd_sensitivity_grid(profile: str, datasets=("beauty",), seeds=(0,), methods=None,
                          epochs: int | None = None) -> list[RunConfig]:
    """Figure 3's runs, each once: the default point first, then the moved ones."""
    configs = []
    for d in datasets:
        for s in seeds:
            points = emkd_sensitivity_points(profile, d, s, epochs)
            defaults = dict(emkd_variant(profile, d, s).params)
            first = next(iter(EMKD_SENSITIVITY))
            default = points[(first, defaults[first])]
            configs += list({c.key(): c for c in [default, *points.values()]}.values())
    return configs


def emkd_encoder_grid(profile: str, datasets=("beauty",), seeds=(0,), methods=("sasrec", "gru4rec", "caser"),
                      networks=(1, 2, 3, 4), max_users: int | None = None) -> list[RunConfig]:
    """Figure 4's runs on ``max_users`` users (default: the profile's
    ``ENCODER_SWEEP_USERS``): N = 1 is the encoder trained alone (its baseline
    config), N > 1 EMKD with N networks of it. Ordered by N, so that a grid
    cut short has compared every encoder at the smaller N; last, the points of
    ``ENCODER_SWEEP_WITHOUT_EARLY_STOPPING`` again with patience = epochs."""
    max_users = max_users or ENCODER_SWEEP_USERS.get(profile)
    configs = []
    for d in datasets:
        for s in seeds:
            for n in networks:
                for m in methods:
                    if n == 1:
                        single = profile_config(profile, d, m, seed=s)
                        configs.append(dataclasses.replace(single, max_users=max_users or single.max_users))
                    else:
                        configs.append(emkd_variant(profile, d, s, max_users=max_users, method=f"emkd-{m}",
                                                    n_networks=n))
            for m, n in ENCODER_SWEEP_WITHOUT_EARLY_STOPPING.get(profile, ()):
                if m in methods and n in networks:
                    if n == 1:
                        c = profile_config(profile, d, m, seed=s, max_users=max_users)
                    else:
                        c = emkd_variant(profile, d, s, max_users=max_users, method=f"emkd-{m}", n_networks=n)
                    configs.append(dataclasses.replace(c, patience=c.epochs))
    return configs


def emkd_depth_grid(profile: str, datasets=("beauty",), seeds=(0,), methods=("sasrec", "bert4rec"),
                    blocks=(3, 4, 1)) -> list[RunConfig]:
    """Table 5's single models with other depths than the profile's (whose
    run is the baseline chapter's); the cheaper method first, deeper first."""
    return [profile_config(profile, d, m, seed=s, n_blocks=b)
            for d in datasets for s in seeds for m in methods for b in blocks]


GRIDS = {"baselines": baseline_grid, "emkd-encoders": emkd_encoder_grid, "emkd-ablations": emkd_ablation_grid,
         "emkd-sensitivity": emkd_sensitivity_grid, "emkd-depth": emkd_depth_grid}


def run_grid(configs: list[RunConfig], device: str | None = None, progress: bool = True) -> list[RunResult]:
    """Run or load every config, with one progress bar over the grid."""
    from tqdm.auto import tqdm
    results = []
    bar = tqdm(configs, desc="runs", disable=not progress)
    for config in bar:
        bar.set_postfix_str(f"{config.dataset}/{config.method}/seed{config.seed}")
        results.append(run_or_load(config, device=device, progress=progress))
    return results


# ---- ensembles of independently trained runs (EMKD Table 1) ------------------

@dataclass
class EnsembleResult(_RankSidecar):
    """N stored runs of one method evaluated together: their logits averaged."""

    members: list[RunConfig]
    valid_metrics: dict
    test_metrics: dict
    eval_seconds: float
    provenance: dict
    path: Path | None = None
    _arrays: dict | None = field(default=None, repr=False)

    @property
    def config(self) -> RunConfig:
        return self.members[0]


def ensemble_path(members: list[RunConfig], root: Path | None = None) -> Path:
    keys = "-".join(sorted(c.key() for c in members))
    digest = hashlib.sha256(keys.encode()).hexdigest()[:12]
    first = members[0]
    seeds = "".join(str(c.seed) for c in members)
    return (root or results_dir()) / first.dataset / f"ensemble{len(members)}-{first.method}-{first.profile}-seeds{seeds}-{digest}.json"


def stored_ensemble(members: list[RunConfig], root: Path | None = None) -> EnsembleResult | None:
    """The stored evaluation of the ensemble of ``members``, or None if it has not been made."""
    path = ensemble_path(members, root)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
        return EnsembleResult(members=[RunConfig.from_dict(c) for c in record["members"]], path=path,
                              **{k: record[k] for k in ("valid_metrics", "test_metrics", "eval_seconds",
                                                        "provenance")})
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"ensemble file {path} is unreadable or incomplete: {err}") from err


def ensemble_run_or_load(members: list[RunConfig], device: str | None = None,
                         root: Path | None = None) -> EnsembleResult:
    """Evaluate the average of the members' logits (EMKD Eq. 20 applied to
    separately trained models), or load the stored evaluation.

    Members must be stored runs of one method on one dataset whose weights
    (``.pt``) are present; a missing one is a clear error naming the command.
    """
    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
    if len({(c.dataset, c.method, c.max_users) for c in members}) != 1:
        raise ValueError("ensemble members must share dataset, method and max_users")
    stored_evaluation = stored_ensemble(members, root)
    if stored_evaluation is not None:
        return stored_evaluation
    path = ensemble_path(members, root)
    if os.environ.get("EMKD_REQUIRE_CACHED") == "1":
        raise FileNotFoundError(f"no stored ensemble evaluation at {path} and EMKD_REQUIRE_CACHED=1")
    device = resolve_device(device)
    dataset, split = _run_data(members[0])
    models, recipe = [], None
    for config in members:
        weights = result_path(config, root).with_suffix(".pt")
        if not weights.exists():
            raise FileNotFoundError(
                f"ensemble member {config.name()} has no stored weights at {weights}; train it with: "
                f"python -m emkd_lib run --profile {config.profile} --dataset {config.dataset} "
                f"--method {config.method} --seed {config.seed} --force")
        model, recipe = build_method(config, dataset)
        model.load_state_dict(torch.load(weights, map_location=device))
        models.append(model.to(device).eval())
    score = ensemble_scores(models, recipe.score)
    t0 = time.perf_counter()
    ranks = {split_name: evaluate(score, getattr(split, f"{split_name}_inputs"),
                                  getattr(split, f"{split_name}_targets"), max_len=recipe.eval_max_len,
                                  device=device)
             for split_name in ("valid", "test")}
    result = EnsembleResult(
        members=list(members), valid_metrics=metrics_from_ranks(ranks["valid"]),
        test_metrics=metrics_from_ranks(ranks["test"]), eval_seconds=time.perf_counter() - t0,
        provenance=provenance(device, dataset.source, 0), path=path,
        _arrays={"test_ranks": ranks["test"], "valid_ranks": ranks["valid"]})
    _write_record(path, {"members": [c.to_dict() for c in members], "member_keys": [c.key() for c in members],
                         "core_version": CORE_VERSION, "valid_metrics": result.valid_metrics,
                         "test_metrics": result.test_metrics, "eval_seconds": result.eval_seconds,
                         "provenance": result.provenance}, result._arrays)
    return result
