"""Datasets for sequential recommendation: finding, downloading, parsing,
splitting and describing them.

Every dataset becomes a :class:`SequenceDataset`: one chronological int64 item
sequence per user, item ids dense in ``1..n_items`` (0 is kept free for
padding, see :mod:`emkd_lib.batching`), plus optional item attributes stored as
a CSR matrix (:class:`ItemAttributes`).

Supported datasets (see ``DATASETS``):

* ``beauty``, ``toys``, ``sports``: the Amazon-2014 5-core data as preprocessed
  by S3-Rec (``<Name>.txt`` + ``<Name>_item2attributes.json``), used unchanged
  by S3-Rec, ICLRec, DuoRec, EMKD and S^4Rec.
* ``ml-1m``: MovieLens-1M in the same text format (``ml-1m.txt``) with genres
  as attributes.
* ``ml-100k``: MovieLens-100K from the original ``u.data``; genres come from
  the optional ``items.csv`` of the offline mirror.

Files are looked up in a fixed list of places (:func:`resolve_dataset_dir`)
and, if allowed, downloaded from their public source with sha256 verification
(:func:`download_dataset`). Parsing validates its input and reports file, line
and problem, because a silently mis-parsed dataset corrupts every number
downstream.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# The package lives in <repo root>/emkd_lib, so the repo root is two levels up.
REPO_ROOT = Path(__file__).resolve().parent.parent

S3REC_BASE_URL = "https://raw.githubusercontent.com/RUCAIBox/CIKM2020-S3Rec/master/data/"
GROUPLENS_BASE_URL = "https://files.grouplens.org/datasets/movielens/"


# --------------------------------------------------------------------------
# Dataset specifications
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset lives on disk and where it comes from.

    ``sequence_file``/``attribute_file`` are the files the loader reads;
    ``sequence_format`` is ``"text"`` (``user item item ...`` lines) or
    ``"udata"`` (MovieLens ``u.data``); an attribute file is S3-Rec JSON, or
    for ``ml-100k`` the optional ``items.csv``. ``required_files`` must all be
    present for a folder to count as holding the dataset. ``sha256`` holds the
    published checksums of the mirror's files (README of the offline mirror);
    ``verified_on_download``
    names the subset a download can reproduce bit for bit and therefore
    checks. ``download_format`` says how the remote files become local ones:
    ``"files"`` (copy each of ``remote_files``), ``"ml-1m-zip"`` (convert
    ratings.dat/movies.dat) or ``"ml-100k-zip"`` (extract u.data).
    """

    name: str
    folder: str
    sequence_file: str
    sequence_format: str
    attribute_file: str | None
    required_files: tuple[str, ...]
    optional_files: tuple[str, ...]
    sha256: dict[str, str]
    verified_on_download: tuple[str, ...]
    base_url: str
    remote_files: tuple[str, ...]
    download_format: str
    homepage: str

    @property
    def source_urls(self) -> tuple[str, ...]:
        """Full public URLs of the remote files."""
        return tuple(self.base_url + f for f in self.remote_files)


def _amazon_spec(
    name: str, stem: str, seq_sha: str, attr_sha: str, optional: dict[str, str] | None = None
) -> DatasetSpec:
    """An S3-Rec Amazon dataset: ``<stem>.txt`` + ``<stem>_item2attributes.json``.

    ``optional`` maps extra mirror-only files to their sha256.
    """
    seq, attr = f"{stem}.txt", f"{stem}_item2attributes.json"
    optional = optional or {}
    return DatasetSpec(
        name=name,
        folder=name,
        sequence_file=seq,
        sequence_format="text",
        attribute_file=attr,
        required_files=(seq, attr),
        optional_files=tuple(optional),
        sha256={seq: seq_sha, attr: attr_sha, **optional},
        verified_on_download=(seq, attr),
        base_url=S3REC_BASE_URL,
        remote_files=(seq, attr),
        download_format="files",
        homepage="https://github.com/RUCAIBox/CIKM2020-S3Rec",
    )


