"""Reading evaluation files: JSON lines with line numbers, and which benchmark a file holds.

Every error names the file, the line and the field, so a user can open the file and fix it:

    rows = read_jsonl("answers.jsonl")          # [(line_no, {...}), ...]
    name = detect_benchmark([r for _, r in rows], "answers.jsonl")
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from selflengthen.errors import DataError

LONGEN = "longen"
LONGBENCH_WRITE = "longbench-write"
RULER = "ruler"
BENCHMARKS = (LONGEN, LONGBENCH_WRITE, RULER)

# The field holding each benchmark's query (what the model is asked to write).
PROMPT_FIELD = {LONGEN: "query", LONGBENCH_WRITE: "prompt", RULER: "prompt"}


def check_benchmark(name: str) -> str:
    """`name` itself when it is a known benchmark, else a DataError listing the known ones."""
    if name not in BENCHMARKS:
        raise DataError(f"unknown benchmark '{name}'; expected one of: {', '.join(BENCHMARKS)}")
    return name


def where(source: str, line: int | None, field: str | None = None) -> str:
    """'FILE, line N, field 'F'' — the prefix of every data error."""
    parts = [source]
    if line is not None:
        parts.append(f"line {line}")
    if field is not None:
        parts.append(f"field '{field}'")
    return ", ".join(parts)


def read_jsonl(path: str | Path, drop_torn_tail: bool = False) -> list[tuple[int, dict[str, Any]]]:
    """The objects of a JSON-lines file with their 1-based line numbers (blank lines skipped).

    A `.json` file holding a list of objects is read too (line numbers are then list positions).
    With `drop_torn_tail`, an unparsable last line (a writer killed mid-line) is dropped
    instead of raising.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (bad byte at offset {exc.start})") from None
    if path.suffix == ".json":
        return _read_json_list(path, text)
    # Split on "\n" only: str.splitlines() also breaks on U+2028 and friends, which our own writers
    # leave unescaped inside JSON strings (ensure_ascii=False), so a model's answer could break a line.
    lines = [line.rstrip("\r") for line in text.split("\n")]
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            if drop_torn_tail and i == last:
                break
            raise DataError(f"{where(str(path), i + 1)}: invalid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where(str(path), i + 1)}: expected a JSON object, got {type(obj).__name__}")
        rows.append((i + 1, obj))
    return rows


def _read_json_list(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where(str(path), exc.lineno)}: invalid JSON ({exc.msg})") from None
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))  # {"data": [...]} or {"train": [...]}
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
    rows = []
    for i, obj in enumerate(data):
        if not isinstance(obj, dict):
            raise DataError(f"{path}, item {i + 1}: expected a JSON object, got {type(obj).__name__}")
        rows.append((i + 1, obj))
    return rows


def detect_benchmark(rows: Sequence[Mapping[str, Any]], source: str | Path = "") -> str | None:
    """Which benchmark `rows` answer, or None.

    In order: a "benchmark" field (written by `generate_answers`); the file name
    ("ruler", "longbench", "longen"); then the fields: LonGen has "constraint" and "type",
    LongBench-Write "prompt", "length" and "type", the ruler "prompt" and "length" only.
    """
    if not rows:
        return None
    named = rows[0].get("benchmark")
    if isinstance(named, str) and named in BENCHMARKS:
        return named
    stem = Path(str(source)).name.lower().replace("_", "-")
    for hint, name in (("ruler", RULER), ("longbench", LONGBENCH_WRITE), ("longen", LONGEN)):
        if hint in stem:
            return name
    keys = set(rows[0])
    if {"constraint", "type"} <= keys:
        return LONGEN
    if {"prompt", "length", "type"} <= keys:
        return LONGBENCH_WRITE
    if {"prompt", "length"} <= keys:
        return RULER
    return None
