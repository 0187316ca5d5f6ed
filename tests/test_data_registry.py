"""Bring your own dataset: the registry (``data add``), loading a registered
dataset (remapped ids, repeat targets, checksums) and the command line end
to end. None of this existed in the old ``emkd_lib/data.py`` (54089c2)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emkd_lib.data import (
    BUNDLED,
    dataset_files,
    dataset_spec,
    leave_one_out,
    load_dataset,
    read_registry,
    register_dataset,
    repeat_target_users,
)
from emkd_lib.files import file_sha256
from emkd_lib.settings import REPO_ROOT

FIXTURES = Path(__file__).parent / "fixtures"
TINY_SEQUENCES = FIXTURES / "tiny_sequences.txt"
TINY_ATTRIBUTES = FIXTURES / "tiny_attributes.json"


@pytest.fixture(autouse=True)
def _checksum_cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("EMKD_CACHE_DIR", str(tmp_path / "emkd-cache"))


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    """An empty data directory named by $EMKD_DATA_DIR: the registry lives there."""
    d = tmp_path / "data"
    d.mkdir()
    monkeypatch.setenv("EMKD_DATA_DIR", str(d))
    return d


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---------------------------------------------------------------- the fixture files

def test_tiny_fixture_is_what_it_claims():
    lines = TINY_SEQUENCES.read_text().splitlines()
    assert len(lines) == 30
    seqs = [[int(t) for t in line.split()[1:]] for line in lines]
    assert [int(line.split()[0]) for line in lines] == list(range(1, 31))
    assert all(5 <= len(s) <= 12 for s in seqs)
    assert sorted({i for s in seqs for i in s}) == list(range(1, 26))
    attrs = json.loads(TINY_ATTRIBUTES.read_text())
    assert sorted(map(int, attrs)) == list(range(1, 26))


# ---------------------------------------------------------------- registry

def test_register_and_load_a_user_dataset(data_dir):
    spec = register_dataset("tiny", TINY_SEQUENCES, TINY_ATTRIBUTES, data_dir)
    assert spec.user_folder == FIXTURES.resolve() and spec.sha256 == {}
    raw = json.loads((data_dir / "registry.json").read_text())
    assert raw == {"tiny": {"sequences": str(TINY_SEQUENCES.resolve()),
                            "attributes": str(TINY_ATTRIBUTES.resolve()),
                            "settings_like": "beauty"}}
    assert read_registry(data_dir)["tiny"] == spec == dataset_spec("tiny", data_dir)
    ds = load_dataset("tiny")
    assert ds.n_users == 30 and ds.n_items == 25 and ds.user_ids.tolist() == list(range(1, 31))
    assert ds.attributes.n_attributes == 6 and ds.source == str(TINY_SEQUENCES.resolve())
    expected = {TINY_SEQUENCES.name: file_sha256(TINY_SEQUENCES), TINY_ATTRIBUTES.name: file_sha256(TINY_ATTRIBUTES)}
    assert ds.files == expected == dataset_files("tiny")
    # the unknown-name error now lists the registered dataset too
    with pytest.raises(KeyError, match="beauty-odmt, tiny"):
        load_dataset("nosuch")


def test_register_without_attributes_and_replace(data_dir, tmp_path):
    seq = write(tmp_path / "mine" / "seq.txt", "1 1 2 3\n2 2 3 4\n")
    register_dataset("mine", seq, None, data_dir)
    ds = load_dataset("mine")
    assert ds.attributes is None and ds.files == {"seq.txt": file_sha256(seq)}
    other = write(tmp_path / "mine" / "other.txt", "1 3 2 1\n")
    register_dataset("mine", other, None, data_dir)  # replaces the entry
    assert [s.tolist() for s in load_dataset("mine").sequences] == [[3, 2, 1]]
    assert list(read_registry(data_dir)) == ["mine"]


@pytest.mark.parametrize("name, match", [
    ("beauty", "is a bundled dataset"),
    ("", "use letters, digits"),
    ("my data", "use letters, digits"),
    ("../x", "use letters, digits"),
    ("..", "use letters, digits"),      # would be the store's parent folder
    (".", "use letters, digits"),
    (".hidden", "use letters, digits"),
])
def test_register_rejects_bad_names(tmp_path, name, match):
    with pytest.raises(ValueError, match=match):
        register_dataset(name, TINY_SEQUENCES, None, tmp_path)
    assert not (tmp_path / "registry.json").exists()


def test_register_rejects_missing_or_misplaced_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="sequence file .*nope.txt does not exist"):
        register_dataset("x", tmp_path / "nope.txt", None, tmp_path)
    elsewhere = write(tmp_path / "elsewhere" / "attrs.json", "{}")
    with pytest.raises(ValueError, match="must sit beside the sequence file"):
        register_dataset("x", TINY_SEQUENCES, elsewhere, tmp_path)
    assert not (tmp_path / "registry.json").exists()


def test_moved_registered_file_is_reported(data_dir, tmp_path):
    seq = write(tmp_path / "mine" / "seq.txt", "1 1 2 3\n")
    register_dataset("mine", seq, None, data_dir)
    seq.unlink()
    with pytest.raises(FileNotFoundError, match=r"'mine'.*lacks seq\.txt \(registered files moved or deleted\?\)"):
        load_dataset("mine")


def test_unreadable_registry_names_its_path(data_dir):
    (data_dir / "registry.json").write_text('{"x": {"attributes": null}}')
    with pytest.raises(ValueError, match=f"dataset registry {data_dir / 'registry.json'} is unreadable"):
        dataset_spec("x", data_dir)
    assert dataset_spec("beauty", data_dir) is BUNDLED["beauty"]  # bundled names never read it


def test_edited_user_file_changes_the_identity_without_error(data_dir, tmp_path):
    seq = write(tmp_path / "mine" / "seq.txt", "1 1 2 3\n2 2 3 4\n")
    register_dataset("mine", seq, None, data_dir)
    before = load_dataset("mine").files["seq.txt"]
    seq.write_text("1 1 2 3\n2 2 3 4 5\n")
    after = load_dataset("mine").files["seq.txt"]  # no published hash: nothing to refuse
    assert before != after == file_sha256(seq) == dataset_files("mine")["seq.txt"]


def test_registered_dataset_found_through_explicit_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("EMKD_DATA_DIR", raising=False)
    register_dataset("tiny", TINY_SEQUENCES, None, tmp_path / "reg")
    ds = load_dataset("tiny", data_dir=tmp_path / "reg")
    assert ds.n_users == 30


# ---------------------------------------------------------------- typo ids and remapping

def test_typo_id_in_registered_dataset_loads_with_remap_ids(data_dir, tmp_path):
    raw_lines = TINY_SEQUENCES.read_text().splitlines()
    tokens = raw_lines[6].split()
    typo_item = int(tokens[3])
    tokens[3] = "999999"  # user 7's third item
    raw_lines[6] = " ".join(tokens)
    seq = write(tmp_path / "typo" / "seq.txt", "\n".join(raw_lines) + "\n")
    raw_attrs = json.loads(TINY_ATTRIBUTES.read_text())
    raw_attrs["999999"] = [6, 1]
    raw_attrs["777"] = [5]  # an item that never occurs
    attrs = write(tmp_path / "typo" / "attrs.json", json.dumps(raw_attrs))
    register_dataset("typo", seq, attrs, data_dir)

    with pytest.raises(ValueError) as info:
        load_dataset("typo")
    msg = str(info.value)
    assert msg.startswith(f"{seq.resolve()}, line 7: item id 999999 ") and "\n" not in msg

    ds = load_dataset("typo", remap_ids=True)
    raw_seqs = [[int(t) for t in line.split()[1:]] for line in raw_lines]
    distinct = {i for s in raw_seqs for i in s}
    n = len(distinct)
    # 999999 is new; typo_item is gone unless it occurs elsewhere
    assert n == 25 + 1 - (typo_item not in distinct)
    flat = np.concatenate(ds.sequences)
    assert ds.n_items == n and sorted(set(flat.tolist())) == list(range(1, n + 1))
    # new ids by first appearance, and the same order/structure as the raw file
    mapping = {}
    for s in raw_seqs:
        for i in s:
            mapping.setdefault(i, len(mapping) + 1)
    assert [s.tolist() for s in ds.sequences] == [[mapping[i] for i in s] for s in raw_seqs]
    # the attribute rows follow the items
    a = ds.attributes
    for old, new in mapping.items():
        assert a.indices[a.indptr[new]:a.indptr[new + 1]].tolist() == sorted(set(raw_attrs[str(old)]))
    assert a.indptr.shape == (n + 2,) and a.n_attributes == 6
    assert ds.files == {"seq.txt": file_sha256(seq), "attrs.json": file_sha256(attrs)}


def test_remap_ids_on_a_dense_bundled_layout_changes_nothing_but_order(tmp_path):
    folder = tmp_path / "beauty"
    write(folder / "Beauty.txt", "1 3 1 2\n2 2 3 4\n")
    write(folder / "Beauty_item2attributes.json", json.dumps({"1": [1], "3": [2]}))
    ds = load_dataset("beauty", tmp_path, download=False, allow_modified=True, remap_ids=True)
    assert [s.tolist() for s in ds.sequences] == [[1, 2, 3], [3, 1, 4]]  # 3->1, 1->2, 2->3, 4->4
    assert ds.attributes.indptr.tolist() == [0, 0, 1, 2, 2, 2]
    assert ds.attributes.indices.tolist() == [2, 1]


# ---------------------------------------------------------------- repeat targets

REPEATS = (
    "1 1 2 3 4\n"      # no repeat
    "2 5 6 5 7\n"      # validation target 5 is in the history
    "3 1 2 3 3\n"      # test target 3 is the validation item, part of the test history
    "4 2 4 6 8 9\n"    # no repeat
    "5 4 8 1 9 4\n"    # test target 4 is in the history
    "6 3 3 1 2\n"      # a repeat inside the history only: not a repeat target
)


def test_repeat_target_users_by_hand():
    seqs = [np.array([int(t) for t in line.split()[1:]]) for line in REPEATS.splitlines()]
    flags = repeat_target_users(seqs)
    assert flags.dtype == bool and flags.tolist() == [False, True, True, False, True, False]
    # the same thing, from the split's own inputs and targets
    split = leave_one_out(seqs)
    by_split = [bool(t in v) or bool(u in w) for t, v, u, w in
                zip(split.valid_targets, split.valid_inputs, split.test_targets, split.test_inputs)]
    assert flags.tolist() == by_split


def test_repeat_targets_are_counted_on_load(data_dir, tmp_path, capsys):
    seq = write(tmp_path / "rep" / "seq.txt", REPEATS)
    register_dataset("rep", seq, None, data_dir)
    ds = load_dataset("rep")
    err = capsys.readouterr().err
    assert err == ("dataset 'rep': 3 of 6 users have a validation or test target that also occurs "
                   "earlier in their history\n")
    assert np.flatnonzero(repeat_target_users(ds.sequences)).tolist() == [1, 2, 4]
    assert ds.user_ids[repeat_target_users(ds.sequences)].tolist() == [2, 3, 5]
    # no repeats: nothing printed
    register_dataset("tiny", TINY_SEQUENCES, None, data_dir)
    load_dataset("tiny")
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------- the command line, end to end

def cli(*args, env: dict, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emkd_lib", "--threads", "1", *args], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cli_env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMKD_")}
    env.update(EMKD_DATA_DIR=str(tmp_path / "data"), EMKD_RESULTS_DIR=str(tmp_path / "results"),
               EMKD_CACHE_DIR=str(tmp_path / "cache"), EMKD_FIGURES_DIR=str(tmp_path / "figures"),
               CUDA_VISIBLE_DEVICES="")
    (tmp_path / "data").mkdir()
    return env


def assert_one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("emkd_lib: error: ")
    assert proc.stderr.count("\n") == 1 and proc.stderr.endswith("\n"), proc.stderr
    return proc.stderr


def test_cli_bring_your_own_dataset_end_to_end(cli_env, tmp_path):
    add = cli("data", "add", "tiny", "--sequences", str(TINY_SEQUENCES), "--attributes", str(TINY_ATTRIBUTES),
              "--data-dir", cli_env["EMKD_DATA_DIR"], env=cli_env)
    assert add.returncode == 0, add.stderr
    assert "registered dataset 'tiny'" in add.stdout
    assert (tmp_path / "data" / "registry.json").is_file()
    run = cli("run", "--profile", "smoke", "--dataset", "tiny", "--method", "sasrec", "--device", "cpu", env=cli_env)
    assert run.returncode == 0, run.stderr
    results = sorted((tmp_path / "results").rglob("*.json"))
    assert len(results) == 1 and results[0].parent.name == "tiny", results
    record = json.loads(results[0].read_text())
    assert "NDCG@10" in json.dumps(record)
    assert results[0].name.split(".")[0] in run.stdout
    assert not (REPO_ROOT / "data" / "tiny").exists()


def test_cli_unknown_dataset_is_a_one_line_error(cli_env):
    proc = cli("run", "--profile", "smoke", "--dataset", "nosuch", "--method", "sasrec", "--device", "cpu",
               env=cli_env)
    err = assert_one_line_error(proc)
    assert "unknown dataset 'nosuch'" in err and "beauty, toys, sports, ml-1m, ml-100k" in err


def test_cli_data_add_errors_are_one_line(cli_env, tmp_path):
    no_dir = {k: v for k, v in cli_env.items() if k != "EMKD_DATA_DIR"}
    err = assert_one_line_error(cli("data", "add", "tiny", "--sequences", str(TINY_SEQUENCES), env=no_dir))
    assert "--data-dir or EMKD_DATA_DIR" in err
    err = assert_one_line_error(cli("data", "add", "beauty", "--sequences", str(TINY_SEQUENCES), env=cli_env))
    assert "bundled dataset" in err
    assert not (tmp_path / "data" / "registry.json").exists()


def test_cli_typo_id_is_a_one_line_error_naming_the_line(cli_env, tmp_path):
    seq = write(tmp_path / "typo" / "seq.txt",
                TINY_SEQUENCES.read_text().replace("\n3 23 10 21", "\n3 23 999999 21", 1))
    assert "999999" in seq.read_text()
    assert cli("data", "add", "typo", "--sequences", str(seq), env=cli_env).returncode == 0
    err = assert_one_line_error(cli("run", "--profile", "smoke", "--dataset", "typo", "--method", "sasrec",
                                    "--device", "cpu", env=cli_env))
    assert f"{seq.resolve()}, line 3: item id 999999" in err


@pytest.mark.parametrize("content, problem", [
    (b"{not json", "Expecting property name"),
    (b"[1, 2]", "expected an object of datasets, got list"),
    (b"\xff\xfe", "can't decode byte 0xff"),
    (b'{"x": 5}', "entry 'x' has no sequence file"),
    (b'{"..": {"sequences": "/tmp/a.txt"}}', "entry '..' is not a usable dataset name"),
    (b'{"x": {"sequences": "/tmp/a.txt", "attributes": 5}}', "entry 'x' names its attribute file with a int"),
])
def test_an_unreadable_registry_is_one_error_naming_it_and_is_kept(tmp_path, content, problem):
    path = tmp_path / "registry.json"
    path.write_bytes(content)
    for call in (lambda: read_registry(tmp_path), lambda: register_dataset("mine", TINY_SEQUENCES, None, tmp_path)):
        with pytest.raises(ValueError, match=f"^dataset registry {re.escape(str(path))} is unreadable: .*"
                                             f"{re.escape(problem)}"):
            call()
    assert path.read_bytes() == content


def test_register_refuses_a_data_directory_that_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="data directory .*file is a file, not a directory"):
        register_dataset("mine", TINY_SEQUENCES, None, tmp_path / "file")


def test_a_name_registered_under_the_older_rule_stays_usable(tmp_path):
    (tmp_path / "registry.json").write_text(json.dumps({"_mine": {"sequences": str(TINY_SEQUENCES)}}))
    register_dataset("other", TINY_SEQUENCES, None, tmp_path)
    assert sorted(read_registry(tmp_path)) == ["_mine", "other"]


def test_a_malformed_sequence_file_is_refused_when_it_is_added(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("1 1 2 3\n2 4 x 6\n")
    with pytest.raises(ValueError, match=f"^{re.escape(str(bad))}, line 2: non-integer token 'x'$"):
        register_dataset("bad", bad, None, tmp_path)
    assert not (tmp_path / "registry.json").exists()
