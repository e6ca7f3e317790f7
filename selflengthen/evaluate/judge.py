"""Quality by an LLM judge: LonGen's seven dimensions (1-10) and LongBench-Write's six (1-5,
mapped to 0-100 and averaged into S_q). Usage:

    report = asyncio.run(judge_rows(engine, rows, "longen", out_path="eval/longen.judge.jsonl"))
    report.summary   # {"n", "parsed", "unparsable", "dimensions": {...}, "overall", "scale"}

A judge's answer that does not parse is data, not an error: it is asked again up to
`retries` times, every raw output is kept in the record, and the rows that never parsed
are counted. The prompts are our own wording.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selflengthen.engines.base import Engine, Request, SamplingParams
from selflengthen.errors import DataError
from selflengthen.evaluate.files import LONGBENCH_WRITE, LONGEN, PROMPT_FIELD, check_benchmark, where
from selflengthen.evaluate.resume import load_done, run_resumable


@dataclass(frozen=True)
class Rubric:
    dimensions: tuple[tuple[str, str], ...]  # (name, what it asks)
    low: int
    high: int
    instructions: str

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.dimensions)

    def to_100(self, score: float) -> float:
        """A raw score on this rubric's scale mapped to 0-100."""
        return (score - self.low) / (self.high - self.low) * 100


_FRAME = """You are an exacting editor grading a piece of writing that an AI assistant produced for a \
user's request. {instructions}

Dimensions:
{dimensions}

<request>
{query}
</request>

<response>
{response}
</response>

Give each dimension a whole number from {low} (very poor) to {high} (excellent). Answer with \
one JSON object and nothing else, using exactly these keys:
{example}"""

RUBRICS: dict[str, Rubric] = {
    LONGEN: Rubric(
        dimensions=(
            ("Relevance", "Does the text do what the request asks, on its topic and in its form?"),
            ("Coherence", "Do the ideas follow one another logically, with sound structure?"),
            ("Accuracy", "Are the facts, reasoning and details correct?"),
            ("Consistency", "Does it hold one voice, one set of facts and one argument throughout?"),
            ("Clarity", "Is the language clear and easy to follow?"),
            ("Creativity", "Does it bring original ideas, angles or expression?"),
            ("Engagement", "Would a reader want to keep reading?"),
        ),
        low=1,
        high=10,
        instructions=(
            "Judge quality only. The length of the text must not affect any score, and ignore "
            "whether it meets a word count the request mentions."
        ),
    ),
    LONGBENCH_WRITE: Rubric(
        dimensions=(
            ("Relevance", "Does the text answer the request and stay on its topic?"),
            ("Accuracy", "Is the content correct, free of factual errors and invented details?"),
            ("Coherence", "Is it well organised, each part leading to the next?"),
            ("Clarity", "Is the wording clear, precise and free of needless repetition?"),
            ("Breadth and Depth", "Does it cover the subject widely and go into it deeply?"),
            ("Reading Experience", "Is it pleasant to read: fluent, well paced, well formatted?"),
        ),
        low=1,
        high=5,
        instructions="Judge quality only; the length of the text is scored elsewhere, so leave it aside.",
    ),
}


def _rubric(benchmark: str) -> Rubric:
    check_benchmark(benchmark)
    if benchmark not in RUBRICS:
        raise DataError(f"no judge rubric for benchmark '{benchmark}' (only {', '.join(RUBRICS)})")
    return RUBRICS[benchmark]


def judge_prompt(benchmark: str, query: str, response: str) -> str:
    rubric = _rubric(benchmark)
    example = json.dumps({name: rubric.high for name in rubric.names})
    return _FRAME.format(
        instructions=rubric.instructions,
        dimensions="\n".join(f"- {name}: {question}" for name, question in rubric.dimensions),
        query=query,
        response=response,
        low=rubric.low,
        high=rubric.high,
        example=example,
    )


# ------------------------------------------------------------------ parsing the judge's answer

