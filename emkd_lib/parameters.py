"""Validation of the chapters' papermill parameters.

Every notebook's first code cell passes its parameters through
:func:`chapter_parameters`, so ``-p datasets beauty`` (a string where a list
is expected) becomes ``["beauty"]`` and ``-p seeds zero`` is one clear error
naming the parameter, instead of a failure deep inside a loop.
"""
from __future__ import annotations

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
        return list(value)
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return [value]
    raise ValueError(f"parameter {name!r} must be a list (or one value), got {type(value).__name__} {value!r}")


def chapter_parameters(profile="cpu", datasets=("beauty",), seeds=(0,), device="auto",
                       train_missing=False, allowed_datasets=None) -> ChapterParameters:
    """The parameters of a chapter, checked: ``profile`` one of the profiles,
    ``datasets`` known dataset names (and among ``allowed_datasets`` where the
    chapter only has grids for some), ``seeds`` non-negative ints,
    ``device`` a string, ``train_missing`` a bool."""
    if profile not in PROFILES:
        raise ValueError(f"parameter 'profile' must be one of {PROFILES}, got {profile!r}")
    datasets = _as_list("datasets", datasets)
    for d in datasets:
        if not isinstance(d, str):
            raise ValueError(f"parameter 'datasets' must hold dataset names, got {d!r}")
        try:
            dataset_spec(d, settings_module.current().data_dir)
        except KeyError as unknown:  # its message lists the known datasets
            raise ValueError(f"parameter 'datasets': {unknown.args[0]}") from None
        if allowed_datasets is not None and d not in allowed_datasets:
            raise ValueError(f"parameter 'datasets': this chapter runs on {list(allowed_datasets)}, not {d!r}")
    seeds = seed_list("seeds", seeds)
    if not isinstance(device, str):
        raise ValueError(f"parameter 'device' must be a string such as 'cpu' or 'cuda', got {device!r}")
    if not isinstance(train_missing, bool):
        raise ValueError(f"parameter 'train_missing' must be True or False, got {train_missing!r}")
    return ChapterParameters(profile, tuple(datasets), seeds, device, train_missing)


def seed_list(name: str, value) -> tuple[int, ...]:
    """A chapter's list of seeds parameter ``name`` (such as ``spread_seeds``),
    checked: non-negative ints; one int becomes a list of one."""
    seeds = _as_list(name, value)
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ValueError(f"parameter {name!r} must hold non-negative ints, got {s!r}")
    return tuple(seeds)
