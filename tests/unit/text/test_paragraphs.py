"""Exact behaviour of paragraph splitting and cutting (selflengthen.text.paragraphs)."""

from __future__ import annotations

from fractions import Fraction

import pytest

from selflengthen.text import former_half, join_paragraphs, keep_leading_fraction, split_paragraphs


def test_split_on_blank_lines_and_strip():
    assert split_paragraphs("  One.  \n\n  Two. \n\n Three.") == ["One.", "Two.", "Three."]


def test_runs_of_blank_and_whitespace_only_lines_are_one_separator():
    text = "a\n \n\t\nb\n\n\n\nc\n\nd\n"
    assert split_paragraphs(text) == ["a", "b", "c", "d"]


def test_single_newlines_stay_inside_a_paragraph_when_there_are_three_or_more():
    assert split_paragraphs("a1\na2\n\nb\n\nc") == ["a1\na2", "b", "c"]


def test_two_paragraphs_fall_back_to_single_newlines():
    assert split_paragraphs("l1\nl2\n\nl3\nl4") == ["l1", "l2", "l3", "l4"]


def test_one_paragraph_falls_back_to_single_newlines():
    assert split_paragraphs("first line\n  second line  \nthird") == ["first line", "second line", "third"]


def test_no_newlines_is_one_paragraph():
    assert split_paragraphs("  just one  ") == ["just one"]


def test_windows_line_endings():
    assert split_paragraphs("a\r\n\r\nb\r\n\r\nc\r\n") == ["a", "b", "c"]


def test_chinese_paragraphs():
    assert split_paragraphs("第一段。\n\n第二段。\n\n第三段。") == ["第一段。", "第二段。", "第三段。"]


@pytest.mark.parametrize("text", ["", "   ", "\n\n\n", " \n \t\n "])
def test_empty_or_blank_text_has_no_paragraphs(text):
    assert split_paragraphs(text) == []


def test_join_paragraphs():
    assert join_paragraphs(["a", "b", "c"]) == "a\n\nb\n\nc"
    assert join_paragraphs([]) == ""
    assert split_paragraphs(join_paragraphs(["a", "b", "c"])) == ["a", "b", "c"]


@pytest.mark.parametrize(("n", "expected"), [(0, 0), (1, 0), (2, 1), (3, 1), (4, 2), (5, 2), (9, 4)])
def test_former_half(n, expected):
    paragraphs = [f"p{i}" for i in range(n)]
    assert former_half(paragraphs) == paragraphs[:expected]


@pytest.mark.parametrize(
    ("n", "expected"), [(0, 0), (1, 0), (2, 1), (3, 2), (4, 2), (5, 3), (6, 4), (9, 6), (300, 200)]
)
def test_keep_leading_fraction_default_is_two_thirds_exactly(n, expected):
    paragraphs = [f"p{i}" for i in range(n)]
    assert keep_leading_fraction(paragraphs) == paragraphs[:expected]


@pytest.mark.parametrize(
    ("fraction", "n", "expected"),
    [
        (0.5, 5, 2),
        (0.29, 100, 29),  # 0.29 * 100 is 28.999... in floats
        (Fraction(2, 3), 3, 2),
        (0, 4, 0),
        (1, 4, 4),
    ],
)
def test_keep_leading_fraction_other_fractions(fraction, n, expected):
    paragraphs = [f"p{i}" for i in range(n)]
    assert keep_leading_fraction(paragraphs, fraction) == paragraphs[:expected]


@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan")])
def test_keep_leading_fraction_rejects_fractions_outside_0_1(fraction):
    with pytest.raises(ValueError, match="fraction"):
        keep_leading_fraction(["a", "b"], fraction)


def test_cutting_returns_new_lists():
    paragraphs = ["a", "b", "c"]
    former_half(paragraphs).append("x")
    keep_leading_fraction(paragraphs).append("y")
    assert paragraphs == ["a", "b", "c"]
