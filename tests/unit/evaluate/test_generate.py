"""Benchmark answers: loading, output fields, resume after an interruption, torn lines."""

import asyncio
import json

import pytest

from selflengthen.engines.base import Result, SamplingParams
from selflengthen.errors import DataError
from selflengthen.evaluate.generate import generate_answers, load_benchmark
from selflengthen.evaluate.resume import load_done

from .fakes import ScriptedEngine

LONGEN_ROWS = [
    {
        "language": "en",
        "range": "2-4k",
        "type": "about",
        "constraint": "around 2000 words",
        "query": f"Topic {i}.",
    }
    for i in range(8)
]


def lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_output_rows_carry_fields_response_words_finish_reason(tmp_path):
    out = tmp_path / "answers.jsonl"
    engine = ScriptedEngine(lambda request, n: Result("中文 English words!", "length", model="generator"))
    params = SamplingParams(max_tokens=32)
    stats = asyncio.run(generate_answers(engine, LONGEN_ROWS[:2], "longen", out, params, adapter="generator"))
    assert (stats.total, stats.skipped, stats.written) == (2, 0, 2)
    rows = sorted(lines(out), key=lambda r: r["idx"])
    assert [r["idx"] for r in rows] == [0, 1]
    for r, source in zip(rows, LONGEN_ROWS, strict=False):
        assert {k: r[k] for k in source} == source
        assert r["response"] == "中文 English words!"
        assert r["words"] == 4  # LonGen's counter: 中 文 + English + words!
        assert r["finish_reason"] == "length"
        assert r["benchmark"] == "longen"
    request = engine.history[0]
    assert request.adapter == "generator" and request.params.max_tokens == 32
    assert request.messages == [{"role": "user", "content": "Topic 0."}]


def test_longbench_rows_use_prompt_and_its_counter(tmp_path):
    out = tmp_path / "lb.jsonl"
    rows = [{"prompt": "写一百字", "type": "t", "length": 100}]
    asyncio.run(
        generate_answers(ScriptedEngine(lambda r, n: "中文，English。"), rows, "longbench-write", out)
    )
    assert lines(out)[0]["words"] == 3  # 中 文 + English; CJK punctuation not counted


@pytest.mark.parametrize("concurrency", [1, 4])
def test_resume_after_interruption_has_no_duplicates(tmp_path, concurrency):
    out = tmp_path / "answers.jsonl"
    with pytest.raises(RuntimeError, match="scripted failure"):
        asyncio.run(
            generate_answers(
                ScriptedEngine(fail_after=3), LONGEN_ROWS, "longen", out, concurrency=concurrency
            )
        )
    written = lines(out)  # every line on disk is whole
    assert 1 <= len(written) <= 3
    engine = ScriptedEngine()
    stats = asyncio.run(generate_answers(engine, LONGEN_ROWS, "longen", out, concurrency=concurrency))
    assert stats.skipped == len(written) and stats.written == 8 - len(written)
    assert len(engine.history) == 8 - len(written)  # finished rows are not asked again
    final = lines(out)
    assert sorted(r["idx"] for r in final) == list(range(8))


def test_torn_last_line_is_dropped(tmp_path):
    out = tmp_path / "answers.jsonl"
    asyncio.run(generate_answers(ScriptedEngine(), LONGEN_ROWS[:3], "longen", out))
    with out.open("a", encoding="utf-8") as f:
        f.write('{"idx": 3, "query": "Topic 3.", "respo')  # killed mid-line
    assert set(load_done(out)) == {0, 1, 2}
    stats = asyncio.run(generate_answers(ScriptedEngine(), LONGEN_ROWS[:5], "longen", out))
    assert stats.written == 2
    final = lines(out)  # would raise if the torn fragment were still there
    assert sorted(r["idx"] for r in final) == [0, 1, 2, 3, 4]


def test_complete_last_line_without_newline_is_kept(tmp_path):
    out = tmp_path / "answers.jsonl"
    out.write_text('{"idx": 0, "query": "Topic 0.", "response": "x"}', encoding="utf-8")
    asyncio.run(generate_answers(ScriptedEngine(), LONGEN_ROWS[:2], "longen", out))
    assert sorted(r["idx"] for r in lines(out)) == [0, 1]


def test_refuses_output_of_other_data(tmp_path):
    out = tmp_path / "answers.jsonl"
    out.write_text('{"idx": 0, "query": "Something else.", "response": "x"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="another query"):
        asyncio.run(generate_answers(ScriptedEngine(), LONGEN_ROWS[:2], "longen", out))
    out.write_text('{"idx": 0, "benchmark": "ruler", "prompt": "p", "response": "x"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="'ruler'"):
        asyncio.run(generate_answers(ScriptedEngine(), LONGEN_ROWS[:2], "longen", out))


def test_bad_line_in_the_middle_is_an_error(tmp_path):
    out = tmp_path / "answers.jsonl"
    out.write_text('{"idx": 0}\nnot json\n{"idx": 1}\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 2"):
        load_done(out)


# ------------------------------------------------------------------ loading


def test_load_benchmark_from_jsonl_and_json(tmp_path):
    path = tmp_path / "LonGen.jsonl"
    path.write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in LONGEN_ROWS) + "\n", encoding="utf-8"
    )
    assert load_benchmark("longen", str(path)) == LONGEN_ROWS
    assert load_benchmark("longen", path, limit=2) == LONGEN_ROWS[:2]
    listed = tmp_path / "lb.json"
    listed.write_text(json.dumps([{"prompt": "p", "length": 10, "type": "t"}]), encoding="utf-8")
    assert load_benchmark("longbench-write", listed)[0]["length"] == 10


def test_load_benchmark_errors(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"query": "fine"}\n{"prompt": "wrong field"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"line 2, field 'query'"):
        load_benchmark("longen", path)
    with pytest.raises(DataError, match="file not found"):
        load_benchmark("longen", str(tmp_path / "missing.jsonl"))
    with pytest.raises(DataError, match="unknown benchmark"):
        load_benchmark("longer", path)


def test_load_benchmark_from_hub_offline(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match="Offline"):
        load_benchmark("longen", "quanshr/LonGen")


def test_load_benchmark_from_hub_picks_a_split(monkeypatch):
    import datasets

    data = datasets.DatasetDict({"train": datasets.Dataset.from_list([{"query": "q1"}, {"query": "q2"}])})
    monkeypatch.setattr(datasets, "load_dataset", lambda hub_id: data)
    assert load_benchmark("longen", "someone/bench") == [{"query": "q1"}, {"query": "q2"}]
