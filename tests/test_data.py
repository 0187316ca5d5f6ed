"""Tests for emkd_lib.data: parsing, validation, resolution, download, splits, statistics.

The newer behaviour (sparse ids, checksums, user datasets, the CLI) has its
own files: tests/test_data_*.py."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from emkd_lib import settings
from emkd_lib.batching import sliding_windows
from emkd_lib.data import (
    BUNDLED,
    ItemAttributes,
    SequenceDataset,
    convert_ml1m,
    dataset_files,
    dataset_spec,
    dataset_statistics,
    download_dataset,
    head_items,
    head_tail_statistics,
    item_popularity,
    leave_one_out,
    load_dataset,
    parse_attribute_file,
    parse_items_csv,
    parse_sequence_file,
    parse_udata_file,
    resolve_dataset_dir,
    split_users_by_length,
    subsample_users,
    user_head_rate,
)
from emkd_lib.data import fetch
from emkd_lib.files import file_sha256


@pytest.fixture(autouse=True)
def _checksum_cache_in_tmp(tmp_path, monkeypatch):
    """load_dataset caches file checksums under $EMKD_CACHE_DIR: never in ~/.cache."""
    monkeypatch.setenv("EMKD_CACHE_DIR", str(tmp_path / "emkd-cache"))


def arrs(*seqs):
    return [np.array(s, dtype=np.int64) for s in seqs]


def as_lists(seqs):
    return [s.tolist() for s in seqs]


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def write_beauty(root: Path, seq_text="1 1 2 3\n2 2 3 4 5\n", attrs=None) -> Path:
    """A tiny dataset in the beauty layout under ``root/beauty``."""
    folder = root / "beauty"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Beauty.txt").write_text(seq_text)
    attrs = attrs if attrs is not None else {"1": [1], "2": [1, 2], "5": [3]}
    (folder / "Beauty_item2attributes.json").write_text(json.dumps(attrs))
    return folder


# ---------------------------------------------------------------- real mirror

EXPECTED = {
    # name: (users, items, actions, attributes)
    "beauty": (22363, 12101, 198502, 637),
    "toys": (19412, 11924, 167597, 1027),
    "sports": (35598, 18357, 296337, 2277),
    "ml-1m": (6040, 3706, 1000209, 18),
    "ml-100k": (943, 1682, 100000, 19),
}


def mirror_dir(name: str) -> Path:
    try:
        return resolve_dataset_dir(dataset_spec(name), settings.current().data_dir, download=False)
    except FileNotFoundError:
        pytest.skip(f"offline mirror for {name} not available")


@pytest.mark.parametrize("name", list(EXPECTED))
def test_real_dataset_counts(name):
    mirror_dir(name)
    ds = load_dataset(name, download=False)
    users, items, actions, n_attr = EXPECTED[name]
    stats = dataset_statistics(ds)
    assert (stats["users"], stats["items"], stats["actions"]) == (users, items, actions)
    assert stats["attributes"] == n_attr
    assert len(np.unique(ds.user_ids)) == users
    flat = np.concatenate(ds.sequences)
    assert flat.min() == 1 and flat.max() == ds.n_items
    assert min(len(s) for s in ds.sequences) >= 3
    assert ds.attributes.indptr.shape == (items + 2,)
    assert ds.attributes.counts()[0] == 0
    assert Path(ds.source).is_file()
    # every file read is identified by its published checksum
    spec = BUNDLED[name]
    assert ds.files == {f: spec.sha256[f] for f in (spec.sequence_file, spec.attribute_file)}


def test_real_mirror_checksums_match_spec_table():
    """The sha256 table in BUNDLED is the one the mirror's files actually have."""
    checked = 0
    for name, spec in BUNDLED.items():
        if spec.features_from:  # a protocol on another dataset's files, checked with it
            continue
        folder = mirror_dir(name)
        for fname, digest in spec.sha256.items():
            if (folder / fname).is_file():
                assert file_sha256(folder / fname) == digest, f"{name}/{fname}"
                checked += 1
    assert checked == 11


