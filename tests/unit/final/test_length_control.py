"""Length constraints: drawn from the response's own length, phrased per language, woven in by a
checked LLM rewrite with a template fallback."""

import asyncio
import random
import re
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selflengthen.config import FinalConfig
from selflengthen.engines.base import Result, SamplingParams
from selflengthen.evaluate.constraints import chinese_to_int, parse_constraint
from selflengthen.evaluate.scoring import longen_score, score_longen
from selflengthen.stages import length_control as lc
from selflengthen.stages.length_control import (
    CONFLICTING_LENGTH,
    CONSTRAINT_DROPPED,
    NUMBER_CHANGED,
    TASK_CHANGED,
    TOO_LONG,
    TYPE_CHANGED,
    check_rewrite,
    clean_rewrite,
    constrain_record,
    draw_constraint,
    to_chinese_numeral,
)

from .runfixture import RewriteEngine, good_rewrite, text_of

CFG = FinalConfig()
HAN_NUMERAL = re.compile(r"[一二两三四五六七八九十百千万]")


def score_of(drawn, words):
    return longen_score(words, *parse_constraint(drawn.constraint, drawn.type).window())


# ------------------------------------------------------------------ numerals


@pytest.mark.parametrize(
    "n, text",
    [
        (10, "十"),
        (15, "十五"),
        (105, "一百零五"),
        (1010, "一千零一十"),
        (2000, "两千"),
        (2500, "两千五百"),
        (3050, "三千零五十"),
        (10500, "一万零五百"),
        (12000, "一万两千"),
        (20000, "两万"),
    ],
)
def test_chinese_numerals(n, text):
    assert to_chinese_numeral(n) == text
    assert chinese_to_int(text) == n


@given(st.integers(min_value=2, max_value=99_999_999))
def test_chinese_numerals_round_trip_through_the_evaluator(n):
    assert chinese_to_int(to_chinese_numeral(n)) == n


# ------------------------------------------------------------------ drawing


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=1, max_value=30_000), st.sampled_from(["en", "zh"]), st.integers(0, 2**32))
def test_every_response_satisfies_its_own_constraint(words, language, seed):
    drawn = draw_constraint(words, language, random.Random(seed), CFG)
    assert score_of(drawn, words) == 1.0
    assert parse_constraint(drawn.constraint, drawn.type).numbers == tuple(float(n) for n in drawn.numbers)


def test_many_records_score_1_under_longen_scoring():
    rng = random.Random(7)
    rows = []
    for _ in range(800):
        words = rng.randint(150, 9000)
        language = rng.choice(["en", "zh"])
        drawn = draw_constraint(words, language, rng, CFG)
        response = " ".join(["w"] * words) if language == "en" else "字" * words
        rows.append({"type": drawn.type, "constraint": drawn.constraint, "response": response})
    assert score_longen(rows)["overall"] == 1.0


def test_type_proportions_follow_the_paper():
    rng = random.Random(3)
    n = 8000
    counts = Counter(draw_constraint(rng.randint(2000, 8000), "en", rng, CFG).type for _ in range(n))
    for kind, share in {"about": 0.4, "range": 0.25, "above": 0.1, "below": 0.25}.items():
        assert abs(counts[kind] / n - share) < 0.02, (kind, counts)


def test_numbers_are_rounded_to_1000_or_2000_where_they_fit():
    rng = random.Random(11)
    units = Counter()
    for _ in range(4000):
        words = rng.randint(2000, 8000)
        units[draw_constraint(words, "en", rng, CFG).unit] += 1
    coarse = units[1000] + units[2000]
    assert coarse / 4000 > 0.7  # finer units only where the coarse number would break the window
    assert 0.1 < units[2000] / coarse < 0.3


def test_a_finer_unit_when_the_coarse_one_breaks_the_window():
    about_only = FinalConfig(type_weights={"about": 1}, wide_unit_prob=0)
    drawn = draw_constraint(1300, "en", random.Random(0), about_only)  # "around 1000" -> [800, 1200]: out
    assert drawn.numbers == (1500,) and drawn.unit == 500
    drawn = draw_constraint(3100, "en", random.Random(0), about_only)
    assert drawn.numbers == (3000,) and drawn.unit == 1000