_FENCE = re.compile(r"```[a-zA-Z]*\s*(.*?)```", re.DOTALL)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _key(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower().replace("&", "and"))


def _objects(text: str) -> list[str]:
    """Every balanced {...} span in `text`, outermost first (quotes respected)."""
    spans = []
    for start, char in enumerate(text):
        if char != "{":
            continue
        depth, quote, escaped = 0, "", False
        for end in range(start, len(text)):
            c = text[end]
            if quote:
                if escaped:
                    escaped = False
                elif c == "\\":
                    escaped = True
                elif c == quote:
                    quote = ""
            elif c in "\"'":
                quote = c
            elif c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    spans.append(text[start : end + 1])
                    break
    return spans


def _loads(text: str) -> Any:
    """JSON, forgiving: smart quotes, trailing commas, Python-style single quotes."""
    text = (
        text.strip()
        .replace("\u201c", '"')
        .replace("\u201d", '"')
        .replace("\u2018", "'")
        .replace("\u2019", "'")
    )
    attempts = (text, re.sub(r",\s*([}\]])", r"\1", text))
    for attempt in attempts:
        try:
            return json.loads(attempt)
        except json.JSONDecodeError:
            pass
        try:
            return ast.literal_eval(attempt)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            pass
    try:
        return json.loads(attempts[1].replace("'", '"'))
    except json.JSONDecodeError:
        return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):  # "8", "8/10", "8 out of 10"
        match = _NUMBER.search(value)
        return float(match.group()) if match else None
    if isinstance(value, dict):  # {"score": 8, "reason": "..."}
        for key in ("score", "rating", "value", "grade"):
            if key in value:
                return _number(value[key])
    return None


def _scores_in(obj: Any, rubric: Rubric) -> dict[str, float] | None:
    """The rubric's scores in `obj`, looking into nested objects ({"scores": {...}})."""
    if isinstance(obj, dict):
        by_key = {_key(str(k)): v for k, v in obj.items()}
        values = {name: _number(by_key.get(_key(name))) for name in rubric.names}
        if all(v is not None and rubric.low <= v <= rubric.high for v in values.values()):
            return values  # type: ignore[return-value]
        children = list(obj.values())
    elif isinstance(obj, list):
        children = obj
    else:
        return None
    for child in children:
        found = _scores_in(child, rubric)
        if found:
            return found
    return None


def _scores_from_lines(text: str, rubric: Rubric) -> dict[str, float] | None:
    """Last resort: "Relevance: 8" / "**Breadth and Depth** - 4/5" lines, one per dimension."""
    scores = {}
    for name in rubric.names:
        words = [re.escape(w) for w in name.lower().split() if w != "and"]
        pattern = r"[\s_\-]*(?:and|&)?[\s_\-]*".join(words)
        match = re.search(pattern + r"[\"'*\s]*[:=\-]\s*[\"'*]*\s*(\d+(?:\.\d+)?)", text, re.IGNORECASE)
        if not match:
            return None
        value = float(match.group(1))
        if not rubric.low <= value <= rubric.high:
            return None
        scores[name] = value
    return scores


def parse_judge_output(text: str, benchmark: str) -> dict[str, float] | None:
    """The rubric's scores from a judge's raw answer, or None when they cannot all be found
    in range. Reads code fences, text around the object, single quotes, scores as strings
    ("8", "8/10"), {"score": n} values and nested objects; then "Name: n" lines."""
    rubric = _rubric(benchmark)
    candidates = [*_FENCE.findall(text), text]
    for candidate in candidates:
        for span in _objects(candidate):
            found = _scores_in(_loads(span), rubric)
            if found:
                return found
    return _scores_from_lines(text, rubric)


# ------------------------------------------------------------------ running the judge


@dataclass
class JudgeReport:
    records: list[dict[str, Any]]  # the input rows plus "judge": {"scores", "score", "raw", "attempts"}
    summary: dict[str, Any]