def test_ml100k_sequences_are_time_ordered_and_complete():
    folder = mirror_dir("ml-100k")
    ds = load_dataset("ml-100k", download=False)
    raw = np.loadtxt(folder / "u.data", dtype=np.int64)
    for row in (0, 1, 500, 942):
        user = ds.user_ids[row]
        mine = raw[raw[:, 0] == user]
        # stable sort by time keeps file order among ties
        expected = mine[np.argsort(mine[:, 3], kind="stable"), 1]
        np.testing.assert_array_equal(ds.sequences[row], expected)
    # items.csv: Toy Story (id 1) is Animation, Children, Comedy
    attrs = ds.attributes
    names = [attrs.names[a - 1] for a in attrs.indices[attrs.indptr[1]:attrs.indptr[2]]]
    assert names == ["Animation", "Children", "Comedy"]
    assert (attrs.counts()[1:] > 0).all()


# ---------------------------------------------------------------- parsing and validation

def test_parse_sequence_file_basic(tmp_path):
    p = tmp_path / "s.txt"
    p.write_text("7 3 1 2\n\n5 4 4 9 1\n")
    users, seqs = parse_sequence_file(p)
    assert users.tolist() == [7, 5] and users.dtype == np.int64
    assert as_lists(seqs) == [[3, 1, 2], [4, 4, 9, 1]]
    assert all(s.dtype == np.int64 for s in seqs)


@pytest.mark.parametrize(
    "text, match",
    [
        ("1 1 2 3\n2 1 x 3\n", r"line 2: non-integer token 'x'"),
        ("1 1 2 3\n2 1 2.5 3\n", r"line 2: non-integer token '2\.5'"),
        ("1 1 2 3\n2 1 99999999999999999999 3\n", r"line 2: integer outside the int64 range"),
        ("1 1 2 3\n2 1 0 3\n", r"line 2: item id 0 of user 2 is not positive"),
        ("1 1 2 3\n2 1 -4 3\n", r"line 2: item id -4"),
        ("1 1 2 3\n2 1 2 3\n1 4 5 6\n", r"line 3: duplicate user id 1 \(first seen on line 1\)"),
        ("1 1 2 3\n2 1 2\n", r"line 2: user 2 has 2 item\(s\), fewer than min_length=3"),
        ("1 1 2 3\n\n9\n", r"line 3: user 9 has 0 item\(s\)"),
    ],
)
def test_parse_sequence_file_errors(tmp_path, text, match):
    p = tmp_path / "bad.txt"
    p.write_text(text)
    with pytest.raises(ValueError, match=match) as info:
        parse_sequence_file(p)
    assert "bad.txt" in str(info.value)


