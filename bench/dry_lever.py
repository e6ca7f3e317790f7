"""One lever of the micro reproduction, measured on the base model: DRY anti-loop decoding.

    python bench/dry_lever.py                      # 8 queries x 2 samples x {no DRY, DRY}, 1,400 new tokens
    python bench/dry_lever.py --queries 4 --samples 1 --max-tokens 600 --out runs/dry-lever-small

The embedded model, on a managed llama-server when one is installed (else the transformers engine
with our own DRY logits processor; the figures say which), answers the first N long-writing queries
of configs/micro/heldout.jsonl S times each with the paper's sampling: once without DRY, once with
it (multiplier 0.8, base 1.75, allowed length 2, last 4,096 tokens). The two arms' requests are
interleaved on one server, with the same seeds. Per arm: the share of answers with a repeated
10-word phrase (the paper's check), the share cut at the token limit, mean / median words, the
mean gzip compression ratio and its last-third / first-third ratio. Answers are written as they
finish to OUT/answers.jsonl (a rerun answers only what is missing); figures to OUT/figures.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
QUERIES = ROOT / "configs" / "micro" / "heldout.jsonl"
sys.path.insert(0, str(Path(__file__).parent))  # bench/ is a folder of scripts, not a package
from micro_figures import text_figures  # noqa: E402

DRY = {"multiplier": 0.8, "base": 1.75, "allowed_length": 2, "penalty_last_n": 4096}


def arm_figures(rows: list[dict]) -> dict:
    per = [text_figures(r) for r in rows]
    words = [p["words"] for p in per]
    tails = [p["tail_head"] for p in per if p["tail_head"] is not None]
    return {
        "n": len(rows),
        "repeated_10_word_phrase": sum(p["repeated_phrase"] for p in per),
        "cut_at_limit": sum(p["cut"] for p in per),
        "mean_words": round(statistics.mean(words), 1),
        "median_words": statistics.median(words),
        "gzip_ratio": round(statistics.mean(p["gzip_ratio"] for p in per), 3),
        "gzip_tail_head": round(statistics.mean(tails), 3) if tails else None,
    }


async def answer_all(engine, jobs: list[dict], out: Path, done: set) -> None:
    from selflengthen.engines.base import Request

    lock = asyncio.Lock()

    async def one(job):
        result = await engine.generate(
            Request([{"role": "user", "content": job["query"]}], job["params"], tag=job["key"])
        )
        row = {k: v for k, v in job.items() if k != "params"} | {
            "response": result.text,
            "finish_reason": result.finish_reason,
            "completion_tokens": result.completion_tokens,
        }
        async with lock:
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")

    await asyncio.gather(*(one(j) for j in jobs if j["key"] not in done))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=8)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=1400)
    ap.add_argument("--parallel", type=int, default=16, help="llama-server slots")
    ap.add_argument("--out", default="runs/dry-lever")
    args = ap.parse_args(argv)

    from selflengthen.config import load_config
    from selflengthen.engines import create_engine, resolve_auto
    from selflengthen.engines.base import SamplingParams

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    answers = out / "answers.jsonl"
    dry_set = [f"sampling.dry.{k}={v}" for k, v in DRY.items()]
    config = load_config(
        None,
        [
            "engine.kind=auto",
            f"engine.batch_size={args.parallel}",
            f"engine.server.parallel={args.parallel}",
            f"engine.server.n_ctx={args.max_tokens + 512}",
            *dry_set,
        ],
    )
    queries = [json.loads(line)["query"] for line in QUERIES.read_text().splitlines() if line.strip()][
        : args.queries
    ]
    jobs = []
    for s in range(args.samples):  # the arms alternate, so neither waits behind the other
        for i, q in enumerate(queries):
            for arm in ("no DRY", "DRY"):
                params = SamplingParams.from_config(
                    config.sampling, max_tokens=args.max_tokens, seed=1000 * s + i, dry=arm == "DRY"
                )
                jobs.append({"key": f"{arm}|{i}|{s}", "arm": arm, "query": q, "sample": s, "params": params})
    done = set()
    if answers.is_file():
        done = {json.loads(line)["key"] for line in answers.read_text().splitlines() if line.strip()}
    started = time.time()
    if any(j["key"] not in done for j in jobs):
        engine = create_engine(config.engine, config.model, run_dir=out)
        try:
            asyncio.run(answer_all(engine, jobs, answers, done))
        finally:
            engine.close()
    rows = [json.loads(line) for line in answers.read_text().splitlines() if line.strip()]
    figures = {
        "arms": {arm: arm_figures([r for r in rows if r["arm"] == arm]) for arm in ("no DRY", "DRY")},
        "dry": DRY,
        "queries": len(queries),
        "samples": args.samples,
        "max_tokens": args.max_tokens,
        "sampling": {
            k: getattr(config.sampling, k) for k in ("temperature", "top_p", "top_k", "repetition_penalty")
        },
        "engine": "llama-server"
        if resolve_auto(config.engine, config.model).kind == "openai"
        else "transformers",
        "minutes": round((time.time() - started) / 60, 1),
        "command": " ".join(["python bench/dry_lever.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    (out / "figures.json").write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures, indent=1))
    return figures


if __name__ == "__main__":
    main()
