"""The run directory: append-only JSONL per stage and round, atomic final files, resume, lock.

Layout (checked from outside, see README):

    RUN/manifest.json                      resolved config (no secrets), package version
    RUN/run.lock                           held by the one process writing this run
    RUN/round-K/instructions.jsonl         Step 0, one line per instruction slot
    RUN/round-K/answers.jsonl              Step 1 after length-biased sampling (final verdicts)
    RUN/round-K/extensions.jsonl           Step 2 after length-biased sampling (final verdicts)
    RUN/round-K/sft/{generator,extender}.jsonl
    RUN/round-K/adapters/{generator,extender}/   PEFT LoRA adapters
    RUN/round-K/summary.json               the round's figures; its presence marks the round done
    RUN/round-K/work/                      partial files of unfinished stages, checkpoints

Resume rule: a line is written and flushed when its item finishes, so a restart skips ids
already present. A crash can tear only the last line; it is detected and cut off on reopen,
never parsed as data. Final files are written to a temporary name and renamed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from selflengthen.errors import DataError, RunLockedError


def _atomic_write(path: Path, write) -> None:
    """Call `write(file)` on a temporary sibling, fsync, rename over `path`: readers see the old
    file or the new one, never half of one; a failure removes the temporary and keeps the old."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_TEMPORARY = re.compile(r"\..+\.tmp\d+")  # `.NAME.tmpPID`: an atomic write (or adapter save) in progress


def remove_stale_temporaries(run_dir: Path) -> int:
    """Delete the temporaries a killed writer left behind (a kill -9 skips the cleanup in
    `_atomic_write`); they would pile up, each a full copy of a file, over many restarts. Call it
    only while holding the run lock, before anything is written. Returns how many were removed."""
    removed = 0
    for p in sorted(Path(run_dir).rglob(".*.tmp*"), key=lambda p: len(p.parts), reverse=True):
        if not _TEMPORARY.fullmatch(p.name):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed += 1
    return removed


def atomic_write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda f: f.write(text))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def atomic_write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    """Write all rows to `path` atomically (streamed to the temporary file). Returns the count."""
    count = 0

    def write(f) -> None:
        nonlocal count
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1

    _atomic_write(path, write)
    return count


def atomic_write_jsonl_split(paths: Sequence[Path], rows: Iterable[Sequence[dict]]) -> int:
    """Write the i-th object of each row to `paths[i]`, streamed, each file atomically (one pass over
    `rows` for all files, so nothing is held in memory). Returns the number of rows."""
    files: list[Any] = []
    count = 0

    def write_all() -> None:
        nonlocal count
        for row in rows:
            for f, obj in zip(files, row, strict=True):
                f.write(json.dumps(obj, ensure_ascii=False) + "\n")
            count += 1

    def nest(i: int) -> None:
        if i == len(paths):
            write_all()
            return

        def write(f) -> None:
            files.append(f)
            nest(i + 1)

        _atomic_write(paths[i], write)

    nest(0)
    return count


def read_jsonl(path: Path, *, repair_tail: bool = False) -> Iterator[dict]:
    """Yield the objects of a JSONL file, streaming.

    A last line without its newline is a write torn by a crash: it is skipped (and with
    `repair_tail` cut off the file, so appends start on a clean line). Any other bad line is
    corrupt data: DataError naming the file and line.
    """
    for _, obj in read_jsonl_offsets(path, repair_tail=repair_tail):
        yield obj


def read_jsonl_offsets(path: Path, *, repair_tail: bool = False) -> Iterator[tuple[int, dict]]:
    """Like `read_jsonl`, with each object's byte offset in the file: an index of offsets lets a
    later pass fetch a record (`read_jsonl_at`) without holding every record in memory."""
    path = Path(path)
    if not path.exists():
        return
    if repair_tail:
        _cut_torn_tail(path)
    with open(path, "rb") as f:
        offset = 0
        for line_no, raw in enumerate(f, start=1):
            start, offset = offset, offset + len(raw)
            if not raw.endswith(b"\n"):
                return  # torn tail from a crash: never data
            if not raw.strip():
                continue
            yield start, _parse_line(f"{path}:{line_no}", raw)


def _parse_line(where: str, raw: bytes) -> dict:
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DataError(f"{where}: not UTF-8 (bad byte at column {exc.start + 1})") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: invalid JSON (column {exc.colno}: {exc.msg})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return obj


def read_jsonl_at(f: BinaryIO, offset: int) -> dict:
    """The object on the line starting at `offset` of the JSONL file open (binary) as `f`; the
    offset comes from `read_jsonl_offsets` of the same, unchanged file."""
    f.seek(offset)
    raw = f.readline()
    where = f"{getattr(f, 'name', 'JSONL file')} at byte {offset}"
    if not raw.endswith(b"\n"):
        raise DataError(f"{where}: no whole line there (did the file change?)")
    return _parse_line(where, raw)


def _cut_torn_tail(path: Path) -> None:
    size = path.stat().st_size
    if size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        # Find the last newline; everything after it is the torn line.
        pos = size
        chunk = 65536
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            block = f.read(pos - start)
            i = block.rfind(b"\n")
            if i != -1:
                f.truncate(start + i + 1)
                return
            pos = start
        f.truncate(0)


class JsonlAppender:
    """Append-only writer: one JSON line per finished item, flushed at once (survives kill -9)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _cut_torn_tail(self.path) if self.path.exists() else None
        self._f = open(self.path, "a", encoding="utf-8")

    def write(self, row: dict) -> None:
        self._f.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def existing_ids(path: Path) -> set[str]:
    return {row["id"] for row in read_jsonl(path, repair_tail=True) if "id" in row}


class RunLock:
    """One writer per run. An OS file lock (fcntl.flock): the kernel releases it when the holder
    dies, so a crashed run never leaves the directory stuck."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "run.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunLockedError(
                f"run directory {self.path.parent} is in use by pid {holder}; wait for it or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class RoundDir:
    """Paths of one round's files."""

    def __init__(self, run_dir: Path, k: int):
        self.k = k
        self.path = Path(run_dir) / f"round-{k}"
        self.instructions = self.path / "instructions.jsonl"
        self.answers = self.path / "answers.jsonl"
        self.extensions = self.path / "extensions.jsonl"
        self.sft_dir = self.path / "sft"
        self.adapters = self.path / "adapters"
        self.summary = self.path / "summary.json"
        self.work = self.path / "work"

    def sft(self, role: str) -> Path:
        return self.sft_dir / f"{role}.jsonl"

    def adapter(self, role: str) -> Path:
        return self.adapters / role

    def partial(self, stage: str) -> Path:
        """Per-item progress of a stage whose final file needs all items (selection)."""
        return self.work / f"{stage}.partial.jsonl"

    def stats(self, stage: str) -> Path:
        return self.work / f"{stage}.stats.json"


def round_dir(run_dir: Path, k: int) -> RoundDir:
    return RoundDir(Path(run_dir), k)


def adapter_complete(path: Path) -> bool:
    return (path / "adapter_config.json").is_file() and (path / "adapter_model.safetensors").is_file()
