"""Length scores with exact values on handmade fixtures, and errors that name file, line, field."""

import pytest

from selflengthen.errors import DataError
from selflengthen.evaluate.scoring import (
    diagnostics,
    longbench_bucket,
    longbench_score,
    longen_score,
    score_file,
    score_longbench,
    score_longen,
    score_ruler,
)
from selflengthen.text.words import count_words, count_words_longbench


def _letters(i: int) -> str:
    out = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        out = chr(97 + r) + out
    return out


def en(n: int) -> str:
    """An English text of exactly n distinct letter-only words (both counters agree)."""
    return " ".join(_letters(i) for i in range(n))


def zh(n: int) -> str:
    """A Chinese text of exactly n Han characters (both counters agree) with no repeated 13-gram."""
    return "".join(chr(0x4E00 + i) for i in range(n))


# ------------------------------------------------------------------ LonGen per answer

LO, HI = 1600, 2400  # "about 2000"


@pytest.mark.parametrize(
    ("words", "score"),
    [
        (LO, 1.0),  # edges are inside
        (HI, 1.0),
        (2000, 1.0),
        (LO / 2, 0.0),  # 2L/lo - 1 reaches 0 at lo/2
        (1.5 * HI, 0.0),  # 3 - 2L/hi reaches 0 at 1.5 hi
        (0, 0.0),
        (1200, 0.5),
        (3000, 0.5),
        (1599, 2 * 1599 / 1600 - 1),
        (2401, 3 - 2 * 2401 / 2400),
        (500, 0.0),  # far below: clipped at 0
        (5000, 0.0),  # far above: clipped at 0
    ],
)
def test_longen_score(words, score):
    assert longen_score(words, LO, HI) == pytest.approx(score)


def row(constraint, kind, response, language="en", range_="2-4k", **extra):
    return {
        "language": language,
        "range": range_,
        "type": kind,
        "constraint": constraint,
        "query": "q",
        "response": response,
        **extra,
    }


def test_longen_counts_words_with_its_own_counter():
    # LonGen counts CJK punctuation; LongBench-Write does not.
    text = "中文，English words。"
    assert count_words(text) == 6  # 中 文 ， 。 + English + words
    assert count_words_longbench(text) == 4  # 中 文 + English + words
    result = score_longen([row("大约5字", "about", text, language="zh")])
    assert result["overall"] == 1.0  # 6 words in [4, 6]


def test_longen_aggregate_exact():
    rows = [
        row("around 100 words", "about", en(100)),  # 1.0
        row("大约一百字", "about", zh(60), language="zh"),  # window [80, 120]: 2*60/80-1 = 0.5
        row("100-200 words", "range", en(250), range_="4-6k"),  # 3 - 500/200 = 0.5
        row("大于两百字", "above", zh(300), language="zh", range_="4-6k"),  # [200, 300]: 1.0
        row("less than 100 words", "below", en(0)),  # 0
    ]
    result = score_longen(rows)
    assert result["n"] == 5
    assert result["overall"] == pytest.approx(3 / 5)
    assert result["by_type"] == pytest.approx({"about": 0.75, "range": 0.5, "above": 1.0, "below": 0.0})
    assert list(result["by_type"]) == ["about", "range", "above", "below"]
    assert result["by_range"] == pytest.approx({"2-4k": 0.5, "4-6k": 0.75})
    assert result["by_language"] == pytest.approx({"en": 0.5, "zh": 0.75})
    assert result["diagnostics"]["truncated"] is None  # no finish_reason field
    assert result["diagnostics"]["repeated_13gram"] == 0.0
    assert result["diagnostics"]["mean_words"] == pytest.approx((100 + 60 + 250 + 300 + 0) / 5)


def test_diagnostics_truncation_and_repetition():
    looping = "the same phrase again " * 10
    rows = [
        {"response": en(20), "finish_reason": "length"},
        {"response": looping, "finish_reason": "stop"},
        {"response": zh(12) * 2, "finish_reason": "stop"},  # repeats 12-grams, no 13-gram
        {"response": zh(13) * 2},  # a 13-character run, twice
    ]
    texts = [r["response"] for r in rows]
    d = diagnostics(rows, texts, [count_words(t) for t in texts])
    assert d["truncated"] == pytest.approx(1 / 3)  # among the rows that carry finish_reason
    assert d["repeated_13gram"] == pytest.approx(2 / 4)


# ------------------------------------------------------------------ LongBench-Write


@pytest.mark.parametrize(
    ("produced", "required", "score"),
    [
        (1000, 1000, 100.0),
        (1300, 1000, 90.0),  # 1 - 0.3/3
        (2000, 1000, 100 * (1 - 1 / 3)),
        (4000, 1000, 0.0),  # L/l - 1 = 3
        (5000, 1000, 0.0),
        (500, 1000, 50.0),  # 1 - (2 - 1)/2
        (400, 1000, 25.0),  # 1 - (2.5 - 1)/2
        (250, 1000, 0.0),
        (0, 1000, 0.0),
    ],
)
def test_longbench_score(produced, required, score):
    assert longbench_score(produced, required) == pytest.approx(score)


