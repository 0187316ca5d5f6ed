"""The result store: run keys, records, sidecars, provenance.

A run's key hashes what reaches the model and the data
(``RunConfig.identity``), ``CORE_VERSION`` and the sha256 of every data file
it read: change what a run computes (data, model, losses, schedule) and
bump the version; edit a dataset file and its runs get new keys. A change
that only draws the same random quantities otherwise keeps the keys (the
alternative is retraining every stored run), and the commit in a run's
provenance is then what reproduces it (``scripts/rerun.sh``). The store is a
folder of JSON records (``<root>/<dataset>/<label>-<key>.json``: config,
metrics, per-epoch history, flags, provenance) each with an ``.npz``
sidecar of per-user ranks whose sha256 the record holds: a record whose
sidecar is missing or altered is never served. Sidecar first, then the
record, each written atomically, so a killed process leaves no record that
points at nothing.
"""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import io
import json
import os
import platform
import resource
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .config import RunConfig
from .files import atomic_write_bytes, file_sha256, sha256_bytes
from . import settings as settings_module
from .settings import REPO_ROOT

CORE_VERSION = "2"


class StoreError(ValueError):
    """A stored record that cannot be served (unreadable, incomplete, sidecar missing or altered)."""


def run_key(config: RunConfig, data_files: dict[str, str]) -> str:
    """The run's identity: config fields that reach model and data, core version, data checksums."""
    blob = json.dumps({"config": config.identity(), "core": CORE_VERSION, "data": data_files}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def result_path(config: RunConfig, key: str, root: Path) -> Path:
    return Path(root) / config.dataset / f"{config.label()}-{key}.json"


@dataclass
class RunResult:
    config: RunConfig
    key: str
    valid_metrics: dict
    test_metrics: dict
    history: list[dict]
    best_epoch: int
    n_params: int
    train_seconds: float
    eval_seconds: float
    peak_memory_mb: float
    provenance: dict
    flags: dict = field(default_factory=dict)   # stopped_by, below_popularity, popularity_valid_ndcg10, dirty
    path: Path | None = None
    arrays: dict | None = field(default=None, repr=False)

    @property
    def test_ranks(self) -> np.ndarray:
        return self.ranks()["test_ranks"]

    def ranks(self) -> dict[str, np.ndarray]:
        """The stored arrays: ``test_ranks``, ``valid_ranks`` (each user's rank
        of its held-out item) and, for some methods, the ``analysis_*``
        arrays of ``emkd_lib.analysis``."""
        if self.arrays is None:
            self.arrays = read_sidecar(self.path)
        return self.arrays

    @property
    def dirty(self) -> bool:
        return str(self.provenance.get("commit", "")).endswith("+dirty")


_RECORD_FIELDS = ("key", "valid_metrics", "test_metrics", "history", "best_epoch", "n_params", "train_seconds",
                  "eval_seconds", "peak_memory_mb", "provenance", "flags")


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def write_record(path: Path, record: dict, arrays: dict[str, np.ndarray]) -> None:
    """The ``.npz`` sidecar, then the JSON that names its sha256, each atomically."""
    sidecar = _npz_bytes(arrays)
    atomic_write_bytes(path.with_suffix(".npz"), sidecar)
    record = dict(record, core_version=CORE_VERSION, sidecar_sha256=sha256_bytes(sidecar))
    atomic_write_bytes(path, json.dumps(record, indent=1, sort_keys=True).encode())


def read_record(path: Path) -> dict:
    """A record whose sidecar exists and matches its recorded sha256; else ``StoreError``."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:   # ValueError: not JSON, or not UTF-8
        raise StoreError(f"result file {path} is unreadable: {err}") from None
    if not isinstance(record, dict) or "sidecar_sha256" not in record:
        raise StoreError(f"result file {path} is incomplete (no sidecar checksum; written by an older core?)")
    sidecar = path.with_suffix(".npz")
    if not sidecar.is_file():
        raise StoreError(f"result file {path}: its ranks sidecar {sidecar.name} is missing")
    if file_sha256(sidecar) != record["sidecar_sha256"]:
        raise StoreError(f"result file {path}: its ranks sidecar {sidecar.name} does not match the recorded sha256")
    return record


def read_sidecar(path: Path) -> dict[str, np.ndarray]:
    with np.load(Path(path).with_suffix(".npz")) as f:
        return {k: f[k] for k in f.files}


def store_result(result: RunResult) -> None:
    write_record(result.path, {"config": result.config.to_dict(),
                               **{k: getattr(result, k) for k in _RECORD_FIELDS}}, result.arrays)


def load_result(path: Path) -> RunResult:
    return result_from_record(Path(path), read_record(path))


def result_from_record(path: Path, record: dict) -> RunResult:
    """The run a record read by ``read_record`` or ``served_records`` holds (no second read)."""
    try:
        return RunResult(config=RunConfig.from_dict(record["config"]), path=path,
                         **{k: record[k] for k in _RECORD_FIELDS})
    except KeyError as err:
        raise StoreError(f"result file {path} is incomplete: no {err.args[0]!r}") from None
    except (TypeError, ValueError) as err:
        raise StoreError(f"result file {path} is incomplete: {err}") from None


def is_ensemble(record: dict) -> bool:
    """An ensemble's evaluation (``runs.ensemble_run_or_load``) lists its members; a run's record has a config."""
    return "members" in record


def _check_servable(path: Path, record: dict) -> None:
    """A record that ``list``, ``grid --plan`` and the chapters can read: a
    run's config and fields load; an ensemble's evaluation has its test metrics."""
    if is_ensemble(record):
        if not isinstance(record.get("test_metrics"), dict) or "NDCG@10" not in record["test_metrics"]:
            raise StoreError(f"result file {path} is incomplete: no test metrics")
    else:
        result_from_record(path, record)


def scan(root: Path) -> tuple[list[Path], list[str]]:
    """Every record under ``root`` that can be served, and one line per one that cannot."""
    records, problems = served_records(root)
    return list(records), problems


def served_records(root: Path) -> tuple[dict[Path, dict], list[str]]:
    records, problems = {}, []
    for path in sorted(Path(root).glob("*/*.json")):
        try:
            record = read_record(path)
            _check_servable(path, record)
            records[path] = record
        except StoreError as err:
            problems.append(str(err))
    return records, problems


def compare_stores(a: Path, b: Path) -> tuple[list[dict], list[str], list[str]]:
    """The reproducibility check between two stores (two machines, two
    commits, the same command twice): for every run stored under both
    (the same ``<dataset>/<label>-<key>.json``: the same config, core and
    data), which sidecar arrays (ranks, analysis arrays) are not
    bit-identical, and both test NDCG@10. Also a line for each run stored
    under only one of them and each record that cannot be served.
    Ensembles compare like runs. Returns ``(rows, runs stored in one store
    only, unreadable records)``."""
    roots = [Path(a), Path(b)]
    for root in roots:
        if not root.is_dir():
            raise StoreError(f"store {root} is not a folder")
    scans = [served_records(root) for root in roots]
    found = [{path.relative_to(root): (path, record) for path, record in records.items()}
             for root, (records, _) in zip(roots, scans)]
    rows = []
    for name in sorted(found[0].keys() & found[1].keys()):
        pair = [found[0][name], found[1][name]]
        arrays = [read_sidecar(path) for path, _ in pair]
        different = sorted(k for k in arrays[0].keys() | arrays[1].keys()
                           if k not in arrays[0] or k not in arrays[1] or not _same_bits(arrays[0][k], arrays[1][k]))
        ndcg = [record["test_metrics"]["NDCG@10"] for _, record in pair]
        rows.append({"run": str(name), "identical": not different, "different arrays": different,
                     "test NDCG@10 (a)": ndcg[0], "test NDCG@10 (b)": ndcg[1]})
    only = [f"{name} (only in {root})" for names, other, root in ((found[0], found[1], roots[0]),
                                                                  (found[1], found[0], roots[1]))
            for name in sorted(names.keys() - other.keys())]
    return rows, only, [problem for _, problems in scans for problem in problems]


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit for bit: dtype, shape and bytes (``array_equal`` calls NaN unequal to itself and -0.0 equal to 0.0)."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# ---- provenance -------------------------------------------------------------

@functools.cache
def code_commit() -> str:
    """The checkout's commit, ``+dirty`` when ``emkd_lib`` has uncommitted
    changes; read once per process, on first use, so a run records the code
    it started with even if a commit lands while it trains.

    A copy of a checkout without its ``.git`` (what a GPU machine is sent)
    records ``EMKD_CODE_COMMIT`` as its commit, suffixed ``+copy``: the copy
    cannot check itself against it, so the record says it was taken on trust
    (``scripts/device_check.sh`` sets it from a clean tree)."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "emkd_lib"], cwd=REPO_ROOT,
                               capture_output=True, text=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        told = settings_module.current().code_commit
        return f"{told}+copy" if told else "unknown"


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


# The CPU features that decide which kernels a matmul takes, and so its
# rounding and its speed: two CPUs of one model name ("AMD EPYC") have been
# lent with and without AVX512-BF16, where a bf16 matmul ran 38 times slower.
NUMERIC_CPU_FEATURES = ("avx2", "fma", "avx512f", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
# Those that give bf16 matmuls their own units (without them bf16 runs a slow fallback).
BF16_CPU_FEATURES = ("avx512_bf16", "amx_bf16")


def cpu_features(cpuinfo: str | None = None) -> list[str]:
    """The ``NUMERIC_CPU_FEATURES`` this CPU has, from /proc/cpuinfo's flags
    (or the text given); empty where it cannot be read."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return []
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return [f for f in NUMERIC_CPU_FEATURES if f in flags]


def provenance(device: torch.device, data_source: str, data_files: dict[str, str], examples_per_epoch: int) -> dict:
    return {
        "commit": code_commit(), "emkd_lib": __version__, "core_version": CORE_VERSION,
        "torch": torch.__version__, "python": platform.python_version(),
        "device": str(device), "machine": machine_name(device), "cpu_features": cpu_features(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "data_source": data_source, "data_sha256": data_files, "examples_per_epoch": examples_per_epoch,
    }
