"""Step 2 — the Extender lengthens each kept answer in two stages, over micro-iterations.

One micro-step on the current text T:
  1. split T into paragraphs; "former" = the first half;
  2. stage 1: the extend prompt with `former` as the outline; keep the first 2/3 of the output's
     paragraphs (its tail is often a hurried ending);
  3. stage 2: the extend prompt with the WHOLE T as the outline, the assistant turn pre-filled
     with the kept stage-1 text; result = prefill + continuation;
  4. accept the result if it passes the checks and is longer than the best so far; it becomes T.
After the micro-steps a job is kept only if its best text is longer than `min_ratio` x the
answer; otherwise the job is retried. Every step is recorded so both stages can be audited.
"""

from __future__ import annotations

from collections.abc import Iterator

from selflengthen.engines.base import Request, aborted_result
from selflengthen.prompts import template
from selflengthen.records import KEPT, PASSED, Extension, ExtensionStep
from selflengthen.stages.common import RoundContext, run_items, token_fields
from selflengthen.stages.select import finalize_with_selection
from selflengthen.store import read_jsonl
from selflengthen.text.checks import check_text
from selflengthen.text.paragraphs import former_half, join_paragraphs, keep_leading_fraction, split_paragraphs
from selflengthen.text.words import count_words, detect_language

NOT_LONGER = "not_longer"  # a clean micro-step result that did not beat the best so far
TOO_SHORT = "too_short"  # the job's best text stayed under min_ratio x the answer


def extend_messages(query: str, outline: str) -> list[dict[str, str]]:
    language = detect_language(query)
    return [
        {"role": "user", "content": template("extend_user", language).format(query=query, outline=outline)}
    ]


def stage2_prefill(stage1_kept: str) -> str:
    """The assistant pre-fill for stage 2: the kept stage-1 paragraphs, ending on a paragraph
    break so the model starts a new paragraph rather than finishing a sentence of ours."""
    return stage1_kept + "\n\n" if stage1_kept else ""


async def micro_step(ctx: RoundContext, query: str, current: str, best_words: int, rng) -> dict:
    """One two-stage extension of `current`. Returns the step's record.

    With early abort, stage 1 stops once a repeat lies in paragraphs it will certainly keep, and
    stage 2 is not sent when its prefill already repeats: the stage-2 result (prefill +
    continuation) would fail the same check. Both stages' seeds are drawn either way, so every
    later request is the one the full run sends."""
    cfg = ctx.config.extend
    former = join_paragraphs(former_half(split_paragraphs(current)))
    stage1 = await ctx.engine.generate(
        Request(
            extend_messages(query, former),
            ctx.extend_sampling(rng),
            adapter=ctx.extender,
            tag="stage1",
            abort=ctx.abort_rule(keep_fraction=cfg.stage1_keep),
        )
    )
    kept = join_paragraphs(keep_leading_fraction(split_paragraphs(stage1.text), cfg.stage1_keep))
    prefill = stage2_prefill(kept)
    request = Request(
        extend_messages(query, current),
        ctx.extend_sampling(rng),
        prefill=prefill,
        adapter=ctx.extender,
        tag="stage2",
        abort=ctx.abort_rule(),
    )
    monitor = request.monitor()
    if monitor is not None and monitor.reason is not None:  # includes an aborted stage 1
        stage2 = aborted_result("", monitor.reason, max_tokens=request.params.max_tokens, model=stage1.model)
    else:
        stage2 = await ctx.engine.generate(request)
    result = prefill + stage2.text
    words = count_words(result)
    reason = check_text(result, stage2.finish_reason, ctx.checks)
    if reason is None and words <= best_words:
        reason = NOT_LONGER
    return ExtensionStep(
        former=former,
        stage1_output=stage1.text,
        stage1_kept=prefill,
        continuation=stage2.text,
        result=result,
        words=words,
        finish_reason=stage2.finish_reason,
        accepted=reason is None,
        reason=reason,
        **token_fields(stage1, stage2),
    ).to_json()


async def extend_answer(ctx: RoundContext, extension_id: str, answer: dict) -> dict:
    cfg = ctx.config.extend
    rng = ctx.rng("extend", extension_id)
    attempts: list[dict] = []
    goal = cfg.min_ratio * answer["words"]
    for _ in range(cfg.retries):
        best, best_words, steps = answer["text"], answer["words"], []
        for _ in range(cfg.micro_iterations):
            step = await micro_step(ctx, answer["query"], best, best_words, rng)
            steps.append(step)
            if step["accepted"]:
                best, best_words = step["result"], step["words"]
        if best_words > goal:
            reason = None
            break
        accepted_any = any(s["accepted"] for s in steps)
        reason = TOO_SHORT if accepted_any else steps[-1]["reason"]
        attempts.append(
            {
                "reason": reason,
                "words": best_words,
                "step_reasons": [s["reason"] for s in steps],
                "step_tokens": [s["tokens"] for s in steps],
                "tokens_saved": sum(s.get("tokens_saved", 0) for s in steps),
            }
        )
    return Extension(
        id=extension_id,
        answer_id=answer["id"],
        instruction_id=answer["instruction_id"],
        query=answer["query"],
        text=best,
        words=best_words,
        answer_words=answer["words"],
        ratio=round(best_words / max(answer["words"], 1), 3),
        verdict=PASSED if reason is None else reason,
        model=ctx.extender or "base",
        steps=[ExtensionStep.from_json(s) for s in steps],
        attempts=attempts,
    ).to_json()


def _kept_answers(ctx: RoundContext) -> Iterator[dict]:
    return (row for row in read_jsonl(ctx.rd.answers) if row.get("verdict") == KEPT)


async def run_extend(ctx: RoundContext) -> int:
    """Extend every kept answer of the round into the partial file, then select.

    The answers file is streamed (read once to count, once lazily while the jobs run): only the
    answers in flight are in memory, never all of them."""
    n = ctx.config.extend.jobs_per_answer
    total = n * sum(1 for _ in _kept_answers(ctx))
    items = ((f"{a['id']}-e{j}", a) for a in _kept_answers(ctx) for j in range(n))
    return await run_items(
        items,
        lambda ext_id, a: extend_answer(ctx, ext_id, a),
        ctx.rd.partial("extensions"),
        max_in_flight=ctx.max_in_flight,
        progress=ctx.progress,
        description=f"round {ctx.round} · extend",
        total=total,
    )


def finish_extend(ctx: RoundContext) -> dict[str, int]:
    return finalize_with_selection(
        ctx.rd.partial("extensions"),
        ctx.rd.extensions,
        enabled=ctx.config.select.length_biased,
        seed=ctx.rng("select-extensions").randrange(2**63),
    )
