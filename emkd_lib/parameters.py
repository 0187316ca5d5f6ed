"""Validation of the chapters' papermill parameters.

Every notebook's first code cell passes its parameters through
:func:`chapter_parameters`, so ``-p datasets beauty`` (a string where a list
is expected) becomes ``["beauty"]`` and ``-p seeds zero`` is one clear error
naming the parameter, instead of a failure deep inside a loop. A name the
notebook does not declare (``-p dataset beauty`` where the chapter takes
``datasets``) is an error too: papermill only logs it and runs the defaults.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from .config import PROFILES
from . import settings as settings_module
from .data import dataset_spec


@dataclass(frozen=True)
class ChapterParameters:
    profile: str
    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    device: str
    train_missing: bool


def _as_list(name: str, value) -> list:
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"parameter {name!r} is empty: give at least one value")
        return list(value)
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return [value]
    raise ValueError(f"parameter {name!r} must be a list (or one value), got {type(value).__name__} {value!r}")


# A torch device string, checked without importing torch: which devices
# exist is the training's question (``train.resolve_device``).
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")
DEVICE_NAMES = "auto, cpu, cuda, cuda:N or mps"
# numpy and torch take seeds below 2**32.
SEED_LIMIT = 2 ** 32


# The header papermill writes on the cell it injects right after a notebook's
# "parameters" cell (its Python translator's comment).
INJECTED_HEADER = "# Parameters\n"


def _assigned_names(source: str) -> set[str]:
    """The names a cell's top-level statements assign."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
            if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
        names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return names


def unknown_parameters(history: list[str]) -> tuple[list[str], list[str]]:
    """``(unknown, declared)`` from a kernel's input history (IPython's
    ``In``, the cells' sources in the order they ran): the names papermill
    injected that the notebook's parameters cell (the cell run just before
    the injected one) does not assign, and the names it does. Nothing
    injected (a run without ``-p``): both empty."""
    for i, source in enumerate(history):
        # the cell before must be one that ran (IPython's In[0] is ""): a
        # header cell run first, by hand, has no parameters cell to check against
        if i > 0 and source.startswith(INJECTED_HEADER) and history[i - 1].strip():
            declared = _assigned_names(history[i - 1])
            return sorted(_assigned_names(source) - declared), sorted(declared)
    return [], []


def _kernel_history() -> list[str]:
    """The running IPython kernel's input history; empty outside one."""
    try:
        from IPython import get_ipython
    except ImportError:
        return []
    shell = get_ipython()
    return list(shell.user_ns.get("In", [])) if shell is not None else []


def chapter_parameters(profile="cpu", datasets=("beauty",), seeds=(0,), device="auto",
                       train_missing=False, allowed_datasets=None, history=None) -> ChapterParameters:
    """The parameters of a chapter, checked: ``profile`` one of the profiles,
    ``datasets`` known dataset names (and among ``allowed_datasets`` where the
    chapter only has grids for some), ``seeds`` non-negative ints,
    ``device`` a device name, ``train_missing`` a bool. Lists must not be empty.
    In a notebook run by papermill, every injected name must be one the
    parameters cell declares (``unknown_parameters`` on ``history``, by
    default the kernel's)."""
    unknown, declared = unknown_parameters(_kernel_history() if history is None else history)
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]!r}: this chapter's parameters are "
                         f"{', '.join(declared) or 'none'}")
    profile = profile_name("profile", profile)
    datasets = dataset_list("datasets", datasets, allowed_datasets)
    seeds = seed_list("seeds", seeds)
    device = device_name("device", device)
    if not isinstance(train_missing, bool):
        raise ValueError(f"parameter 'train_missing' must be True or False, got {train_missing!r}")
    return ChapterParameters(profile, datasets, seeds, device, train_missing)


def device_name(name: str, value) -> str:
    """A device name (whether the machine has it is ``train.resolve_device``'s question)."""
    if not isinstance(value, str) or not _DEVICE.match(value):
        raise ValueError(f"parameter {name!r} must be {DEVICE_NAMES}, got {value!r}")
    return value


def profile_name(name: str, value) -> str:
    """A profile parameter (``profile``, ``reference_profile``)."""
    if value not in PROFILES:
        raise ValueError(f"parameter {name!r} must be one of {PROFILES}, got {value!r}")
    return value


def dataset_list(name: str, value, allowed=None) -> tuple[str, ...]:
    """Known dataset names, among ``allowed`` if given; one name becomes a list of one."""
    datasets = _as_list(name, value)
    for d in datasets:
        if not isinstance(d, str):
            raise ValueError(f"parameter {name!r} must hold dataset names, got {d!r}")
        try:
            dataset_spec(d, settings_module.current().data_dir)
        except KeyError as unknown:  # its message lists the known datasets
            raise ValueError(f"parameter {name!r}: {unknown.args[0]}") from None
        if allowed is not None and d not in allowed:
            raise ValueError(f"parameter {name!r}: this chapter runs on {list(allowed)}, not {d!r}")
    return tuple(datasets)


def dataset_name(name: str, value, allowed=None) -> str:
    """One known dataset name (``dataset``, ``spread_dataset``)."""
    if not isinstance(value, str):
        raise ValueError(f"parameter {name!r} must be one dataset name, got {value!r}")
    return dataset_list(name, [value], allowed)[0]


def method_list(name: str, value) -> tuple[str, ...]:
    """Registered method names (``methods``, ``baselines``); one name becomes a list of one."""
    from .methods import METHODS
    methods = _as_list(name, value)
    for m in methods:
        if not isinstance(m, str) or m not in METHODS:
            raise ValueError(f"parameter {name!r}: unknown method {m!r}; known: {sorted(METHODS)}")
    return tuple(methods)


def number(name: str, value, low: float, high: float, low_inclusive: bool = True) -> float:
    """A number in [``low``, ``high``], or (``low``, ``high``] (``head_fraction``, ``tolerance``)."""
    above_low = isinstance(value, (int, float)) and (value >= low if low_inclusive else value > low)
    if isinstance(value, bool) or not above_low or not value <= high:
        interval = f"{'[' if low_inclusive else '('}{low}, {high}]"
        raise ValueError(f"parameter {name!r} must be a number in {interval}, got {value!r}")
    return float(value)


def one_seed(name: str, value) -> int:
    """A single seed parameter (``seed``)."""
    if isinstance(value, (list, tuple)):
        raise ValueError(f"parameter {name!r} must be one seed (an int), got {value!r}")
    return seed_list(name, value)[0]


def seed_list(name: str, value) -> tuple[int, ...]:
    """A chapter's list of seeds parameter ``name`` (such as ``spread_seeds``),
    checked: non-negative ints below 2**32; one int becomes a list of one."""
    seeds = _as_list(name, value)
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < SEED_LIMIT:
            raise ValueError(f"parameter {name!r} must hold non-negative ints below 2**32, got {s!r}")
    return tuple(seeds)
