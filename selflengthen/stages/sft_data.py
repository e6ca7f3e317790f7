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
from collections.abc import Iterator

from selflengthen.records import KEPT, SftExample
from selflengthen.stages.common import RoundContext
from selflengthen.stages.extend import extend_messages
from selflengthen.store import atomic_write_jsonl_split, read_jsonl, read_jsonl_at, read_jsonl_offsets


def drop_lines(text: str, p: float, rng: random.Random) -> str:
    """Drop each line with probability p (blank lines too, so paragraph breaks thin out alike)."""
    return "\n".join(line for line in text.split("\n") if rng.random() >= p)


def sft_rows(ctx: RoundContext) -> Iterator[tuple[dict, dict]]:
    """Yield (generator_row, extender_row) per kept extension, streaming.

    The Extender's row needs the initial answer's text: rather than every kept answer's text, only
    the byte offset of its line in answers.jsonl is kept, and the line is read back when needed."""
    offsets = {r["id"]: at for at, r in read_jsonl_offsets(ctx.rd.answers) if r.get("verdict") == KEPT}
    p = ctx.config.sft.line_dropout
    if not offsets:  # no kept answer: no kept extension either
        return
    with open(ctx.rd.answers, "rb") as answers:
        for ext in read_jsonl(ctx.rd.extensions):
            if ext.get("verdict") != KEPT:
                continue
            completion = [{"role": "assistant", "content": ext["text"]}]
            rng = ctx.rng("dropout", ext["id"])
            outline = drop_lines(read_jsonl_at(answers, offsets[ext["answer_id"]])["text"], p, rng)
            query = ext["query"]
            yield (
                SftExample(ext["id"], [{"role": "user", "content": query}], completion).to_json(),
                SftExample(ext["id"], extend_messages(query, outline), completion).to_json(),
            )


def build_sft_data(ctx: RoundContext) -> dict[str, int]:
    """Write both roles' SFT files in one streamed pass (each file atomically)."""
    n = atomic_write_jsonl_split([ctx.rd.sft("generator"), ctx.rd.sft("extender")], sft_rows(ctx))
    return {"generator": n, "extender": n}