def test_above_and_below_are_strict():
    for kind in ("above", "below"):
        cfg = FinalConfig(type_weights={kind: 1}, wide_unit_prob=0)
        drawn = draw_constraint(3000, "en", random.Random(1), cfg)
        assert drawn.numbers == ((2000,) if kind == "above" else (4000,))


def test_chinese_phrasing_with_digits_and_numerals():
    rng = random.Random(5)
    drawn = [draw_constraint(rng.randint(2000, 8000), "zh", rng, CFG) for _ in range(600)]
    assert all("字" in d.constraint for d in drawn)
    assert not any("words" in d.constraint for d in drawn)
    chinese = [d for d in drawn if d.numeral == "chinese"]
    assert 0.4 < len(chinese) / len(drawn) < 0.6  # zh_numeral_prob 0.5
    assert all(HAN_NUMERAL.search(d.constraint) and not re.search(r"\d", d.constraint) for d in chinese)
    assert all(re.search(r"\d", d.constraint) for d in drawn if d.numeral == "arabic")
    # "less than" stays "less than" in Chinese (the reference code swapped them).
    below = [d for d in drawn if d.type == "below"]
    assert below and all(any(k in d.constraint for k in ("不超过", "少于", "以内")) for d in below)


def test_english_never_uses_chinese_numerals():
    rng = random.Random(2)
    assert all(draw_constraint(3000, "en", rng, CFG).numeral == "arabic" for _ in range(200))


# ------------------------------------------------------------------ the rewrite check

QUERY = "Write a detailed essay on the history of tea in China and its cultural impact."
TAIL = "on the history of tea in China and its cultural impact."


def about(n=3000, text=None):
    return lc.Drawn("about", (n,), 1000, "arabic", text or f"around {n} words", (0.8 * n, 1.2 * n))


def test_a_faithful_rewrite_passes():
    rewrite = (
        "Write a detailed essay of around 3000 words on the history of tea in China and its cultural impact."
    )
    assert check_rewrite(QUERY, rewrite, about(), CFG) is None


@pytest.mark.parametrize(
    "rewrite, reason",
    [
        (
            f"Write a detailed essay of around 3500 words {TAIL}",
            NUMBER_CHANGED,
        ),
        (
            "Write a detailed essay of around 3000 words (at most 3500) on the history of tea in China.",
            NUMBER_CHANGED,
        ),
        (
            "Write a detailed essay on the history of tea in China and its cultural impact.",
            CONSTRAINT_DROPPED,
        ),
        ("Write a short poem about cats and dogs, around 3000 words.", TASK_CHANGED),
        (
            f"Write a detailed essay of more than 3000 words {TAIL}",
            TYPE_CHANGED,
        ),
        (
            f"Write a detailed essay of around 3000 words {TAIL} "
            + "Also discuss coffee, cocoa, wine, beer, juice, soda, water, milk and every other drink "
            + "by people anywhere in the world across all centuries in great depth with many tables.",
            TOO_LONG,
        ),
    ],
)
def test_bad_rewrites_are_rejected(rewrite, reason):
    assert check_rewrite(QUERY, rewrite, about(), CFG) == reason


def test_a_kept_old_length_conflicts():
    query = "Write a 2,000-word essay on the history of tea in China."
    rewrite = "Write a 2,000-word essay on the history of tea in China, around 3000 words."
    assert check_rewrite(query, rewrite, about(), CFG) == CONFLICTING_LENGTH
    replaced = "Write an essay of around 3000 words on the history of tea in China."
    assert check_rewrite(query, replaced, about(), CFG) is None


def test_a_lost_number_of_the_task_changes_it():
    query = "Write 5 tips for learning the history of tea in China."
    assert (
        check_rewrite(
            query, "Write tips for learning the history of tea in China in around 3000 words.", about(), CFG
        )
        == TASK_CHANGED
    )


