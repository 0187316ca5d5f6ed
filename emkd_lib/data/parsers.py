"""Dataset files -> arrays, validating as they read.

A silently mis-parsed dataset corrupts every number downstream, so every
problem is a ``ValueError`` of one line naming the file, the line and what is
wrong: non-integer tokens, non-UTF-8 bytes, duplicate users, users too short
for leave-one-out, empty files, and item ids too sparse for an embedding
table (an id of 999999 among 12,000 items would allocate an 80x table).
"""
from __future__ import annotations

import csv
import json
import warnings

import numpy as np

from .containers import ItemAttributes

# Item ids index an embedding table of max_id + 1 rows. Ids may skip a few
# values (items dropped by a k-core filter), but an id far above the number of
# distinct items is a typo or an unmapped raw id: refuse it unless asked to remap.
SPARSE_ID_FACTOR = 2
SPARSE_ID_SLACK = 100


def sparse_id_bound(n_distinct: int) -> int:
    """The largest item id accepted for ``n_distinct`` distinct items."""
    return SPARSE_ID_FACTOR * n_distinct + SPARSE_ID_SLACK


def _text_lines(path):
    """``(line number, text)`` of a UTF-8 file; a bad byte names its line."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(f"{path}, line {lineno}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def _numeric_lines(path):
    """``_text_lines`` of a file of integers: a byte-order mark is dropped; a
    carriage return inside a line (old Mac line endings would make the whole
    file one user) and non-ASCII characters (Python reads other scripts'
    digits as numbers) are errors naming the line."""
    for lineno, line in _text_lines(path):
        if lineno == 1:
            line = line.removeprefix("\ufeff")
        if "\r" in line.rstrip("\r\n"):
            raise ValueError(f"{path}, line {lineno}: a carriage return inside the line (old Mac line endings?); "
                             f"end lines with \\n or \\r\\n")
        if not line.isascii():
            bad = next(c for c in line if not c.isascii())
            raise ValueError(f"{path}, line {lineno}: non-ASCII character {bad!r} in a file of integers")
        yield lineno, line


def check_dense_ids(path, sequences: list[np.ndarray], line_numbers: list[int]) -> None:
    """Raise if the largest item id is far above the number of distinct ids
    (``sparse_id_bound``), naming the line that holds it."""
    if not sequences:
        return
    flat = np.concatenate(sequences)
    n_distinct = len(np.unique(flat))
    bound = sparse_id_bound(n_distinct)
    top = int(flat.max())
    if top > bound:
        row = next(i for i, s in enumerate(sequences) if s.max() == top)
        raise ValueError(
            f"{path}, line {line_numbers[row]}: item id {top} is far above the {n_distinct} distinct item ids "
            f"(bound {bound}); ids index an embedding table, so fix the id or load with remap_ids=True "
            f"(CLI: run --remap-ids) to renumber items densely")


def remap_dense(sequences: list[np.ndarray]) -> tuple[list[np.ndarray], dict[int, int]]:
    """Renumber items 1..n by first appearance; returns the sequences and old -> new."""
    mapping: dict[int, int] = {}
    for s in sequences:
        for item in s.tolist():
            if item not in mapping:
                mapping[item] = len(mapping) + 1
    return [np.array([mapping[i] for i in s.tolist()], dtype=np.int64) for s in sequences], mapping


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
    path, min_length: int = 3, on_short: str = "error", check_ids: bool = True
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Read a ``user item item ...`` file into (user_ids, sequences).

    Items are kept in file order (the files are chronological). Blank lines
    are skipped; a line holding only a user id is a user with zero items and
    falls under the short-user rule. Users with fewer than ``min_length``
    items raise (``on_short="error"``) or are dropped with one warning that
    counts them (``on_short="skip"``): leave-one-out needs at least three
    items (train, valid, test). Non-integer tokens, item ids < 1 and repeated
    user ids raise ``ValueError`` naming the file and line, as do sparse item
    ids (``check_dense_ids``) unless ``check_ids=False`` (the caller remaps).
    """
    _check_on_short(on_short)
    user_ids: list[int] = []
    sequences: list[np.ndarray] = []
    first_line: dict[int, int] = {}
    n_skipped = 0
    line_numbers: list[int] = []
    for lineno, line in _numeric_lines(path):
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
                    f"fewer than min_length={min_length} "
                    "(to drop them: on_short='skip', or --on-short skip on the command line)"
                )
            n_skipped += 1
            continue
        user_ids.append(user)
        sequences.append(items)
        line_numbers.append(lineno)
    _warn_skipped(path, n_skipped, min_length)
    if not sequences:
        raise ValueError(f"{path}: no users with at least {min_length} items (empty file?)")
    if check_ids:
        check_dense_ids(path, sequences, line_numbers)
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


def parse_attribute_file(path, n_items: int, item_map: dict[int, int] | None = None) -> ItemAttributes:
    """Read an S3-Rec ``{"item": [attribute, ...]}`` JSON file.

    Items missing from the file get an empty row; repeated attributes of one
    item (the Amazon files have a few, e.g. a category listed twice) are kept
    once. ``n_attributes`` is the largest attribute id, since the ids are
    dense. Raises ``ValueError`` for invalid JSON, non-integer keys or values,
    item ids outside ``1..n_items`` and attribute ids < 1. ``item_map``
    renumbers the file's item ids (a remapped sequence file); items it does
    not know never occur in the sequences and are left out.
    """
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
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
        if item_map is not None:
            if item not in item_map:
                continue
            item = item_map[item]
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
    for lineno, line in _numeric_lines(path):
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
    if not rows:
        raise ValueError(f"{path}: no ratings (empty file?)")
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
                f"fewer than min_length={min_length} "
                "(to drop them: on_short='skip', or --on-short skip on the command line)"
            )
        _warn_skipped(path, int((~keep).sum()), min_length)
    return user_ids[keep], [s.copy() for s, k in zip(sequences, keep) if k]


# The genre flag column of MovieLens-100K's items.csv that marks a movie with no known genre.
UNKNOWN_GENRE = "genre_unknown"


def parse_items_csv(path, n_items: int) -> ItemAttributes:
    """Genres of MovieLens-100K from the mirror's ``items.csv``.

    Attribute ``a`` (1..19) is the a-th genre flag column (``UNKNOWN_GENRE``,
    ``Action``, ... ``Western``), so the names are kept. The file has 1,746 rows
    for 1,682 movie ids: some ids repeat (with identical genre flags in the
    current file). We keep the FIRST row per id, deliberately and
    deterministically, rather than merging rows.
    """
    try:
        return _parse_items_csv(path, n_items)
    except UnicodeDecodeError:
        for _ in _text_lines(path):  # raises, naming the first line that is not UTF-8
            pass
        raise


def _parse_items_csv(path, n_items: int) -> ItemAttributes:
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
        for row in reader:
            lineno = reader.line_num  # a record may span lines (quoted newlines in overviews)
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


