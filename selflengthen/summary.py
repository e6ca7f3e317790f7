"""Figures of one round, computed from its files (so they always agree with the records)."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path

from selflengthen.records import KEPT
from selflengthen.store import RoundDir, read_jsonl


def token_fates(row: dict) -> Counter[str]:
    """Generated tokens of one record by what became of the text they made: "kept", or the reason it
    was rejected. A failed attempt's tokens go to its reason; the final text's to the verdict. For
    an extension, a rejected micro-step's tokens go to the step's own reason and an accepted step's
    to the fate of its try (the records written before token counts existed count nothing)."""
    fates: Counter[str] = Counter()
    verdict = row.get("verdict", "unknown")
    for attempt in row.get("attempts", ()):
        if "step_tokens" in attempt:
            for reason, tokens in zip(attempt.get("step_reasons", ()), attempt["step_tokens"], strict=False):
                fates[reason or attempt.get("reason", "unknown")] += int(tokens)
        else:
            fates[attempt.get("reason", "unknown")] += int(attempt.get("tokens", 0))
    steps = row.get("steps")
    if steps is not None:
        for step in steps:
            fates[step.get("reason") or verdict] += int(step.get("tokens", 0))
    else:
        fates[verdict] += int(row.get("tokens", 0))
    return fates


def _tokens_saved(row: dict) -> int:
    saved = sum(int(a.get("tokens_saved", 0)) for a in row.get("attempts", ()))
    for step in row.get("steps") or ():
        saved += int(step.get("tokens_saved", 0))
    return saved + (0 if row.get("steps") is not None else int(row.get("tokens_saved", 0)))


def _stage_figures(path: Path) -> dict:
    """made and kept items; `verdicts`: the items not kept, by final verdict (kept + verdicts =
    made); `failed_attempts`: every failed attempt by reason (retries included); `rejections`:
    the reasons of both, each counted once per item-or-attempt (the console's short list)."""
    made = kept = saved = 0
    reasons: Counter[str] = Counter()
    verdicts: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    words: list[int] = []
    fates: Counter[str] = Counter()
    for row in read_jsonl(path):
        made += 1
        fates.update(token_fates(row))
        saved += _tokens_saved(row)
        for attempt in row.get("attempts", ()):
            reasons[attempt.get("reason", "unknown")] += 1
            failed[attempt.get("reason", "unknown")] += 1
        if row.get("verdict") == KEPT:
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
    if sum(fates.values()):
        # Where the generated tokens went: into kept items, or into texts rejected for each reason;
        # saved_at_most is the budget early abort left unspent (the full text could have cost that much more).
        kept_tokens = fates.pop("kept", 0)
        rejected = {reason: n for reason, n in fates.most_common() if n}
        figures["tokens"] = {"kept": kept_tokens, "rejected": rejected, "saved_at_most": saved}
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
