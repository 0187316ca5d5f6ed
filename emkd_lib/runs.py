"""Running a config, or loading its stored result: seeding, data, the
training loop, checkpoints, the popularity floor, and ensembles of
independently trained runs (EMKD Table 1)."""
from __future__ import annotations

import json
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import settings as settings_module
from .config import RunConfig
from .data import dataset_files, leave_one_out, load_dataset, subsample_users
from .evaluation import evaluate, metrics_from_ranks, popularity_ranks
from .files import LockHeld, atomic_link_or_copy, atomic_write, exclusive_lock, file_sha256
from .methods import build_method
from .methods.baselines import ensemble_scores
from .store import (code_commit, cpu_features, machine_name, RunResult, StoreError, load_result, peak_memory_mb,
                    provenance, read_record, read_sidecar, result_path, run_key, store_result, write_record)
from .train import checkpoint_summary, fit, resolve_device, seed_everything


def _settings(settings):
    return settings or settings_module.current()


def run_data(config: RunConfig, settings=None):
    """The dataset a run trains on (its fixed subsample, if any) and its leave-one-out split."""
    return dataset_and_split(config.dataset, config.data, settings)


def dataset_and_split(name: str, d, settings=None):
    """``run_data`` from a dataset name and a ``DataConfig`` alone."""
    dataset = load_dataset(name, on_short=d.on_short, remap_ids=d.remap_ids,
                           allow_modified=d.allow_modified, settings=_settings(settings))
    if d.max_users:
        # The same users for every seed: the subsample belongs to the data, so
        # seeds can be paired user by user and ensembled.
        dataset = subsample_users(dataset, d.max_users, seed=0)
    return dataset, leave_one_out(dataset.sequences)


def key_of(config: RunConfig, settings=None) -> str:
    return run_key(config, dataset_files(config.dataset, settings=_settings(settings)))


def path_of(config: RunConfig, settings=None, root: Path | None = None) -> Path:
    settings = _settings(settings)
    return result_path(config, key_of(config, settings), root or settings.results_dir)


def stored(config: RunConfig, settings=None, root: Path | None = None, allow_dirty: bool | None = None
           ) -> RunResult | None:
    """The stored result of ``config``, or None if it has not been run. A
    result trained from uncommitted code is refused unless ``allow_dirty``
    (default: ``EMKD_ALLOW_DIRTY``)."""
    settings = _settings(settings)
    path = path_of(config, settings, root)
    if not path.exists():
        return None
    result = load_result(path)
    allow = settings.allow_dirty if allow_dirty is None else allow_dirty
    if result.dirty and not allow:
        raise StoreError(f"{path.name} was trained from uncommitted code ({result.provenance['commit']}); "
                         f"retrain it from a clean checkout, or set EMKD_ALLOW_DIRTY=1 to show it anyway")
    return result


def command_for(config: RunConfig) -> str:
    """The CLI command that trains exactly ``config``: its profile's config of
    the method, plus one ``--set`` per field that differs from it."""
    from .profiles import profile_config
    base = profile_config(config.profile, config.dataset, config.method, seed=config.seed, encoder=config.encoder)
    changes = []
    for part in ("encoder_config", "params", "train", "data", "evaluation"):
        mine, theirs = vars(getattr(config, part)), vars(getattr(base, part))
        changes += [f"{part}__{k}={json.dumps(v)}" for k, v in mine.items() if v != theirs[k]]
    command = (f"python -m emkd_lib run --profile {config.profile} --dataset {config.dataset} "
               f"--method {config.method} --encoder {config.encoder} --seed {config.seed}")
    return command + (" --set " + " ".join(changes) if changes else "")


def run_or_load(config: RunConfig, device: str | None = None, progress: bool = True, settings=None,
                root: Path | None = None) -> RunResult:
    """The stored result of ``config``, training it first if needed (and
    resuming from its checkpoint if one was left). With
    ``EMKD_REQUIRE_CACHED=1`` a missing result raises instead of training,
    so the committed book can only show stored runs."""
    settings = _settings(settings)
    result = stored(config, settings, root)
    if result is not None:
        return result
    if settings.require_cached:
        raise FileNotFoundError(f"no stored result for {config.label()} on {config.dataset} and "
                                f"EMKD_REQUIRE_CACHED=1; run it with: {command_for(config)}")
    return execute(config, device=device, progress=progress, settings=settings, root=root, reuse_stored=True)


