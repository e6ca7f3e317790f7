"""Step 1 — the Generator answers each instruction.

`samples_per_instruction` answers per kept instruction, from the base model in round 1 and
from round k-1's Generator adapter afterwards. Each answer must pass the checks (sentence-final
punctuation, no repeated n-gram, no meta words, not truncated); up to `retries` attempts,
each failure recorded with its reason. Then length-biased sampling picks the answers the
Extender will work on.
"""

from __future__ import annotations

from collections.abc import Iterator

from selflengthen.engines.base import Request
from selflengthen.records import KEPT, PASSED, Answer
from selflengthen.stages.common import RoundContext, run_items, token_fields
from selflengthen.stages.select import finalize_with_selection
from selflengthen.store import read_jsonl
from selflengthen.text.checks import check_text
from selflengthen.text.words import count_words


async def answer_instruction(ctx: RoundContext, answer_id: str, instruction: dict) -> dict:
    rng = ctx.rng("generate", answer_id)
    attempts: list[dict] = []
    text, finish, tokens = "", "", {}
    for _ in range(ctx.config.generate.retries):
        result = await ctx.engine.generate(
            Request(
                messages=[{"role": "user", "content": instruction["text"]}],
                params=ctx.sampling(rng),
                adapter=ctx.generator,
                tag=answer_id,
                abort=ctx.abort_rule(),
            )
        )
        text, finish, tokens = result.text.strip(), result.finish_reason, token_fields(result)
        reason = check_text(text, finish, ctx.checks)
        if reason is None:
            break
        attempts.append({"reason": reason, "words": count_words(text), "finish_reason": finish, **tokens})
    return Answer(
        id=answer_id,
        instruction_id=instruction["id"],
        query=instruction["text"],
        text=text,
        words=count_words(text),
        finish_reason=finish,
        verdict=PASSED if reason is None else reason,
        model=ctx.generator or "base",
        tokens=tokens["tokens"],
        tokens_saved=tokens.get("tokens_saved"),
        attempts=attempts,
    ).to_json()


def _kept_instructions(ctx: RoundContext) -> Iterator[dict]:
    return (row for row in read_jsonl(ctx.rd.instructions) if row.get("verdict") == KEPT)


async def run_generate(ctx: RoundContext) -> int:
    """Answer every kept instruction of the round into the partial file, then select.

    The instructions file is streamed (read once to count, once lazily while the items run), so
    memory does not grow with the number of instructions."""
    n = ctx.config.generate.samples_per_instruction
    total = n * sum(1 for _ in _kept_instructions(ctx))
    items = ((f"{ins['id']}-a{j}", ins) for ins in _kept_instructions(ctx) for j in range(n))
    return await run_items(
        items,
        lambda answer_id, ins: answer_instruction(ctx, answer_id, ins),
        ctx.rd.partial("answers"),
        max_in_flight=ctx.max_in_flight,
        progress=ctx.progress,
        description=f"round {ctx.round} · generate",
        total=total,
    )


def finish_generate(ctx: RoundContext) -> dict[str, int]:
    return finalize_with_selection(
        ctx.rd.partial("answers"),
        ctx.rd.answers,
        enabled=ctx.config.select.length_biased,
        seed=ctx.rng("select-answers").randrange(2**63),
    )
