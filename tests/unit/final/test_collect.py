"""Collect: kept answers and extensions of every round, word range, exact and near duplicates."""

import asyncio
import json

from selflengthen.config import Config, FinalConfig
from selflengthen.engines.fake import FakeEngine
from selflengthen.stages.collect import (
    DUPLICATE,
    NEAR_DUPLICATE,
    NearDuplicates,
    collect,
    extra_round_dir,
    generate_extra,
    latest_generator,
    round_numbers,
)

from .runfixture import make_run, read_jsonl, text_of

CFG = FinalConfig(min_words=200, max_words=2000)


def test_collect_counts_what_each_filter_removed(tmp_path):
    run = make_run(tmp_path)
    out = tmp_path / "collected.jsonl"
    stats = collect(run, out, CFG, stats_path=tmp_path / "stats.json")
    assert (
        stats["candidates"] == 24
    )  # 6 answers + 6 extensions in each of 2 rounds; dropped ones never collected
    assert stats["removed"] == {
        "empty": 0,
        "too_short": 1,
        "too_long": 1,
        "duplicate": 1,
        "near_duplicate": 1,
    }
    assert stats["kept"] == 20
    assert json.loads((tmp_path / "stats.json").read_text()) == stats
    rows = {r["id"]: r for r in read_jsonl(out)}
    assert len(rows) == 24
    assert rows["r1-a3"]["verdict"] == "too_short"
    assert rows["r2-a0-e0"]["verdict"] == "too_long"
    # Of twins, the earlier one is kept (equal lengths); of near twins, the longer one.
    assert rows["r1-a0"]["verdict"] == "kept" and rows["r2-a4"]["verdict"] == DUPLICATE
    assert rows["r1-a0-e0"]["verdict"] == "kept" and rows["r2-a3"]["verdict"] == NEAR_DUPLICATE
    assert stats["by_source"]["round-2/extensions"] == {"candidates": 6, "kept": 5}
    kept = [r for r in rows.values() if r["verdict"] == "kept"]
    assert all(200 <= r["words"] <= 2000 for r in kept)
    assert {r["language"] for r in kept} == {"en", "zh"}
    assert set(rows["r1-a0"]) >= {
        "id",
        "source",
        "kind",
        "query",
        "response",
        "words",
        "language",
        "model",
        "verdict",
    }


def test_word_range_is_configurable(tmp_path):
    run = make_run(tmp_path)
    stats = collect(run, tmp_path / "c.jsonl", FinalConfig(min_words=2000, max_words=8000))
    assert stats["kept"] == 1 and stats["removed"]["too_short"] == 23


def test_sampled_out_texts_only_on_request(tmp_path):
    run = make_run(tmp_path)
    stats = collect(
        run, tmp_path / "c.jsonl", FinalConfig(min_words=200, max_words=2000, include_sampled_out=True)
    )
    assert stats["candidates"] == 26


def test_near_duplicates_find_twins_but_not_strangers():
    dedup = NearDuplicates(0.7)
    base = text_of(800, 1)
    assert dedup.check(dedup.fingerprint(base)) is None
    tokens = base.split(" ")
    for i in range(0, 800, 100):  # 8 of 800 words changed: Jaccard of 5-grams ~0.9
        tokens[i] = "other"
    assert dedup.check(dedup.fingerprint(" ".join(tokens))) == NEAR_DUPLICATE
    assert dedup.check(dedup.fingerprint(base.upper())) == DUPLICATE  # normalized: case and punctuation
    strangers = [text_of(800, seed) for seed in range(2, 40)]
    assert all(dedup.check(dedup.fingerprint(t)) is None for t in strangers)
    half = base.split(" ")[:400] + text_of(400, 99).split(" ")  # shares half: Jaccard ~1/3
    assert dedup.check(dedup.fingerprint(" ".join(half))) is None


def test_rounds_and_latest_generator(tmp_path):
    run = make_run(tmp_path, rounds=3)
    assert round_numbers(run) == [1, 2, 3]
    assert latest_generator(run) is None
    adapter = run / "round-2" / "adapters" / "generator"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"x")
    assert latest_generator(run) == adapter
    rd = extra_round_dir(run, run / "final" / "extra")
    assert rd.k == 4 and rd.answers == run / "final" / "extra" / "answers.jsonl"
    assert rd.partial("answers") == run / "final" / "extra" / "work" / "answers.partial.jsonl"


def scripted(request):
    """Self-instruct, judge and Generator answers for the extra-answers stage."""
    content = request.messages[-1]["content"]
    if request.prefill:  # self-instruct: a fresh instruction per slot
        return f" Write a long report on subject {request.tag[-3:]} covering causes, effects and remedies."
    if "Answer only" in content or "请只回答" in content:  # the yes/no judge
        return "yes"
    return text_of(450, hash(request.tag) % 1000)


def test_extra_answers_use_the_last_generator_and_fresh_queries(tmp_path):
    config = Config(engine={"kind": "fake"}, final={"extra_answers": 3, "min_words": 200})
    run = make_run(tmp_path, config)
    adapter = run / "round-2" / "adapters" / "generator"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"x")
    engine = FakeEngine(scripted)
    answers = asyncio.run(generate_extra(config, engine, run, run / "final" / "extra"))
    rows = read_jsonl(answers)
    assert len(rows) == 3 and all(r["verdict"] == "kept" for r in rows)  # no length-biased sampling
    assert engine.adapters == {"generator": str(adapter)}
    generated = [r for r in engine.history if r.tag.endswith("-a0")]
    assert len(generated) == 3 and all(r.adapter == "generator" for r in generated)
    assert all(r.adapter is None for r in engine.history if not r.tag.endswith("-a0"))  # Step 0: base model
    instructions = read_jsonl(run / "final" / "extra" / "instructions.jsonl")
    assert sorted(r["id"] for r in instructions) == ["r3-ins-00000", "r3-ins-00001", "r3-ins-00002"]
    # Collected after the rounds, labelled as extra.
    stats = collect(
        run, tmp_path / "c.jsonl", FinalConfig(min_words=200, max_words=2000), extra_answers=answers
    )
    assert stats["by_source"]["final/extra/answers"]["kept"] == 3
    # Resume: nothing is generated again.
    calls = len(engine.history)
    asyncio.run(generate_extra(config, engine, run, run / "final" / "extra"))
    assert len(engine.history) == calls