def checkpoint_path(key: str, settings, world_size: int | None = None) -> Path:
    """Where a run's checkpoint lives; a data-parallel run of ``world_size``
    processes has its own (it holds every rank's generators), so it resumes
    only a run of the same width, and a single-process run never resumes it."""
    return settings.checkpoint_dir / (f"{key}.pt" if world_size is None else f"{key}.ddp{world_size}.pt")


def capped_checkpoint_path(config: RunConfig, settings) -> Path:
    """Where a run stopped by its epoch cap keeps its last checkpoint: named
    by the key its config has at a cap of 1 epoch, so that every run that
    differs from it only by its cap finds it. A run with a higher cap trains
    on from there instead of from epoch 1 (``_start_from_capped_checkpoint``);
    nothing in training reads the cap but the loop's end, so it trains the
    epochs a fresh run with that cap trains. The slot holds the furthest
    capped run (``_keep_capped_checkpoint``)."""
    return settings.checkpoint_dir / "capped" / f"{key_of(config.replace(train__epochs=1), settings)}.pt"


def _capped_slot_lock(capped: Path, settings) -> Path:
    """The lock under which a capped run's checkpoint replaces the slot ``capped``."""
    return settings.cache_dir / "locks" / f"capped-{capped.stem}.lock"


def _start_from_capped_checkpoint(config: RunConfig, checkpoint: Path, settings) -> None:
    """Give ``config`` (with no ``checkpoint`` of its own yet) a copy of the
    capped run's last checkpoint where that run stopped below ``config``'s
    cap. The copy is read, not the slot, because another process may replace
    the slot in between. The record does not say so: the run is the fresh
    one, and its ``resumed_from_epoch`` and per-epoch stamps (commit,
    machine) say where and by what each epoch was trained."""
    capped = capped_checkpoint_path(config, settings)
    if checkpoint.exists() or not capped.exists():
        return
    atomic_link_or_copy(capped, checkpoint)   # the slot stays: a later, higher cap continues it too
    if not _below_cap(checkpoint_summary(checkpoint), config):
        checkpoint.unlink()


def _below_cap(summary: dict, config: RunConfig) -> bool:
    """Whether a capped run's checkpoint (its ``checkpoint_summary``)
    stopped below ``config``'s cap, so that ``config`` trains on from it."""
    return summary["epoch"] < config.train.epochs


def _keep_capped_checkpoint(config: RunConfig, checkpoint: Path, settings) -> None:
    """Move a capped run's last ``checkpoint`` to its slot, unless the slot
    holds a run that went further (a higher cap's): the slot only moves
    forward. Under the slot's own lock, since runs of different caps (each
    holding only its own run lock) may end at once."""
    capped = capped_checkpoint_path(config, settings)
    with exclusive_lock(_capped_slot_lock(capped, settings), wait=True):
        if capped.exists() and checkpoint_summary(capped)["epoch"] >= checkpoint_summary(checkpoint)["epoch"]:
            checkpoint.unlink()
        else:
            capped.parent.mkdir(parents=True, exist_ok=True)
            checkpoint.replace(capped)


def checkpoint_to_resume(config: RunConfig, key: str, settings) -> tuple[Path, dict] | None:
    """The checkpoint ``execute`` trains ``config`` (run ``key``) on from,
    with its ``checkpoint_summary``, if any: its own, else a capped run's
    that stopped below its cap."""
    own = checkpoint_path(key, settings)
    if own.exists():
        return own, checkpoint_summary(own)
    capped = capped_checkpoint_path(config, settings)
    if capped.exists() and _below_cap(summary := checkpoint_summary(capped), config):
        return capped, summary
    return None


class RunInProgress(RuntimeError):
    """Another process is training the same run (its lock is held)."""


def run_lock_path(key: str, settings) -> Path:
    """The lock a process holds while it trains run ``key`` (one per key,
    in the cache beside the checkpoints: the processes of one machine share it)."""
    return settings.cache_dir / "locks" / f"{key}.lock"