@pytest.mark.parametrize(
    ("required", "bucket"),
    [
        (100, "[0,500)"),
        (499, "[0,500)"),
        (500, "[500,2000)"),
        (2000, "[2000,4000)"),
        (4000, "[4000,20000)"),
        (20000, "[4000,20000)"),
    ],
)
def test_longbench_buckets(required, bucket):
    assert longbench_bucket(required) == bucket


def test_longbench_aggregate_uses_its_counter():
    rows = [
        {"prompt": "Write 100 words", "type": "News", "length": 100, "response": en(100)},  # 100
        # Chinese: Han chars count, CJK punctuation does not: 50 + 0 -> 50/100 -> 50
        {"prompt": "写一篇一百字的文章", "type": "News", "length": 100, "response": zh(50) + "。，！"},
        {"prompt": "Write 1000 words", "type": "Fiction", "length": "1,000", "response": en(2000)},  # 66.67
        {"prompt": "Write", "type": "Fiction", "length": 5000, "response": ""},  # 0
    ]
    result = score_longbench(rows)
    assert result["n"] == 4
    assert result["overall"] == pytest.approx((100 + 50 + 200 / 3 + 0) / 4, abs=1e-5)
    assert result["by_bucket"] == pytest.approx(
        {"[0,500)": 75.0, "[500,2000)": 200 / 3, "[4000,20000)": 0.0}, abs=1e-5
    )
    assert result["by_type"] == pytest.approx({"Fiction": 100 / 3, "News": 75.0}, abs=1e-5)
    assert result["by_language"] == pytest.approx({"en": (100 + 200 / 3) / 3, "zh": 50.0}, abs=1e-5)
    assert set(result) == {"n", "overall", "by_type", "by_bucket", "by_language", "diagnostics"}


def test_ruler_mean_and_max():
    rows = [
        {"prompt": "p", "length": 1000, "response": en(300)},
        {"prompt": "p", "length": 1000, "response": en(500)},
        {"prompt": "p", "length": 2000, "response": zh(700)},
    ]
    result = score_ruler(rows)
    assert result["by_length"] == {
        "1000": {"n": 2, "mean_words": 400.0, "max_words": 500},
        "2000": {"n": 1, "mean_words": 700.0, "max_words": 700},
    }


# ------------------------------------------------------------------ bad rows


def write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_bad_row_names_file_line_and_field(tmp_path):
    good = '{"type": "about", "constraint": "around 10 words", "query": "q", "response": "a b c."}'
    path = write(tmp_path / "answers.jsonl", [good, '{"type": "about", "query": "q", "response": "x"}'])
    with pytest.raises(DataError) as info:
        score_file("longen", path)
    message = str(info.value)
    assert str(path) in message and "line 2" in message and "'constraint'" in message


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('{"type": "about", "constraint": "around words", "response": "x"}', "constraint"),
        ('{"type": "sideways", "constraint": "around 10 words", "response": "x"}', "type"),
        ('{"type": "about", "constraint": "around 10 words"}', "response"),
        ('{"type": "about", "constraint": "around 10 words", "response": 5}', "response"),
    ],
)
def test_bad_longen_fields(tmp_path, line, field):
    path = write(tmp_path / "a.jsonl", [line])
    with pytest.raises(DataError, match=rf"line 1, field '{field}'"):
        score_file("longen", path)


def test_bad_length_and_bad_json(tmp_path):
    path = write(tmp_path / "lb.jsonl", ['{"prompt": "p", "length": "many", "response": "x"}'])
    with pytest.raises(DataError, match=r"line 1, field 'length'"):
        score_file("longbench-write", path)
    path = write(tmp_path / "torn.jsonl", ['{"prompt": "p", "length": 10, "response": "x"}', '{"prompt": '])
    with pytest.raises(DataError, match=r"line 2: invalid JSON"):
        score_file("longbench-write", path)


def test_score_file_detects_benchmark(tmp_path):
    path = write(tmp_path / "x.jsonl", ['{"prompt": "p", "type": "t", "length": 10, "response": "one two"}'])
    assert "by_bucket" in score_file(None, path)
    path = write(tmp_path / "y.jsonl", ['{"prompt": "p", "length": 10, "response": "one two"}'])
    assert "by_length" in score_file(None, path)
    path = write(tmp_path / "z.jsonl", ['{"foo": 1}'])
    with pytest.raises(DataError, match="pass --benchmark"):
        score_file(None, path)


def test_detect_benchmark_prefers_the_benchmark_field_then_the_file_name():
    from selflengthen.evaluate.files import detect_benchmark

    ruler_row = {"prompt": "p", "type": "t", "length": 1000}  # the ruler file has LongBench's fields
    assert detect_benchmark([ruler_row], "answers.jsonl") == "longbench-write"
    assert detect_benchmark([ruler_row], "longwrite_ruler.jsonl") == "ruler"
    assert detect_benchmark([{**ruler_row, "benchmark": "ruler"}], "answers.jsonl") == "ruler"
    assert detect_benchmark([{"constraint": "c", "type": "about", "query": "q"}], "a.jsonl") == "longen"
    assert detect_benchmark([], "a.jsonl") is None
