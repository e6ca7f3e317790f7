"""Exact values of the word counters and the language detector (selflengthen.text.words)."""

from __future__ import annotations

import pytest

from selflengthen.text import count_words, count_words_longbench, detect_language

MIXED = "你好，world 2024年"


def test_count_words_mixed_text_by_hand():
    # CJK: 你 好 ， 年 (the full-width comma U+FF0C is in the CJK set) = 4;
    # the rest, with those replaced by spaces, is "world 2024": 2 tokens. Total 6.
    assert count_words(MIXED) == 6


def test_count_words_longbench_mixed_text_by_hand():
    # Han: 你 好 年 = 3 (the comma is not Han); ASCII-letter words: "world" = 1;
    # "2024" has no letters. Total 4.
    assert count_words_longbench(MIXED) == 4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("   \n\t ", 0),
        ("Hello, world!", 2),
        ("don't stop", 2),  # whitespace tokens: the apostrophe does not split
        ("中文abc", 3),  # 中 文 + "abc"
        ("a\u3000b", 3),  # the ideographic space is a CJK character and counts 1
        ("\uff21\uff22", 2),  # full-width letters count one each
        ("第一段。\n\nSecond paragraph here.", 7),  # 第 一 段 。 + 3 words
    ],
)
def test_count_words(text, expected):
    assert count_words(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("Hello, world!", 2),
        ("don't stop", 3),  # don, t, stop: the apostrophe is a word boundary
        ("中文abc", 2),  # Han is a \w character, so "abc" has no \b before it
        ("中文 abc", 3),
        ("abc123", 0),  # no \b between "c" and "1"
        ("a\u3000b", 2),  # the ideographic space is not Han
        ("\uff21\uff22", 0),  # full-width letters are neither Han nor ASCII
        ("第一段。\n\nSecond paragraph here.", 6),
    ],
)
def test_count_words_longbench(text, expected):
    assert count_words_longbench(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "en"),
        ("   ", "en"),
        ("Hello world", "en"),
        ("你好世界", "zh"),
        ("中abcd", "zh"),  # 1 Han of 5 non-space characters: exactly a fifth
        ("中abcde", "en"),  # 1 of 6: below a fifth
        ("中 a b c d", "zh"),  # spaces do not count
        ("これはテスト", "en"),  # kana is not Han
    ],
)
def test_detect_language(text, expected):
    assert detect_language(text) == expected