def execute(config: RunConfig, device: str | None = None, progress: bool = True, settings=None,
            root: Path | None = None, stop_after_epoch: int | None = None, parallel=None,
            reuse_stored: bool = False) -> RunResult | None:
    """Train ``config`` now (resuming from its checkpoint) and store its result.

    The process holds the run's lock (``run_lock_path``) while it trains: a
    second process asked for the same run raises ``RunInProgress`` instead
    of training it too (two writers of one checkpoint). ``reuse_stored``:
    once the lock is held, return the stored result if another process
    stored it after the caller looked (``run_or_load``). With ``parallel`` this process is
    one rank of a data-parallel run (``distributed.launch``): every rank
    seeds and builds the model as here, so initial weights match; rank 0
    alone locks and stores, the others return None."""
    settings = _settings(settings)
    code_commit()  # the code this run starts with, whatever is committed while it trains
    dataset, split = run_data(config, settings)
    key = run_key(config, dataset.files)
    if parallel is not None and not parallel.is_main:
        return _train_and_store(config, device, progress, settings, root, stop_after_epoch, parallel,
                                dataset, split, key)
    try:
        with exclusive_lock(run_lock_path(key, settings)):
            if reuse_stored and parallel is None and (result := stored(config, settings, root)) is not None:
                return result
            return _train_and_store(config, device, progress, settings, root, stop_after_epoch, parallel,
                                    dataset, split, key)
    except LockHeld:
        raise RunInProgress(f"{config.dataset}/{config.label()} is being trained by another process "
                            f"(it holds {run_lock_path(key, settings)}); rerun when it has finished") from None


def _process_seconds(before) -> dict:
    """CPU seconds this process spent in user and in kernel mode since
    ``before`` (a ``getrusage``), i.e. while it trained this run (since its
    resume, for a resumed run): a large kernel share means page faults, e.g.
    glibc's malloc returning every large tensor to the system
    (``process.keep_freed_cpu_memory``), which makes the run's recorded
    seconds no measure of the method."""
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"user": round(after.ru_utime - before.ru_utime, 3), "system": round(after.ru_stime - before.ru_stime, 3)}


def _train_and_store(config, device, progress, settings, root, stop_after_epoch, parallel, dataset, split,
                     key) -> RunResult | None:
    device = resolve_device(device)
    # Seeded before the model is built: the initial weights are the seed's.
    seed_everything(config.seed, device)
    model, recipe = build_method(config, dataset)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    checkpoint = checkpoint_path(key, settings, None if parallel is None else parallel.world_size)
    if parallel is None:   # a data-parallel run's checkpoint holds every rank's generators: not a slot's
        _start_from_capped_checkpoint(config, checkpoint, settings)
    exclude = config.evaluation.history_exclusion == "all-but-target"
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    fitted = fit(model, recipe, split, config.train, seed=config.seed, device=device, progress=progress,
                 checkpoint=checkpoint, exclude_history=exclude, stop_after_epoch=stop_after_epoch,
                 parallel=parallel, epoch_stamp={"commit": code_commit(), "machine": machine_name(device),
                                              "cpu_features": cpu_features()})
    if parallel is not None and not parallel.is_main:
        return None
    floor = popularity_ranks(split.train, split.valid_inputs, split.valid_targets, dataset.n_items,
                             exclude_history=exclude)
    floor_ndcg = metrics_from_ranks(floor)["NDCG@10"]
    arrays = {"test_ranks": fitted.test_ranks, "valid_ranks": fitted.valid_ranks}
    if recipe.analysis is not None:
        arrays.update(recipe.analysis(model, split))
    prov = dict(provenance(device, dataset.source, dataset.files, fitted.examples_per_epoch),
                command=command_for(config), process_seconds=_process_seconds(cpu_before))
    if parallel is not None:
        # Same config, same key; but not the same computation as one process
        # (see distributed), so the record says how it was trained.
        prov.update(ddp_world_size=parallel.world_size, command=f"{prov['command']} --ddp {parallel.world_size}")
    commits = trained_by_commits(fitted.history)
    result = RunResult(
        config=config, key=key, valid_metrics=fitted.valid_metrics, test_metrics=fitted.test_metrics,
        history=fitted.history, best_epoch=fitted.best_epoch,
        n_params=sum(p.numel() for p in model.parameters()),
        train_seconds=fitted.train_seconds, eval_seconds=fitted.eval_seconds,
        peak_memory_mb=peak_memory_mb(device), provenance=prov,
        flags={"stopped_by": fitted.stopped_by, "steps": fitted.steps,
               "resumed_from_epoch": fitted.resumed_from_epoch,
               "popularity_valid_ndcg10": floor_ndcg,
               "below_popularity": fitted.valid_metrics["NDCG@10"] < floor_ndcg,
               # a resumed run is dirty where any of its epochs was trained from uncommitted code
               "dirty": any(c.endswith("+dirty") for c in [prov["commit"], *commits]),
               "trained_by_commits": commits},
        path=result_path(config, key, root or settings.results_dir),
        arrays=arrays,
    )
    store_result(result)
    # The best epoch's weights, for ensembles of independently trained models.
    # Not committed (.gitignore): the stored ranks are what the book reads.
    beside, kept = weights_paths(result.path, settings)
    atomic_write(beside, lambda f: torch.save(model.state_dict(), f))
    atomic_link_or_copy(beside, kept)
    if fitted.stopped_by == "epoch cap" and parallel is None and checkpoint.exists():
        _keep_capped_checkpoint(config, checkpoint, settings)
    else:
        checkpoint.unlink(missing_ok=True)
    return result


