"""LonGen length constraints: parse "around 2000 words" / "大约三千字" into a target window.

    >>> parse_constraint("2000字至3000字").window()
    (2000.0, 3000.0)
    >>> parse_constraint("大约两千五百字").window()
    (2000.0, 3000.0)

Numbers may be Arabic ("2000", "2,000", "2.5k", "3千", "1.5万") or Chinese numerals
("三千", "两千五百", "两千五", "一万"). The type (about / range / above / below) comes from
the row's "type" field when given, else from the wording. Windows (LonGen's scoring):
about T -> [0.8T, 1.2T]; range a-b -> [a, b]; above T -> [T, 1.5T]; below T -> [0.5T, T].
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TYPES = ("about", "range", "above", "below")

_DIGITS = {
    "零": 0,
    "〇": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}
_UNITS = {"十": 10, "百": 100, "千": 1000}
_BIG = {"万": 10_000, "亿": 100_000_000}
_SUFFIX = {"k": 1000, "K": 1000, "千": 1000, "万": 10_000}

# An Arabic number (with thousands commas or a decimal part) and an optional multiplier, or a
# run of Chinese numeral characters. The Arabic branch comes first so "3千" stays one number.
_NUMBER = re.compile(
    r"(?P<arabic>\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)\s*(?P<suffix>[kK](?![a-zA-Z])|千|万)?"
    r"|(?P<chinese>[零〇一二两三四五六七八九十百千万亿]+)"
)

# Phrases are tried in this order; negated forms come before the phrases they contain.
_KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "below",
        ("no more than", "not more than", "no longer than", "not exceed", "不超过", "不多于", "不大于"),
    ),
    ("above", ("no less than", "not less than", "no fewer than", "不少于", "不低于", "不小于")),
    (
        "above",
        (
            "more than",
            "at least",
            "over",
            "above",
            "exceed",
            "minimum",
            "大于",
            "超过",
            "多于",
            "至少",
            "以上",
        ),
    ),
    (
        "below",
        (
            "less than",
            "fewer than",
            "at most",
            "under",
            "below",
            "within",
            "maximum",
            "小于",
            "少于",
            "以内",
            "以下",
            "之内",
            "最多",
        ),
    ),
    ("about", ("around", "about", "approximately", "roughly", "大约", "约", "左右", "上下")),
)


class ConstraintError(ValueError):
    """The constraint text cannot be read; the caller adds file, line and field."""


@dataclass(frozen=True)
class Constraint:
    type: str  # about | range | above | below
    numbers: tuple[float, ...]  # one target, or (low, high) for a range

    def window(self) -> tuple[float, float]:
        """The [lo, hi] word-count window that scores 1 (edges inclusive)."""
        if self.type == "range":
            a, b = self.numbers
            return (min(a, b), max(a, b))
        t = self.numbers[0]
        if self.type == "about":
            return (0.8 * t, 1.2 * t)
        if self.type == "above":
            return (t, 1.5 * t)
        return (0.5 * t, t)  # below

    @property
    def target(self) -> float:
        """One representative length (a range's midpoint), for plots."""
        return sum(self.numbers) / len(self.numbers)


def chinese_to_int(text: str) -> int:
    """Value of a Chinese numeral: 三千 -> 3000, 两千五百 -> 2500, 两千五 -> 2500, 一万 -> 10000.

    A bare trailing digit after a unit takes the next lower unit (colloquial 两千五 = 2500),
    unless a 零 came before it (三千零五 = 3005).
    """
    if not text or any(c not in _DIGITS and c not in _UNITS and c not in _BIG for c in text):
        raise ConstraintError(f"'{text}' is not a Chinese numeral")
    total = section = digit = 0
    last_unit = 0
    zero_after_unit = False
    for char in text:
        if char in _DIGITS:
            digit = _DIGITS[char]
            if digit == 0:
                zero_after_unit = True
        elif char in _UNITS:
            unit = _UNITS[char]
            if not digit:
                if unit != 10:  # 十 alone is ten (十五 = 15); 千 alone is not a number
                    raise ConstraintError(f"'{text}': '{char}' without a digit before it")
                digit = 1
            section += digit * unit
            digit, last_unit, zero_after_unit = 0, unit, False
        else:  # 万, 亿
            big = _BIG[char]
            section += digit
            total += (section or 1) * big
            section = digit = 0
            last_unit, zero_after_unit = big, False
    if digit:
        section += digit * (last_unit // 10 if last_unit >= 10 and not zero_after_unit else 1)
    return total + section


def find_numbers(text: str) -> list[float]:
    """Every number written in `text`, in order (see the module docstring for the forms read)."""
    # (value, multiplier): 1 for a plain Arabic number, its suffix's for "3k" / "3千", 0 for a
    # Chinese numeral (which carries its own magnitude).
    found: list[tuple[float, int]] = []
    for match in _NUMBER.finditer(text):
        if match.group("arabic"):
            suffix = match.group("suffix")
            mult = _SUFFIX[suffix] if suffix else 1
            found.append((float(match.group("arabic").replace(",", "")) * mult, mult))
        else:
            chinese = match.group("chinese")
            # A lone digit (一篇, 两段) is an article count, not a length.
            if len(chinese) == 1 and chinese in _DIGITS:
                continue
            try:
                found.append((float(chinese_to_int(chinese)), 0))
            except ConstraintError:
                continue
    # "2-3k words": the multiplier of the second number applies to the first.
    if len(found) == 2 and found[0][1] == 1 and found[1][1] > 1:
        (low, _), (high, mult) = found
        if low * mult <= high:
            found[0] = (low * mult, mult)
    return [value for value, _ in found]


def infer_type(text: str, count: int) -> str:
    """The constraint type from its wording: two numbers make a range, else keywords decide;
    a bare length means "about"."""
    if count >= 2:
        return "range"
    lowered = text.lower()
    for kind, phrases in _KEYWORDS:
        for phrase in phrases:
            if re.search(rf"(?<![a-z]){re.escape(phrase)}(?![a-z])", lowered):
                return kind
    return "about"  # a bare length ("五千字", "2k words") asks for about that many


def parse_constraint(text: str, type_hint: str | None = None) -> Constraint:
    """The constraint in `text`; `type_hint` (the row's "type") overrides the wording."""
    if not isinstance(text, str) or not text.strip():
        raise ConstraintError("the constraint is empty")
    numbers = [n for n in find_numbers(text) if n > 0]
    if not numbers:
        raise ConstraintError(f"no length found in '{text}'")
    kind = type_hint if type_hint is not None else infer_type(text, len(numbers))
    if kind not in TYPES:
        raise ConstraintError(f"unknown constraint type '{kind}'; expected one of {', '.join(TYPES)}")
    if kind == "range":
        if len(numbers) != 2:
            raise ConstraintError(f"a range needs two lengths, found {len(numbers)} in '{text}'")
        return Constraint(kind, (numbers[0], numbers[1]))
    if len(numbers) != 1:
        raise ConstraintError(f"type '{kind}' needs one length, found {len(numbers)} in '{text}'")
    return Constraint(kind, (numbers[0],))
