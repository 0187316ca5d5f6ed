"""Parser validation added with the data package: sparse (typo) item ids and
dense remapping, non-UTF-8 bytes, empty files, and one-line errors naming the
file and the line. Each of the first group failed on the old single-module
``emkd_lib/data.py`` (54089c2), which accepted a typo id, raised a bare
``UnicodeDecodeError`` without file or line, and returned an empty dataset
for an empty file."""
from __future__ import annotations

import json

import numpy as np
import pytest

from emkd_lib.data import (
    parse_attribute_file,
    parse_items_csv,
    parse_sequence_file,
    parse_udata_file,
    remap_dense,
    sparse_id_bound,
)


def write(path, content) -> str:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return str(path)


def one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    # a ValueError of the library, not a bare codec error without file or line
    assert type(excinfo.value) is ValueError, type(excinfo.value)
    return msg


# 20 distinct item ids, 1..20, in 5 users; line 4 has a typo id
SEQUENCES_WITH_TYPO = (
    "1 1 2 3 4 5\n"
    "2 6 7 8 9\n"
    "3 10 11 12 13\n"
    "4 14 15 999999 16\n"
    "5 17 18 19 20 1\n"
)


# ---------------------------------------------------------------- sparse ids

def test_typo_item_id_raises_naming_line_and_id(tmp_path):
    path = write(tmp_path / "typo.txt", SEQUENCES_WITH_TYPO)
    with pytest.raises(ValueError) as info:
        parse_sequence_file(path)
    msg = one_line_error(info)
    assert msg.startswith(f"{path}, line 4: item id 999999 ")
    assert "21 distinct item ids" in msg and f"bound {sparse_id_bound(21)}" in msg
    assert "remap_ids=True" in msg
    # the caller that remaps asks for no check
    users, seqs = parse_sequence_file(path, check_ids=False)
    assert seqs[3].tolist() == [14, 15, 999999, 16]


def test_sparse_id_bound_boundary(tmp_path):
    assert sparse_id_bound(20) == 140
    head = "".join(f"{u} {3 * u - 2} {3 * u - 1} {3 * u}\n" for u in range(1, 7))  # ids 1..18
    # 19 distinct ids after adding one more: bound 2 * 19 + 100 = 138
    ok = write(tmp_path / "ok.txt", head + "7 1 2 138\n")
    assert parse_sequence_file(ok)[1][-1].tolist() == [1, 2, 138]
    bad = write(tmp_path / "bad.txt", head + "7 1 2 139\n")
    with pytest.raises(ValueError, match=r"line 7: item id 139 is far above the 19 distinct item ids \(bound 138\)"):
        parse_sequence_file(bad)


def test_remap_dense_by_first_appearance():
    seqs, mapping = remap_dense([np.array([5, 9, 5]), np.array([9, 999999, 7])])
    assert [s.tolist() for s in seqs] == [[1, 2, 1], [2, 3, 4]]
    assert mapping == {5: 1, 9: 2, 999999: 3, 7: 4}
    assert all(s.dtype == np.int64 for s in seqs)


def test_attribute_file_follows_item_map(tmp_path):
    path = write(tmp_path / "attrs.json", json.dumps({"5": [1], "9": [3, 2, 3], "7": [1], "42": [9]}))
    attrs = parse_attribute_file(path, n_items=4, item_map={5: 1, 9: 2, 999999: 3, 7: 4})
    rows = [attrs.indices[attrs.indptr[i]:attrs.indptr[i + 1]].tolist() for i in range(5)]
    assert rows == [[], [1], [2, 3], [], [1]]  # 999999 has no attributes; 42 never occurs: left out
    assert attrs.n_attributes == 3  # item 42's attribute 9 is not counted
    # without the map, the raw ids are checked against n_items
    with pytest.raises(ValueError, match=r"attrs\.json: item id 5 is outside 1\.\.4"):
        parse_attribute_file(path, n_items=4)


# ---------------------------------------------------------------- non-UTF-8 and empty files

def test_non_utf8_sequence_file_names_file_and_line(tmp_path):
    path = write(tmp_path / "latin.txt", b"1 1 2 3\n2 4 5 6\n3 7 \xe98 9\n")
    with pytest.raises(ValueError) as info:
        parse_sequence_file(path)
    assert one_line_error(info).startswith(f"{path}, line 3: not UTF-8 text")


@pytest.mark.parametrize("content, line, problem", [
    # old Mac line endings: without the check the whole file was one user
    (b"1 1 2 3\r2 4 5 6\r", 1, "a carriage return inside the line (old Mac line endings?)"),
    # Python's int() reads other scripts' digits: "\u0663" would have been item 3
    ("1 1 2 3\n2 4 5 \u0663\n".encode(), 2, "non-ASCII character '\u0663' in a file of integers"),
])
def test_line_endings_and_characters_that_would_be_misread_name_the_line(tmp_path, content, line, problem):
    path = write(tmp_path / "odd.txt", content)
    with pytest.raises(ValueError) as info:
        parse_sequence_file(path)
    assert one_line_error(info).startswith(f"{path}, line {line}: {problem}")


