"""Is the engine kept busy? Pipeline tokens/s against the engine's best, and against the reference design.

    python bench/throughput.py                             # engine.kind auto: llama-server if installed
    python bench/throughput.py --engine transformers --instructions 16 --json out.json
    python bench/throughput.py --set generate.retries=2 --set extend.jobs_per_answer=1 --set extend.retries=2

In one process, on the embedded model, on the same instructions:
 (b) pipeline: one round's Steps 1-2 on the project's stage code; every request is recorded;
 (a) raw: the engine alone on exactly those recorded requests, all submitted at once, at each
     batch size of --sizes (transformers: batch_size; llama-server: parallel slots); best kept;
     utilization = b / a (goal >= 0.85);
 (r) reference: the same round driven like the paper's reference scripts (32 threads of blocking
     requests for Step 1, a barrier, 16 threads each running one extension job start to end;
     bench/reference_design.py) on the same engine; speed-up = b / r (goal >= 2x).
All figures are generated tokens per wall-clock second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from reference_design import reference_steps_1_2  # noqa: E402
from round_steps import engine_overrides, seed_instructions, steps_1_2, write_instructions  # noqa: E402

ROOT = Path(__file__).parents[1]


class Recording:
    """The engine, with every request it is asked for kept in order."""

    def __init__(self, engine):
        self.engine = engine
        self.requests = []

    async def generate(self, request):
        self.requests.append(request)
        return await self.engine.generate(request)

    def __getattr__(self, name):
        return getattr(self.engine, name)


def raw_rate(engine, requests) -> tuple[float, int, float]:
    """All requests at once; (tokens/s, tokens, seconds)."""

    async def all_at_once():
        return await asyncio.gather(*(engine.generate(r) for r in requests))

    started = time.perf_counter()
    results = asyncio.run(all_at_once())
    seconds = time.perf_counter() - started
    tokens = sum(r.completion_tokens for r in results)
    return tokens / seconds, tokens, seconds


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", default="auto", choices=["auto", "transformers", "llama-server"])
    ap.add_argument("--instructions", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument(
        "--size", type=int, default=16, help="batch size / slots of the pipeline and reference runs"
    )
    ap.add_argument("--sizes", default="8,16,32", help="batch sizes / slots tried for the raw figure")
    ap.add_argument(
        "--workers",
        default="32,16",
        help="the reference design's threads for Step 1 and for Step 2 (its scripts' defaults)",
    )
    ap.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    ap.add_argument("--set", action="append", default=[], help="config override, as for `selflengthen run`")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)

    from selflengthen.config import load_config
    from selflengthen.engines import create_engine
    from selflengthen.engines.presets import llama_server_path

    kind = args.engine
    if kind == "auto":
        kind = "llama-server" if llama_server_path() else "transformers"

    def config_for(size):
        return load_config(
            args.config,
            [
                f"sampling.max_tokens={args.max_tokens}",
                "sampling.max_tokens_growth=1.0",
                *args.set,
                *engine_overrides(kind, size),
            ],
        )

    instructions = seed_instructions(args.instructions)
    workers = tuple(int(w) for w in args.workers.split(","))
    if len(workers) != 2:
        ap.error("--workers takes two counts: Step 1's threads and Step 2's, e.g. 32,16")
    fig: dict = {
        "engine": kind,
        "instructions": args.instructions,
        "max_tokens": args.max_tokens,
        "size": args.size,
        "cpus": os.cpu_count(),
    }
    config = config_for(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(config.engine, config.model, run_dir=tmp)
        try:
            rec = Recording(engine)
            seconds, tokens, counts = steps_1_2(config, rec, Path(tmp) / "ours", instructions)
            fig["pipeline"] = {
                "tokens_per_s": round(tokens / seconds, 1),
                "tokens": tokens,
                "seconds": round(seconds, 1),
                "requests": len(rec.requests),
                **counts,
            }
            print(
                f"(b) pipeline : {tokens / seconds:6.1f} tokens/s  ({tokens} tokens, {seconds:.0f} s, "
                f"{len(rec.requests)} requests, {counts})",
                flush=True,
            )
            ref_dir = Path(tmp) / "reference"
            write_instructions(ref_dir, instructions)
            before = engine.stats.completion_tokens
            started = time.perf_counter()
            ref_counts = reference_steps_1_2(config, engine, ref_dir, instructions, workers)
            ref_seconds = time.perf_counter() - started
            ref_tokens = engine.stats.completion_tokens - before
            fig["reference"] = {
                "tokens_per_s": round(ref_tokens / ref_seconds, 1),
                "tokens": ref_tokens,
                "seconds": round(ref_seconds, 1),
                "workers": list(workers),
                **ref_counts,
            }
            print(
                f"(r) reference: {ref_tokens / ref_seconds:6.1f} tokens/s  ({ref_tokens} tokens, "
                f"{ref_seconds:.0f} s, {ref_counts})",
                flush=True,
            )
        finally:
            engine.close()
        fig["raw"] = {}
        for size in [int(s) for s in args.sizes.split(",")]:
            c = config_for(size)
            raw_engine = create_engine(c.engine, c.model, run_dir=Path(tmp) / f"raw-{size}")
            try:
                rate, tokens, seconds = raw_rate(raw_engine, rec.requests)
            finally:
                raw_engine.close()
            fig["raw"][size] = {
                "tokens_per_s": round(rate, 1),
                "tokens": tokens,
                "seconds": round(seconds, 1),
            }
            print(
                f"(a) raw @ {size:3d}: {rate:6.1f} tokens/s  ({tokens} tokens, {seconds:.0f} s)", flush=True
            )
    best = max(v["tokens_per_s"] for v in fig["raw"].values())
    fig["utilization"] = round(fig["pipeline"]["tokens_per_s"] / best, 3)
    fig["speedup_vs_reference"] = round(fig["pipeline"]["tokens_per_s"] / fig["reference"]["tokens_per_s"], 2)
    fig["wall_speedup_vs_reference"] = round(fig["reference"]["seconds"] / fig["pipeline"]["seconds"], 2)
    print(
        f"utilization = b / a = {fig['utilization']:.2f} (goal >= 0.85); raw best {best} tokens/s; "
        f"median raw {statistics.median(v['tokens_per_s'] for v in fig['raw'].values())}"
    )
    print(
        f"ours / reference = {fig['speedup_vs_reference']:.2f}x "
        f"tokens/s, {fig['wall_speedup_vs_reference']:.2f}x "
        "wall time (goal >= 2x)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=1))
    return fig


if __name__ == "__main__":
    main()