def weights_paths(record: Path, settings) -> tuple[Path, Path]:
    """Where the weights of the run stored at ``record`` are written: beside
    the record, and under ``settings.weights_dir`` (which outlives the work
    tree)."""
    beside = record.with_suffix(".pt")
    return beside, settings.weights_dir / record.parent.name / beside.name


def stored_weights(record: Path, settings) -> Path | None:
    """The saved best-epoch weights of the run stored at ``record``, beside
    it or in the weights cache; None when neither holds them."""
    return next((path for path in weights_paths(record, settings) if path.is_file()), None)


def trained_by_commits(history: list[dict]) -> list[str]:
    """The code commits that trained a run's epochs, in the order they
    first trained one: one for a run trained at one commit; more for a run
    resumed from its checkpoint by later code, whose record then cannot be
    replayed from one commit (changes such as the CPU dropout masks of
    ``models.layers.Dropout`` alter the random draws). Epochs checkpointed
    before commits were stamped count as "unrecorded"."""
    return list(dict.fromkeys(row.get("commit", "unrecorded") for row in history))


def add_analysis(config: RunConfig, settings=None) -> RunResult:
    """A stored run's analysis arrays (``Recipe.analysis``), computed from
    its saved best-epoch weights (the ``.pt`` beside the record) when the run
    was stored without them, and stored into its record (atomically, with
    the commit that computed them and the weights' sha256 in
    ``flags["analysis_added"]``). A run that has them, or whose method
    stores none, is returned unchanged. The arrays are a deterministic
    function of the weights and the data, so nothing is retrained."""
    settings = _settings(settings)
    result = stored(config, settings)
    if result is None:
        raise FileNotFoundError(f"no stored result for {config.label()} on {config.dataset}; run it first")
    if any(name.startswith("analysis_") for name in result.ranks()):
        return result
    dataset, split = run_data(config, settings)
    seed_everything(config.seed)
    model, recipe = build_method(config, dataset)
    if recipe.analysis is None:
        return result
    weights = stored_weights(result.path, settings)
    if weights is None:
        raise FileNotFoundError(f"{result.path.name}: its weights are neither beside it nor under "
                                f"{settings.weights_dir} (they are not committed); retrain it to get its "
                                f"analysis arrays")
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval()
    result.arrays = {**result.ranks(), **recipe.analysis(model, split)}
    result.flags = {**result.flags, "analysis_added": {"commit": code_commit(),
                                                      "weights_sha256": file_sha256(weights)}}
    store_result(result)
    return result


def popularity_test_ranks(config: RunConfig, settings=None) -> np.ndarray:
    """Test ranks of the most-popular recommender on the users ``config``
    trains on, popularity counted on their training sequences: the floor a
    trained model should clear."""
    dataset, split = run_data(config, settings)
    return popularity_ranks(split.train, split.test_inputs, split.test_targets, dataset.n_items,
                            exclude_history=config.evaluation.history_exclusion == "all-but-target")


def grid_items(configs) -> list[tuple[str, RunConfig]]:
    """(label, config) pairs of a label -> config dict, or of a list, each
    then labelled "dataset/label" (one grid may hold one label per dataset)."""
    if isinstance(configs, dict):
        return list(configs.items())
    return [(f"{c.dataset}/{c.label()}", c) for c in configs]


