"""The judge: prompts, the forgiving parser, bounded retries, raw outputs kept, summaries."""

import asyncio
import json

import pytest

from selflengthen.errors import DataError
from selflengthen.evaluate.judge import RUBRICS, judge_prompt, judge_rows, parse_judge_output, summarize

from .fakes import ScriptedEngine

LONGEN_OK = {
    "Relevance": 8,
    "Coherence": 7,
    "Accuracy": 9,
    "Consistency": 8,
    "Clarity": 8,
    "Creativity": 6,
    "Engagement": 7,
}
EXPECTED = {k: float(v) for k, v in LONGEN_OK.items()}
LB_OK = (
    '{"Relevance": 5, "Accuracy": 4, "Coherence": 3, "Clarity": 5, "Breadth and Depth": 2, '
    '"Reading Experience": 1}'
)


def test_prompts_list_every_dimension_and_ignore_length():
    prompt = judge_prompt("longen", "Write about tea.", "Tea is ...")
    for name in RUBRICS["longen"].names:
        assert name in prompt
    assert "1 (very poor) to 10" in prompt and "length" in prompt.lower()
    assert "Write about tea." in prompt and "Tea is ..." in prompt
    lb = judge_prompt("longbench-write", "q", "r")
    assert "Breadth and Depth" in lb and "Reading Experience" in lb and "to 5" in lb
    with pytest.raises(DataError):
        judge_prompt("ruler", "q", "r")


@pytest.mark.parametrize(
    "raw",
    [
        json.dumps(LONGEN_OK),
        "```json\n" + json.dumps(LONGEN_OK, indent=2) + "\n```\nLet me know if you need more.",
        "Here is my assessment:\n" + json.dumps(LONGEN_OK) + "\nOverall a solid piece.",
        "{'Relevance': 8, 'Coherence': 7, 'Accuracy': 9, 'Consistency': 8, 'Clarity': 8, 'Creativity': 6, "
        "'Engagement': 7,}",
        '{"Relevance": "8", "Coherence": "7/10", "Accuracy": "9 out of 10", "Consistency": 8.0, '
        '"Clarity": 8, "Creativity": 6, "Engagement": 7}',
        '{"scores": '
        + json.dumps({k.lower(): v for k, v in LONGEN_OK.items()})
        + ', "comment": "fine {ok}"}',
        '{"Relevance": {"score": 8, "reason": "on topic"}, "Coherence": 7, "Accuracy": 9, "Consistency": 8, '
        '"Clarity": 8, "Creativity": 6, "Engagement": 7}',
        "Relevance: 8\nCoherence: 7\n**Accuracy**: 9\nConsistency - 8\nClarity: 8/10\n"
        "Creativity: 6\nEngagement: 7",
        # smart quotes, as chat models like to write them
        json.dumps(LONGEN_OK).replace('": ', "\u201d: ").replace('"', "\u201c"),
    ],
)
def test_parser_reads_messy_outputs(raw):
    assert parse_judge_output(raw, "longen") == EXPECTED


@pytest.mark.parametrize(
    "raw",
    [
        "I cannot grade this text.",
        '{"Relevance": 8, "Coherence": 7}',  # missing dimensions
        json.dumps({**LONGEN_OK, "Relevance": 11}),  # out of range
        json.dumps({**LONGEN_OK, "Relevance": 0}),
        '{"Relevance": 8, "Coherence": ',  # cut off
        "",
    ],
)
def test_parser_refuses_incomplete_or_out_of_range(raw):
    assert parse_judge_output(raw, "longen") is None


def test_parser_longbench_keys_in_any_spelling():
    raw = (
        '{"relevance": 5, "accuracy": 4, "coherence": 3, "clarity": 5, "breadth_and_depth": 2, '
        '"Reading experience": "1"}'
    )
    assert parse_judge_output(raw, "longbench-write") == {
        "Relevance": 5.0,
        "Accuracy": 4.0,
        "Coherence": 3.0,
        "Clarity": 5.0,
        "Breadth and Depth": 2.0,
        "Reading Experience": 1.0,
    }
    assert parse_judge_output(json.dumps({**json.loads(LB_OK), "Clarity": 7}), "longbench-write") is None


