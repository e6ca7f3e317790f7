"""The run store: torn tails, corrupt lines, atomic writes, the one-writer lock."""

from __future__ import annotations

import subprocess
import sys

import pytest

from selflengthen.errors import DataError, RunLockedError
from selflengthen.store import (
    JsonlAppender,
    RunLock,
    atomic_write_jsonl,
    atomic_write_jsonl_split,
    existing_ids,
    read_jsonl,
    read_jsonl_at,
    read_jsonl_offsets,
)


def test_torn_last_line_is_dropped_and_cut(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "c", "te')
    assert [r["id"] for r in read_jsonl(path)] == ["a", "b"]
    assert existing_ids(path) == {"a", "b"}  # repairs the file too
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n'
    with JsonlAppender(path) as w:
        w.write({"id": "c"})
    assert [r["id"] for r in read_jsonl(path)] == ["a", "b", "c"]


def test_appender_cuts_torn_tail_before_appending(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b", "x": "unfinished')
    with JsonlAppender(path) as w:
        w.write({"id": "b"})
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n'


def test_corrupt_middle_line_names_file_and_line(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"id": "a"}\nnot json\n{"id": "c"}\n')
    with pytest.raises(DataError, match=r"a\.jsonl:2: invalid JSON"):
        list(read_jsonl(path))
    path.write_bytes(b'{"id": "a"}\n{"id": "\xff"}\n')
    with pytest.raises(DataError, match=r"a\.jsonl:2: not UTF-8"):
        list(read_jsonl(path))


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "f.jsonl"
    atomic_write_jsonl(path, [{"id": 1}])

    def broken():
        yield {"id": 2}
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError):
        atomic_write_jsonl(path, broken())
    assert [r["id"] for r in read_jsonl(path)] == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.jsonl"]  # no temporary left behind


def test_lock_refuses_second_writer_and_frees_on_crash(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunLockedError, match="in use"):
            RunLock(tmp_path).acquire()
    # a process that dies holding the lock does not leave it stuck
    code = (
        "from selflengthen.store import RunLock; import os; "
        f"RunLock({str(tmp_path)!r}).acquire(); os._exit(9)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    lock = RunLock(tmp_path)
    lock.acquire()  # raises RunLockedError if the dead holder's lock had stuck
    lock.release()


def test_offsets_index_reads_records_back(tmp_path):
    path = tmp_path / "a.jsonl"
    # a blank line, a torn tail, and characters of two bytes each before the second record
    path.write_text('{"id": "a", "t": "\u00e9t\u00e9"}\n\n{"id": "b"}\n{"id": "c", "te')
    index = {row["id"]: at for at, row in read_jsonl_offsets(path)}
    assert list(index) == ["a", "b"]
    with open(path, "rb") as f:
        assert read_jsonl_at(f, index["b"]) == {"id": "b"}
        assert read_jsonl_at(f, index["a"])["t"] == "été"  # offsets are bytes, not characters
        with pytest.raises(DataError, match="no whole line"):
            read_jsonl_at(f, path.stat().st_size - 3)


def test_split_writer_streams_to_both_files_atomically(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert atomic_write_jsonl_split([a, b], (({"i": i}, {"j": -i}) for i in range(3))) == 3
    assert [r["i"] for r in read_jsonl(a)] == [0, 1, 2] and [r["j"] for r in read_jsonl(b)] == [0, -1, -2]

    def broken():
        yield {"i": 9}, {"j": 9}
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError):
        atomic_write_jsonl_split([a, b], broken())
    assert [r["i"] for r in read_jsonl(a)] == [0, 1, 2] and [r["j"] for r in read_jsonl(b)] == [0, -1, -2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "b.jsonl"]