def test_short_users_skipped_with_one_warning(tmp_path):
    p = tmp_path / "s.txt"
    p.write_text("1 1 2 3\n2 1\n3 4 5 6\n4\n5 1 2\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        users, seqs = parse_sequence_file(p, on_short="skip")
    assert users.tolist() == [1, 3]
    assert len(caught) == 1 and "skipped 3 user(s)" in str(caught[0].message)
    # min_length is honoured: with min_length=1 only the empty user is short
    with pytest.warns(UserWarning, match="skipped 1 user"):
        users, _ = parse_sequence_file(p, min_length=1, on_short="skip")
    assert users.tolist() == [1, 2, 3, 5]


def test_bad_on_short_value(tmp_path):
    p = tmp_path / "s.txt"
    p.write_text("1 1 2 3\n")
    with pytest.raises(ValueError, match="on_short"):
        parse_sequence_file(p, on_short="drop")
    with pytest.raises(ValueError, match="on_short"):
        parse_udata_file(p, on_short="ignore")


def test_parse_attribute_file_csr_and_multi_hot(tmp_path):
    p = tmp_path / "a.json"
    p.write_text(json.dumps({"1": [2, 1], "3": [4, 2, 2]}))
    attrs = parse_attribute_file(p, n_items=4)
    assert attrs.n_attributes == 4
    assert attrs.indptr.tolist() == [0, 0, 2, 2, 4, 4]
    assert attrs.indices.tolist() == [1, 2, 2, 4]  # sorted, duplicate 2 of item 3 kept once
    assert attrs.counts().tolist() == [0, 2, 0, 2, 0]
    mh = attrs.multi_hot()
    assert mh.dtype == np.float32 and mh.shape == (5, 4)
    np.testing.assert_array_equal(
        mh, [[0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 1, 0, 1], [0, 0, 0, 0]]
    )


@pytest.mark.parametrize(
    "content, match",
    [
        ('{"1": [1, 2]', r"invalid JSON at line 1"),
        ("[1, 2]", r"expected a JSON object"),
        ('{"a": [1]}', r"item id 'a' is not an integer"),
        ('{"1": [1, "x"]}', r"attributes of item 1 are not a list of integers"),
        ('{"1": [1.5]}', r"attributes of item 1 are not a list of integers"),
        ('{"1": 3}', r"attributes of item 1 are not a list of integers"),
        ('{"6": [1]}', r"item id 6 is outside 1\.\.5"),
        ('{"0": [1]}', r"item id 0 is outside 1\.\.5"),
        ('{"2": [0, 1]}', r"item 2 has non-positive attribute id 0"),
    ],
)
def test_parse_attribute_file_errors(tmp_path, content, match):
    p = tmp_path / "attr.json"
    p.write_text(content)
    with pytest.raises(ValueError, match=match) as info:
        parse_attribute_file(p, n_items=5)
    assert "attr.json" in str(info.value)


def test_parse_udata_sorts_by_time_then_file_order(tmp_path):
    p = tmp_path / "u.data"
    # user 2 has a timestamp tie (items 7 and 3 at t=5): file order must win
    p.write_text("2\t7\t3\t5\n1\t4\t5\t30\n2\t9\t1\t1\n1\t1\t4\t10\n2\t3\t2\t5\n1\t2\t4\t20\n")
    users, seqs = parse_udata_file(p)
    assert users.tolist() == [1, 2]
    assert as_lists(seqs) == [[1, 2, 4], [9, 7, 3]]


@pytest.mark.parametrize(
    "text, match",
    [
        ("1\t2\t3\n", r"line 1: expected 4 fields"),
        ("1\t2\t3\t4\n1\tz\t3\t4\n", r"line 2: non-integer field"),
        ("1\t0\t3\t4\n", r"line 1: item id 0 is not positive"),
        ("2\t2\t3\t4\n1\t2\t3\t4\n2\t3\t3\t5\n2\t5\t3\t5\n1\t3\t3\t5\n",
         r"line 2: user 1 has 2 item\(s\), fewer than min_length=3"),
    ],
)
def test_parse_udata_errors(tmp_path, text, match):
    p = tmp_path / "u.data"
    p.write_text(text)
    with pytest.raises(ValueError, match=match):
        parse_udata_file(p)


def test_parse_items_csv_keeps_first_row_per_id(tmp_path):
    genres = ["g%d" % i for i in range(1, 20)]
    header = ["movie_id", "title", *genres, "year", "overview"]

    def row(mid, flags):
        f = [0] * 19
        for a in flags:
            f[a - 1] = 1
        return ",".join(map(str, [mid, "T", *f, 1999, '"a, b"']))

    p = tmp_path / "items.csv"
    p.write_text("\n".join([",".join(header), row(2, [3, 19]), row(1, [1]), row(2, [5])]) + "\n")
    attrs = parse_items_csv(p, n_items=3)
    assert attrs.n_attributes == 19 and attrs.names[18] == "g19"
    assert attrs.indptr.tolist() == [0, 0, 1, 3, 3]
    assert attrs.indices.tolist() == [1, 3, 19]  # item 2 from its FIRST row
    p.write_text("\n".join([",".join(header), row(4, [1])]) + "\n")
    with pytest.raises(ValueError, match=r"line 2: item id 4 is outside 1\.\.3"):
        parse_items_csv(p, n_items=3)


# ---------------------------------------------------------------- resolution

def test_resolution_order(tmp_path, monkeypatch):
    env_root, arg_root, cwd = tmp_path / "env", tmp_path / "arg", tmp_path / "cwd"
    for root in (env_root, arg_root, cwd / "data", tmp_path / "shared" / "data"):
        write_beauty(root)
    monkeypatch.setattr(fetch, "REPO_ROOT", tmp_path / "repo")  # hide <repo>/data and the real mirror
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("EMKD_DATA_DIR", str(env_root))
    spec = BUNDLED["beauty"]
    # $EMKD_DATA_DIR beats ./data, <repo>/data and ../shared/data
    ds = load_dataset("beauty", download=False, allow_modified=True)
    assert ds.source == str(env_root / "beauty" / "Beauty.txt")
    assert resolve_dataset_dir(spec, settings.current().data_dir, download=False) == env_root / "beauty"
    # an explicit data_dir beats the environment
    assert resolve_dataset_dir(spec, arg_root, download=False) == arg_root / "beauty"
    ds = load_dataset("beauty", arg_root, download=False, allow_modified=True)
    assert ds.source == str(arg_root / "beauty" / "Beauty.txt")
    # without the environment variable, ./data is next
    monkeypatch.delenv("EMKD_DATA_DIR")
    assert resolve_dataset_dir(spec, download=False) == cwd / "data" / "beauty"
    # among the default places, a folder missing a required file does not count
    (cwd / "data" / "beauty" / "Beauty_item2attributes.json").unlink()
    assert resolve_dataset_dir(spec, download=False) == tmp_path / "shared" / "data" / "beauty"
    ds = load_dataset("beauty", download=False, allow_modified=True)
    assert ds.source == str(tmp_path / "shared" / "data" / "beauty" / "Beauty.txt")
    assert as_lists(ds.sequences) == [[1, 2, 3], [2, 3, 4, 5]]


def test_explicit_location_missing_a_file_is_an_error(tmp_path, monkeypatch):
    """Replaces the old fall-through: an explicit place that lacks a file is
    an error naming it, even when a default place holds the dataset."""
    env_root, cwd = tmp_path / "env", tmp_path / "cwd"
    write_beauty(env_root)
    write_beauty(cwd / "data")
    (env_root / "beauty" / "Beauty_item2attributes.json").unlink()
    monkeypatch.chdir(cwd)
    spec = BUNDLED["beauty"]
    with pytest.raises(FileNotFoundError) as info:
        resolve_dataset_dir(spec, env_root, download=False)
    msg = str(info.value)
    assert str(env_root / "beauty") in msg and "Beauty_item2attributes.json" in msg
    assert "Beauty.txt" not in msg.split("lacks", 1)[1].split("(")[0]  # only the missing file is listed
    assert str(cwd / "data") not in msg
    monkeypatch.setenv("EMKD_DATA_DIR", str(env_root))
    with pytest.raises(FileNotFoundError, match="Beauty_item2attributes.json"):
        load_dataset("beauty", download=True, allow_modified=True)  # no download either


def test_missing_dataset_lists_every_place(tmp_path, monkeypatch):
    fake_repo = tmp_path / "repo"
    monkeypatch.setattr(fetch, "REPO_ROOT", fake_repo)  # hide the real mirror
    cwd = tmp_path / "work" / "cwd"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("EMKD_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError) as info:
        resolve_dataset_dir(BUNDLED["toys"], download=False)
    msg = str(info.value)
    assert "'toys'" in msg and "download=False" in msg
    for place in [
        cwd / "data" / "toys",
        fake_repo / "data" / "toys",
        tmp_path / "work" / "shared" / "data" / "toys",
        tmp_path / "shared" / "data" / "toys",
    ]:
        assert str(place) in msg
    with pytest.raises(FileNotFoundError, match="download=False"):
        load_dataset("toys", download=False)


def test_failed_download_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EMKD_DATA_DIR", raising=False)
    spec = dataclasses.replace(BUNDLED["toys"], base_url=(tmp_path / "nowhere").as_uri() + "/")
    monkeypatch.setitem(BUNDLED, "toys", spec)
    with pytest.raises(FileNotFoundError, match="download failed: URLError"):
        load_dataset("toys")
    assert not (tmp_path / "repo" / "data" / "toys").exists()  # no partial file, no empty folder


def test_unknown_dataset_lists_known_names():
    with pytest.raises(KeyError, match="beauty, toys, sports, ml-1m, ml-100k"):
        load_dataset("netflix", download=False)
    with pytest.raises(KeyError, match="unknown dataset 'netflix'"):
        dataset_spec("netflix")


@pytest.mark.parametrize("name", [None, 3, ("beauty",)])
def test_dataset_name_must_be_a_string(name):
    with pytest.raises(TypeError, match="dataset name must be a string"):
        dataset_spec(name)


def test_dataset_spec_of_bundled_names():
    for name, spec in BUNDLED.items():
        assert dataset_spec(name) is spec and spec.name == name
        assert set(spec.required_files) <= set(spec.sha256)


# ---------------------------------------------------------------- download

def test_download_amazon_from_file_url(tmp_path):
    src = write_beauty(tmp_path / "src")
    sums = {f.name: sha(f.read_bytes()) for f in src.iterdir()}
    folder = download_dataset(BUNDLED["beauty"], tmp_path / "dest", base_url=src.as_uri(), checksums=sums)
    assert folder == tmp_path / "dest" / "beauty"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["Beauty.txt", "Beauty_item2attributes.json"]
    ds = load_dataset("beauty", tmp_path / "dest", download=False, allow_modified=True)
    assert ds.n_items == 5 and ds.attributes.n_attributes == 3
    assert ds.files == sums


def test_download_checksum_mismatch_leaves_nothing(tmp_path):
    src = write_beauty(tmp_path / "src")
    sums = {"Beauty.txt": "0" * 64}
    with pytest.raises(ValueError, match="sha256 mismatch"):
        download_dataset(BUNDLED["beauty"], tmp_path / "dest", base_url=src.as_uri(), checksums=sums)
    assert not (tmp_path / "dest" / "beauty").exists()


def test_default_checksums_reject_foreign_files(tmp_path):
    """Without an override, the published checksums are enforced."""
    src = write_beauty(tmp_path / "src")
    with pytest.raises(ValueError, match="226cce9c"):
        download_dataset(BUNDLED["beauty"], tmp_path / "dest", base_url=src.as_uri())
    assert not (tmp_path / "dest" / "beauty").exists()


RATINGS = (
    # user::movie::rating::time; movie 50 appears first, then 10, then 30
    "2::50::3::200\n"
    "1::10::4::300\n"
    "1::30::5::100\n"
    "2::10::2::100\n"
    "1::50::1::300\n"  # tie with the 10 above: file order keeps 10 before 50
    "2::30::4::150\n"
)
MOVIES = (
    "10::Ten (1990)::Drama|Comedy\n"
    "20::Never Rated (1991)::Horror\n"
    "30::Thirty (1992)::Comedy\n"
    "50::Fifty (1995)::Action|Drama\n"
)
# new ids: 50 -> 1, 10 -> 2, 30 -> 3; user 1 by time: 30, 10, 50; user 2: 10, 30, 50
EXPECTED_ML1M_TXT = "1 3 2 1\n2 2 3 1\n"
# genres by first appearance among rated movies: Drama 1, Comedy 2, Action 3
EXPECTED_ML1M_ATTRS = {"1": [1, 3], "2": [1, 2], "3": [2]}


def make_zip(path: Path, members: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return path


def test_convert_ml1m():
    seq, attrs = convert_ml1m(RATINGS.encode(), MOVIES.encode())
    assert seq.decode() == EXPECTED_ML1M_TXT
    assert json.loads(attrs) == EXPECTED_ML1M_ATTRS


def test_download_ml1m_zip_converts_and_verifies(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    make_zip(src / "ml-1m.zip", {"ml-1m/ratings.dat": RATINGS, "ml-1m/movies.dat": MOVIES})
    good = {"ml-1m.txt": sha(EXPECTED_ML1M_TXT.encode())}
    folder = download_dataset(BUNDLED["ml-1m"], tmp_path / "dest", base_url=src.as_uri(), checksums=good)
    assert sorted(p.name for p in folder.iterdir()) == ["ML-1M_item2attributes.json", "ml-1m.txt"]
    # not the published ml-1m.txt: refused unless allowed
    with pytest.raises(ValueError, match="567df58c"):
        load_dataset("ml-1m", tmp_path / "dest", download=False)
    ds = load_dataset("ml-1m", tmp_path / "dest", download=False, allow_modified=True)
    assert as_lists(ds.sequences) == [[3, 2, 1], [2, 3, 1]]
    assert ds.attributes.multi_hot()[1].tolist() == [1, 0, 1]
    # a wrong checksum for the converted file: neither output is written
    with pytest.raises(ValueError, match="sha256 mismatch for ml-1m.txt"):
        download_dataset(
            BUNDLED["ml-1m"], tmp_path / "dest2", base_url=src.as_uri(), checksums={"ml-1m.txt": "f" * 64}
        )
    assert not (tmp_path / "dest2" / "ml-1m").exists()


def test_download_ml100k_zip(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    udata = "1\t5\t3\t20\n1\t2\t3\t10\n1\t9\t3\t30\n"
    make_zip(src / "ml-100k.zip", {"ml-100k/u.data": udata, "ml-100k/u.item": "x"})
    sums = {"u.data": sha(udata.encode())}
    folder = download_dataset(BUNDLED["ml-100k"], tmp_path / "dest", base_url=src.as_uri(), checksums=sums)
    assert [p.name for p in folder.iterdir()] == ["u.data"]
    ds = load_dataset("ml-100k", tmp_path / "dest", download=False, allow_modified=True)
    assert as_lists(ds.sequences) == [[2, 5, 9]] and ds.attributes is None and ds.n_items == 9
    # items.csv is optional: absent, it is neither read nor part of the identity
    assert ds.files == sums == dataset_files("ml-100k", tmp_path / "dest")


# ---------------------------------------------------------------- subsampling

def test_subsample_users_deterministic(tmp_path):
    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, 50, size=rng.integers(3, 10)) for _ in range(100)]
    attrs = ItemAttributes(np.zeros(52, dtype=np.int64), np.zeros(0, dtype=np.int64), 0)
    ds = SequenceDataset("toy", np.arange(100, 200), seqs, 50, attrs, "mem", files={"toy.txt": "0" * 64})
    a, b = subsample_users(ds, 10, seed=1), subsample_users(ds, 10, seed=1)
    c = subsample_users(ds, 10, seed=2)
    assert a.user_ids.tolist() == b.user_ids.tolist()
    assert a.user_ids.tolist() != c.user_ids.tolist()
    assert len(a.sequences) == 10 and len(set(a.user_ids.tolist())) == 10
    assert np.all(np.diff(a.user_ids) > 0)  # original order kept
    for u, s in zip(a.user_ids, a.sequences):
        assert s is seqs[u - 100]
    assert a.n_items == 50 and a.attributes is attrs
    assert a.files == ds.files and a.source == ds.source  # same data identity as the full dataset
    assert len(subsample_users(ds, 1000, seed=0).sequences) == 100
    with pytest.raises(ValueError, match="^n_users must be positive, got 0$"):
        subsample_users(ds, 0, seed=0)


# ---------------------------------------------------------------- splits and windows

def test_leave_one_out():
    split = leave_one_out(arrs([1, 2, 3], [4, 5, 6, 7, 8]))
    assert as_lists(split.train) == [[1], [4, 5, 6]]
    assert as_lists(split.valid_inputs) == [[1], [4, 5, 6]]
    assert split.valid_targets.tolist() == [2, 7]
    assert as_lists(split.test_inputs) == [[1, 2], [4, 5, 6, 7]]
    assert split.test_targets.tolist() == [3, 8]
    with pytest.raises(ValueError, match="sequence 1 has 2 item"):
        leave_one_out(arrs([1, 2, 3], [1, 2]))


def test_sliding_windows_step1_gives_all_prefixes():
    out = sliding_windows(arrs([1, 2, 3, 4]), window=10, step=1)
    assert as_lists(out) == [[1, 2, 3, 4], [1, 2, 3], [1, 2]]
    out = sliding_windows(arrs([1, 2, 3, 4]), window=10, step=1, min_length=1)
    assert as_lists(out) == [[1, 2, 3, 4], [1, 2, 3], [1, 2], [1]]


def test_sliding_windows_truncation_and_steps():
    seq = arrs(list(range(1, 8)))  # 1..7
    assert as_lists(sliding_windows(seq, window=3, step=1)) == [
        [5, 6, 7], [4, 5, 6], [3, 4, 5], [2, 3, 4], [1, 2, 3], [1, 2]
    ]
    # step >= len: only the (truncated) whole sequence
    assert as_lists(sliding_windows(seq, window=3, step=7)) == [[5, 6, 7]]
    assert as_lists(sliding_windows(seq, window=50, step=100)) == [[1, 2, 3, 4, 5, 6, 7]]
    # step = window - 1: shifted next-item targets (window[1:]) cover 2..7 exactly once
    wins = sliding_windows(seq, window=3, step=2)
    assert as_lists(wins) == [[5, 6, 7], [3, 4, 5], [1, 2, 3]]
    targets = sorted(t for w in wins for t in w[1:].tolist())
    assert targets == [2, 3, 4, 5, 6, 7]
    # min_length stops early; sequences shorter than min_length give nothing
    out = sliding_windows(arrs([1, 2, 3, 4, 5], [9]), window=2, step=1, min_length=4)
    assert as_lists(out) == [[4, 5], [3, 4]]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(window=0, step=1), "window must be a positive integer"),
        (dict(window=3, step=0), "step must be a positive integer"),
        (dict(window=3, step=1.5), "step must be a positive integer"),
        (dict(window=3, step=1, min_length=0), "min_length must be a positive integer"),
        (dict(window=True, step=1), "window must be a positive integer"),
    ],
)
def test_sliding_windows_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sliding_windows(arrs([1, 2, 3]), **kwargs)


