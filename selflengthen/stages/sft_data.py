"""SFT data for round k, from that round's kept extensions only.

Generator: prompt = the query, completion = the extended answer.
Extender:  prompt = the extend prompt with the initial answer as the outline, each of its lines
           dropped with probability `line_dropout` (so the Extender learns to add, not to copy),
           completion = the extended answer.
Rows are TRL's conversational prompt-completion format, so training renders them with the same
chat template generation uses.
"""

from __future__ import annotations

import random

from selflengthen.stages.common import RoundContext
from selflengthen.stages.extend import extend_messages
from selflengthen.store import atomic_write_jsonl, read_jsonl


def drop_lines(text: str, p: float, rng: random.Random) -> str:
    """Drop each line with probability p (blank lines too, so paragraph breaks thin out alike)."""
    return "\n".join(line for line in text.split("\n") if rng.random() >= p)


def sft_rows(ctx: RoundContext):
    """Yield (generator_row, extender_row) per kept extension."""
    answers = {}
    for row in read_jsonl(ctx.rd.answers):
        if row.get("verdict") == "kept":
            answers[row["id"]] = row["text"]
    p = ctx.config.sft.line_dropout
    for ext in read_jsonl(ctx.rd.extensions):
        if ext.get("verdict") != "kept":
            continue
        completion = [{"role": "assistant", "content": ext["text"]}]
        rng = ctx.rng("dropout", ext["id"])
        outline = drop_lines(answers[ext["answer_id"]], p, rng)
        yield (
            {"id": ext["id"], "prompt": [{"role": "user", "content": ext["query"]}], "completion": completion},
            {"id": ext["id"], "prompt": extend_messages(ext["query"], outline), "completion": completion},
        )


def build_sft_data(ctx: RoundContext) -> dict[str, int]:
    pairs = list(sft_rows(ctx))
    return {
        "generator": atomic_write_jsonl(ctx.rd.sft("generator"), (g for g, _ in pairs)),
        "extender": atomic_write_jsonl(ctx.rd.sft("extender"), (e for _, e in pairs)),
    }
