"""Figures of one round, computed from its files (so they always agree with the records)."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path

from selflengthen.store import RoundDir, read_jsonl


def _stage_figures(path: Path) -> dict:
    """made and kept items; `verdicts`: the items not kept, by final verdict (kept + verdicts =
    made); `failed_attempts`: every failed attempt by reason (retries included); `rejections`:
    the reasons of both, each counted once per item-or-attempt (the console's short list)."""
    made = kept = 0
    reasons: Counter[str] = Counter()
    verdicts: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    words: list[int] = []
    for row in read_jsonl(path):
        made += 1
        for attempt in row.get("attempts", ()):
            reasons[attempt.get("reason", "unknown")] += 1
            failed[attempt.get("reason", "unknown")] += 1
        if row.get("verdict") == "kept":
            kept += 1
            words.append(int(row.get("words", 0)))
        else:
            verdicts[row.get("verdict", "unknown")] += 1
            if row.get("verdict") not in {a.get("reason") for a in row.get("attempts", ())}:
                reasons[row.get("verdict", "unknown")] += 1  # e.g. length_biased_sampling
    figures = {
        "made": made,
        "kept": kept,
        "rejections": dict(reasons.most_common()),
        "verdicts": dict(verdicts.most_common()),
        "failed_attempts": dict(failed.most_common()),
    }
    if words:
        figures.update(mean_words=round(statistics.fmean(words), 1), median_words=statistics.median(words))
    return figures


def round_summary(rd: RoundDir, training: dict, minutes: dict) -> dict:
    return {
        "round": rd.k,
        "instructions": _stage_figures(rd.instructions),
        "answers": _stage_figures(rd.answers),
        "extensions": _stage_figures(rd.extensions),
        "training": training,
        "minutes": minutes,
    }


def load_summary(rd: RoundDir) -> dict | None:
    return json.loads(rd.summary.read_text()) if rd.summary.is_file() else None
