"""Reading a run directory for the report, tolerantly: any file may be missing or half-written (a
round still running). A torn line is skipped and counted; an unreadable file becomes a note.

    notes = []
    rounds = load_rounds(Path("runs/demo"), notes)      # [Round(k=1, ...), ...]
    counts = stage_counts(rounds[0], "answers")           # items by final verdict, attempts apart
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selflengthen.text.words import count_words

STAGES = ("instructions", "answers", "extensions")
KEPT = "kept"
UNRECORDED = "not kept (reason not recorded)"


@dataclass
class StageCounts:
    """One stage of one round. `verdicts` splits the made items that were not kept by their final
    verdict (so kept + sum(verdicts) == made); `attempts` counts every failed attempt by reason:
    an item that failed three times and was then kept adds 3 there and 1 to kept."""

    made: int
    kept: int
    verdicts: dict[str, int]
    attempts: dict[str, int]


@dataclass
class Round:
    k: int
    summary: dict[str, Any] | None = None
    kept_words: dict[str, list[int]] = field(default_factory=dict)  # stage -> words of kept items
    counts: dict[str, StageCounts] = field(default_factory=dict)  # from the stage's records


def read_json(path: Path, notes: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        notes.append(f"{path.name} in {path.parent.name}: unreadable ({exc}); skipped")
        return None
    return data if isinstance(data, dict) else None


def iter_lines(path: Path, notes: list[str]):
    """The JSON objects of a JSONL file, streamed; unreadable (torn) lines are counted in a note."""
    bad = 0
    with path.open(encoding="utf-8", errors="replace", newline="\n") as f:  # not splitlines(): U+2028
        for line in f:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if isinstance(obj, dict):
                yield obj
    if bad:
        notes.append(f"{path.parent.name}/{path.name}: {bad} unreadable line(s) ignored")


def words_of(row: dict[str, Any], text_key: str = "text") -> int | None:
    n = row.get("words")
    if isinstance(n, int):
        return n
    text = row.get(text_key)
    return count_words(text) if isinstance(text, str) else None


def count_stage(rows) -> tuple[StageCounts, list[int]]:
    """Items by final verdict and failed attempts by reason, plus the kept items' words."""
    verdicts: Counter[str] = Counter()
    attempts: Counter[str] = Counter()
    made = kept = 0
    words: list[int] = []
    for row in rows:
        made += 1
        for attempt in row.get("attempts") or ():
            if isinstance(attempt, dict):
                attempts[str(attempt.get("reason", "unknown"))] += 1
        verdict = str(row.get("verdict", "unknown"))
        if verdict == KEPT:
            kept += 1
            n = words_of(row)
            if n is not None:
                words.append(n)
        else:
            verdicts[verdict] += 1
    return StageCounts(made, kept, dict(verdicts.most_common()), dict(attempts.most_common())), words


def _load_round(path: Path, k: int, notes: list[str]) -> Round:
    data = Round(k, summary=read_json(path / "summary.json", notes))
    for stage in STAGES:
        file = path / f"{stage}.jsonl"
        if file.is_file():
            data.counts[stage], data.kept_words[stage] = count_stage(iter_lines(file, notes))
    return data


def round_dirs(run: Path) -> list[tuple[int, Path]]:
    found = []
    for path in run.glob("round-*"):
        match = re.fullmatch(r"round-(\d+)", path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found)


def load_rounds(run: Path, notes: list[str]) -> list[Round]:
    return [_load_round(path, k, notes) for k, path in round_dirs(run)]


def stage_counts(rnd: Round, stage: str) -> StageCounts | None:
    """From the stage's records when they exist (exact), else from summary.json: its `verdicts`
    and `failed_attempts` when written, else made and kept only (older summaries mixed attempts
    and verdicts in `rejections`, so those are shown as attempts)."""
    if stage in rnd.counts:
        return rnd.counts[stage]
    part = (rnd.summary or {}).get(stage)
    if not (isinstance(part, dict) and isinstance(part.get("made"), int)):
        return None
    made, kept = part["made"], int(part.get("kept") or 0)

    def numbers(key: str) -> dict[str, int]:
        value = part.get(key)
        if not isinstance(value, dict):
            return {}
        return {str(k): int(v) for k, v in value.items() if isinstance(v, (int, float))}

    verdicts = numbers("verdicts")
    if not verdicts and made > kept:
        verdicts = {UNRECORDED: made - kept}
    attempts = numbers("failed_attempts") if "verdicts" in part else numbers("rejections")
    return StageCounts(made, kept, verdicts, attempts)


def mean_words(rnd: Round, stage: str) -> float | None:
    part = (rnd.summary or {}).get(stage)
    if isinstance(part, dict) and isinstance(part.get("mean_words"), (int, float)):
        return float(part["mean_words"])
    words = rnd.kept_words.get(stage)
    return sum(words) / len(words) if words else None
