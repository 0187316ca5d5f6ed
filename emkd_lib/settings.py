"""Every environment variable and default path of the library, in one place.

A :class:`Settings` is read from the environment when asked for
(:func:`current`), never cached at import, so a test or a notebook that sets
a variable sees it at once and no module keeps global state.

=========================  ==================================================
``EMKD_DATA_DIR``          where datasets live (explicit: must hold them)
``EMKD_RESULTS_DIR``       the result store (default ``<repo>/results``)
``EMKD_CACHE_DIR``         checkpoints, run locks, checksum cache, feature caches
                           (default ``~/.cache/emkd-book``, outside the tree)
``EMKD_FIGURES_DIR``       where chapters save figures (default ``notebooks/figures``)
``EMKD_PAPERS_DIR``        the papers' result tables (read by ``paper_tables``)
``EMKD_REQUIRE_CACHED``    ``1``: a missing result raises instead of training
``EMKD_KEEP_FREED_MEMORY`` ``0``: leave glibc's malloc as it is (CLI start-up)
``EMKD_ALLOW_DIRTY``       ``1``: chapters may show results of uncommitted code
``EMKD_CODE_COMMIT``       the commit of a checkout copied without ``.git``
                           (recorded as ``<sha>+copy``, see ``store.code_commit``)
=========================  ==================================================

Any other ``EMKD_*`` variable is an error: a misspelt one (``EMKD_REQUIRE_CACHE``)
would otherwise leave its setting at the default without a word.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    data_dir: Path | None          # None: search the default places (see data.fetch)
    results_dir: Path
    cache_dir: Path
    figures_dir: Path
    papers_dir: Path | None        # None: beside the data mirror, or ../shared/papers (see paper_tables)
    require_cached: bool
    keep_freed_memory: bool
    allow_dirty: bool
    code_commit: str | None = None   # EMKD_CODE_COMMIT

    @property
    def checkpoint_dir(self) -> Path:
        return self.cache_dir / "checkpoints"

    @property
    def weights_dir(self) -> Path:
        """Where a stored run's best-epoch weights are kept outside the work
        tree (``<dataset folder>/<record name>.pt``): the work tree is laid
        anew between sessions, the cache survives, and an ensemble needs its
        members' weights."""
        return self.cache_dir / "weights"


def _flag(env, name: str, default: str) -> bool:
    value = env.get(name, default)
    if value not in ("0", "1"):  # "true" or "yes" must not read as off
        raise ValueError(f"{name} must be 0 or 1, got {value!r}")
    return value == "1"


def _folder(env, name: str, default: Path) -> Path:
    """A folder setting: a path that is a file is refused at once, not when
    the first result is written after hours of training."""
    path = Path(env.get(name) or default)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{name}={path} is a file, not a directory")
    return path


KNOWN = ("EMKD_DATA_DIR", "EMKD_RESULTS_DIR", "EMKD_CACHE_DIR", "EMKD_FIGURES_DIR", "EMKD_PAPERS_DIR",
         "EMKD_REQUIRE_CACHED", "EMKD_KEEP_FREED_MEMORY", "EMKD_ALLOW_DIRTY", "EMKD_CODE_COMMIT")


def current(env=None) -> Settings:
    """The settings the environment asks for now; an ``EMKD_*`` variable
    not in ``KNOWN`` raises, naming it."""
    env = os.environ if env is None else env
    unknown = sorted(name for name in env if name.startswith("EMKD_") and name not in KNOWN)
    if unknown:
        raise ValueError(f"unknown environment variable {unknown[0]} (the library reads {', '.join(KNOWN)})")
    data = env.get("EMKD_DATA_DIR")
    return Settings(
        data_dir=Path(data) if data else None,
        results_dir=_folder(env, "EMKD_RESULTS_DIR", REPO_ROOT / "results"),
        cache_dir=_folder(env, "EMKD_CACHE_DIR", Path.home() / ".cache" / "emkd-book"),
        figures_dir=_folder(env, "EMKD_FIGURES_DIR", REPO_ROOT / "notebooks" / "figures"),
        papers_dir=Path(env["EMKD_PAPERS_DIR"]) if env.get("EMKD_PAPERS_DIR") else None,
        require_cached=_flag(env, "EMKD_REQUIRE_CACHED", "0"),
        keep_freed_memory=_flag(env, "EMKD_KEEP_FREED_MEMORY", "1"),
        allow_dirty=_flag(env, "EMKD_ALLOW_DIRTY", "0"),
        code_commit=env.get("EMKD_CODE_COMMIT", "").strip() or None,
    )
