"""`selflengthen eval ...` and `selflengthen report RUN`: thin commands over the evaluate package.

    selflengthen eval generate --benchmark longen --data LonGen.jsonl --out eval/longen.jsonl \\
        --adapter runs/demo/round-2/adapters/generator
    selflengthen eval score --benchmark longen --input eval/longen.jsonl --json
    selflengthen eval judge --benchmark longen --input eval/longen.jsonl --out eval/longen.judge.jsonl
    selflengthen report runs/demo

Heavy imports (torch, transformers, matplotlib) happen inside the commands so `--help` is
instant. Our errors (SelfLengthenError) propagate to the main CLI, which prints them.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

eval_app = typer.Typer(
    help="Evaluate a model on LonGen, LongBench-Write or LongWrite-Ruler: answers, length scores, LLM judge.",
    no_args_is_help=True,
)


class Benchmark(str, Enum):
    longen = "longen"
    longbench_write = "longbench-write"
    ruler = "ruler"


class JudgedBenchmark(str, Enum):
    longen = "longen"
    longbench_write = "longbench-write"


def _engine(kind: str, model: str, batch_size: int, adapter: Path | None = None):
    """Build the engine (heavy imports happen here), pointing "generator" at `adapter`."""
    from pydantic import ValidationError

    from selflengthen.config import EngineConfig, ModelConfig, explain_validation_error
    from selflengthen.engines import create_engine
    from selflengthen.errors import ConfigError

    try:
        engine_config = EngineConfig(kind=kind, batch_size=batch_size)
        model_config = ModelConfig(base=model)
    except ValidationError as exc:
        raise explain_validation_error(exc, EngineConfig, "command line") from None
    if adapter is not None and not adapter.is_dir():
        raise ConfigError(f"adapter directory '{adapter}' does not exist", field="--adapter")
    adapters = {"generator": str(adapter)} if adapter is not None else None
    return create_engine(engine_config, model_config, adapters)


def _sampling(temperature: float, max_tokens: int, seed: int | None, stop: bool):
    from selflengthen.engines.base import SamplingParams
    from selflengthen.errors import ConfigError

    if max_tokens < 1:
        raise ConfigError(f"must be at least 1, got {max_tokens}", field="--max-tokens")
    if temperature < 0:
        raise ConfigError(f"must be >= 0, got {temperature}", field="--temperature")
    if stop:  # the pipeline's stop strings (SamplingParams' default)
        return SamplingParams(temperature=temperature, max_tokens=max_tokens, seed=seed)
    return SamplingParams(temperature=temperature, max_tokens=max_tokens, seed=seed, stop=())


@eval_app.command("generate")
def generate_command(
    benchmark: Annotated[Benchmark, typer.Option(help="which benchmark the data is")],
    data: Annotated[str, typer.Option(help="benchmark file (.jsonl / .json) or a hub dataset id")],
    out: Annotated[Path, typer.Option(help="answers file (JSONL); rerun to resume, done rows are skipped")],
    model: Annotated[
        str, typer.Option(help="base model: 'embedded', a model directory or a hub id")
    ] = "embedded",
    adapter: Annotated[
        Path | None, typer.Option(help="a Generator adapter dir, e.g. RUN/round-2/adapters/generator")
    ] = None,
    engine: Annotated[str, typer.Option(help="generation backend")] = "transformers",
    batch_size: Annotated[int, typer.Option(help="max sequences per batch")] = 16,
    max_tokens: Annotated[int, typer.Option(help="max new tokens per answer")] = 16384,
    temperature: Annotated[float, typer.Option(help="sampling temperature (0 = greedy)")] = 0.7,
    seed: Annotated[int | None, typer.Option(help="sampling seed")] = None,
    stop: Annotated[
        bool, typer.Option(help="stop at a markdown rule or three newlines, like the pipeline")
    ] = True,
    limit: Annotated[int | None, typer.Option(help="answer only the first N rows")] = None,
) -> None:
    """Answer a benchmark's queries with a model (resumable)."""
    import asyncio

    from selflengthen.evaluate.generate import generate_answers, load_benchmark

    rows = load_benchmark(benchmark.value, data, limit)
    params = _sampling(temperature, max_tokens, seed, stop)
    backend = _engine(engine, model, batch_size, adapter)
    try:
        stats = asyncio.run(
            generate_answers(
                backend,
                rows,
                benchmark.value,
                out,
                params,
                adapter="generator" if adapter is not None else None,
                concurrency=max(4 * batch_size, 16),
            )
        )
    finally:
        backend.close()
    typer.echo(f"{out}: {stats.written} answers written, {stats.skipped} already there, {stats.total} rows")


