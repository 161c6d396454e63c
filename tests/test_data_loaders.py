"""Loaders for both source formats, on tiny files written here, and their one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.data.loaders import detect_format, load_interactions, load_seqfile
from toolkit.errors import ToolkitError


def _hist(raw):
    return [h.tolist() for h in raw.histories]


def test_seqfile_reads_users_in_file_order(tmp_path):
    f = tmp_path / "seq.txt"
    f.write_text("3 10 11 12\n\n1 5 4 3 2\n2 7\n")
    raw = load_seqfile(f)
    assert raw.user_ids == ["3", "1", "2"]
    assert _hist(raw) == [[10, 11, 12], [5, 4, 3, 2], [7]]
    assert raw.n_rows == 8


def test_seqfile_errors_name_file_and_line(tmp_path):
    f = tmp_path / "bad.txt"
    f.write_text("1 2 3 4\n2 5 x7 6\n")
    with pytest.raises(ToolkitError, match=rf"{f}:2: id 'x7' is not an integer"):
        load_seqfile(f)
    f.write_text("1 2 3 4\n\n1 5 6 7\n")
    with pytest.raises(ToolkitError, match=r":3: user 1 already appeared on line 1"):
        load_seqfile(f)
    with pytest.raises(ToolkitError, match="source file not found"):
        load_seqfile(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ToolkitError, match="source file is empty"):
        load_seqfile(tmp_path / "empty.txt")
    (tmp_path / "blank.txt").write_text("\n \n")
    with pytest.raises(ToolkitError, match="no data lines"):
        load_seqfile(tmp_path / "blank.txt")
    (tmp_path / "bin.txt").write_bytes(b"1 2 \xff\xfe 3\n")
    with pytest.raises(ToolkitError, match="not a UTF-8 text file"):
        load_seqfile(tmp_path / "bin.txt")


def test_csv_with_header_sorts_per_user_by_time_stably(tmp_path):
    f = tmp_path / "log.csv"
    f.write_text(
        "item,user,timestamp,rating\n"
        "b,u2,30,5\n"
        "a,u1,20,4\n"
        "c,u1,10,3\n"
        "d,u1,20,1\n"  # same time as 'a': file order decides (a then d)
        "a,u2,5,2\n"
    )
    raw = load_interactions(f)
    assert raw.user_ids == ["u1", "u2"]
    # items coded in sorted raw order: a=0 b=1 c=2 d=3
    assert _hist(raw) == [[2, 0, 3], [0, 1]]
    assert raw.n_rows == 5


def test_amazon_ratings_csv_without_header(tmp_path):
    f = tmp_path / "ratings_Beauty.csv"
    f.write_text(
        "A39HTATAQ9V7YF,0205616461,5.0,1369699200\n"
        "A3JM6GV9MNOF9X,0558925278,3.0,1355443200\n"
        "A39HTATAQ9V7YF,0558925278,4.0,1355443200\n"
    )
    assert detect_format(f) == "interactions"
    raw = load_interactions(f)
    assert raw.user_ids == ["A39HTATAQ9V7YF", "A3JM6GV9MNOF9X"]
    # ASINs with leading zeros are text, not numbers: 0205616461 -> 0, 0558925278 -> 1
    assert _hist(raw) == [[1, 0], [1]]


def test_ids_sort_numerically_only_when_canonical_integers(tmp_path):
    f = tmp_path / "log.csv"
    f.write_text("user,item,timestamp\n1,10,1\n1,9,2\n1,100,3\n")
    assert _hist(load_interactions(f)) == [[1, 0, 2]]  # 9 < 10 < 100
    f.write_text("user,item,timestamp\n1,10,1\n1,9,2\n1,010,3\n")
    assert _hist(load_interactions(f)) == [[1, 2, 0]]  # text order 010 < 10 < 9, and 010 != 10


def test_utf8_bom_and_crlf_are_tolerated(tmp_path):
    f = tmp_path / "log.csv"
    f.write_bytes("\ufeffuser,item,timestamp\r\nu,a,2\r\nu,b,1\r\n".encode())
    assert _hist(load_interactions(f)) == [[1, 0]]
    g = tmp_path / "seq.txt"
    g.write_bytes("\ufeff1 3 2 1\r\n2 4 5 6\r\n".encode())
    assert load_seqfile(g).user_ids == ["1", "2"]


def test_recbole_inter_file(tmp_path):
    f = tmp_path / "beauty.inter"
    f.write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "7\t100\t5.0\t1300000000.0\n"
        "7\t20\t4.0\t1200000000.5\n"
        "3\t20\t1.0\t1100000000\n"
    )
    raw = load_interactions(f)
    assert raw.user_ids == ["3", "7"]  # numeric user ids sort numerically
    assert _hist(raw) == [[0], [0, 1]]  # items 20 -> 0, 100 -> 1; user 7 re-ordered by time


def test_whitespace_separated_interactions(tmp_path):
    f = tmp_path / "log.tsv"
    f.write_text("user item time\n1 9 3\n1 8 1\n")
    assert _hist(load_interactions(f)) == [[0, 1]]


@pytest.mark.parametrize(
    "text, message",
    [
        ("user,item,rating\n1,2,5\n", r"no timestamp column in the header \(user, item, rating\)"),
        ("u1,i1\nu1,i2\n", r"no timestamp column: the first row \(u1, i1\)"),
        ("a,b,c\n1,2,3\n", "no timestamp column: the first row"),
        ("user,item,timestamp\n1,2,100\n1,3,noon\n", r"log\.csv:3: timestamp 'noon' is not a number"),
        ("user,item,timestamp\n1,2,100\n1,3\n", r"log\.csv:3: expected at least 3 fields, got 2"),
        ("user,item,timestamp\n", "header but no data rows"),
        ("user,item,timestamp\n1,,5\n", r"log\.csv:2: empty item id"),
    ],
)
def test_interaction_errors(tmp_path, text, message):
    f = tmp_path / "log.csv"
    f.write_text(text)
    with pytest.raises(ToolkitError, match=message):
        load_interactions(f)


def test_histories_are_int64(tmp_path):
    f = tmp_path / "s.txt"
    f.write_text("1 1 2 3\n")
    assert load_seqfile(f).histories[0].dtype == np.int64