def run_grid(configs, device: str | None = None, progress: bool = True, settings=None) -> dict:
    """Run or load every config of ``configs`` (a label -> config dict, or a
    list), with one progress bar over the grid; returns label -> result, or
    None for a run another process is training (``RunInProgress``, skipped)."""
    from tqdm.auto import tqdm
    items = grid_items(configs)
    results = {}
    bar = tqdm(items, desc="runs", disable=not progress)
    for label, config in bar:
        bar.set_postfix_str(f"{config.dataset}/{config.label()}")
        try:
            results[label] = run_or_load(config, device=device, progress=progress, settings=settings)
        except RunInProgress as busy:   # another process trains it; the rest of the grid goes on
            tqdm.write(f"skipped: {busy}", file=sys.stderr)
            results[label] = None
    return results


# ---- ensembles of independently trained runs (EMKD Table 1) ------------------

@dataclass
class EnsembleResult:
    """N stored runs of one method evaluated together: their logits averaged (Eq. 20)."""

    members: list[RunConfig]
    valid_metrics: dict
    test_metrics: dict
    eval_seconds: float
    provenance: dict
    path: Path | None = None
    arrays: dict | None = field(default=None, repr=False)

    @property
    def config(self) -> RunConfig:
        return self.members[0]

    @property
    def test_ranks(self) -> np.ndarray:
        if self.arrays is None:
            self.arrays = read_sidecar(self.path)
        return self.arrays["test_ranks"]


def ensemble_path(member_keys: list[str], members: list[RunConfig], root: Path) -> Path:
    import hashlib
    digest = hashlib.sha256("-".join(sorted(member_keys)).encode()).hexdigest()[:16]
    first = members[0]
    seeds = "".join(str(c.seed) for c in members)
    method = first.label().rsplit('-seed', 1)[0]
    return Path(root) / first.dataset / f"ensemble{len(members)}-{method}-seeds{seeds}-{digest}.json"


def stored_ensemble(members: list[RunConfig], settings=None) -> EnsembleResult | None:
    """The stored evaluation of the ensemble of ``members``, or None if it has not been made."""
    settings = _settings(settings)
    path = ensemble_path([key_of(c, settings) for c in members], members, settings.results_dir)
    if not path.exists():
        return None
    record = read_record(path)
    try:
        return EnsembleResult(members=[RunConfig.from_dict(c) for c in record["members"]], path=path,
                              **{k: record[k] for k in ("valid_metrics", "test_metrics", "eval_seconds",
                                                        "provenance")})
    except (KeyError, TypeError, ValueError) as err:
        raise StoreError(f"ensemble file {path} is incomplete: {err}") from None


def ensemble_run_or_load(members: list[RunConfig], device: str | None = None, settings=None) -> EnsembleResult:
    """Evaluate the average of the members' logits (EMKD Eq. 20 applied to
    separately trained models), or load the stored evaluation. Members must
    be stored runs of one method on one dataset whose weights (``.pt``) are
    present; a missing one is a clear error naming the command."""
    settings = _settings(settings)
    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
    if len({(c.dataset, c.method, c.encoder, c.data.max_users) for c in members}) != 1:
        raise ValueError("ensemble members must share dataset, method, encoder and max_users")
    if len(set(members)) != len(members):
        raise ValueError(f"ensemble members must differ (seeds {[c.seed for c in members]} repeat a model)")
    found = stored_ensemble(members, settings)
    if found is not None:
        return found
    keys = [key_of(c, settings) for c in members]
    path = ensemble_path(keys, members, settings.results_dir)
    if settings.require_cached:
        raise FileNotFoundError(f"no stored ensemble evaluation at {path} and EMKD_REQUIRE_CACHED=1")
    device = resolve_device(device)
    dataset, split = run_data(members[0], settings)
    models, recipe = [], None
    for config, key in zip(members, keys):
        record = result_path(config, key, settings.results_dir)
        if not record.is_file():
            raise FileNotFoundError(f"ensemble member {config.label()} has not been trained; train it with: "
                                    f"{command_for(config)}")
        weights = stored_weights(record, settings)
        if weights is None:
            raise FileNotFoundError(f"ensemble member {config.label()} has no stored weights (beside its record "
                                    f"or under {settings.weights_dir}); train it with: {command_for(config)} --force")
        model, recipe = build_method(config, dataset)
        model.load_state_dict(torch.load(weights, map_location=device))
        models.append(model.to(device).eval())
    score = ensemble_scores(models, recipe.score)
    exclude = members[0].evaluation.history_exclusion == "all-but-target"
    t0 = time.perf_counter()
    ranks = {name: evaluate(score, getattr(split, f"{name}_inputs"), getattr(split, f"{name}_targets"),
                            max_len=recipe.eval_max_len, device=device, exclude_history=exclude)
             for name in ("valid", "test")}
    result = EnsembleResult(
        members=list(members), valid_metrics=metrics_from_ranks(ranks["valid"]),
        test_metrics=metrics_from_ranks(ranks["test"]), eval_seconds=time.perf_counter() - t0,
        provenance=provenance(device, dataset.source, dataset.files, 0), path=path,
        arrays={"test_ranks": ranks["test"], "valid_ranks": ranks["valid"]})
    write_record(path, {"members": [c.to_dict() for c in members], "member_keys": keys,
                        "valid_metrics": result.valid_metrics, "test_metrics": result.test_metrics,
                        "eval_seconds": result.eval_seconds, "provenance": result.provenance}, result.arrays)
    return result


