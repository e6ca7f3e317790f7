"""Answers to a benchmark's queries, resumable. Usage:

    rows = load_benchmark("longen", "/data/LonGen.jsonl")     # or a hub id: "quanshr/LonGen"
    stats = asyncio.run(generate_answers(engine, rows, "longen", "eval/longen.jsonl", params))

Each output line is the benchmark row's own fields plus "idx" (its position in the
benchmark), "benchmark", "response", "words" (the benchmark's own counter), "finish_reason"
and "model". A rerun skips rows already written and drops a line torn by a crash.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from selflengthen.engines.base import Engine, Request, SamplingParams
from selflengthen.errors import DataError
from selflengthen.evaluate.files import LONGEN, PROMPT_FIELD, check_benchmark, read_jsonl, where
from selflengthen.evaluate.resume import ResumeStats, load_done, run_resumable
from selflengthen.text.words import count_words, count_words_longbench

_SPLITS = ("test", "train", "validation")


def counter_for(benchmark: str):
    """The benchmark's own word counter: LonGen's, or LongWriter's for the other two."""
    return count_words if benchmark == LONGEN else count_words_longbench


def _looks_like_path(text: str) -> bool:
    return text.startswith((".", "/", "~")) or text.endswith((".json", ".jsonl")) or text.count("/") > 1


def _check_rows(
    rows: Sequence[tuple[int, dict[str, Any]]], benchmark: str, source: str
) -> list[dict[str, Any]]:
    field = PROMPT_FIELD[benchmark]
    for line, row in rows:
        value = row.get(field)
        if not isinstance(value, str) or not value.strip():
            raise DataError(
                f"{where(source, line, field)}: missing or empty (a {benchmark} row needs its query)"
            )
    return [row for _, row in rows]


def load_benchmark(name: str, path_or_hub_id: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """A benchmark's rows from a JSONL/JSON file, or from the hub via `datasets.load_dataset`.

    A hub dataset's "test" split is used, else "train", else its first split. Every row must
    carry the benchmark's query field ("query" for LonGen, "prompt" for the others).
    """
    check_benchmark(name)
    source = str(path_or_hub_id)
    path = Path(source).expanduser()
    if path.exists():
        rows = _check_rows(read_jsonl(path), name, source)
    elif _looks_like_path(source):
        raise DataError(f"{source}: file not found")
    else:
        rows = _check_rows(list(enumerate(_load_hub(source), start=1)), name, f"hub dataset {source}")
    if not rows:
        raise DataError(f"{source}: the benchmark has no rows")
    return rows[:limit] if limit is not None else rows


def _load_hub(hub_id: str) -> list[dict[str, Any]]:
    import datasets

    try:
        loaded = datasets.load_dataset(hub_id)
    except Exception as exc:  # network, auth, missing dataset: all end the same way for the user
        raise DataError(
            f"could not load '{hub_id}' from the hub ({type(exc).__name__}: {str(exc)[:200]}). "
            "Offline? Pass a local .jsonl file with --data instead."
        ) from exc
    if isinstance(loaded, datasets.DatasetDict):
        split = next((s for s in _SPLITS if s in loaded), next(iter(loaded)))
        loaded = loaded[split]
    return [dict(row) for row in loaded]


async def generate_answers(
    engine: Engine,
    rows: Sequence[dict[str, Any]],
    benchmark: str,
    out_path: str | Path,
    sampling: SamplingParams | None = None,
    adapter: str | None = None,
    concurrency: int = 64,
) -> ResumeStats:
    """Answer every row not yet in `out_path`; one flushed JSON line per finished row.

    `adapter` names the engine's adapter ("generator") or None for the base model.
    Refuses an output file written for another benchmark or other queries.
    """
    check_benchmark(benchmark)
    sampling = sampling or SamplingParams()
    field = PROMPT_FIELD[benchmark]
    count = counter_for(benchmark)
    done = load_done(out_path)
    for idx, record in done.items():
        if record.get("benchmark", benchmark) != benchmark:
            raise DataError(f"{out_path}: holds answers for '{record.get('benchmark')}', not '{benchmark}'")
        if idx < len(rows) and record.get(field) != rows[idx][field]:
            raise DataError(
                f"{out_path}: the answer with idx {idx} is for another query than row {idx + 1} of the "
                "benchmark; use a new --out file for other data"
            )

    async def work(idx: int, row: dict[str, Any]) -> dict[str, Any]:
        request = Request(
            messages=[{"role": "user", "content": row[field]}],
            params=sampling,
            adapter=adapter,
            tag=f"{benchmark}[{idx}]",
        )
        result = await engine.generate(request)
        return {
            **row,
            "benchmark": benchmark,
            "response": result.text,
            "words": count(result.text),
            "finish_reason": result.finish_reason,
            "model": result.model,
        }

    return await run_resumable(list(enumerate(rows)), work, out_path, concurrency, done=done)