# ---------------------------------------------------------------- statistics and popularity

def tiny_dataset(with_attrs=True) -> SequenceDataset:
    seqs = arrs([1, 2, 3], [2, 3, 4, 2], [4, 2, 5])
    attrs = None
    if with_attrs:
        # items 1..5 with 1, 2, 0, 1, 0 attributes; 3 attributes in total
        attrs = ItemAttributes(
            indptr=np.array([0, 0, 1, 3, 3, 4, 4]), indices=np.array([1, 2, 3, 3]), n_attributes=3
        )
    return SequenceDataset("tiny", np.array([1, 2, 3]), seqs, 5, attrs, "mem")


def test_dataset_statistics_by_hand():
    stats = dataset_statistics(tiny_dataset())
    assert stats["users"] == 3 and stats["items"] == 5 and stats["actions"] == 10
    assert stats["avg_actions_per_user"] == pytest.approx(10 / 3)
    assert stats["avg_actions_per_item"] == pytest.approx(2.0)
    assert stats["sparsity"] == pytest.approx(1 - 10 / 15)
    assert stats["attributes"] == 3
    assert stats["avg_attributes_per_item"] == pytest.approx(4 / 5)
    bare = dataset_statistics(tiny_dataset(with_attrs=False))
    assert bare["attributes"] is None and bare["avg_attributes_per_item"] is None


