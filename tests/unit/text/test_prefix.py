"""Early-abort monitors: they fail a prefix only where the full text fails, and as soon as they can."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from selflengthen.text.checks import REASON_REPEATED_NGRAM, CheckConfig, check_text, find_repeated_ngram
from selflengthen.text.paragraphs import join_paragraphs, keep_leading_fraction, split_paragraphs
from selflengthen.text.prefix import AbortRule, first_failure

WORDS = [f"word{i}" for i in range(40)]


def test_fires_at_the_first_complete_repeat_not_before():
    rule = AbortRule(ngram=3)
    monitor = rule.monitor()
    assert monitor.feed("a b c a b") is None
    assert monitor.feed("a b c a b c") is None  # "c" may still grow into "cat"
    assert monitor.feed("a b c a b c ") == REASON_REPEATED_NGRAM
    assert rule.monitor().feed("a b c a b cat ") is None
    # Case and surrounding punctuation do not make a unit new, as in the full check.
    assert rule.monitor().feed("A b, c. a B c!") is None
    assert rule.monitor().feed("A b, c. a B c! ") == REASON_REPEATED_NGRAM


def test_han_characters_are_whole_at_once():
    rule = AbortRule(ngram=3)
    assert rule.monitor().feed("一二三，一二") is None
    assert rule.monitor().feed("一二三，一二三") == REASON_REPEATED_NGRAM


def test_prefill_counts_and_can_fail_alone():
    rule = AbortRule(ngram=3)
    assert rule.monitor("x y z and x y z\n\n").reason == REASON_REPEATED_NGRAM
    monitor = rule.monitor("x y z and x ")
    assert monitor.reason is None
    assert monitor.feed("y z ") == REASON_REPEATED_NGRAM  # a repeat across prefill and generated text


def test_for_checks_takes_the_longer_length():
    assert AbortRule.for_checks(10, 13).ngram == 13
    assert AbortRule.for_checks(16, 13).ngram == 16


def test_keep_fraction_waits_until_the_repeat_is_certainly_kept():
    rule = AbortRule(ngram=3, keep_fraction=2 / 3)
    paragraphs = ["p one a b c d.", "p two a b c e.", "p three.", "p four.", "p five."]
    # the repeat "a b c" ends in paragraph 2; kept = floor(2n/3) >= 2 once 3 paragraphs are finished
    hit = first_failure(rule, "\n\n".join(paragraphs))
    assert hit is not None and hit[1] == REASON_REPEATED_NGRAM
    cut = "\n\n".join(paragraphs)[: hit[0]]
    assert len([p for p in cut.split("\n\n") if p.strip()]) >= 3
    assert first_failure(rule, "\n\n".join(paragraphs[:2]) + "\n\n") is None  # 2 finished: undecided
    # a repeat only in the tail, which the Extender cuts, never aborts
    tail = ["one.", "two.", "three.", "four.", "five a b c.", "six a b c."]
    assert first_failure(rule, "\n\n".join(tail) + "\n\n") is None


TEXT = st.lists(
    st.sampled_from(["a", "b", "c", "A,", "一", "二", " ", "\n", "\n\n", ".", "ab"]), max_size=60
).map("".join)


@settings(max_examples=300, deadline=None)
@given(TEXT, st.integers(min_value=1, max_value=4))
def test_whole_text_rule_fails_exactly_when_the_full_check_does(text, n):
    hit = first_failure(AbortRule(ngram=n), text + " ")
    assert (hit is not None) == (find_repeated_ngram(text, n) is not None)
    if hit is not None:  # the prefix already fails the full check, whatever its language
        prefix = (text + " ")[: hit[0]]
        config = CheckConfig(ngram_words=n, ngram_cjk=n, meta_words=())
        assert check_text(prefix, "aborted", config) == REASON_REPEATED_NGRAM
        assert check_text(text + "\n\nmore.", "stop", config) == REASON_REPEATED_NGRAM


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), min_size=1, max_size=6).map(" ".join),
        min_size=1,
        max_size=9,
    ),
    st.integers(min_value=2, max_value=3),
)
def test_keep_fraction_rule_only_fires_when_the_kept_part_repeats(paragraphs, n):
    text = "\n\n".join(paragraphs)
    hit = first_failure(AbortRule(ngram=n, keep_fraction=2 / 3), text)
    if hit is not None:
        # whatever text follows the prefix, the kept paragraphs repeat an n-gram
        for rest in ("", "\n\nz y x w.", " q r s t"):
            full = text[: hit[0]] + rest
            kept = join_paragraphs(keep_leading_fraction(split_paragraphs(full), 2 / 3))
            assert find_repeated_ngram(kept, n) is not None