DATASETS: dict[str, DatasetSpec] = {
    "beauty": _amazon_spec(
        "beauty", "Beauty",
        "226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8",
        "129e40f67486f6877eff0f5318cfa8530ee8ac23d8b0d1de04e1bb7a2ba0b2d4",
        # Item titles joined to Beauty.txt ids; only in the offline mirror.
        optional={
            "Beauty_item_text.tsv": "c8918224ec1344b6a713e8c7c8325e12f9d519d425cc2714986e24414500c6e0",
        },
    ),
    "toys": _amazon_spec(
        "toys", "Toys_and_Games",
        "176c680c688d497598c4a89a03b402c0fe78d795e5db335c2e78dd5f2d778a3f",
        "d371acd25101eedac04afc727626464b7acec770c4eda708705d51eb76eb1ad0",
    ),
    "sports": _amazon_spec(
        "sports", "Sports_and_Outdoors",
        "2a095e0648872beb9982408958290f5d655db5be2911c3756b5446de9f0b8de2",
        "7fb10733ac4f1811384a52144cdefa7fcc7536fa80a7232c5da9bd789155c34b",
    ),
    "ml-1m": DatasetSpec(
        name="ml-1m",
        folder="ml-1m",
        sequence_file="ml-1m.txt",
        sequence_format="text",
        attribute_file="ML-1M_item2attributes.json",
        required_files=("ml-1m.txt", "ML-1M_item2attributes.json"),
        optional_files=(),
        sha256={
            "ml-1m.txt": "567df58c3822a48e1a92c8d94b43d25fac7f06fd37b817b2a2fc9af364a1b88b",
            "ML-1M_item2attributes.json":
                "977908037ed1cc8a31b96f6ca1c04f60314f4cc28dbe0c43d8e970fdaf64d200",
        },
        # The public attribute file numbered genres in Python set order (hash
        # randomised, not reproducible); our conversion numbers them by first
        # appearance, a relabelling with the same item -> genre-set structure,
        # so only the sequence file can be checked against the checksum.
        verified_on_download=("ml-1m.txt",),
        base_url=GROUPLENS_BASE_URL,
        remote_files=("ml-1m.zip",),
        download_format="ml-1m-zip",
        homepage="https://grouplens.org/datasets/movielens/1m/",
    ),
    "ml-100k": DatasetSpec(
        name="ml-100k",
        folder="ml-100k",
        sequence_file="u.data",
        sequence_format="udata",
        # items.csv (TMDB-enriched, with 19 genre flags) is only in the
        # offline mirror; without it the dataset has no attributes.
        attribute_file="items.csv",
        required_files=("u.data",),
        optional_files=("items.csv",),
        sha256={
            "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
            "items.csv": "8e6f40029c1beebe19bf64b6e58f65c3fcb7bb31dbfc08e4d9681445dc74dc27",
        },
        verified_on_download=("u.data",),
        base_url=GROUPLENS_BASE_URL,
        remote_files=("ml-100k.zip",),
        download_format="ml-100k-zip",
        homepage="https://grouplens.org/datasets/movielens/100k/",
    ),
}


def _spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(DATASETS)
        raise KeyError(f"unknown dataset {name!r}; known datasets: {known}") from None


# --------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------

@dataclass
class ItemAttributes:
    """Item -> attribute sets as a CSR matrix.

    Row ``i`` lists the attribute ids (``1..n_attributes``, sorted, unique) of
    item ``i``; row 0 is the padding item and is always empty. CSR instead of a
    dense matrix because Sports has 18k items x 2.3k attributes with ~4
    attributes per item.
    """

    indptr: np.ndarray
    indices: np.ndarray
    n_attributes: int
    names: list[str] | None = None  # names[a - 1] names attribute a, where known

    @property
    def n_items(self) -> int:
        return len(self.indptr) - 2

    def multi_hot(self, dtype=np.float32) -> np.ndarray:
        """Dense (n_items + 1, n_attributes) 0/1 matrix; column a-1 is attribute a."""
        out = np.zeros((len(self.indptr) - 1, self.n_attributes), dtype=dtype)
        rows = np.repeat(np.arange(len(self.indptr) - 1), np.diff(self.indptr))
        out[rows, self.indices - 1] = 1
        return out

    def counts(self) -> np.ndarray:
        """Number of (distinct) attributes per item, shape (n_items + 1,)."""
        return np.diff(self.indptr)


