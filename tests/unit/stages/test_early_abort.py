"""Early abort keeps exactly what the full run keeps, with the same verdicts; only fewer tokens.

A scripted engine answers from fixed texts chosen by each request's seed (both runs draw the same
seeds), so the run with early abort and the run without see the same texts, cut or whole.
"""

from __future__ import annotations

import asyncio
import json

from selflengthen.engines.base import Result
from selflengthen.stages.extend import finish_extend, run_extend
from selflengthen.stages.generate import finish_generate, run_generate
from selflengthen.store import read_jsonl
from selflengthen.summary import round_summary
from tests.unit.stages.conftest import make_ctx


def words(tag: str, n: int) -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


LOOP = "the same phrase comes back again and again in this text without end"


def answer(seed: int) -> Result:
    kind = seed % 5
    body = "\n\n".join(f"{words(f'a{seed}{part}', 30)}." for part in "xyzw")
    if kind == 0:
        return Result(body + " " + " ".join([LOOP] * 12), "length", completion_tokens=280)
    if kind == 1:
        return Result(body + " " + " ".join([LOOP] * 4) + " and then", "stop", completion_tokens=180)
    if kind == 2:
        return Result(body + " and no end", "stop", completion_tokens=123)
    return Result(body, "stop", completion_tokens=120)


def stage1(seed: int) -> Result:
    kind = seed % 4
    paras = [words(f"s{seed}p{i}_", 15) + "." for i in range(6)]
    if kind == 0:  # a loop in paragraph 2: inside the kept 2/3
        paras[1] += " " + " ".join([LOOP] * 3)
    elif kind == 1:  # a loop only in the tail the Extender cuts
        paras[5] += " " + " ".join([LOOP] * 3)
    text = "\n\n".join(paras)
    return Result(text, "stop", completion_tokens=len(text.split()))


def stage2(seed: int) -> Result:
    kind = seed % 3
    if kind == 0:
        return Result(words(f"c{seed}_", 40) + " " + " ".join([LOOP] * 10), "length", completion_tokens=200)
    text = words(f"c{seed}_", 120) + ("." if kind == 1 else "")
    return Result(text, "stop", completion_tokens=len(text.split()))


def script(request):
    seed = request.params.seed
    if request.tag == "stage1":
        return stage1(seed)
    if request.tag == "stage2":
        return stage2(seed)
    return answer(seed)


def run_round(tmp_path, early_abort: bool):
    overrides = [
        f"checks.early_abort={str(early_abort).lower()}",
        "checks.meta_words=[]",
        "generate.samples_per_instruction=2",
        "generate.retries=3",
        "extend.jobs_per_answer=2",
        "extend.micro_iterations=2",
        "extend.retries=3",
        "engine.max_in_flight=5",
    ]
    ctx = make_ctx(tmp_path, script, overrides)
    ctx.rd.path.mkdir(parents=True)
    ctx.rd.work.mkdir(parents=True, exist_ok=True)
    with open(ctx.rd.instructions, "w") as f:
        for i in range(12):
            f.write(json.dumps({"id": f"r1-i{i}", "text": f"Write essay {i}.", "verdict": "kept"}) + "\n")
    asyncio.run(run_generate(ctx))
    finish_generate(ctx)
    asyncio.run(run_extend(ctx))
    finish_extend(ctx)
    answers = sorted(read_jsonl(ctx.rd.answers), key=lambda r: r["id"])
    extensions = sorted(read_jsonl(ctx.rd.extensions), key=lambda r: r["id"])
    return ctx, answers, extensions


def verdicts(answers, extensions):
    a = [
        (
            r["id"],
            r["verdict"],
            [t["reason"] for t in r["attempts"]],
            r["text"] if r["verdict"] == "kept" else None,
        )
        for r in answers
    ]
    e = [
        (
            r["id"],
            r["verdict"],
            [(t["reason"], t["step_reasons"]) for t in r["attempts"]],
            [s["reason"] for s in r["steps"]],
            r["text"] if r["verdict"] == "kept" else None,
        )
        for r in extensions
    ]
    return a, e


def test_a_round_with_early_abort_keeps_the_same_items_with_the_same_verdicts(tmp_path):
    ctx_full, answers_full, ext_full = run_round(tmp_path / "full", early_abort=False)
    ctx_abort, answers_abort, ext_abort = run_round(tmp_path / "abort", early_abort=True)
    assert verdicts(answers_abort, ext_abort) == verdicts(answers_full, ext_full)
    # not vacuous: items were kept and rejected, for repeats among other reasons
    kept = [e for e in ext_full if e["verdict"] == "kept"]
    assert kept and len(kept) < len(ext_full)
    reasons = {t["reason"] for r in answers_full for t in r["attempts"]}
    assert {"repeated_ngram", "no_final_punctuation"} <= reasons
    # early abort ended generations and skipped stage-2 requests the full run sent
    engine_abort, engine_full = ctx_abort.engine, ctx_full.engine
    assert len(engine_abort.history) < len(engine_full.history)
    assert any(s["finish_reason"] == "aborted" and s["stage1_output"] for e in ext_abort for s in e["steps"])
    # the same items, fewer tokens: in the records and in the round summary
    full = round_summary(ctx_full.rd, {}, {})
    abort = round_summary(ctx_abort.rd, {}, {})
    for stage in ("answers", "extensions"):
        assert abort[stage]["kept"] == full[stage]["kept"]
        assert abort[stage]["rejections"] == full[stage]["rejections"]
        assert abort[stage]["tokens"]["kept"] == full[stage]["tokens"]["kept"]  # kept texts are whole
        assert sum(abort[stage]["tokens"]["rejected"].values()) < sum(
            full[stage]["tokens"]["rejected"].values()
        )
        assert abort[stage]["tokens"]["saved_at_most"] > 0 and full[stage]["tokens"]["saved_at_most"] == 0
    assert set(abort["answers"]["tokens"]["rejected"]) <= {
        "repeated_ngram",
        "no_final_punctuation",
        "truncated",
        "length_biased_sampling",
    }
