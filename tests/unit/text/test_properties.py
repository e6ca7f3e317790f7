"""Property tests (hypothesis): no crash on any Unicode, and the invariants of the text helpers."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from selflengthen.text import (
    CheckConfig,
    check_text,
    count_words,
    count_words_longbench,
    detect_language,
    find_repeated_ngram,
    former_half,
    join_paragraphs,
    keep_leading_fraction,
    split_paragraphs,
)
from selflengthen.text.checks import (
    ALL_REASONS,
    ends_with_sentence_punctuation,
    find_meta_words,
    text_units,
)

# Any Unicode text, with the characters the code treats specially drawn often: arbitrary
# code points alone rarely produce newlines, Han, CJK punctuation or repeats.
_SPECIAL = list("\n\n \t\r\u3000你好世界。，！？…“”「」（）abcAB.!?\"'*_-#123") + [
    "revised ",
    "Paragraphs ",
    "the same words ",
]
TEXT = st.lists(st.one_of(st.characters(), st.sampled_from(_SPECIAL)), max_size=80).map("".join)
PARAGRAPHS = st.lists(st.text(max_size=5), max_size=30)
SETTINGS = settings(max_examples=150, deadline=None)


@SETTINGS
@given(TEXT)
def test_word_counters_and_detector_never_crash(text):
    assert count_words(text) >= 0
    assert count_words_longbench(text) >= 0
    assert detect_language(text) in ("en", "zh")


@SETTINGS
@given(TEXT, TEXT)
def test_count_words_is_additive_over_a_space(a, b):
    # A space separator makes both counters additive: count_words splits on whitespace, and
    # count_words_longbench's \b behaves at a space exactly as at the end or start of a string.
    # (Without one, "ab" + "c" would merge two words into one.)
    assert count_words(a + " " + b) == count_words(a) + count_words(b)
    assert count_words_longbench(a + " " + b) == count_words_longbench(a) + count_words_longbench(b)


@SETTINGS
@given(TEXT)
def test_split_and_join_keep_every_non_space_character_in_order(text):
    paragraphs = split_paragraphs(text)
    assert all(p and p == p.strip() for p in paragraphs)
    assert "".join(join_paragraphs(paragraphs).split()) == "".join(text.split())


@SETTINGS
@given(PARAGRAPHS)
def test_former_half_and_the_rest_make_the_whole(paragraphs):
    former = former_half(paragraphs)
    assert len(former) == len(paragraphs) // 2
    assert former + paragraphs[len(former) :] == paragraphs


@SETTINGS
@given(PARAGRAPHS)
def test_keep_leading_fraction_keeps_floor_two_thirds(paragraphs):
    kept = keep_leading_fraction(paragraphs)
    assert len(kept) == 2 * len(paragraphs) // 3
    assert kept == paragraphs[: len(kept)]


@SETTINGS
@given(TEXT, st.integers(min_value=1, max_value=4))
def test_find_repeated_ngram_agrees_with_brute_force(text, n):
    units = text_units(text)
    assert all(unit and not any(c.isspace() for c in unit) for unit in units)
    grams = [tuple(units[i : i + n]) for i in range(len(units) - n + 1)]
    found = find_repeated_ngram(text, n)
    if found is None:
        assert len(set(grams)) == len(grams)
    else:
        assert grams.count(tuple(found.split(" "))) >= 2


@SETTINGS
@given(TEXT, st.sampled_from(["stop", "length", "eos"]), st.sampled_from([None, "en", "zh"]))
def test_checks_never_crash_and_return_a_known_reason(text, finish_reason, language):
    assert check_text(text, finish_reason, CheckConfig(ngram_words=3, ngram_cjk=4), language) in (
        None,
        *ALL_REASONS,
    )
    assert isinstance(ends_with_sentence_punctuation(text, language or "en"), bool)
    found = find_meta_words(text)
    assert found is None or found in CheckConfig().meta_words