@dataclass
class SequenceDataset:
    """One chronological item sequence per user plus optional attributes."""

    name: str
    user_ids: np.ndarray
    sequences: list[np.ndarray]
    n_items: int
    attributes: ItemAttributes | None
    source: str

    @property
    def n_users(self) -> int:
        return len(self.sequences)

    @property
    def n_actions(self) -> int:
        return int(sum(len(s) for s in self.sequences))


# --------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------

_ON_SHORT = ("error", "skip")


def _check_on_short(on_short: str) -> None:
    if on_short not in _ON_SHORT:
        raise ValueError(f"on_short must be one of {_ON_SHORT}, got {on_short!r}")


def _warn_skipped(path, n_skipped: int, min_length: int) -> None:
    # One warning for the whole file, not one per user: a count is what matters.
    if n_skipped:
        warnings.warn(
            f"{path}: skipped {n_skipped} user(s) with fewer than {min_length} items",
            stacklevel=3,
        )


def parse_sequence_file(
    path, min_length: int = 3, on_short: str = "error"
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Read a ``user item item ...`` file into (user_ids, sequences).

    Items are kept in file order (the files are chronological). Blank lines
    are skipped; a line holding only a user id is a user with zero items and
    falls under the short-user rule. Users with fewer than ``min_length``
    items raise (``on_short="error"``) or are dropped with one warning that
    counts them (``on_short="skip"``): leave-one-out needs at least three
    items (train, valid, test). Non-integer tokens, item ids < 1 and repeated
    user ids raise ``ValueError`` naming the file and line.
    """
    _check_on_short(on_short)
    user_ids: list[int] = []
    sequences: list[np.ndarray] = []
    first_line: dict[int, int] = {}
    n_skipped = 0
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            tokens = line.split()
            if not tokens:
                continue
            try:
                row = np.array(tokens, dtype=np.int64)
            except (ValueError, OverflowError):
                # Slow path, only on error: find the token to name it.
                bad = next((t for t in tokens if not _is_int(t)), None)
                problem = (
                    f"non-integer token {bad!r}" if bad is not None
                    else "integer outside the int64 range"
                )
                raise ValueError(f"{path}, line {lineno}: {problem}") from None
            user, items = int(row[0]), row[1:]
            if user in first_line:
                raise ValueError(
                    f"{path}, line {lineno}: duplicate user id {user} "
                    f"(first seen on line {first_line[user]})"
                )
            first_line[user] = lineno
            if len(items) and items.min() < 1:
                raise ValueError(
                    f"{path}, line {lineno}: item id {int(items.min())} of user {user} "
                    "is not positive (ids start at 1; 0 is padding)"
                )
            if len(items) < min_length:
                if on_short == "error":
                    raise ValueError(
                        f"{path}, line {lineno}: user {user} has {len(items)} item(s), "
                        f"fewer than min_length={min_length} (use on_short='skip' to drop)"
                    )
                n_skipped += 1
                continue
            user_ids.append(user)
            sequences.append(items)
    _warn_skipped(path, n_skipped, min_length)
    return np.array(user_ids, dtype=np.int64), sequences


def _is_int(token: str) -> bool:
    try:
        int(token)
    except ValueError:
        return False
    return True


def _csr_from_lists(
    item_to_attrs: dict[int, list[int]], n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """CSR arrays for rows 0..n_items; duplicates within a row are dropped."""
    counts = np.zeros(n_items + 1, dtype=np.int64)
    rows = {}
    for item, attrs in item_to_attrs.items():
        row = np.unique(np.asarray(attrs, dtype=np.int64))
        rows[item] = row
        counts[item] = len(row)
    indptr = np.zeros(n_items + 2, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    indices = np.zeros(indptr[-1], dtype=np.int64)
    for item, row in rows.items():
        indices[indptr[item]:indptr[item + 1]] = row
    return indptr, indices


def parse_attribute_file(path, n_items: int) -> ItemAttributes:
    """Read an S3-Rec ``{"item": [attribute, ...]}`` JSON file.

    Items missing from the file get an empty row; repeated attributes of one
    item (the Amazon files have a few, e.g. a category listed twice) are kept
    once. ``n_attributes`` is the largest attribute id, since the ids are
    dense. Raises ``ValueError`` for invalid JSON, non-integer keys or values,
    item ids outside ``1..n_items`` and attribute ids < 1.
    """
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}"
        ) from None
    if not isinstance(raw, dict):
        raise ValueError(
            f"{path}: expected a JSON object mapping item id -> list of attribute ids"
        )
    item_to_attrs: dict[int, list[int]] = {}
    for key, attrs in raw.items():
        try:
            item = int(key)
        except ValueError:
            raise ValueError(f"{path}: item id {key!r} is not an integer") from None
        if not 1 <= item <= n_items:
            raise ValueError(f"{path}: item id {item} is outside 1..{n_items}")
        # bool is an int subclass in Python; true/false in the file is a bug.
        if not isinstance(attrs, list) or not all(
            isinstance(a, int) and not isinstance(a, bool) for a in attrs
        ):
            raise ValueError(
                f"{path}: attributes of item {item} are not a list of integers: {attrs!r}"
            )
        if attrs and min(attrs) < 1:
            raise ValueError(f"{path}: item {item} has non-positive attribute id {min(attrs)}")
        item_to_attrs[item] = attrs
    indptr, indices = _csr_from_lists(item_to_attrs, n_items)
    n_attributes = int(indices.max()) if len(indices) else 0
    return ItemAttributes(indptr=indptr, indices=indices, n_attributes=n_attributes)


def parse_udata_file(
    path, min_length: int = 3, on_short: str = "error"
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Read MovieLens-100K ``u.data`` (``user<TAB>item<TAB>rating<TAB>time``).

    Each user's items are sorted by timestamp; equal timestamps keep their
    order in the file (stable sort), the same tie rule as the ML-1M
    conversion. Users come out in increasing id order. Item ids are already
    dense (1..1682), so they are kept as they are.
    """
    _check_on_short(on_short)
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 4:
                raise ValueError(
                    f"{path}, line {lineno}: expected 4 fields (user item rating time), "
                    f"got {len(fields)}"
                )
            try:
                rows.append([int(x) for x in fields] + [lineno])
            except ValueError:
                raise ValueError(
                    f"{path}, line {lineno}: non-integer field in {line.strip()!r}"
                ) from None
            if rows[-1][1] < 1:
                raise ValueError(f"{path}, line {lineno}: item id {rows[-1][1]} is not positive")
    data = np.array(rows, dtype=np.int64).reshape(-1, 5)  # user item rating time lineno
    users, items, times = data[:, 0], data[:, 1], data[:, 3]
    # Stable sort by time, then stable sort by user: within a user, time
    # order, and file order among equal times.
    order = np.argsort(times, kind="stable")
    order = order[np.argsort(users[order], kind="stable")]
    users, items = users[order], items[order]
    user_ids, starts = np.unique(users, return_index=True)
    sequences = np.split(items, starts[1:]) if len(users) else []
    keep = np.array([len(s) >= min_length for s in sequences], dtype=bool)
    if not keep.all():
        if on_short == "error":
            bad = int(user_ids[~keep][0])
            mine = data[data[:, 0] == bad]
            raise ValueError(
                f"{path}, line {int(mine[:, 4].min())}: user {bad} has {len(mine)} item(s), "
                f"fewer than min_length={min_length} (use on_short='skip' to drop)"
            )
        _warn_skipped(path, int((~keep).sum()), min_length)
    return user_ids[keep], [s.copy() for s, k in zip(sequences, keep) if k]


def parse_items_csv(path, n_items: int) -> ItemAttributes:
    """Genres of MovieLens-100K from the mirror's ``items.csv``.

    Attribute ``a`` (1..19) is the a-th genre flag column (``genre_unknown``,
    ``Action``, ... ``Western``), so the names are kept. The file has 1,746 rows
    for 1,682 movie ids: some ids repeat (with identical genre flags in the
    current file). We keep the FIRST row per id, deliberately and
    deterministically, rather than merging rows.
    """
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or header[:2] != ["movie_id", "title"] or "year" not in header:
            raise ValueError(
                f"{path}: expected a header starting with movie_id,title and a year column"
            )
        genre_cols = list(range(2, header.index("year")))
        names = header[2:header.index("year")]
        item_to_attrs: dict[int, list[int]] = {}
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                item = int(row[0])
                flags = [int(row[c]) for c in genre_cols]
            except (ValueError, IndexError):
                raise ValueError(
                    f"{path}, line {lineno}: malformed movie_id or genre flags"
                ) from None
            if not 1 <= item <= n_items:
                raise ValueError(f"{path}, line {lineno}: item id {item} is outside 1..{n_items}")
            if item in item_to_attrs:
                continue  # first row per movie id wins, see docstring
            item_to_attrs[item] = [a for a, flag in enumerate(flags, start=1) if flag]
    indptr, indices = _csr_from_lists(item_to_attrs, n_items)
    return ItemAttributes(indptr=indptr, indices=indices, n_attributes=len(names), names=names)


# --------------------------------------------------------------------------
# Locating and downloading
# --------------------------------------------------------------------------

def _has_files(folder: Path, spec: DatasetSpec) -> bool:
    return all((folder / f).is_file() for f in spec.required_files)


def _candidate_roots(data_dir) -> list[tuple[str, Path]]:
    """The places searched, in order, each with the reason it is searched."""
    roots: list[tuple[str, Path]] = []
    if data_dir is not None:
        roots.append(("data_dir argument", Path(data_dir)))
    env = os.environ.get("EMKD_DATA_DIR")
    if env:
        roots.append(("$EMKD_DATA_DIR", Path(env)))
    cwd = Path.cwd()
    roots += [
        ("./data", cwd / "data"),
        ("<repo>/data", REPO_ROOT / "data"),
        ("../shared/data (from cwd)", cwd.parent / "shared" / "data"),
        ("../shared/data (from repo)", REPO_ROOT.parent / "shared" / "data"),
    ]
    return roots


def resolve_dataset_dir(
    name: str, data_dir: str | Path | None = None, download: bool = True
) -> Path:
    """Folder holding dataset ``name``'s files, downloading them if needed.

    Searched in order: ``data_dir``; ``$EMKD_DATA_DIR``; ``./data``;
    ``<repo>/data``; ``../shared/data`` from the working directory and from
    the repo root. A root matches when ``<root>/<spec.folder>/`` has all
    required files. If none matches and ``download`` is true, the files are
    downloaded into ``<repo>/data/<folder>``. Otherwise (or if the download
    fails) ``FileNotFoundError`` lists every place searched.
    """
    spec = _spec(name)
    looked = []
    for why, root in _candidate_roots(data_dir):
        folder = root / spec.folder
        if _has_files(folder, spec):
            return folder
        looked.append(f"  {folder}  ({why})")
    problem = "download=False"
    if download:
        try:
            return download_dataset(name, REPO_ROOT / "data")
        except Exception as e:  # offline, HTTP error, checksum mismatch: all reported below
            problem = f"download failed: {type(e).__name__}: {e}"
    raise FileNotFoundError(
        f"dataset {name!r} (files {', '.join(spec.required_files)}) not found. Looked in:\n"
        + "\n".join(looked)
        + f"\n{problem}. Set EMKD_DATA_DIR or pass data_dir to point at a folder holding "
        f"{spec.folder}/; public source: {', '.join(spec.source_urls)}"
    )


def file_sha256(path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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


def _install_bytes(dest_dir: Path, name: str, data: bytes) -> None:
    """Write ``data`` to ``dest_dir/name`` atomically (temp file + os.replace)."""
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{name}-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, dest_dir / name)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
    name: str,
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
    spec = _spec(name)
    dest = Path(dest_root if dest_root is not None else REPO_ROOT / "data") / spec.folder
    dest.mkdir(parents=True, exist_ok=True)
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
        _install_bytes(dest, fname, data)
    return dest


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------

def load_dataset(
    name: str, data_dir=None, download: bool = True, on_short: str = "error"
) -> SequenceDataset:
    """Find (or download) and parse dataset ``name`` into a :class:`SequenceDataset`.

    ``n_items`` is the largest item id in the sequences. Users with fewer than
    three items raise unless ``on_short="skip"``.
    """
    spec = _spec(name)
    folder = resolve_dataset_dir(name, data_dir, download)
    seq_path = folder / spec.sequence_file
    if spec.sequence_format == "udata":
        user_ids, sequences = parse_udata_file(seq_path, on_short=on_short)
    else:
        user_ids, sequences = parse_sequence_file(seq_path, on_short=on_short)
    n_items = int(max((s.max() for s in sequences), default=0))
    attributes = None
    attr_path = folder / spec.attribute_file if spec.attribute_file else None
    if attr_path is not None and attr_path.is_file():
        if attr_path.suffix == ".csv":
            attributes = parse_items_csv(attr_path, n_items)
        else:
            attributes = parse_attribute_file(attr_path, n_items)
    return SequenceDataset(
        name=name,
        user_ids=user_ids,
        sequences=sequences,
        n_items=n_items,
        attributes=attributes,
        source=str(seq_path),
    )


def subsample_users(ds: SequenceDataset, n_users: int, seed: int) -> SequenceDataset:
    """A random subset of ``n_users`` users (in their original order).

    For fast smoke runs. ``n_items`` and ``attributes`` stay those of the full
    dataset so item ids, embedding tables and attribute heads keep their
    shapes. With ``n_users >= ds.n_users`` all users are kept.
    """
    if n_users < 1:
        raise ValueError(f"n_users must be positive, got {n_users}")
    total = len(ds.sequences)
    if n_users >= total:
        keep = np.arange(total)
    else:
        keep = np.sort(np.random.default_rng(seed).choice(total, size=n_users, replace=False))
    return SequenceDataset(
        name=ds.name,
        user_ids=ds.user_ids[keep],
        sequences=[ds.sequences[i] for i in keep],
        n_items=ds.n_items,
        attributes=ds.attributes,
        source=ds.source,
    )


# --------------------------------------------------------------------------
# Splits and augmentation
# --------------------------------------------------------------------------

@dataclass
class LeaveOneOutSplit:
    """Leave-one-out: last item = test target, second to last = validation."""

    train: list[np.ndarray]
    valid_inputs: list[np.ndarray]
    valid_targets: np.ndarray
    test_inputs: list[np.ndarray]
    test_targets: np.ndarray


def leave_one_out(sequences: list[np.ndarray]) -> LeaveOneOutSplit:
    """Standard leave-one-out split; every sequence needs at least 3 items.

    The training sequence equals the validation input: validation predicts
    ``seq[-2]`` from everything before it, and test predicts ``seq[-1]`` from
    everything before *it* (including the validation item).
    """
    for i, s in enumerate(sequences):
        if len(s) < 3:
            raise ValueError(f"sequence {i} has {len(s)} item(s); leave-one-out needs at least 3")
    train = [s[:-2] for s in sequences]
    return LeaveOneOutSplit(
        train=train,
        # same arrays, separate list: appending to one cannot alter the other
        valid_inputs=list(train),
        valid_targets=np.array([s[-2] for s in sequences], dtype=np.int64),
        test_inputs=[s[:-1] for s in sequences],
        test_targets=np.array([s[-1] for s in sequences], dtype=np.int64),
    )


def _positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def sliding_windows(
    sequences: list[np.ndarray], window: int, step: int, min_length: int = 2
) -> list[np.ndarray]:
    """Cut sequences into windows of at most ``window`` items, ending every ``step`` items.

    For each sequence, windows end at ``len, len - step, len - 2*step, ...``
    while the end is >= ``min_length``; each is ``seq[max(0, end - window):end]``.
    ``step=1`` gives every prefix (truncated to ``window``), the BERT4Rec/EMKD
    augmentation; ``step >= len`` gives just the (truncated) whole sequence;
    ``step = window - 1`` with a shifted next-item objective covers every
    target exactly once. Windows are views into the input arrays (ML-1M with
    step 1 has 1M windows; copies would cost gigabytes).
    """
    _positive_int("window", window)
    _positive_int("step", step)
    _positive_int("min_length", min_length)
    out = []
    for seq in sequences:
        for end in range(len(seq), min_length - 1, -step):
            out.append(seq[max(0, end - window):end])
    return out


# --------------------------------------------------------------------------
# Statistics and popularity
# --------------------------------------------------------------------------

def dataset_statistics(ds: SequenceDataset) -> dict:
    """The usual dataset table row: users, items, actions, averages, sparsity, attributes."""
    users, items = len(ds.sequences), ds.n_items
    actions = int(sum(len(s) for s in ds.sequences))
    attrs = ds.attributes
    has_attrs = attrs is not None
    return {
        "users": users,
        "items": items,
        "actions": actions,
        "avg_actions_per_user": actions / users if users else 0.0,
        "avg_actions_per_item": actions / items if items else 0.0,
        "sparsity": 1.0 - actions / (users * items) if users and items else 1.0,
        "attributes": attrs.n_attributes if has_attrs else None,
        # averaged over all items 1..n_items, including items without attributes
        "avg_attributes_per_item": (
            float(attrs.counts()[1:].mean()) if has_attrs and items else None
        ),
    }


def item_popularity(sequences: list[np.ndarray], n_items: int) -> np.ndarray:
    """Interaction count per item id, shape (n_items + 1,); entry 0 (padding) is 0."""
    flat = np.concatenate(sequences) if len(sequences) else np.zeros(0, dtype=np.int64)
    if len(flat) and (flat.min() < 1 or flat.max() > n_items):
        raise ValueError(f"item ids must lie in 1..{n_items}, found {flat.min()}..{flat.max()}")
    return np.bincount(flat, minlength=n_items + 1).astype(np.int64)


def _top_count(n: int, fraction: float) -> int:
    if not 0 < fraction <= 1:
        raise ValueError(f"head_fraction must be in (0, 1], got {fraction}")
    # Round half up rather than ceil: 0.1 * 30 is 3.0000000000000004 in
    # floating point, and ceil would turn it into 4.
    return min(n, max(1, int(np.floor(fraction * n + 0.5)))) if n else 0


def head_items(popularity: np.ndarray, head_fraction: float = 0.2) -> np.ndarray:
    """Bool mask (n_items + 1,) of the ``head_fraction`` most popular items.

    The Pareto head of S^4Rec-style head/tail analysis: ``head_fraction *
    n_items`` items rounded half up (at least one), most interactions first, ties broken by
    smaller id so the split is deterministic. Entry 0 (padding) is False.
    """
    popularity = np.asarray(popularity)
    n = len(popularity) - 1
    k = _top_count(n, head_fraction)
    ids = np.arange(1, n + 1)
    order = np.lexsort((ids, -popularity[1:]))  # last key is primary
    mask = np.zeros(n + 1, dtype=bool)
    mask[ids[order[:k]]] = True
    return mask


def user_head_rate(sequences: list[np.ndarray], is_head: np.ndarray) -> np.ndarray:
    """Fraction of each user's interactions that hit head items (NaN for empty sequences)."""
    is_head = np.asarray(is_head, dtype=bool)
    return np.array(
        [is_head[s].mean() if len(s) else np.nan for s in sequences], dtype=np.float64
    )


def split_users_by_length(sequences: list[np.ndarray], head_fraction: float = 0.2) -> np.ndarray:
    """Bool per user: True for the ``head_fraction`` longest histories ("head users").

    Same rounding as :func:`head_items`; ties in length are broken by user
    order (earlier users first) so the split is deterministic.
    """
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    k = _top_count(len(lengths), head_fraction)
    order = np.lexsort((np.arange(len(lengths)), -lengths))
    mask = np.zeros(len(lengths), dtype=bool)
    mask[order[:k]] = True
    return mask
