"""A managed llama-server on a busy CPU: threads and --poll, quiet and loaded, side by side.

    python bench/server_threads.py                       # 3 settings x quiet/loaded x 2 repetitions
    python bench/server_threads.py --settings 2:50,1:0 --requests 16 --max-tokens 256 --json out.json

llama.cpp's worker threads spin while they wait for work (`--poll`, default 50). On a machine with
few cores, anything else running (a training job, a compiler, a test suite) then takes cores from
threads that are only waiting, and every batch stalls behind the slowest thread. Each setting
THREADS:POLL gets a fresh managed server (the project's engine, the embedded model, 16 slots) and
the same requests, once on a quiet machine and once beside a load (one process per --load-procs
multiplying matrices with torch on one thread, like a training job). The order of settings
alternates between repetitions. Prints generated tokens/s per run and the median per setting and
load; the last line names the setting with the best loaded median among those within 10% of the
best quiet median.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from round_steps import seed_instructions  # noqa: E402


def burn(stop_at: float) -> None:
    """A training-like load: one thread multiplying matrices until `stop_at`."""
    import torch

    torch.set_num_threads(1)
    a = torch.randn(512, 512)
    while time.time() < stop_at:
        a = torch.tanh(a @ a)


async def answer_all(engine, requests) -> list:
    # gather() inside a coroutine: called outside one, it binds its futures to another event loop.
    return await asyncio.gather(*(engine.generate(r) for r in requests))


def run_once(config, requests) -> tuple[float, int]:
    from selflengthen.engines import create_engine

    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(config.engine, config.model, run_dir=tmp)
        try:
            loop = asyncio.new_event_loop()
            warm = loop.run_until_complete(engine.generate(requests[0]))  # the server is ready and warm
            del warm
            started = time.perf_counter()
            results = loop.run_until_complete(answer_all(engine, requests))
            seconds = time.perf_counter() - started
            loop.close()
        finally:
            engine.close()
    return seconds, sum(r.completion_tokens for r in results)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", default="2:50,2:0,1:0", help="THREADS:POLL, comma-separated")
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--slots", type=int, default=16)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--load-procs", type=int, default=1, help="processes of load in the loaded runs")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)

    from selflengthen.config import load_config
    from selflengthen.engines.base import Request, SamplingParams

    settings = [tuple(int(x) for x in s.split(":")) for s in args.settings.split(",")]
    params = SamplingParams(max_tokens=args.max_tokens, seed=7, stop=())
    requests = [
        Request(messages=[{"role": "user", "content": q}], params=params)
        for q in seed_instructions(args.requests)
    ]
    runs: list[dict] = []
    print(
        f"{os.cpu_count()} CPUs, {args.requests} requests x up to {args.max_tokens} tokens, "
        f"{args.slots} slots"
    )
    print(
        "| threads | poll | load | rep | tokens | seconds | tokens/s |\n|---|---|---|---|---|---|---|",
        flush=True,
    )
    for rep in range(args.reps):
        order = settings if rep % 2 == 0 else settings[::-1]
        for load in ("quiet", "loaded") if rep % 2 == 0 else ("loaded", "quiet"):
            for threads, poll in order:
                config = load_config(
                    str(ROOT / "configs" / "demo.yaml"),
                    [
                        "engine.kind=openai",
                        "engine.server.managed=true",
                        "engine.server.preset=llama-server",
                        f"engine.server.parallel={args.slots}",
                        "engine.server.n_ctx=1024",
                        f"engine.server.threads={threads}",
                        f"engine.server.poll={poll}",
                        f"engine.batch_size={args.slots}",
                    ],
                )
                procs = []
                if load == "loaded":
                    ctx = mp.get_context("spawn")
                    procs = [
                        ctx.Process(target=burn, args=(time.time() + 3600,)) for _ in range(args.load_procs)
                    ]
                    for p in procs:
                        p.start()
                    time.sleep(3)  # the load is running before the server starts
                try:
                    seconds, tokens = run_once(config, requests)
                finally:
                    for p in procs:
                        p.terminate()
                        p.join()
                run = {
                    "threads": threads,
                    "poll": poll,
                    "load": load,
                    "rep": rep,
                    "tokens": tokens,
                    "seconds": round(seconds, 1),
                    "tokens_per_s": round(tokens / seconds, 1),
                }
                runs.append(run)
                print(
                    f"| {threads} | {poll} | {load} | {rep + 1} | {tokens} | {seconds:.1f} | "
                    f"{tokens / seconds:.1f} |",
                    flush=True,
                )
    medians: dict[str, dict[str, float]] = {}
    for threads, poll in settings:
        key = f"{threads}:{poll}"
        medians[key] = {
            load: statistics.median(
                r["tokens_per_s"]
                for r in runs
                if (r["threads"], r["poll"], r["load"]) == (threads, poll, load)
            )
            for load in ("quiet", "loaded")
        }
    print("\n| threads:poll | quiet tokens/s (median) | loaded tokens/s (median) | loaded / quiet |")
    print("|---|---|---|---|")
    for key, m in medians.items():
        print(f"| {key} | {m['quiet']:.1f} | {m['loaded']:.1f} | {m['loaded'] / m['quiet']:.2f} |")
    best_quiet = max(m["quiet"] for m in medians.values())
    eligible = {k: m for k, m in medians.items() if m["quiet"] >= 0.9 * best_quiet}
    pick = max(eligible, key=lambda k: eligible[k]["loaded"])
    figures = {"runs": runs, "medians": medians, "pick": pick, "cpus": os.cpu_count()}
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    print(f"pick = {pick} (threads:poll; best loaded among those within 10% of the best quiet)")
    return figures


if __name__ == "__main__":
    main()
