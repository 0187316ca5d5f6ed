"""Atomic writes, cached file checksums and advisory locks: the only ways
the library touches files it did not just read."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through ``write(f)`` into a temporary file beside it,
    fsync, then rename: a reader sees the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
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


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_link_or_copy(source: str | Path, path: str | Path) -> None:
    """Make ``path`` hold ``source``'s bytes, atomically: a hard link where
    both lie on one filesystem (no second write, no second copy on disk),
    else a copy through ``atomic_write``. Replacing ``source`` later (by a
    rename, as ``atomic_write`` does) leaves ``path`` with the old bytes."""
    source, path = Path(source), Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.link"
    try:
        tmp.unlink(missing_ok=True)
        os.link(source, tmp)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        atomic_write_bytes(path, source.read_bytes())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cached_file_sha256(path: str | Path, cache_file: Path | None) -> str:
    """``file_sha256``, remembered in ``cache_file`` by (path, size, mtime):
    hashing ML-1M on every run would cost seconds, and an edited file changes
    its size or mtime, so it is hashed again. ``cache_file=None`` never caches."""
    return cached_file_sha256s([path], cache_file)[0]


def cached_file_sha256s(paths, cache_file: Path | None) -> list[str]:
    """``cached_file_sha256`` of many files with one read (and at most one
    write) of the cache: ML-100K's posters are 1,663 files."""
    paths = [Path(p).resolve() for p in paths]
    if cache_file is None:
        return [file_sha256(p) for p in paths]
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    digests, changed = [], False
    for path in paths:
        stat = path.stat()
        stamp = [stat.st_size, stat.st_mtime_ns]
        entry = cache.get(str(path))
        if isinstance(entry, dict) and entry.get("stamp") == stamp:
            digests.append(entry["sha256"])
            continue
        digest = file_sha256(path)
        cache[str(path)] = {"stamp": stamp, "sha256": digest}
        digests.append(digest)
        changed = True
    if changed:
        try:
            atomic_write_bytes(cache_file, json.dumps(cache, sort_keys=True).encode())
        except OSError:
            pass  # a read-only cache only costs time
    return digests


class LockHeld(RuntimeError):
    """Another process holds the lock."""


@contextlib.contextmanager
def exclusive_lock(path: str | Path, wait: bool = False):
    """Hold an exclusive advisory lock (``flock``) on ``path``, created if
    needed, for the ``with`` block; ``LockHeld`` at once if another process
    holds it, or, with ``wait``, once it is released. The kernel releases it
    when the process ends, however it ends, so a killed process leaves no
    stale lock."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld(str(path)) from None
        yield
    finally:
        os.close(fd)
