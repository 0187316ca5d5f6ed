"""Where a grid's runs train: one after another in this process (``local``,
``runs.run_grid``), or as tasks on a Ray cluster (``ray``).

On Ray every run that is not in the store yet is one task: it trains on a
worker through ``runs.execute``, exactly as a local run does, into a scratch
store there, and returns the result's two files (the JSON record and its
``.npz`` ranks; not the ``.pt`` weights). The driver is the store's one
writer: it writes them atomically, sidecar first, as ``store.write_record``
does, so workers need no shared filesystem for results. A worker keeps its
checkpoints under its own ``EMKD_CACHE_DIR``, so a task that Ray retries on
the same worker resumes. Workers get the driver's ``EMKD_*`` variables
(Ray's ``runtime_env``), and the thread count the driver was given, so a run
on a worker of the same machine type gives the bits it gives locally.

A run that fails (on the driver while it is looked up, or in its task) is
reported with its label and error and does not stop the others; running the
grid again trains only what is still missing.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import settings as settings_module
from .config import RunConfig
from .extras import require
from .files import atomic_write_bytes
from .process import configure_process
from .runs import command_for, execute, grid_items, key_of, stored
from .store import RunResult, load_result, result_path

EXECUTORS = ("local", "ray")


def import_ray():
    return require("ray", "--executor ray needs Ray, an optional extra: pip install -e '.[scale]'")


@dataclass(frozen=True)
class Failure:
    run: str    # dataset/label
    error: str  # one line: the exception's type and message


@dataclass
class GridOutcome:
    results: dict[str, RunResult]                       # label -> result, of every run now stored
    failures: list[Failure] = field(default_factory=list)
    trained: list[str] = field(default_factory=list)    # labels this call trained (the rest were loaded)


def one_line(err: BaseException) -> str:
    """An exception as one line; a Ray task's error as the exception the task raised."""
    err = getattr(err, "cause", None) or err
    message = err.args[0] if isinstance(err, KeyError) and err.args else err
    return f"{type(err).__name__}: {' '.join(str(message).split())}"


def _name(config: RunConfig) -> str:
    return f"{config.dataset}/{config.label()}"


def train_in_worker(config: RunConfig, device: str, threads: int) -> dict:
    """A Ray task: train ``config`` here and return its record's files."""
    settings = settings_module.current()  # the driver's EMKD_* variables, through runtime_env
    configure_process(threads, settings.keep_freed_memory)
    with tempfile.TemporaryDirectory(prefix="emkd-run-") as scratch:
        result = execute(config, device=device, progress=False, settings=settings, root=Path(scratch))
        return {"key": result.key, "record": result.path.read_bytes(),
                "ranks": result.path.with_suffix(".npz").read_bytes()}


def _task_device(device: str | None, ray) -> tuple[str, int]:
    """The device a task trains on and the GPUs it asks Ray for. Ray makes a
    task's GPU the only one it sees, so a CUDA task trains on ``cuda``."""
    if device in (None, "auto"):
        return ("cuda", 1) if ray.cluster_resources().get("GPU", 0) >= 1 else ("cpu", 0)
    if torch.device(device).type == "cuda":
        return "cuda", 1
    return device, 0


def _forwarded_environment() -> dict[str, str]:
    """The driver's EMKD_* variables (those not set keep their defaults on a
    worker, whose home and checkout may lie elsewhere)."""
    return {k: v for k, v in os.environ.items() if k.startswith("EMKD_")}


def run_grid_ray(configs, device: str | None = None, threads: int | None = None, address: str | None = None,
                 progress: bool = True, settings=None) -> GridOutcome:
    """Run or load every config of ``configs`` (label -> config, or a list) on
    Ray: the Ray this process has joined already if any (tests), else the
    cluster at ``address`` (or ``$RAY_ADDRESS``), else a new one on this
    machine, shut down at the end. A task asks for ``threads`` CPUs (default
    1) and trains with as many torch threads; on CUDA it asks for one GPU."""
    ray = import_ray()
    from tqdm.auto import tqdm
    settings = settings or settings_module.current()
    items = grid_items(configs)
    outcome = GridOutcome(results={})
    todo = []
    for label, config in items:
        try:
            key = key_of(config, settings)
            result = stored(config, settings)
            if result is None and settings.require_cached:
                raise FileNotFoundError(f"no stored result and EMKD_REQUIRE_CACHED=1; run it with: "
                                        f"{command_for(config)}")
        except Exception as err:  # this run's problem, not the grid's
            outcome.failures.append(Failure(_name(config), one_line(err)))
            continue
        if result is not None:
            outcome.results[label] = result
        else:
            todo.append((label, config, key))

    started = not ray.is_initialized()
    if started and todo:
        # The tasks' own output would interleave with the grid's bar; what
        # matters of it, a task's error, comes back with its result.
        ray.init(address=address, log_to_driver=False)
    try:
        pending = {}
        if todo:
            task_device, gpus = _task_device(device, ray)
            task = ray.remote(train_in_worker).options(num_cpus=threads or 1, num_gpus=gpus,
                                                       runtime_env={"env_vars": _forwarded_environment()})
            pending = {task.remote(config, task_device, threads or 1): (label, config, key)
                       for label, config, key in todo}
        bar = tqdm(total=len(items), initial=len(items) - len(pending), desc="runs", disable=not progress)
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            label, config, key = pending.pop(ref)
            try:
                outcome.results[label] = _store_files(config, key, ray.get(ref), settings)
                outcome.trained.append(label)
            except Exception as err:
                outcome.failures.append(Failure(_name(config), one_line(err)))
                bar.write(f"failed: {_name(config)}: {outcome.failures[-1].error}")
            bar.set_postfix_str(_name(config), refresh=False)
            bar.update(1)
        bar.close()
    finally:
        if started and ray.is_initialized():
            ray.shutdown()
    return outcome


def _store_files(config: RunConfig, key: str, files: dict, settings) -> RunResult:
    """Write a task's record into the store, sidecar first (each atomically),
    and read it back through the store's checks."""
    if files["key"] != key:
        raise ValueError(f"the worker trained key {files['key']}, the driver expects {key}: "
                         f"its data files differ from the driver's")
    path = result_path(config, key, settings.results_dir)
    atomic_write_bytes(path.with_suffix(".npz"), files["ranks"])
    atomic_write_bytes(path, files["record"])
    return load_result(path)