def test_windows_line_endings_and_a_byte_order_mark_parse_as_plain_lines(tmp_path):
    plain = parse_sequence_file(write(tmp_path / "plain.txt", b"1 1 2 3\n2 4 5 6\n"))
    windows = parse_sequence_file(write(tmp_path / "windows.txt", "\ufeff1 1 2 3\r\n2 4 5 6\r\n".encode()))
    assert np.array_equal(plain[0], windows[0])
    assert all(np.array_equal(a, b) for a, b in zip(plain[1], windows[1]))


def test_non_utf8_udata_names_file_and_line(tmp_path):
    path = write(tmp_path / "u.data", b"1\t2\t3\t4\n1\t3\t3\t5\xff\n")
    with pytest.raises(ValueError) as info:
        parse_udata_file(path)
    assert one_line_error(info).startswith(f"{path}, line 2: not UTF-8 text")


def test_non_utf8_attribute_file_names_file(tmp_path):
    path = write(tmp_path / "attrs.json", b'{"1": [1], "2": [2]} \xff')
    with pytest.raises(ValueError) as info:
        parse_attribute_file(path, n_items=2)
    assert one_line_error(info).startswith(f"{path}: not UTF-8 text")


def test_non_utf8_items_csv_names_file_and_line(tmp_path):
    path = write(tmp_path / "items.csv", b"movie_id,title,g1,year\n1,T\xff,1,1999\n")
    with pytest.raises(ValueError) as info:
        parse_items_csv(path, n_items=3)
    assert one_line_error(info).startswith(f"{path}, line 2: not UTF-8 text")


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_sequence_file_is_an_error(tmp_path, content):
    path = write(tmp_path / "empty.txt", content)
    with pytest.raises(ValueError) as info:
        parse_sequence_file(path)
    assert one_line_error(info).startswith(f"{path}: no users with at least 3 items (empty file?)")


def test_all_users_skipped_is_an_error_not_an_empty_dataset(tmp_path):
    path = write(tmp_path / "short.txt", "1 1 2\n2 3\n")
    with pytest.warns(UserWarning, match="skipped 2 user"), pytest.raises(ValueError, match="no users with at least 3"):
        parse_sequence_file(path, on_short="skip")


def test_empty_udata_is_an_error(tmp_path):
    path = write(tmp_path / "u.data", "")
    with pytest.raises(ValueError) as info:
        parse_udata_file(path)
    assert one_line_error(info).startswith(f"{path}: no ratings (empty file?)")


def test_empty_attribute_file_is_an_error(tmp_path):
    path = write(tmp_path / "attrs.json", "")
    with pytest.raises(ValueError) as info:
        parse_attribute_file(path, n_items=3)
    assert one_line_error(info).startswith(f"{path}: invalid JSON at line 1")


# ---------------------------------------------------------------- duplicate and short users (one line each)

def test_duplicate_user_one_line_naming_file_and_line(tmp_path):
    path = write(tmp_path / "dup.txt", "1 1 2 3\n2 2 3 4\n\n1 4 5 6\n")
    with pytest.raises(ValueError) as info:
        parse_sequence_file(path)
    assert one_line_error(info) == f"{path}, line 4: duplicate user id 1 (first seen on line 1)"


def test_short_user_one_line_naming_file_and_line(tmp_path):
    path = write(tmp_path / "short.txt", "1 1 2 3\n2 2 3\n")
    with pytest.raises(ValueError) as info:
        parse_sequence_file(path)
    msg = one_line_error(info)
    assert msg.startswith(f"{path}, line 2: user 2 has 2 item(s), fewer than min_length=3")
    udata = write(tmp_path / "u.data", "1\t1\t3\t1\n1\t2\t3\t2\n1\t3\t3\t3\n2\t1\t3\t1\n")
    with pytest.raises(ValueError) as info:
        parse_udata_file(udata)
    assert one_line_error(info).startswith(f"{udata}, line 4: user 2 has 1 item(s)")


def test_items_csv_error_names_the_physical_line(tmp_path):
    # the mirror's items.csv has overviews with newlines inside quotes
    path = write(tmp_path / "items.csv",
                 'movie_id,title,g1,year,overview\n1,A,1,1999,"two\nlines"\n9,B,1,1999,x\n')
    with pytest.raises(ValueError) as info:
        parse_items_csv(path, n_items=3)
    assert one_line_error(info).startswith(f"{path}, line 4: item id 9 is outside 1..3")