def test_range_and_chinese_rewrites():
    rng_drawn = lc.Drawn("range", (2000, 3000), 1000, "arabic", "2000-3000 words", (2000, 3000))
    assert check_rewrite(QUERY, QUERY[:-1] + ", between 2000 and 3000 words long.", rng_drawn, CFG) is None
    zh_query = "请写一篇关于中国茶文化历史的文章，十分详细地介绍它的起源。"
    zh = lc.Drawn("about", (3000,), 1000, "chinese", "大约三千字", (2400, 3600))
    assert (
        check_rewrite(
            zh_query, "请写一篇大约三千字的关于中国茶文化历史的文章，十分详细地介绍它的起源。", zh, CFG
        )
        is None
    )
    assert (
        check_rewrite(
            zh_query, "请写一篇约3000字的关于中国茶文化历史的文章，十分详细地介绍它的起源。", zh, CFG
        )
        is None
    )
    assert check_rewrite(
        zh_query, "请写一篇大约四千字的关于中国茶文化历史的文章，十分详细地介绍它的起源。", zh, CFG
    ) in (NUMBER_CHANGED, CONSTRAINT_DROPPED)
    below = lc.Drawn("below", (3000,), 1000, "arabic", "不超过3000字", (1500, 3000))
    assert (
        check_rewrite(
            zh_query, "请写一篇3000字以上的关于中国茶文化历史的文章，十分详细地介绍它的起源。", below, CFG
        )
        == TYPE_CHANGED
    )


def test_clean_rewrite_strips_labels_and_quotes():
    assert clean_rewrite('Rewritten request: "Write about tea."') == "Write about tea."
    assert clean_rewrite("改写后的要求：“写一篇文章。”") == "写一篇文章。"
    assert clean_rewrite("```\nWrite about tea.\n```") == "Write about tea."


# ------------------------------------------------------------------ one record


def record(words=2400, language="en", query=QUERY, rid="r1"):
    return {
        "id": rid,
        "query": query,
        "response": text_of(words, 1, language),
        "source": "round-1/extensions",
    }


def run(engine, rec, cfg=CFG):
    return asyncio.run(constrain_record(engine, rec, cfg, SamplingParams(max_tokens=64), seed=0))


def test_an_accepted_llm_rewrite():
    engine = RewriteEngine(good_rewrite)
    out = run(engine, record())
    assert out["rewrite"] == "llm" and out["rewrite_reason"] == "accepted"
    assert out["constraint"] in out["query"] and out["original_query"] == QUERY
    assert out["score"] == 1.0 and out["verdict"] == "kept" and out["words"] == 2400
    request = engine.history[0]
    assert (
        request.adapter is None
        and request.params.max_tokens == 64
        and out["constraint"] in request.messages[0]["content"]
    )


def test_a_rejected_rewrite_falls_back_to_a_template():
    engine = RewriteEngine(lambda r: "Write about coffee instead, in around 9999 words.")
    out = run(engine, record(), FinalConfig(rewrite_attempts=2))
    assert out["rewrite"] == "template" and out["rewrite_reason"] in (NUMBER_CHANGED, CONSTRAINT_DROPPED)
    assert len(engine.history) == 2 and len(out["attempts"]) == 2
    assert out["query"].startswith(QUERY) and out["constraint"] in out["query"]
    assert (
        check_rewrite(
            QUERY,
            out["query"],
            lc.Drawn(
                out["type"],
                tuple(out["numbers"]),
                out["unit"],
                out["numeral"],
                out["constraint"],
                tuple(out["window"]),
            ),
            CFG,
        )
        is None
    )


def test_a_truncated_rewrite_is_rejected():
    engine = RewriteEngine(lambda r: Result(text=good_rewrite(r), finish_reason="length"))
    out = run(engine, record())
    assert out["rewrite"] == "template" and out["rewrite_reason"] == "truncated"


def test_templates_vary_and_keep_the_query():
    queries = {run(None, record(rid=f"r{i}"))["query"].replace(QUERY, "<q>") for i in range(60)}
    shapes = {re.sub(r"\d+", "N", q) for q in queries}
    assert len(shapes) >= 6  # phrasings x templates
    assert all(q.startswith("<q>") for q in queries)


def test_chinese_record_without_an_engine():
    out = run(None, record(language="zh", query="请写一篇关于中国茶文化历史的文章。"))
    assert out["rewrite"] == "template" and out["rewrite_reason"] == "rewrite_disabled"
    assert out["language"] == "zh" and "字" in out["query"] and out["score"] == 1.0


def test_a_query_with_its_own_length_is_dropped_when_no_rewrite_replaced_it():
    out = run(None, record(query="Write a 2,000-word essay on the history of tea."))
    assert out["verdict"] == "length_in_query"


def test_draws_are_stable_across_restarts():
    a, b = run(None, record()), run(None, record())
    assert a == b
