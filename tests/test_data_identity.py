"""Data identity and location: a bundled dataset's files are checked against
their published sha256 and recorded in ``SequenceDataset.files``; an
explicit location never falls through to another copy; a failed download
leaves no folder. The old ``emkd_lib/data.py`` (54089c2) recorded no
checksums, loaded edited files silently, fell through from an explicit
location to ../shared/data and left an empty folder after a failed download."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest

from emkd_lib import settings
from emkd_lib.data import BUNDLED, dataset_files, download_dataset, load_dataset, resolve_dataset_dir
from emkd_lib.data import fetch
from emkd_lib.data.registry import user_spec
from emkd_lib.files import file_sha256
from emkd_lib.settings import REPO_ROOT
from helpers import offline_folder

BEAUTY = BUNDLED["beauty"]
SEQ, ATTR = BEAUTY.sequence_file, BEAUTY.attribute_file


@pytest.fixture(autouse=True)
def _checksum_cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("EMKD_CACHE_DIR", str(tmp_path / "emkd-cache"))


def mirror_folder(name: str) -> Path:
    """The real mirror's folder of ``name`` ($EMKD_DATA_DIR or the default places), else skip."""
    folder = offline_folder(name)
    if folder is None:
        pytest.skip(f"offline mirror for {name} not available")
    return folder


@pytest.fixture
def beauty_copy(tmp_path, monkeypatch) -> Path:
    """A writable copy of the mirror's Beauty files, with $EMKD_DATA_DIR pointing at it."""
    src = mirror_folder("beauty")
    dest = tmp_path / "data" / BEAUTY.folder
    dest.mkdir(parents=True)
    for name in BEAUTY.required_files:
        shutil.copyfile(src / name, dest / name)  # copyfile: the mirror's files are read-only
    monkeypatch.setenv("EMKD_DATA_DIR", str(tmp_path / "data"))
    return dest


def edit_first_line(path: Path) -> tuple[str, str]:
    """Change the last item of line 1 (``1 1 2 3 4 5``) to 12; returns (old line, new line)."""
    lines = path.read_text().splitlines(keepends=True)
    old = lines[0]
    tokens = old.split()
    tokens[-1] = "12" if tokens[-1] != "12" else "13"
    lines[0] = " ".join(tokens) + "\n"
    path.write_text("".join(lines))
    return old, lines[0]


# ---------------------------------------------------------------- checksums

def test_bundled_copy_records_published_checksums(beauty_copy):
    ds = load_dataset("beauty")
    assert ds.source == str(beauty_copy / SEQ)
    assert ds.files == {SEQ: BEAUTY.sha256[SEQ], ATTR: BEAUTY.sha256[ATTR]}
    assert dataset_files("beauty") == ds.files
    # the checksums are cached under $EMKD_CACHE_DIR, keyed by the resolved path
    cache = json.loads((settings.current().cache_dir / "sha256.json").read_text())
    assert cache[str((beauty_copy / SEQ).resolve())]["sha256"] == BEAUTY.sha256[SEQ]


def test_modified_bundled_file_raises_naming_file_and_both_hashes(beauty_copy):
    assert dataset_files("beauty")[SEQ] == BEAUTY.sha256[SEQ]  # cached before the edit
    old, new = edit_first_line(beauty_copy / SEQ)
    new_sha = file_sha256(beauty_copy / SEQ)
    assert new_sha != BEAUTY.sha256[SEQ]
    with pytest.raises(ValueError) as info:
        load_dataset("beauty")
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(str(beauty_copy / SEQ))
    assert new_sha in msg and BEAUTY.sha256[SEQ] in msg and "allow_modified=True" in msg


def test_allow_modified_loads_under_the_new_hash(beauty_copy):
    assert load_dataset("beauty").files[SEQ] == BEAUTY.sha256[SEQ]  # hash cached before the edit
    old, new = edit_first_line(beauty_copy / SEQ)
    new_sha = file_sha256(beauty_copy / SEQ)
    ds = load_dataset("beauty", allow_modified=True)
    assert ds.files == {SEQ: new_sha, ATTR: BEAUTY.sha256[ATTR]}
    assert ds.sequences[0].tolist() == [int(t) for t in new.split()[1:]]
    # the cache noticed the change (size and mtime) for the lookup path too
    assert dataset_files("beauty") == ds.files


