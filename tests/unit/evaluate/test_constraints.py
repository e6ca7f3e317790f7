"""LonGen constraints: numbers in every notation, the type, and the window."""

import pytest

from selflengthen.evaluate.constraints import (
    ConstraintError,
    chinese_to_int,
    find_numbers,
    parse_constraint,
)


@pytest.mark.parametrize(
    ("numeral", "value"),
    [
        ("三千", 3000),
        ("两千五百", 2500),
        ("两千五", 2500),  # colloquial: the trailing digit takes the next lower unit
        ("一万", 10000),
        ("一万五", 15000),
        ("一万五千", 15000),
        ("三千零五", 3005),
        ("十五", 15),
        ("二十", 20),
        ("八千", 8000),
    ],
)
def test_chinese_numerals(numeral, value):
    assert chinese_to_int(numeral) == value


def test_chinese_numeral_rejects_unit_without_digit():
    with pytest.raises(ConstraintError):
        chinese_to_int("千")


@pytest.mark.parametrize(
    ("text", "numbers"),
    [
        ("around 2000 words", [2000]),
        ("more than 2,500 words", [2500]),
        ("2k words", [2000]),
        ("about 2.5k words", [2500]),
        ("2-3k words", [2000, 3000]),
        ("2000字至3000字", [2000, 3000]),
        ("大约三千字", [3000]),
        ("五千字", [5000]),
        ("3千字", [3000]),
        ("1.5万字", [15000]),
        ("写一篇三千字左右的文章", [3000]),  # 一 (one article) is not a length
    ],
)
def test_find_numbers(text, numbers):
    assert find_numbers(text) == numbers


@pytest.mark.parametrize(
    ("text", "kind", "window"),
    [
        ("around 2000 words", "about", (1600, 2400)),
        ("大约2000字", "about", (1600, 2400)),
        ("2000-3000 words", "range", (2000, 3000)),
        ("2000字至4000字", "range", (2000, 4000)),
        ("more than 4000 words", "above", (4000, 6000)),
        ("大于三千字", "above", (3000, 4500)),
        ("less than 8000 words", "below", (4000, 8000)),
        ("小于两千五百字", "below", (1250, 2500)),
        ("no more than 3000 words", "below", (1500, 3000)),
        ("不少于一万字", "above", (10000, 15000)),
        ("五千字", "about", (4000, 6000)),  # a bare length asks for about that many
    ],
)
def test_type_and_window(text, kind, window):
    constraint = parse_constraint(text)
    assert constraint.type == kind
    assert constraint.window() == pytest.approx(window)


def test_type_field_overrides_wording():
    assert parse_constraint("2000 words", "above").window() == (2000, 3000)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("", None),
        ("about some words", None),
        ("2000 words", "range"),
        ("2000-3000 words", "about"),
        ("2000", "x"),
    ],
)
def test_bad_constraints(text, kind):
    with pytest.raises(ConstraintError):
        parse_constraint(text, kind)