def summarize(records: Sequence[dict[str, Any]], benchmark: str) -> dict[str, Any]:
    """Per-dimension means and the overall: LonGen on its 1-10 scale (overall = mean of the
    rows' means); LongBench-Write on 0-100 (overall = mean S_q)."""
    rubric = RUBRICS[benchmark]
    parsed = [r["judge"] for r in records if r.get("judge", {}).get("scores")]
    on_100 = benchmark == LONGBENCH_WRITE
    dims = {}
    for name in rubric.names:
        values = [rubric.to_100(j["scores"][name]) if on_100 else j["scores"][name] for j in parsed]
        dims[name] = round(sum(values) / len(values), 4) if values else None
    overall = [j["score"] for j in parsed]
    return {
        "n": len(records),
        "parsed": len(parsed),
        "unparsable": len(records) - len(parsed),
        "dimensions": dims,
        "overall": round(sum(overall) / len(overall), 4) if overall else None,
        "scale": "0-100" if on_100 else f"{rubric.low}-{rubric.high}",
    }


def _row_score(scores: dict[str, float], benchmark: str) -> float:
    rubric = RUBRICS[benchmark]
    values = [rubric.to_100(v) if benchmark == LONGBENCH_WRITE else v for v in scores.values()]
    return sum(values) / len(values)


async def judge_rows(
    engine: Engine,
    rows: Sequence[dict[str, Any]],
    benchmark: str,
    *,
    out_path: str | Path | None = None,
    sampling: SamplingParams | None = None,
    retries: int = 2,
    concurrency: int = 64,
    adapter: str | None = None,
    source: str = "<rows>",
) -> JudgeReport:
    """Judge each row's "response" against its query; up to 1 + `retries` calls per row.

    With `out_path` the run is resumable (one line per judged row, keyed by the row's "idx",
    else its position). Records come back in idx order.
    """
    _rubric(benchmark)
    sampling = sampling or SamplingParams(temperature=0.5, max_tokens=1024, stop=())
    field = PROMPT_FIELD[benchmark]
    jobs = []
    for position, row in enumerate(rows):
        for name in (field, "response"):
            if not isinstance(row.get(name), str):
                raise DataError(f"{where(source, position + 1, name)}: missing or not a string")
        idx = row.get("idx", position)
        jobs.append((idx if isinstance(idx, int) and not isinstance(idx, bool) else position, row))
    if len({idx for idx, _ in jobs}) != len(jobs):
        jobs = list(enumerate(rows))  # "idx" fields not unique: fall back to positions

    async def work(idx: int, row: dict[str, Any]) -> dict[str, Any]:
        request = Request(
            messages=[{"role": "user", "content": judge_prompt(benchmark, row[field], row["response"])}],
            params=sampling,
            adapter=adapter,
            tag=f"judge {benchmark}[{idx}]",
        )
        raw: list[str] = []
        scores = None
        for _ in range(1 + max(0, retries)):
            result = await engine.generate(request)
            raw.append(result.text)
            scores = parse_judge_output(result.text, benchmark)
            if scores:
                break
        verdict = {
            "scores": scores,
            "score": _row_score(scores, benchmark) if scores else None,
            "raw": raw,
            "attempts": len(raw),
        }
        return {**row, "judge": verdict}

    if out_path is None:
        records = await _run_in_memory(jobs, work, concurrency)
    else:
        await run_resumable(jobs, work, out_path, concurrency)
        records = load_done(out_path)
    ordered = [records[idx] for idx, _ in jobs if idx in records]
    return JudgeReport(records=ordered, summary=summarize(ordered, benchmark))


async def _run_in_memory(jobs, work, concurrency: int) -> dict[int, dict[str, Any]]:
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(idx: int, row: Any) -> tuple[int, dict[str, Any]]:
        async with gate:
            return idx, {**(await work(idx, row)), "idx": idx}

    return dict(await asyncio.gather(*(one(idx, row) for idx, row in jobs)))