def _print_scores(benchmark: str, scores: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if benchmark == "ruler":
        table = Table(title="LongWrite-Ruler: words per required length")
        for col in ("required", "n", "mean words", "max words"):
            table.add_column(col, justify="right")
        for length, v in scores["by_length"].items():
            table.add_row(length, str(v["n"]), f"{v['mean_words']:.1f}", str(v["max_words"]))
    else:
        scale = "S_l (0-100)" if benchmark == "longbench-write" else "score (0-1)"
        table = Table(title=f"{benchmark} length score, {scores['n']} answers")
        table.add_column("group")
        table.add_column(scale, justify="right")
        table.add_row("overall", f"{scores['overall']:.3f}", style="bold")
        for group in ("by_type", "by_range", "by_bucket", "by_language"):
            for key, value in scores.get(group, {}).items():
                table.add_row(f"{group[3:]}: {key}", f"{value:.3f}")
    console.print(table)
    d = scores["diagnostics"]
    truncated = "n/a (no finish_reason)" if d["truncated"] is None else f"{d['truncated']:.1%}"
    console.print(
        f"hit token limit: {truncated}   repeated 13-gram: {d['repeated_13gram']:.1%}   "
        f"mean words: {d['mean_words']:.1f}"
    )


@eval_app.command("score")
def score_command(
    input_path: Annotated[
        Path, typer.Option("--input", help="answers file (JSONL) with the benchmark's fields and 'response'")
    ],
    benchmark: Annotated[
        Benchmark | None, typer.Option(help="which benchmark; detected from the fields if left out")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print one JSON object to stdout, not a table")
    ] = False,
) -> None:
    """Length scores exactly as the benchmark defines them, with truncation and repetition shares."""
    from selflengthen.evaluate.files import detect_benchmark, read_jsonl
    from selflengthen.evaluate.scoring import score_file

    name = benchmark.value if benchmark else None
    scores = score_file(name, input_path)
    if as_json:
        typer.echo(json.dumps(scores, ensure_ascii=False))
        return
    if name is None:
        name = detect_benchmark([row for _, row in read_jsonl(input_path)], input_path) or "longen"
    _print_scores(name, scores)


@eval_app.command("judge")
def judge_command(
    benchmark: Annotated[
        JudgedBenchmark, typer.Option(help="which rubric: LonGen (7 x 1-10) or LongBench-Write (6 x 1-5)")
    ],
    input_path: Annotated[Path, typer.Option("--input", help="answers file (JSONL) from `eval generate`")],
    out: Annotated[Path, typer.Option(help="judged records (JSONL) with raw judge outputs; rerun to resume")],
    judge_model: Annotated[
        str, typer.Option(help="judge model: 'embedded', a model directory or a hub id")
    ] = "embedded",
    engine: Annotated[str, typer.Option(help="generation backend for the judge")] = "transformers",
    batch_size: Annotated[int, typer.Option(help="max sequences per batch")] = 16,
    max_tokens: Annotated[int, typer.Option(help="max new tokens per judge answer")] = 1024,
    temperature: Annotated[
        float, typer.Option(help="judge temperature (retries need some randomness)")
    ] = 0.5,
    retries: Annotated[int, typer.Option(min=0, help="extra attempts for an unparsable judge answer")] = 2,
    limit: Annotated[int | None, typer.Option(help="judge only the first N rows")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as one JSON object")] = False,
) -> None:
    """Quality by an LLM judge; prints per-dimension means, the overall and the unparsable count."""
    import asyncio

    from selflengthen.evaluate.files import read_jsonl
    from selflengthen.evaluate.judge import judge_rows

    rows = [row for _, row in read_jsonl(input_path)][:limit]
    params = _sampling(temperature, max_tokens, None, stop=False)
    backend = _engine(engine, judge_model, batch_size)
    try:
        report = asyncio.run(
            judge_rows(
                backend,
                rows,
                benchmark.value,
                out_path=out,
                sampling=params,
                retries=retries,
                concurrency=max(4 * batch_size, 16),
                source=str(input_path),
            )
        )
    finally:
        backend.close()
    summary = report.summary
    if as_json:
        typer.echo(json.dumps(summary, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{benchmark.value} judge ({summary['scale']}), {summary['parsed']} of {summary['n']} parsed"
    )
    table.add_column("dimension")
    table.add_column("mean", justify="right")
    for name, value in summary["dimensions"].items():
        table.add_row(name, "-" if value is None else f"{value:.2f}")
    overall = summary["overall"]
    table.add_row("overall", "-" if overall is None else f"{overall:.2f}", style="bold")
    console = Console()
    console.print(table)
    console.print(f"unparsable after {retries} retries: {summary['unparsable']}   records: {out}")


def report_command(run_dir: Annotated[Path, typer.Argument(help="the run directory")]) -> None:
    """Write RUN/report/index.html, report.md and plots, and browse.html (every sample); print index.html."""
    from selflengthen.evaluate.report import build_report

    typer.echo(str(build_report(run_dir)))
