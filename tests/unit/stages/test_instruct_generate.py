"""Step 0 and Step 1 with a scripted engine: what is sent, what is kept, what is recorded."""

from __future__ import annotations

from selflengthen.engines.base import Result
from selflengthen.prompts import Seed
from selflengthen.stages.generate import answer_instruction, finish_generate, run_generate
from selflengthen.stages.instruct import run_instruct
from selflengthen.store import read_jsonl
from tests.unit.stages.conftest import run

SEEDS = [
    Seed(f"s{i}", "en", "creative_writing", f"Write a long essay about topic number {i} and its many sides.")
    for i in range(5)
]


def instruct_script(outputs):
    """Self-instruct requests get the next scripted instruction; judge requests say yes."""
    it = iter(outputs)

    def script(request):
        if request.prefill.startswith("Instruction 1:"):
            return next(it)
        return "Yes."

    return script


def test_instruct_keeps_judged_unique_instructions(ctx_factory):
    outputs = [
        " Write a detailed travel guide to the coastal villages of Portugal for families.\nInstruction 4: x",
        " Write a detailed travel guide to the coastal villages of Portugal for families.",  # duplicate
        " Hi",  # too few words
        " Compose a comprehensive report on urban beekeeping practices in northern Europe.",
    ]
    ctx = ctx_factory(
        instruct_script(outputs), ["instruct.count=2", "instruct.retries=5", "engine.max_in_flight=1"]
    )
    ran = run(run_instruct(ctx, SEEDS, []))
    rows = list(read_jsonl(ctx.rd.instructions))
    assert ran == 2 and [r["verdict"] for r in rows] == ["kept", "kept"]
    assert rows[0]["text"].startswith("Write a detailed travel guide")
    assert [a["reason"] for a in rows[1]["attempts"]] == ["duplicate", "too_few_words"]
    prefill_requests = [r for r in ctx.engine.history if r.prefill]
    assert all(r.adapter is None for r in ctx.engine.history)  # Step 0 always uses the base model
    assert all(r.prefill.endswith("Instruction 3:") for r in prefill_requests)
    # resume: nothing is redone
    assert run(run_instruct(ctx, SEEDS, [])) == 0


def test_instruct_judge_no_is_recorded(ctx_factory):
    def script(request):
        if request.prefill:
            return " Write a long and careful history of the printing press in Europe."
        return "No, it is not."

    ctx = ctx_factory(script, ["instruct.count=1", "instruct.retries=3"])
    run(run_instruct(ctx, SEEDS, []))
    (row,) = read_jsonl(ctx.rd.instructions)
    assert row["verdict"] == "judge_no" and len(row["attempts"]) == 3


def test_generate_retries_until_checks_pass(ctx_factory):
    outputs = iter(
        [
            Result("An answer cut off in the middle of", "length"),
            Result("An answer without final punctuation", "stop"),
            Result("A complete answer. It ends well.", "stop"),
        ]
    )
    ctx = ctx_factory(lambda r: next(outputs), ["generate.retries=5"])
    rec = run(answer_instruction(ctx, "i1-a0", {"id": "i1", "text": "Write."}))
    assert rec["verdict"] == "passed" and rec["text"] == "A complete answer. It ends well."
    assert [a["reason"] for a in rec["attempts"]] == ["truncated", "no_final_punctuation"]
    assert rec["words"] == 6 and rec["instruction_id"] == "i1"


def test_generate_round_uses_generator_adapter_and_selects(ctx_factory):
    ctx = ctx_factory(
        lambda r: "Word " * (len(r.messages[0]["content"]) % 7 + 3) + "end.",
        ["generate.samples_per_instruction=2"],
        k=2,
        roles={"generator"},
    )
    ctx.rd.path.mkdir(parents=True)
    import json

    ctx.rd.instructions.write_text(
        "".join(
            json.dumps(
                {"id": f"i{i}", "text": "Write " + "x" * i, "verdict": "kept" if i != 3 else "judge_no"}
            )
            + "\n"
            for i in range(10)
        )
    )
    assert run(run_generate(ctx)) == 18
    assert {r.adapter for r in ctx.engine.history} == {"generator"}
    counts = finish_generate(ctx)
    rows = list(read_jsonl(ctx.rd.answers))
    assert len(rows) == 18 and len({r["id"] for r in rows}) == 18
    assert counts["kept"] + counts["length_biased_sampling"] == 18
    assert all(r["model"] == "generator" for r in rows)


def test_generate_streams_instructions_and_resumes(ctx_factory, monkeypatch):
    """run_generate reads the instructions lazily (never a list of all of them) and a rerun after
    a partial run answers only what is missing."""
    import json

    import selflengthen.stages.generate as generate

    ctx = ctx_factory(
        lambda r: "A fine answer.", ["generate.samples_per_instruction=2", "engine.max_in_flight=2"]
    )
    ctx.rd.path.mkdir(parents=True)
    ctx.rd.instructions.write_text(
        "".join(
            json.dumps({"id": f"i{i}", "text": f"Write {i}.", "verdict": "kept"}) + "\n" for i in range(6)
        )
    )
    read = []
    real = generate.read_jsonl

    def counting(path, **kw):
        for row in real(path, **kw):
            read.append(row["id"])
            yield row

    monkeypatch.setattr(generate, "read_jsonl", counting)
    seen_when_first_answered = []

    async def first_answer(ctx_, answer_id, instruction):
        seen_when_first_answered.append(len(read))
        return {"id": answer_id, "instruction_id": instruction["id"], "verdict": "passed", "words": 3}

    monkeypatch.setattr(generate, "answer_instruction", first_answer)
    assert run(generate.run_generate(ctx)) == 12
    assert seen_when_first_answered[0] <= 6 + 2  # count pass + the 1-2 instructions of the first items
    rows = list(read_jsonl(ctx.rd.partial("answers")))
    ctx.rd.partial("answers").write_text("".join(json.dumps(r) + "\n" for r in rows[:5]))
    assert run(generate.run_generate(ctx)) == 7
    assert sorted(r["id"] for r in read_jsonl(ctx.rd.partial("answers"))) == sorted(
        f"i{i}-a{j}" for i in range(6) for j in range(2)
    )
