"""Length control: give each collected query a length constraint its response already meets.

    drawn = draw_constraint(words=3120, language="en", rng=rng, cfg=config.final)
    # Drawn(type="about", numbers=(3000,), constraint="around 3000 words", ...)

The type is drawn with the paper's proportions (about 40%, range 25%, above 10%, below 25%);
the numbers come from the response's own LonGen word count, rounded to `unit` (or `wide_unit`
with probability `wide_unit_prob`). Where that rounding would put the response outside its own
LonGen window (e.g. 2,600 words "around 2000"), the next finer unit is tried, down to exact
numbers, so every record scores 1.0 against its own constraint. "above" and "below" are strict
(the response has more / fewer words than N), which LonGen's inclusive windows also accept.
Chinese constraints use Arabic digits or, with probability `zh_numeral_prob`, Chinese numerals.

The constraint is then woven into the query by an LLM rewrite (`length_rewrite_user`). A rewrite
is checked (`check_rewrite`) and rejected when it drops the constraint, changes or adds a
number, states a different type, or changes the task (too little overlap, or far longer); the
query then gets a randomly chosen template (`length_template`) instead.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from dataclasses import dataclass, replace
from typing import Any

from selflengthen.config import FinalConfig
from selflengthen.engines.base import Engine, Request, SamplingParams
from selflengthen.evaluate.constraints import (
    TYPES,
    ConstraintError,
    find_numbers,
    infer_type,
    parse_constraint,
)
from selflengthen.evaluate.scoring import longen_score
from selflengthen.prompts import template, template_table
from selflengthen.records import KEPT
from selflengthen.text.checks import text_units
from selflengthen.text.words import count_words, detect_language

LLM, TEMPLATE = "llm", "template"
# Why an LLM rewrite was rejected (stable codes, counted in length_stats.json).
EMPTY, TRUNCATED = "empty", "truncated"
CONSTRAINT_DROPPED, NUMBER_CHANGED = "constraint_dropped", "number_changed"
CONFLICTING_LENGTH, TYPE_CHANGED = "conflicting_length", "type_changed"
TASK_CHANGED, TOO_LONG = "task_changed", "too_long"
DISABLED = "rewrite_disabled"
# A query that already states another length cannot take a template constraint: dropped.
LENGTH_IN_QUERY = "length_in_query"

_CN_DIGITS = "零一二三四五六七八九"
# Candidate numbers: Arabic (with thousands commas, a decimal part, a k/千/万 multiplier) or a run
# of Chinese numeral characters; `find_numbers` gives each one its value (or none: "一篇").
_NUMBER_TOKEN = re.compile(
    r"\d[\d,]*(?:\.\d+)?\s*(?:[kK](?![a-zA-Z])|千|万)?|[零〇一二两三四五六七八九十百千万亿]+"
)
# A number followed by a word unit is a length: "3000 words", "2,000-word", "三千字", "3k words".
_LENGTH_UNIT = re.compile(r"\s*-?\s*(?:words?\b|字|个字|個字|词|詞)", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?;。！？；\n]")
_TERMINAL = tuple(".!?。！？…)）”\"'")
_LABEL = re.compile(
    r"^\s*(?:(?:here is |here's )?(?:the )?(?:rewritten|revised|new|final)\s+"
    r"(?:request|query|instruction|prompt)"
    r"|(?:改写后的?|修改后的?)(?:写作)?(?:要求|指令|请求|查询)?)\s*[:：]\s*",
    re.IGNORECASE,
)
_QUOTES = (('"', '"'), ("“", "”"), ("「", "」"), ("'", "'"))


@dataclass(frozen=True)
class Drawn:
    """One drawn constraint, already checked to contain the response in its LonGen window."""

    type: str
    numbers: tuple[int, ...]
    unit: int
    numeral: str  # "arabic" or "chinese"
    constraint: str
    window: tuple[float, float]


def item_rng(seed: int, *key: Any) -> random.Random:
    """A random generator for one record, stable across restarts (a resume redoes the same draws)."""
    text = "|".join(str(k) for k in (seed, "final", *key))
    return random.Random(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big"))


# ------------------------------------------------------------------------- numbers and phrasing


def to_chinese_numeral(n: int) -> str:
    """3000 -> 三千, 2500 -> 两千五百, 12000 -> 一万两千, 3050 -> 三千零五十, 15 -> 十五."""
    if not 0 <= n < 100_000_000:
        raise ValueError(f"{n} is outside the range written with Chinese numerals here (0 to 99,999,999)")
    if n == 0:
        return "零"
    high, low = divmod(n, 10_000)
    if not high:
        return _chinese_section(low, leading=True)
    text = ("两" if high == 2 else _chinese_section(high, leading=True)) + "万"
    if low:
        text += ("零" if low < 1000 else "") + _chinese_section(low, leading=False)
    return text


def _chinese_section(n: int, *, leading: bool) -> str:
    parts: list[str] = []
    gap = False
    for value, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
        d = n // value % 10
        if not d:
            gap = gap or bool(parts)
            continue
        if gap:
            parts.append("零")
            gap = False
        if d == 2 and unit in ("千", "百") and not parts:
            digit = "两"  # 两千, 两百: how lengths are said
        elif d == 1 and unit == "十" and not parts and leading:
            digit = ""  # 十五, not 一十五, at the start of a number
        else:
            digit = _CN_DIGITS[d]
        parts.append(digit + unit)
    return "".join(parts)


def numbers_for(kind: str, words: int, unit: int) -> tuple[int, ...] | None:
    """The constraint's numbers at rounding `unit`, or None when that unit gives no positive number."""
    if kind == "about":
        numbers: tuple[int, ...] = (math.floor(words / unit + 0.5) * unit,)
    elif kind == "range":
        low = words // unit * unit
        numbers = (low, low + unit)
    elif kind == "above":
        numbers = ((words - 1) // unit * unit,)  # strictly fewer than the response has
    else:
        numbers = ((words // unit + 1) * unit,)  # strictly more than the response has
    return numbers if numbers[0] > 0 else None


def phrase(kind: str, numbers: tuple[int, ...], language: str, numeral: str, choice: int) -> str:
    """The constraint in words, with the `choice`-th phrasing of `length_constraint` (modulo its count)."""
    options = template_table("length_constraint", language)[kind]
    write = to_chinese_numeral if numeral == "chinese" else str
    fmt = options[choice % len(options)]
    if kind == "range":
        return fmt.format(lo=write(numbers[0]), hi=write(numbers[1]))
    return fmt.format(n=write(numbers[0]))


def _units(coarse: int, cfg: FinalConfig) -> list[int]:
    finer = sorted({u for u in (cfg.unit, *cfg.fine_units) if u < coarse}, reverse=True)
    return [coarse, *finer, 1]


def draw_constraint(words: int, language: str, rng: random.Random, cfg: FinalConfig) -> Drawn:
    """Draw a constraint for a response of `words` LonGen words (at least 1).

    Every random choice is made up front, so the number of draws (and so a resumed run's
    sequence) does not depend on which unit ends up fitting.
    """
    if words < 1:
        raise ValueError("a constraint needs a response of at least one word")
    kinds = [k for k in TYPES if cfg.type_weights.get(k, 0) > 0]
    kind = rng.choices(kinds, weights=[cfg.type_weights[k] for k in kinds])[0]
    coarse = cfg.wide_unit if rng.random() < cfg.wide_unit_prob else cfg.unit
    drawn_numeral = "chinese" if language == "zh" and rng.random() < cfg.zh_numeral_prob else "arabic"
    choice = rng.randrange(1 << 16)
    # A response too short for this type at any unit (e.g. "more than" for 1 word) falls back to
    # "about"; a lone Chinese digit (一) is not read as a length, so Arabic digits back numerals up.
    for candidate, numeral in ((kind, drawn_numeral), ("about", drawn_numeral), ("about", "arabic")):
        for unit in _units(coarse, cfg):
            numbers = numbers_for(candidate, words, unit)
            if numbers is None:
                continue
            text = phrase(candidate, numbers, language, numeral, choice)
            # Checked with the evaluator's own parser: what LonGen scoring reads is what we meant.
            try:
                parsed = parse_constraint(text, candidate)
            except ConstraintError:
                continue
            low, high = parsed.window()
            if parsed.numbers == tuple(float(n) for n in numbers) and low <= words <= high:
                return Drawn(candidate, numbers, unit, numeral, text, (low, high))
    raise AssertionError(f"no constraint fits {words} words")  # unreachable: about N=words always fits


# ------------------------------------------------------------------------- checking a rewrite


@dataclass(frozen=True)
class _Number:
    value: float
    start: int
    end: int
    arabic: bool
    length: bool  # followed by a word unit: "3000 words", "三千字"


def locate_numbers(text: str) -> list[_Number]:
    found = []
    for match in _NUMBER_TOKEN.finditer(text):
        values = find_numbers(match.group())
        if len(values) != 1 or values[0] <= 0:
            continue
        is_length = _LENGTH_UNIT.match(text, match.end()) is not None
        found.append(_Number(values[0], match.start(), match.end(), match.group()[0].isdigit(), is_length))
    return found


def length_mentions(text: str) -> list[float]:
    """Lengths a text already asks for ("a 2,000-word essay", "三千字")."""
    return [n.value for n in locate_numbers(text) if n.length]


def clean_rewrite(text: str) -> str:
    """The rewritten query without a leading label ("Rewritten request:") or wrapping quotes/fences."""
    text = text.strip()
    if text.startswith("```"):
        text = text.strip("`").strip()
    text = _LABEL.sub("", text, count=1).strip()
    for left, right in _QUOTES:
        if len(text) > 2 and text.startswith(left) and text.endswith(right) and text.count(left) <= 2:
            text = text[len(left) : len(text) - len(right)].strip()
    return text


def _snippet(text: str, first: int, last: int) -> str:
    """The sentence part around the constraint's numbers, where its type words are."""
    start = max(0, first - 48)
    ends = list(_SENTENCE_END.finditer(text, start, first))
    start = ends[-1].end() if ends else start
    stop = _SENTENCE_END.search(text, last, min(len(text), last + 16))
    return text[start : stop.start() if stop else min(len(text), last + 16)]


def check_rewrite(original: str, rewritten: str, drawn: Drawn, cfg: FinalConfig) -> str | None:
    """None when `rewritten` is `original` with the constraint woven in; else why not."""
    if not rewritten.strip():
        return EMPTY
    mine = locate_numbers(rewritten)
    wanted = [float(n) for n in drawn.numbers]
    values = [n.value for n in mine]
    before = locate_numbers(original)
    before_values = {n.value for n in before}
    old_lengths = {n.value for n in before if n.length}
    missing = [v for v in wanted if v not in values]
    # Arabic numbers and lengths count; a stray Chinese numeral inside a word (十分, 万一) does not.
    added = [
        n.value
        for n in mine
        if (n.arabic or n.length) and n.value not in wanted and n.value not in before_values
    ]
    if missing:
        return NUMBER_CHANGED if added else CONSTRAINT_DROPPED
    if added:
        return NUMBER_CHANGED
    if any(n.length and n.value not in wanted for n in mine):
        return CONFLICTING_LENGTH  # the query's old length was kept beside the new one
    lost = [n.value for n in before if n.arabic and n.value not in old_lengths and n.value not in values]
    if lost:
        return TASK_CHANGED  # "5 tips" lost its 5
    spots = [n for n in mine if n.value in wanted]
    preferred = [n for n in spots if n.length] or spots
    first = min(n.start for n in preferred)
    last = max(n.end for n in preferred)
    if infer_type(_snippet(rewritten, first, last), len(wanted)) != drawn.type:
        return TYPE_CHANGED
    units = set(text_units(original))
    if units and len(units & set(text_units(rewritten))) / len(units) < cfg.rewrite_min_overlap:
        return TASK_CHANGED
    if count_words(rewritten) > cfg.rewrite_max_growth * (
        count_words(original) + count_words(drawn.constraint)
    ):
        return TOO_LONG
    return None


def template_query(query: str, drawn: Drawn, language: str, rng: random.Random) -> str:
    """The fallback: the query and the constraint joined by one of the `length_template` phrasings."""
    query = query.rstrip()
    if query and not query.endswith(_TERMINAL):
        query += "。" if language == "zh" else "."
    return rng.choice(template_table("length_template", language)).format(
        query=query, constraint=drawn.constraint
    )


# ------------------------------------------------------------------------- one record


async def constrain_record(
    engine: Engine | None, record: dict, cfg: FinalConfig, sampling: SamplingParams, seed: int
) -> dict:
    """Draw a constraint for `record` (a collected pair), weave it into the query; the output record."""
    rng = item_rng(seed, "length", record["id"])
    query, response = record["query"], record["response"]
    language = detect_language(query)
    words = count_words(response)
    drawn = draw_constraint(words, language, rng, cfg)
    template_rng = random.Random(rng.randrange(1 << 62))
    attempts: list[dict] = []
    final_query, how, why = "", TEMPLATE, DISABLED
    if cfg.rewrite and engine is not None:
        prompt = template("length_rewrite_user", language).format(query=query, constraint=drawn.constraint)
        for _ in range(cfg.rewrite_attempts):
            result = await engine.generate(
                Request(
                    messages=[{"role": "user", "content": prompt}],
                    params=replace(sampling, seed=rng.randrange(2**31)),
                    adapter=None,  # the base model: rewriting is an instruct task, not a lengthening one
                    tag=record["id"],
                )
            )
            text = clean_rewrite(result.text)
            reason = TRUNCATED if result.finish_reason == "length" else check_rewrite(query, text, drawn, cfg)
            if reason is None:
                final_query, how, why = text, LLM, "accepted"
                break
            attempts.append({"text": result.text, "reason": reason})
            why = reason
    verdict = KEPT
    if how == TEMPLATE:
        if length_mentions(query):
            verdict = LENGTH_IN_QUERY  # "a 2,000-word essay ... around 3000 words" would contradict itself
        final_query = template_query(query, drawn, language, template_rng)
    low, high = parse_constraint(drawn.constraint, drawn.type).window()
    return {
        "id": record["id"],
        "source": record.get("source"),
        "language": language,
        "type": drawn.type,
        "constraint": drawn.constraint,
        "numbers": list(drawn.numbers),
        "unit": drawn.unit,
        "numeral": drawn.numeral,
        "window": [low, high],
        "original_query": query,
        "query": final_query,
        "response": response,
        "words": words,
        "score": longen_score(words, low, high),
        "rewrite": how,
        "rewrite_reason": why,
        "attempts": attempts,
        "verdict": verdict,
    }
