"""Resumable row jobs: one JSON line per finished row, flushed; a rerun skips what is done.

    done = await run_resumable(jobs, work, "out.jsonl", concurrency=64)

`jobs` are (idx, item) pairs; `work(idx, item)` returns the record to write, which gets
"idx" set. Many rows stay in flight so a batching engine stays busy; lines are written in
the order rows finish. A line torn by a crash (the last one, unparsable) is cut off the
file before appending. If one row raises, the others are cancelled, finished lines stay
on disk, and the error propagates; rerunning continues from there.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selflengthen.errors import DataError
from selflengthen.evaluate.files import where


@dataclass
class ResumeStats:
    total: int  # rows asked for
    skipped: int  # already in the output file
    written: int  # finished by this call


def load_done(path: str | Path) -> dict[int, dict[str, Any]]:
    """Records already in `path` by "idx". Cuts a torn last line off the file (a writer killed
    mid-line); any other bad line is a DataError, since it is not ours to drop."""
    path = Path(path)
    if not path.exists():
        return {}
    data = path.read_bytes()
    # Byte offsets of each line's start, to cut the file at a torn line.
    starts, records = [], []
    offset = 0
    for raw in data.split(b"\n"):
        starts.append(offset)
        offset += len(raw) + 1
        records.append(raw)
    last = max((i for i, raw in enumerate(records) if raw.strip()), default=-1)
    done: dict[int, dict[str, Any]] = {}
    for i, raw in enumerate(records):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            if i == last:
                with path.open("r+b") as f:
                    f.truncate(starts[i])
                return done
            raise DataError(f"{where(str(path), i + 1)}: invalid JSON ({exc})") from None
        idx = obj.get("idx") if isinstance(obj, dict) else None
        if isinstance(idx, bool) or not isinstance(idx, int):
            raise DataError(f"{where(str(path), i + 1, 'idx')}: missing or not an integer")
        done[idx] = obj
    if data and not data.endswith(b"\n"):  # complete JSON, but the newline never got written
        with path.open("ab") as f:
            f.write(b"\n")
    return done


async def run_resumable(
    jobs: Sequence[tuple[int, Any]],
    work: Callable[[int, Any], Awaitable[dict[str, Any]]],
    out_path: str | Path,
    concurrency: int = 64,
    done: dict[int, dict[str, Any]] | None = None,
) -> ResumeStats:
    """Run `work` on every job whose idx is not yet in `out_path`, appending one line each.
    `done` (from `load_done`) may be passed when the caller already read the file."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if done is None:
        done = load_done(out_path)
    pending = [(idx, item) for idx, item in jobs if idx not in done]
    stats = ResumeStats(total=len(jobs), skipped=len(jobs) - len(pending), written=0)
    if not pending:
        return stats
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(idx: int, item: Any) -> dict[str, Any]:
        async with gate:
            record = await work(idx, item)
        return {**record, "idx": idx}

    tasks = [asyncio.ensure_future(one(idx, item)) for idx, item in pending]
    try:
        with out_path.open("a", encoding="utf-8") as f:
            for next_done in asyncio.as_completed(tasks):
                record = await next_done
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                f.flush()
                stats.written += 1
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return stats
