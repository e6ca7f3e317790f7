"""Length scores, exactly as LonGen and LongBench-Write define them, plus diagnostics.

    report = score_file("longen", "answers.jsonl")   # {"n", "overall", "by_type", ...}

Pure functions over rows (dicts). Each benchmark counts words with its own counter:
LonGen with `count_words`, LongBench-Write and the LongWrite-Ruler with
`count_words_longbench`. A row's "words" field is ignored: the count is always recomputed
from "response", so answers from any tool score alike. Bad rows raise DataError naming the
file, the line and the field.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from selflengthen.errors import DataError
from selflengthen.evaluate.constraints import TYPES, Constraint, ConstraintError, parse_constraint
from selflengthen.evaluate.files import (
    LONGBENCH_WRITE,
    LONGEN,
    PROMPT_FIELD,
    RULER,
    check_benchmark,
    detect_benchmark,
    read_jsonl,
    where,
)
from selflengthen.text.words import count_words, count_words_longbench, detect_language

REPEAT_N = 13  # a repeated 13-gram of units marks a looping answer
# LongBench-Write's buckets by required length; the last also takes lengths >= 20000.
BUCKETS = ((0, 500), (500, 2000), (2000, 4000), (4000, 20000))


def bucket_label(low: int, high: int) -> str:
    return f"[{low},{high})"


# ------------------------------------------------------------------ per-answer scores


def longen_score(words: float, low: float, high: float) -> float:
    """LonGen's length score in [0, 1]: 1 inside [low, high] (edges inclusive); below it
    max(2L/low - 1, 0), reaching 0 at low/2; above it max(3 - 2L/high, 0), 0 at 1.5 high."""
    if words < low:
        return max(2 * words / low - 1, 0.0)
    if words > high:
        return max(3 - 2 * words / high, 0.0)
    return 1.0


def longbench_score(produced: float, required: float) -> float:
    """LongBench-Write's S_l in [0, 100] for `produced` words against `required`.

    Too long: 100 max(0, 1 - (L/l - 1)/3); too short: 100 max(0, 1 - (l/L - 1)/2);
    no words at all: 0. Overshooting is punished less than falling short.
    """
    if produced <= 0:
        return 0.0
    if produced > required:
        return 100 * max(0.0, 1 - (produced / required - 1) / 3)
    return 100 * max(0.0, 1 - (required / produced - 1) / 2)


def longbench_bucket(required: float) -> str:
    for low, high in BUCKETS:
        if low <= required < high:
            return bucket_label(low, high)
    return bucket_label(*BUCKETS[-1]) if required >= BUCKETS[-1][1] else bucket_label(*BUCKETS[0])


# ------------------------------------------------------------------ reading fields


def _lines(rows: Sequence[Any], lines: Sequence[int] | None) -> Sequence[int]:
    return lines if lines is not None else range(1, len(rows) + 1)


def response_of(row: Mapping[str, Any], source: str, line: int) -> str:
    text = row.get("response")
    if not isinstance(text, str):
        problem = "is missing" if "response" not in row else f"must be a string, got {type(text).__name__}"
        raise DataError(f"{where(source, line, 'response')}: {problem}")
    return text


def constraint_of(row: Mapping[str, Any], source: str, line: int) -> Constraint:
    """The row's parsed LonGen constraint (its "type" field, when present, names the type)."""
    text = row.get("constraint")
    if not isinstance(text, str):
        raise DataError(f"{where(source, line, 'constraint')}: missing or not a string")
    kind = row.get("type")
    if kind is not None and kind not in TYPES:
        raise DataError(f"{where(source, line, 'type')}: '{kind}' is not one of {', '.join(TYPES)}")
    try:
        return parse_constraint(text, kind)
    except ConstraintError as exc:
        raise DataError(f"{where(source, line, 'constraint')}: {exc}") from None


def required_length_of(row: Mapping[str, Any], source: str, line: int) -> float:
    value = row.get("length")
    if isinstance(value, str):
        try:
            value = float(value.replace(",", ""))
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise DataError(f"{where(source, line, 'length')}: must be a positive number of words, got {value!r}")
    return float(value)


def _language(row: Mapping[str, Any], benchmark: str) -> str:
    lang = row.get("language")
    if isinstance(lang, str) and lang:
        return lang
    prompt = row.get(PROMPT_FIELD[benchmark])
    return detect_language(prompt) if isinstance(prompt, str) else "unknown"


# ------------------------------------------------------------------ aggregates


def _mean(values: Sequence[float]) -> float:
    return round(sum(values) / len(values), 6) if values else 0.0


def _group_means(keys: Sequence[str], scores: Sequence[float], order: Sequence[str] = ()) -> dict[str, float]:
    groups: dict[str, list[float]] = defaultdict(list)
    for key, score in zip(keys, scores, strict=True):
        groups[key].append(score)
    ordered = [k for k in order if k in groups] + sorted(k for k in groups if k not in order)
    return {k: _mean(groups[k]) for k in ordered}


