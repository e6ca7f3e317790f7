"""Step 2 exactly: the halving, the 2/3 cut, the prefill join, acceptance and the 1.2 x rule."""

from __future__ import annotations

from selflengthen.engines.base import Result
from selflengthen.stages.extend import extend_answer, micro_step, stage2_prefill
from selflengthen.text.words import count_words
from tests.unit.stages.conftest import run

ANSWER = "Para one is here.\n\nPara two is here.\n\nPara three is here.\n\nPara four is here."
ANSWER_REC = {
    "id": "a1",
    "instruction_id": "i1",
    "query": "Write about paragraphs.",
    "text": ANSWER,
    "words": count_words(ANSWER),
}

STAGE1 = "Alpha detail one.\n\nBeta detail two.\n\nGamma detail three.\n\nDelta hurried end."
CONT = " More text follows here with many new words added to lengthen the piece a lot indeed."


def scripted(stage1=STAGE1, cont=CONT, finish="stop"):
    def script(request):
        if request.prefill:  # stage 2 is the only request with a prefill here
            return Result(text=cont, finish_reason=finish)
        return stage1

    return script


def test_micro_step_halves_cuts_and_joins(ctx_factory):
    ctx = ctx_factory(scripted())
    step = run(micro_step(ctx, ANSWER_REC["query"], ANSWER, ANSWER_REC["words"], ctx.rng("t")))
    history = ctx.engine.history
    # stage 1 sees only the first floor(4/2) = 2 paragraphs as the outline
    assert step["former"] == "Para one is here.\n\nPara two is here."
    assert "Para one is here.\n\nPara two is here." in history[0].messages[0]["content"]
    assert "Para three" not in history[0].messages[0]["content"]
    # first floor(2/3 * 4) = 2 of stage 1's paragraphs are kept, ending on a paragraph break
    assert step["stage1_kept"] == "Alpha detail one.\n\nBeta detail two.\n\n"
    # stage 2 gets the WHOLE text as the outline and the kept text as the prefill
    assert ANSWER in history[1].messages[0]["content"]
    assert history[1].prefill == step["stage1_kept"]
    assert step["result"] == step["stage1_kept"] + CONT
    assert step["continuation"] == CONT
    assert step["accepted"] is True and step["reason"] is None


def test_stage2_prefill_empty_when_nothing_kept():
    assert stage2_prefill("") == ""
    assert stage2_prefill("A.") == "A.\n\n"


def test_micro_step_rejects_truncated_and_not_longer(ctx_factory):
    ctx = ctx_factory(scripted(finish="length"))
    step = run(micro_step(ctx, "q", ANSWER, ANSWER_REC["words"], ctx.rng("t")))
    assert step["accepted"] is False and step["reason"] == "truncated"
    ctx = ctx_factory(scripted(stage1="Short.", cont="Tiny end."))
    step = run(micro_step(ctx, "q", ANSWER, 1000, ctx.rng("t")))
    assert step["accepted"] is False and step["reason"] == "not_longer"


def test_extension_kept_only_above_min_ratio(ctx_factory):
    # 1 micro-step: result words = 6 (kept stage 1) + len(CONT words)
    ctx = ctx_factory(scripted(), ["extend.micro_iterations=1", "extend.retries=3"])
    rec = run(extend_answer(ctx, "a1-e0", ANSWER_REC))
    assert rec["verdict"] == "passed"
    assert rec["words"] > 1.2 * ANSWER_REC["words"]
    assert rec["answer_id"] == "a1" and len(rec["steps"]) == 1 and rec["attempts"] == []
    step = rec["steps"][0]
    assert step["result"] == step["stage1_kept"] + step["continuation"]
    assert rec["text"] == step["result"]


def test_extension_below_ratio_is_retried_then_dropped(ctx_factory):
    # the result is longer (accepted) but not 1.2 x longer: every attempt fails with too_short
    answer_words = ANSWER_REC["words"]
    assert answer_words == 16
    stage1 = "Aa bb cc dd.\n\nEe ff gg hh.\n\nIi jj kk ll."  # 2 of 3 paragraphs kept: 8 words
    cont = "One two three four five six seven eight nine ten."  # result: 18 words, in (16, 19.2]
    ctx = ctx_factory(scripted(stage1=stage1, cont=cont), ["extend.micro_iterations=1", "extend.retries=3"])
    rec = run(extend_answer(ctx, "a1-e0", ANSWER_REC))
    assert rec["words"] == 18
    assert rec["verdict"] == "too_short"
    assert all(s["accepted"] for s in rec["steps"])
    assert len(rec["attempts"]) == 3
    assert len(ctx.engine.history) == 3 * 2  # two stages per attempt


def test_micro_steps_build_on_the_accepted_text(ctx_factory):
    ctx = ctx_factory(scripted(), ["extend.micro_iterations=2", "extend.min_ratio=1.0"])
    rec = run(extend_answer(ctx, "a1-e0", ANSWER_REC))
    first, second = rec["steps"]
    assert first["accepted"]
    # the second step's stage 2 outline is the first step's result
    assert first["result"] in ctx.engine.history[3].messages[0]["content"]
    assert second["former"] != first["former"]


def test_extender_adapter_used_after_round_one(ctx_factory):
    ctx = ctx_factory(scripted(), ["extend.micro_iterations=1"], k=2, roles={"extender"})
    run(extend_answer(ctx, "a1-e0", ANSWER_REC))
    assert {r.adapter for r in ctx.engine.history} == {"extender"}
    ctx = ctx_factory(scripted(), ["extend.micro_iterations=1"])
    run(extend_answer(ctx, "a1-e0", ANSWER_REC))
    assert {r.adapter for r in ctx.engine.history} == {None}


def test_extender_budget_is_the_rounds_times_the_factor(ctx_factory):
    overrides = ["extend.micro_iterations=1", "sampling.max_tokens=400", "sampling.max_tokens_growth=1.5"]
    ctx = ctx_factory(scripted(), [*overrides, "extend.max_tokens_factor=1.5"], k=2, roles={"extender"})
    run(extend_answer(ctx, "a1-e0", ANSWER_REC))
    assert {r.params.max_tokens for r in ctx.engine.history} == {900}  # 400 x 1.5 (round 2) x 1.5
    ctx = ctx_factory(scripted(), overrides)
    run(extend_answer(ctx, "a1-e0", ANSWER_REC))
    assert {r.params.max_tokens for r in ctx.engine.history} == {400}  # factor 1: the paper's