def test_popularity_head_and_user_rates():
    seqs = tiny_dataset().sequences
    pop = item_popularity(seqs, 5)
    assert pop.tolist() == [0, 1, 4, 2, 2, 1]
    with pytest.raises(ValueError, match=r"1\.\.3"):
        item_popularity(seqs, 3)
    # 20% of 5 items = 1 item: item 2
    assert head_items(pop, 0.2).tolist() == [False, False, True, False, False, False]
    # 60% = 3 items: 2 (4 interactions), then 3 and 4 (2 each)
    assert np.flatnonzero(head_items(pop, 0.6)).tolist() == [2, 3, 4]
    # 40% = 2 items: 2, then the tie between 3 and 4 goes to the smaller id
    assert np.flatnonzero(head_items(pop, 0.4)).tolist() == [2, 3]
    with pytest.raises(ValueError, match="head_fraction"):
        head_items(pop, 0.0)
    is_head = head_items(pop, 0.4)  # items 2, 3
    rates = user_head_rate(seqs, is_head)
    np.testing.assert_allclose(rates, [2 / 3, 3 / 4, 1 / 3])
    assert np.isnan(user_head_rate(arrs([]), is_head)[0])


def test_head_tail_statistics_reads_both_splits_off_the_training_part():
    # training parts (leave-one-out keeps all but the last two items):
    # [1, 2], [2, 2, 3, 3], [2, 4], [5, 1, 2]
    ds = SequenceDataset("hand", np.arange(4), arrs([1, 2, 9, 9], [2, 2, 3, 3, 9, 9], [2, 4, 9, 9],
                                                      [5, 1, 2, 9, 9]), n_items=9, attributes=None, source="")
    row, rates = head_tail_statistics(ds, head_fraction=0.25)
    # 25% of 9 items rounds to 2: item 2 (5 interactions), then 1 and 3 tie (2 each): the smaller id, 1
    assert row["head items"] == 2
    assert row["share of training interactions on head items"] == pytest.approx(7 / 11)
    np.testing.assert_allclose(rates, [1.0, 2 / 4, 1 / 2, 2 / 3])
    assert row["median user head rate"] == pytest.approx(np.median([1.0, 0.5, 0.5, 2 / 3]))
    # 25% of 4 users is 1: the longest training part, user 1 (4 items)
    assert row["head users"] == 1 and row["min training length of a head user"] == 4
    assert row["median training length of a tail user"] == 2.0