def test_checksum_cache_notices_a_same_size_edit(beauty_copy):
    path = beauty_copy / SEQ
    assert dataset_files("beauty")[SEQ] == BEAUTY.sha256[SEQ]
    stat = path.stat()
    text = path.read_text()
    first, rest = text.split("\n", 1)
    swapped = first.split()
    swapped[1], swapped[2] = swapped[2], swapped[1]  # "1 1 2 ..." -> "1 2 1 ...": same size
    path.write_text(" ".join(swapped) + "\n" + rest)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert path.stat().st_size == stat.st_size
    assert dataset_files("beauty")[SEQ] == file_sha256(path) != BEAUTY.sha256[SEQ]


def test_attribute_file_is_part_of_the_identity(beauty_copy):
    path = beauty_copy / ATTR
    raw = json.loads(path.read_text())
    raw["1"] = sorted(set(raw["1"]))[:1]
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=BEAUTY.sha256[ATTR]):
        load_dataset("beauty")
    ds = load_dataset("beauty", allow_modified=True)
    assert ds.files[ATTR] == file_sha256(path) and ds.files[SEQ] == BEAUTY.sha256[SEQ]


# ---------------------------------------------------------------- explicit location

def test_explicit_data_dir_never_falls_through_to_the_mirror(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)  # ../shared/data is the mirror
    monkeypatch.delenv("EMKD_DATA_DIR", raising=False)
    try:
        mirror = resolve_dataset_dir(BEAUTY, download=False)
    except FileNotFoundError:
        pytest.skip("no mirror among the default places (../shared/data)")
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("EMKD_DATA_DIR", str(empty))
    for call in (lambda: load_dataset("beauty"), lambda: dataset_files("beauty"),
                 lambda: load_dataset("beauty", data_dir=empty, download=False)):
        with pytest.raises(FileNotFoundError) as info:
            call()
        msg = str(info.value)
        assert str(empty / "beauty") in msg and f"lacks {SEQ}, {ATTR}" in msg
        assert str(mirror) not in msg
    assert list(empty.iterdir()) == []  # and nothing was downloaded into it


# ---------------------------------------------------------------- failed downloads

@pytest.mark.parametrize("name", ["beauty", "ml-1m", "ml-100k"])
def test_failed_download_leaves_no_folder(tmp_path, name):
    spec = BUNDLED[name]
    with pytest.raises(OSError):  # urllib's URLError
        download_dataset(spec, tmp_path, base_url="file:///nonexistent/")
    assert not (tmp_path / spec.folder).exists()
    assert list(tmp_path.iterdir()) == []  # nor any temporary file


def test_failed_download_keeps_an_existing_folder(tmp_path):
    folder = tmp_path / BEAUTY.folder
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(OSError):
        download_dataset(BEAUTY, tmp_path, base_url="file:///nonexistent/")
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]  # no partial download either


def test_download_of_a_dataset_without_source_is_refused(tmp_path):
    seq = tmp_path / "mine.txt"
    seq.write_text("1 1 2 3\n")
    with pytest.raises(ValueError, match="no public source"):
        download_dataset(user_spec("mine", seq, None), tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_failed_default_download_leaves_no_folder_in_the_repo(tmp_path, monkeypatch):
    """With nothing found, load_dataset downloads into <repo>/data; a failure leaves nothing there."""
    monkeypatch.setattr(fetch, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EMKD_DATA_DIR", raising=False)
    monkeypatch.setitem(BUNDLED, "beauty", dataclasses.replace(BEAUTY, base_url="file:///nonexistent/"))
    with pytest.raises(FileNotFoundError, match="download failed"):
        load_dataset("beauty")
    assert not (tmp_path / "repo" / "data" / "beauty").exists()