def diagnostics(
    rows: Sequence[Mapping[str, Any]], texts: Sequence[str], words: Sequence[int]
) -> dict[str, Any]:
    """Beside every length score: share of answers that hit the token limit (None when the rows
    carry no finish_reason), share with a repeated 13-gram (a looping model), mean words."""
    from selflengthen.text.checks import find_repeated_ngram

    with_reason = [row["finish_reason"] for row in rows if "finish_reason" in row]
    repeated = sum(1 for text in texts if find_repeated_ngram(text, REPEAT_N) is not None)
    n = len(texts)
    return {
        "truncated": round(with_reason.count("length") / len(with_reason), 6) if with_reason else None,
        "repeated_13gram": round(repeated / n, 6) if n else 0.0,
        "mean_words": _mean([float(w) for w in words]),
    }


def score_longen(
    rows: Sequence[Mapping[str, Any]], source: str = "<rows>", lines: Sequence[int] | None = None
) -> dict[str, Any]:
    """{"n", "overall", "by_type", "by_range", "by_language", "diagnostics"}; scores in [0, 1]."""
    scores, texts, words, types, ranges, languages = [], [], [], [], [], []
    for row, line in zip(rows, _lines(rows, lines), strict=True):
        text = response_of(row, source, line)
        constraint = constraint_of(row, source, line)
        n_words = count_words(text)
        scores.append(longen_score(n_words, *constraint.window()))
        texts.append(text)
        words.append(n_words)
        types.append(constraint.type)
        ranges.append(str(row.get("range", "unknown")))
        languages.append(_language(row, LONGEN))
    return {
        "n": len(scores),
        "overall": _mean(scores),
        "by_type": _group_means(types, scores, TYPES),
        "by_range": _group_means(ranges, scores),
        "by_language": _group_means(languages, scores, ("en", "zh")),
        "diagnostics": diagnostics(rows, texts, words),
    }


def score_longbench(
    rows: Sequence[Mapping[str, Any]], source: str = "<rows>", lines: Sequence[int] | None = None
) -> dict[str, Any]:
    """{"n", "overall", "by_type", "by_bucket", "by_language", "diagnostics"}; S_l in [0, 100]."""
    scores, texts, words, types, buckets, languages = [], [], [], [], [], []
    for row, line in zip(rows, _lines(rows, lines), strict=True):
        text = response_of(row, source, line)
        required = required_length_of(row, source, line)
        n_words = count_words_longbench(text)
        scores.append(longbench_score(n_words, required))
        texts.append(text)
        words.append(n_words)
        types.append(str(row.get("type", "unknown")))
        buckets.append(longbench_bucket(required))
        languages.append(_language(row, LONGBENCH_WRITE))
    return {
        "n": len(scores),
        "overall": _mean(scores),
        "by_type": _group_means(types, scores),
        "by_bucket": _group_means(buckets, scores, [bucket_label(*b) for b in BUCKETS]),
        "by_language": _group_means(languages, scores, ("en", "zh")),
        "diagnostics": diagnostics(rows, texts, words),
    }


def score_ruler(
    rows: Sequence[Mapping[str, Any]], source: str = "<rows>", lines: Sequence[int] | None = None
) -> dict[str, Any]:
    """{"n", "by_length": {"1000": {"n", "mean_words", "max_words"}, ...}, "diagnostics"}."""
    texts, words, required = [], [], []
    for row, line in zip(rows, _lines(rows, lines), strict=True):
        text = response_of(row, source, line)
        required.append(required_length_of(row, source, line))
        texts.append(text)
        words.append(count_words_longbench(text))
    by_length: dict[str, dict[str, float]] = {}
    for length in sorted(set(required)):
        produced = [w for w, r in zip(words, required, strict=True) if r == length]
        by_length[f"{length:g}"] = {
            "n": len(produced),
            "mean_words": _mean([float(w) for w in produced]),
            "max_words": max(produced),
        }
    return {"n": len(texts), "by_length": by_length, "diagnostics": diagnostics(rows, texts, words)}


SCORERS: dict[str, Callable[..., dict[str, Any]]] = {
    LONGEN: score_longen,
    LONGBENCH_WRITE: score_longbench,
    RULER: score_ruler,
}


def score_rows(
    benchmark: str,
    rows: Sequence[Mapping[str, Any]],
    source: str = "<rows>",
    lines: Sequence[int] | None = None,
) -> dict[str, Any]:
    return SCORERS[check_benchmark(benchmark)](rows, source, lines)


def score_file(benchmark: str | None, path: str | Path) -> dict[str, Any]:
    """Score a JSONL file of answers. `benchmark` None: detect it from the rows' fields."""
    numbered = read_jsonl(path)
    if not numbered:
        raise DataError(f"{path}: no rows to score")
    lines = [line for line, _ in numbered]
    rows = [row for _, row in numbered]
    if benchmark is None:
        benchmark = detect_benchmark(rows, path)
        if benchmark is None:
            raise DataError(f"{path}: cannot tell which benchmark these rows answer; pass --benchmark")
    return score_rows(benchmark, rows, str(path), lines)


def length_points(
    benchmark: str, rows: Sequence[Mapping[str, Any]], source: str = "<rows>"
) -> list[tuple[float, int]]:
    """(required, produced) words per row, each with the benchmark's counter, for plots.
    LonGen's required length is the constraint's target (a range's midpoint)."""
    points = []
    for line, row in enumerate(rows, start=1):
        text = response_of(row, source, line)
        if benchmark == LONGEN:
            points.append((constraint_of(row, source, line).target, count_words(text)))
        else:
            points.append((required_length_of(row, source, line), count_words_longbench(text)))
    return points