# ---- a chapter's grid, loaded (or trained) at once ------------------------------

def results_for(grid: dict, train_missing: bool = False, device: str | None = None) -> dict:
    """label -> stored run (or None where not run) of a study's grid; with
    ``train_missing`` the missing ones are trained first."""
    if train_missing:
        return {label: run_or_load(config, device=device) for label, config in grid.items()}
    return {label: stored(config) for label, config in grid.items()}


def grid_progress(configs, settings=None) -> list[dict]:
    """Where each run of a grid stands, without training or locking
    anything (``grid --plan``): per config a dict of its run ``key``, the
    ``config`` and its ``status``: "stored" (with ``result``),
    "checkpointed" (with the ``checkpoint_summary`` of its
    ``checkpoint_to_resume``, a capped run's included, and ``saved``, its
    modification time: a recent one is a run in training) or "not started"."""
    settings = _settings(settings)
    rows = []
    for config in configs:
        key = key_of(config, settings)
        row = {"key": key, "config": config, "status": "not started"}
        if (result := stored(config, settings, allow_dirty=True)) is not None:
            row.update(status="stored", result=result)
        elif (found := checkpoint_to_resume(config, key, settings)) is not None:
            checkpoint, summary = found
            row.update(status="checkpointed", progress=summary,
                       saved=time.strftime("%Y-%m-%d %H:%M", time.localtime(checkpoint.stat().st_mtime)))
        rows.append(row)
    return rows


def grid_progress_at(configs, precision: str, settings=None) -> list[dict]:
    """``grid_progress`` of the configs that ``grid --precision`` trains: a
    run stored or checkpointed at its own precision keeps it (work already
    paid for is not redone), every other run is looked up, and trained, at
    ``precision``. The campaign (``__main__``) and the study budget
    (``as_trained_at``) both read a grid through this. Like every
    ``grid_progress``, a record trained from uncommitted code counts as
    stored (the book's loader is the one that refuses it)."""
    rows = grid_progress(configs, settings)
    redo = [i for i, row in enumerate(rows)
            if row["status"] == "not started" and row["config"].train.precision != precision]
    twins = grid_progress([rows[i]["config"].replace(train__precision=precision) for i in redo], settings)
    for i, row in zip(redo, twins):
        rows[i] = row
    return rows


def as_trained_at(configs, precision: str, settings=None) -> list:
    """The configs of ``grid_progress_at``: what ``grid --precision`` trains."""
    return [row["config"] for row in grid_progress_at(configs, precision, settings)]


def ensembles_for(grid: dict, runs: dict, seeds, train_missing: bool = False, device: str | None = None) -> dict:
    """EMKD Table 1's ensembles: ``(dataset, method) -> EnsembleResult`` (or
    None where a member is missing) of the runs of ``seeds`` in a
    ``baseline_grid`` and its results."""
    out = {}
    for dataset, method in dict.fromkeys((d, m) for d, m, s in grid):
        members = [grid[(dataset, method, s)] for s in seeds]
        if any(runs.get((dataset, method, s)) is None for s in seeds):
            out[(dataset, method)] = None
        elif train_missing:
            out[(dataset, method)] = ensemble_run_or_load(members, device=device)
        else:
            out[(dataset, method)] = stored_ensemble(members)
    return out
