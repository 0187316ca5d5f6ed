"""Finding a dataset's folder, and downloading it when it is nowhere.

Where an explicit location was given (an argument or ``$EMKD_DATA_DIR``), it
must hold the files: a missing one is an error naming the path and the
files, never a silent fall-through to another copy. Only when nothing
explicit was given are the default places searched, and then a download is
tried; a failed download leaves no folder behind.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

from ..files import atomic_write_bytes, file_sha256
from ..settings import REPO_ROOT
from .registry import DatasetSpec


def _missing(folder: Path, spec: DatasetSpec) -> list[str]:
    return [f for f in spec.required_files if not (folder / f).is_file()]


def default_roots() -> list[tuple[str, Path]]:
    """The places searched when no location is given, each with why."""
    cwd = Path.cwd()
    return [
        ("./data", cwd / "data"),
        ("<repo>/data", REPO_ROOT / "data"),
        ("../shared/data (from cwd)", cwd.parent / "shared" / "data"),
        ("../shared/data (from repo)", REPO_ROOT.parent / "shared" / "data"),
    ]


def resolve_dataset_dir(spec: DatasetSpec, data_dir: str | Path | None = None, download: bool = True) -> Path:
    """Folder holding ``spec``'s files.

    A user-registered dataset lives where it was registered. Otherwise an
    explicit ``data_dir`` (``settings.data_dir`` from ``$EMKD_DATA_DIR`` when
    the caller passes it) must hold ``<data_dir>/<folder>/`` with every
    required file, or ``FileNotFoundError`` names the path and the missing
    files. With no explicit location the default places are searched in order
    (``default_roots``) and, if none holds the files and ``download`` is true,
    the files are downloaded into ``<repo>/data/<folder>``.
    """
    if spec.user_folder is not None:
        missing = _missing(spec.user_folder, spec)
        if missing:
            raise FileNotFoundError(f"dataset {spec.name!r}: {spec.user_folder} lacks {', '.join(missing)} "
                                    f"(registered files moved or deleted?)")
        return spec.user_folder
    if data_dir is not None:
        folder = Path(data_dir) / spec.folder
        missing = _missing(folder, spec)
        if missing:
            raise FileNotFoundError(f"dataset {spec.name!r}: {folder} lacks {', '.join(missing)} "
                                    f"(the data directory was given explicitly, so no other place is searched)")
        return folder
    looked = []
    for why, root in default_roots():
        folder = root / spec.folder
        if not _missing(folder, spec):
            return folder
        looked.append(f"  {folder}  ({why})")
    problem = "download=False"
    if download:
        try:
            return download_dataset(spec, REPO_ROOT / "data")
        except Exception as e:  # offline, HTTP error, checksum mismatch: all reported below
            problem = f"download failed: {type(e).__name__}: {e}"
    raise FileNotFoundError(
        f"dataset {spec.name!r} (files {', '.join(spec.required_files)}) not found. Looked in:\n"
        + "\n".join(looked)
        + f"\n{problem}. Set EMKD_DATA_DIR or pass data_dir to point at a folder holding "
        f"{spec.folder}/; public source: {', '.join(spec.source_urls)}"
    )


def _fetch(url: str, dest_dir: Path) -> Path:
    """Download ``url`` into a temporary file inside ``dest_dir``; return its path."""
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=".download-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                out.write(chunk)
    except BaseException:
        os.unlink(tmp)
        raise
    return Path(tmp)


def _check_sha(label: str, digest: str, checksums: dict[str, str], name: str) -> None:
    expected = checksums.get(name)
    if expected is not None and digest != expected.lower():
        raise ValueError(f"sha256 mismatch for {label}: expected {expected}, got {digest}")


def _zip_member(zf: zipfile.ZipFile, basename: str) -> bytes:
    # Match by base name so both "ml-1m/ratings.dat" and "ratings.dat" work.
    for info in zf.infolist():
        if info.filename.rsplit("/", 1)[-1] == basename:
            return zf.read(info)
    raise ValueError(f"{basename} not found in {zf.filename}")


def convert_ml1m(ratings: bytes, movies: bytes) -> tuple[bytes, bytes]:
    """ML-1M ``ratings.dat``/``movies.dat`` -> (``ml-1m.txt``, attribute JSON) bytes.

    Follows the published preprocessing: each user's ratings sorted by
    timestamp (stable, so ties keep file order), users in increasing id
    order, items renumbered 1.. by first appearance in ratings.dat, output
    format byte-identical to the published ``ml-1m.txt``. Genres are numbered
    1.. by first appearance among rated movies in movies.dat; the public
    attribute file used Python set order, which is not reproducible, so ours
    is a relabelling of it with the same item -> genre-set structure. Movies
    never rated are left out.
    """
    lines = [line for line in ratings.decode("latin-1").splitlines() if line.strip()]
    tokens = "\n".join(lines).replace("::", " ").split()
    if len(tokens) != 4 * len(lines):
        raise ValueError("ratings.dat: every line must be user::item::rating::timestamp")
    data = np.array(tokens, dtype=np.int64).reshape(-1, 4)
    users, movie_ids, times = data[:, 0], data[:, 1], data[:, 3]
    uniq, first, inverse = np.unique(movie_ids, return_index=True, return_inverse=True)
    # Rank of each distinct movie by its first line in ratings.dat -> new id.
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(1, len(uniq) + 1)
    items = rank[inverse]
    new_id = dict(zip(uniq.tolist(), rank.tolist()))
    order = np.argsort(times, kind="stable")
    order = order[np.argsort(users[order], kind="stable")]
    users, items = users[order], items[order]
    user_ids, starts = np.unique(users, return_index=True)
    out = io.StringIO()
    for u, seq in zip(user_ids.tolist(), np.split(items, starts[1:])):
        out.write(f"{u} {' '.join(map(str, seq.tolist()))}\n")

    genre_id: dict[str, int] = {}
    item2attr: dict[int, list[int]] = {}
    for line in movies.decode("latin-1").splitlines():
        if not line.strip():
            continue
        # id::title::genres; split from both ends so a title can never shift fields
        movie, rest = line.strip().split("::", 1)
        genres = rest.rsplit("::", 1)[1]
        if int(movie) not in new_id:
            continue  # never rated: not an item; skipping also keeps genre ids dense
        ids = [genre_id.setdefault(g, len(genre_id) + 1) for g in genres.split("|")]
        item2attr[new_id[int(movie)]] = sorted(set(ids))
    attr_json = json.dumps({str(i): item2attr[i] for i in sorted(item2attr)})
    return out.getvalue().encode("ascii"), attr_json.encode("ascii")


def download_dataset(
    spec: DatasetSpec,
    dest_root: str | Path | None = None,
    base_url: str | None = None,
    checksums: dict[str, str] | None = None,
) -> Path:
    """Download dataset ``name`` into ``<dest_root>/<folder>`` and return that folder.

    ``base_url`` replaces the spec's base URL (tests use a ``file://``
    folder); ``checksums`` maps local (or, for zips, archive) file names to
    sha256 and defaults to the published checksums of the files a download
    reproduces. Each file is written to a temporary file in the destination
    folder, verified, then moved into place with ``os.replace``, so a failed
    or mismatching download leaves no partial file behind.
    """
    if not spec.remote_files:
        raise ValueError(f"dataset {spec.name!r} has no public source to download from")
    dest = Path(dest_root if dest_root is not None else REPO_ROOT / "data") / spec.folder
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        return _download_into(spec, dest, base_url, checksums)
    except BaseException:
        # Never leave an empty or half-filled folder that a later search would find.
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        raise


def _download_into(spec: DatasetSpec, dest: Path, base_url: str | None, checksums: dict[str, str] | None) -> Path:
    base = base_url if base_url is not None else spec.base_url
    if not base.endswith("/"):
        base += "/"
    if checksums is None:
        checksums = {f: spec.sha256[f] for f in spec.verified_on_download}

    if spec.download_format == "files":
        for fname in spec.remote_files:
            tmp = _fetch(base + fname, dest)
            try:
                _check_sha(base + fname, file_sha256(tmp), checksums, fname)
                os.replace(tmp, dest / fname)
            finally:
                if tmp.exists():
                    tmp.unlink()
        return dest

    (zip_name,) = spec.remote_files
    tmp = _fetch(base + zip_name, dest)
    try:
        _check_sha(base + zip_name, file_sha256(tmp), checksums, zip_name)
        with zipfile.ZipFile(tmp) as zf:
            if spec.download_format == "ml-1m-zip":
                seq, attrs = convert_ml1m(
                    _zip_member(zf, "ratings.dat"), _zip_member(zf, "movies.dat")
                )
                outputs = {spec.sequence_file: seq, spec.attribute_file: attrs}
            elif spec.download_format == "ml-100k-zip":
                outputs = {spec.sequence_file: _zip_member(zf, "u.data")}
            else:
                raise ValueError(f"unknown download_format {spec.download_format!r}")
    finally:
        tmp.unlink()
    # Verify everything before writing anything, so a mismatch leaves no file.
    for fname, data in outputs.items():
        digest = hashlib.sha256(data).hexdigest()
        _check_sha(f"{fname} (from {base + zip_name})", digest, checksums, fname)
    for fname, data in outputs.items():
        atomic_write_bytes(dest / fname, data)
    return dest


