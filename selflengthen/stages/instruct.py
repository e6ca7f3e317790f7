"""Step 0 — self-instruct: the base model writes new long-writing instructions.

For each slot: show the model two instructions from the pool as "Instruction 1/2" in a
pre-filled assistant turn and let it write "Instruction 3"; keep it only if it has more than
`min_words` and fewer than `max_words` words, is no (near) duplicate of anything seen, and the
base model's yes/no judge says it suits a long article. Up to `retries` attempts per slot;
every rejected attempt is recorded with its reason.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from selflengthen.engines.base import Request
from selflengthen.prompts import Seed, parse_self_instruct, parse_yes_no, template
from selflengthen.records import KEPT, Instruction
from selflengthen.stages.common import RoundContext, run_items
from selflengthen.store import read_jsonl
from selflengthen.text.dedup import Deduplicator
from selflengthen.text.words import count_words

# Reasons an attempt was rejected (stable codes, counted in summary.json).
EMPTY, TOO_SHORT, TOO_LONG, TRUNCATED = "empty", "too_few_words", "too_many_words", "truncated"
JUDGE_NO, JUDGE_UNCLEAR = "judge_no", "judge_unclear"


def _was_cut(raw: str, parsed: str) -> bool:
    """Whether parsing cut the output before its end (a next item followed instruction 3)."""
    return len(parsed) < len(" ".join(raw.split()).strip(":： ")) - 1


@dataclass
class Pool:
    """In-context examples by language; accepted instructions join it if configured."""

    by_language: dict[str, list[tuple[str, str]]]  # language -> [(id, text)]

    @classmethod
    def from_seeds(cls, seeds: Sequence[Seed], languages: Sequence[str]) -> Pool:
        by: dict[str, list[tuple[str, str]]] = {}
        for s in seeds:
            if s.language in languages:
                by.setdefault(s.language, []).append((s.id, s.instruction))
        return cls(by)

    def add(self, language: str, item_id: str, text: str) -> None:
        self.by_language.setdefault(language, []).append((item_id, text))


async def make_instruction(ctx: RoundContext, slot_id: str, pool: Pool, dedup: Deduplicator) -> dict:
    cfg = ctx.config.instruct
    rng = ctx.rng("instruct", slot_id)
    attempts: list[dict] = []
    languages = sorted(lang for lang, items in pool.by_language.items() if len(items) >= 2)
    text, language = "", "en"
    for _ in range(cfg.retries):
        language = rng.choice(languages)
        (id_a, first), (id_b, second) = rng.sample(pool.by_language[language], 2)
        prefill = template("self_instruct_prefill", language).format(first=first, second=second)
        marker = template("self_instruct_stop", language)
        # Small models write "Instructions 4:" too; both end our item.
        stop = list(dict.fromkeys([marker, marker.replace("Instruction", "Instructions"), "\n\n\n"]))
        request = Request(
            messages=[{"role": "user", "content": template("self_instruct_user", language)}],
            params=ctx.sampling(rng, max_tokens=cfg.max_tokens, stop=stop),
            prefill=prefill,
            adapter=None,  # Step 0 always uses the base model
            tag=slot_id,
        )
        result = await ctx.engine.generate(request)
        text = parse_self_instruct(result.text, language)
        words = count_words(text)
        reason = None
        if not text:
            reason = EMPTY
        elif result.finish_reason == "length" and not _was_cut(result.text, text):
            reason = TRUNCATED  # ran out of tokens inside instruction 3 itself
        elif words <= cfg.min_words:
            reason = TOO_SHORT
        elif words >= cfg.max_words:
            reason = TOO_LONG
        else:
            reason = dedup.find(text)
        judge_text = ""
        if reason is None:
            judge = await ctx.engine.generate(
                Request(
                    messages=[
                        {"role": "user", "content": template("judge_user", language).format(instruction=text)}
                    ],
                    params=ctx.sampling(rng, max_tokens=cfg.judge_max_tokens, stop=[]),
                    adapter=None,
                    tag=slot_id,
                )
            )
            judge_text = judge.text
            verdict = parse_yes_no(judge.text)
            reason = JUDGE_NO if verdict is False else JUDGE_UNCLEAR if verdict is None else None
            # Re-check after the judge's await: another slot may have accepted a twin meanwhile.
            reason = reason or dedup.find(text)
        if reason is None:
            dedup.add(text)
            if cfg.pool_includes_accepted:
                pool.add(language, slot_id, text)
            return Instruction(
                id=slot_id,
                text=text,
                language=language,
                words=words,
                verdict=KEPT,
                model="base",
                examples=[id_a, id_b],
                judge=judge_text,
                attempts=attempts,
            ).to_json()
        attempts.append({"text": text, "reason": reason, "judge": judge_text})
    return Instruction(
        id=slot_id,
        text=text,
        language=language,
        words=count_words(text),
        verdict=attempts[-1]["reason"],
        model="base",
        attempts=attempts,
    ).to_json()


def slot_ids(k: int, count: int) -> list[str]:
    return [f"r{k}-ins-{i:05d}" for i in range(count)]


async def run_instruct(ctx: RoundContext, seeds: Sequence[Seed], previous_instructions: Sequence[str]) -> int:
    """Fill `round-K/instructions.jsonl` with `instruct.count` slots (resuming where it stopped)."""
    cfg = ctx.config.instruct
    pool = Pool.from_seeds(seeds, ctx.config.seed_languages)
    if not any(len(v) >= 2 for v in pool.by_language.values()):
        from selflengthen.errors import DataError

        raise DataError("self-instruct needs at least 2 seed instructions of one configured language")
    dedup = Deduplicator(cfg.near_duplicate_threshold)
    for s in seeds:
        dedup.add(s.instruction)
    for text in previous_instructions:
        dedup.add(text)
    for row in read_jsonl(ctx.rd.instructions, repair_tail=True):  # resume: what this round already kept
        if row.get("verdict") == KEPT:
            dedup.add(row["text"])
            if cfg.pool_includes_accepted:
                pool.add(row.get("language", "en"), row["id"], row["text"])
    ids = slot_ids(ctx.round, cfg.count)
    items: list[tuple[str, Seed | None]] = [(i, None) for i in ids]
    if cfg.answer_seeds:
        # One shuffle of the seeds for the whole run; round k answers its own slice, so no seed
        # is answered twice across rounds.
        usable = [s for s in seeds if s.language in ctx.config.seed_languages]
        random.Random(f"{ctx.config.seed}|answer-seeds").shuffle(usable)
        chosen = usable[(ctx.round - 1) * cfg.answer_seeds : ctx.round * cfg.answer_seeds]
        items = [(f"r{ctx.round}-seed-{s.id}", s) for s in chosen] + items

    async def work(slot_id: str, seed: Seed | None) -> dict:
        if seed is not None:  # a seed answered as is: no generation, no judge
            return Instruction(
                id=slot_id,
                text=seed.instruction,
                language=seed.language,
                words=count_words(seed.instruction),
                verdict=KEPT,
                model="seed",
            ).to_json()
        return await make_instruction(ctx, slot_id, pool, dedup)

    return await run_items(
        items,
        work,
        ctx.rd.instructions,
        max_in_flight=ctx.max_in_flight,
        progress=ctx.progress,
        description=f"round {ctx.round} · instruct",
        total=len(items),
    )