def test_split_users_by_length():
    seqs = arrs([1] * 5, [1] * 3, [1] * 9, [1] * 5, [1] * 2)
    # 40% of 5 users = 2: the 9-long one, then the earlier of the two 5-long ones
    assert split_users_by_length(seqs, 0.4).tolist() == [True, False, True, False, False]
    assert split_users_by_length(seqs, 0.2).tolist() == [False, False, True, False, False]
    assert split_users_by_length(seqs, 1.0).all()
    # the head size is head_fraction * n rounded half up, robust to float fuzz
    many = arrs(*[[1] * (i + 1) for i in range(30)])
    assert split_users_by_length(many, 0.1).sum() == 3  # 0.1 * 30 = 3.0000000000000004
    assert split_users_by_length(many[:7], 0.2).sum() == 1  # 1.4 -> 1
    assert split_users_by_length(many[:5], 0.5).sum() == 3  # 2.5 -> 3
    assert np.flatnonzero(split_users_by_length(many, 0.1)).tolist() == [27, 28, 29]


def test_statistics_frame_gives_sparsity_in_percent_and_the_shown_table_integer_counts():
    from emkd_lib.report import head_tail_statistics_table, statistics_frame, statistics_shown
    stats = statistics_frame({"tiny": tiny_dataset(), "bare": tiny_dataset(with_attrs=False)})
    assert stats.loc["tiny", "sparsity (%)"] == pytest.approx(100 * (1 - 10 / 15))
    assert np.isnan(stats.loc["bare", "attributes"])
    shown = statistics_shown(stats)
    assert str(shown["users"].dtype) == "Int64" and shown.loc["tiny", "actions"] == 10
    assert "actions per user" in shown and "avg_actions_per_user" not in shown
    assert shown["attributes"].isna().tolist() == [False, True]
    table, rates = head_tail_statistics_table({"tiny": tiny_dataset()}, 0.4)
    row, user_rates = head_tail_statistics(tiny_dataset(), 0.4)
    assert table.loc["tiny"].to_dict() == pytest.approx(row) and table["head items"].dtype == int
    np.testing.assert_array_equal(rates["tiny"], user_rates)