ROWS = [
    {"query": "Write about tea.", "constraint": "around 10 words", "type": "about", "response": "Tea."},
    {"query": "Write about rain.", "constraint": "around 10 words", "type": "about", "response": "Rain."},
]


def test_retry_until_parsable_and_keep_raw():
    script = {0: ["no idea", "```\nstill {not json\n```", json.dumps(LONGEN_OK)], 1: [json.dumps(LONGEN_OK)]}

    def respond(request, n):
        idx = int(request.tag.split("[")[1].rstrip("]"))
        return script[idx][n]

    engine = ScriptedEngine(respond)
    report = asyncio.run(judge_rows(engine, ROWS, "longen", retries=2))
    first, second = report.records
    assert first["judge"]["attempts"] == 3
    assert first["judge"]["raw"] == script[0]
    assert first["judge"]["scores"] == EXPECTED
    assert second["judge"]["attempts"] == 1
    assert report.summary["unparsable"] == 0
    assert report.summary["dimensions"]["Relevance"] == 8.0
    assert report.summary["overall"] == pytest.approx(sum(LONGEN_OK.values()) / 7, abs=1e-4)
    assert first["response"] == "Tea."  # the input row's fields are kept


def test_unparsable_after_bounded_retries_is_counted():
    engine = ScriptedEngine(lambda request, n: f"rambling {n}")
    report = asyncio.run(judge_rows(engine, ROWS, "longen", retries=2))
    assert len(engine.history) == 6  # 1 + 2 retries per row, then it stops
    assert report.summary["unparsable"] == 2 and report.summary["parsed"] == 0
    assert report.summary["overall"] is None
    assert all(r["judge"]["scores"] is None and len(r["judge"]["raw"]) == 3 for r in report.records)


def test_longbench_maps_to_100_and_averages_sq(tmp_path):
    rows = [{"prompt": "p", "length": 100, "type": "t", "response": "x"}] * 2
    answers = iter([LB_OK, json.dumps({name: 3 for name in RUBRICS["longbench-write"].names})])
    engine = ScriptedEngine(lambda request, n: next(answers))
    out = tmp_path / "judged.jsonl"
    report = asyncio.run(judge_rows(engine, rows, "longbench-write", out_path=out, concurrency=1))
    # Row 0: 5,4,3,5,2,1 -> 100,75,50,100,25,0 -> S_q 58.33; row 1: all 3 -> 50.
    assert [r["judge"]["score"] for r in report.records] == pytest.approx([350 / 6, 50.0])
    assert report.summary["overall"] == pytest.approx((350 / 6 + 50) / 2, abs=1e-4)
    assert report.summary["dimensions"]["Relevance"] == pytest.approx(75.0)
    assert report.summary["dimensions"]["Reading Experience"] == pytest.approx(25.0)
    assert report.summary["scale"] == "0-100"
    assert len(out.read_text().splitlines()) == 2
    # Resumable: a rerun judges nothing new.
    again = asyncio.run(judge_rows(ScriptedEngine(fail_after=0), rows, "longbench-write", out_path=out))
    assert again.summary == report.summary


def test_summarize_counts_records_without_scores():
    records = [{"judge": {"scores": EXPECTED, "score": 7.571}}, {"judge": {"scores": None, "score": None}}]
    assert summarize(records, "longen")["unparsable"] == 1


def test_judge_rejects_rows_without_response():
    with pytest.raises(DataError, match=r"line 1, field 'response'"):
        asyncio.run(judge_rows(ScriptedEngine(), [{"query": "q"}], "longen", source="in.jsonl"))
