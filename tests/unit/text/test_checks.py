"""Exact behaviour of the text checks (selflengthen.text.checks)."""

from __future__ import annotations

import pytest

from selflengthen.errors import ConfigError
from selflengthen.text import CheckConfig, check_text, find_repeated_ngram
from selflengthen.text.checks import (
    ALL_REASONS,
    REASON_EMPTY,
    REASON_META_WORDS,
    REASON_NO_FINAL_PUNCTUATION,
    REASON_REPEATED_NGRAM,
    REASON_TRUNCATED,
    ends_with_sentence_punctuation,
    find_meta_words,
    text_units,
)
from selflengthen.text.drift import gzip_ratio, window_gzip_ratios

WORDS_10 = "one two three four five six seven eight nine ten"
WORDS_9 = "one two three four five six seven eight nine"
# Thirteen Han characters; 处 occurs twice, but no 13-gram repeats inside the line itself.
HAN_13 = "春眠不觉晓处处闻啼鸟夜来风"
HAN_12 = HAN_13[:12]

GOOD_EN = "The river rose in spring.\n\nFarmers moved their herds to the hills.\n\nBy June it fell again."
GOOD_ZH = "春天河水上涨。\n\n农民把牛羊赶到山上。\n\n到了六月，水又退了。"


# --- text_units ---------------------------------------------------------------------------


def test_units_of_english_are_lowercased_words_without_surrounding_punctuation():
    assert text_units('"Hello," she said -- AGAIN! (twice)') == ["hello", "she", "said", "again", "twice"]


def test_inner_punctuation_stays_in_the_unit():
    assert text_units("don't re-use e.g. this") == ["don't", "re-use", "e.g", "this"]


def test_each_han_character_is_a_unit_and_cjk_punctuation_is_dropped():
    assert text_units("你好，世界。「引用」") == ["你", "好", "世", "界", "引", "用"]


def test_mixed_text_ascii_runs_are_one_unit():
    assert text_units("你好，World 2024年 中文abc") == ["你", "好", "world", "2024", "年", "中", "文", "abc"]


def test_cjk_extension_a_is_han():
    assert text_units("\u3400\u3401") == ["\u3400", "\u3401"]


def test_markdown_only_units_are_dropped():
    assert text_units("## Title\n\n**bold** --- *") == ["title", "bold"]


# --- find_repeated_ngram ------------------------------------------------------------------


def test_repeated_ngram_english_10_words_found():
    text = f"{WORDS_10} and then again {WORDS_10}."
    assert find_repeated_ngram(text, 10) == WORDS_10


def test_repeated_ngram_english_9_words_not_found_at_10():
    assert find_repeated_ngram(f"{WORDS_9} and then again {WORDS_9}.", 10) is None


def test_repeated_ngram_ignores_case_and_punctuation():
    assert find_repeated_ngram("Alpha, beta gamma. ALPHA beta; gamma!", 3) == "alpha beta gamma"


def test_repeated_ngram_overlapping():
    assert find_repeated_ngram("la la la", 2) == "la la"


def test_repeated_ngram_returns_first_repeat_seen():
    assert find_repeated_ngram("a b x c d y a b z c d", 2) == "a b"


def test_repeated_ngram_chinese_13_found_12_not():
    assert find_repeated_ngram(f"{HAN_13}，我们{HAN_13}。", 13) == " ".join(HAN_13)
    assert find_repeated_ngram(f"{HAN_12}，我们{HAN_12}。", 13) is None


def test_repeated_ngram_short_text_and_bad_n():
    assert find_repeated_ngram("", 1) is None
    assert find_repeated_ngram("a b", 3) is None
    with pytest.raises(ValueError, match="n must be"):
        find_repeated_ngram("a a", 0)


# --- ends_with_sentence_punctuation -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("It was done.", True),  # the reference code's bug rejected this
        ("It was done.  \n\n", True),
        ("Really?", True),
        ("Stop!", True),
        ('He said "yes."', True),
        ("He said \u201cyes.\u201d", True),
        ("It is (see above)", True),
        ("Wait\u2026", True),
        ("**The end.**", True),
        ("_The end!_", True),
        ("It was done", False),
        ("**The end**", False),
        ("Items:", False),
        ("The list,", False),
        ("---", False),
        ("***", False),
        ("结束。", False),  # Chinese full stop is not English punctuation
        ("", False),
    ],
)
def test_final_punctuation_english(text, expected):
    assert ends_with_sentence_punctuation(text, "en") is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("这是结尾。", True),
        ("真的吗？", True),
        ("太好了！", True),
        ("他说：\u201c好。\u201d", True),
        ("见《红楼梦》", True),
        ("见「引用」", True),
        ("结尾（注）", True),
        ("结尾\u2026\u2026", True),
        ("这是结尾.", True),  # ASCII full stop in a Chinese text
        ("**重点。**", True),
        ("这是结尾", False),
        ("结尾，", False),
        ("结尾：", False),
    ],
)
def test_final_punctuation_chinese(text, expected):
    assert ends_with_sentence_punctuation(text, "zh") is expected


# --- find_meta_words ----------------------------------------------------------------------


def _lines(*lines: str) -> str:
    return "\n".join(lines)


BODY = ("Line one.", "Line two.", "Line three.", "Line four.", "Line five.", "Line six.")


def test_meta_word_in_first_line_found():
    assert find_meta_words(_lines("Here is the revised text:", *BODY)) == "revised"


def test_meta_word_in_second_and_last_lines_found():
    assert find_meta_words(_lines("Title", "This version adds detail.", *BODY)) == "version"
    assert find_meta_words(_lines(*BODY, "I hope this response helps.")) == "response"


def test_meta_word_in_the_middle_is_ordinary_prose():
    # Six non-empty lines: head = lines 1-2, tail = lines 4-6; line 3 is not searched.
    lines = list(BODY)
    lines[2] = "The next paragraph describes a revision of the law."
    assert find_meta_words(_lines(*lines)) is None


def test_blank_lines_do_not_count_as_lines():
    assert find_meta_words(_lines("", "  ", "Title", "", "A paragraph on rivers.", *BODY)) == "paragraph"


def test_meta_word_plurals_and_case_count_partial_words_do_not():
    assert find_meta_words("RESPONSES follow.") == "response"
    assert find_meta_words("Two paragraphs.") == "paragraph"
    assert find_meta_words("Several versions exist.") == "version"
    assert find_meta_words("Versioning and unrevised paragraphing.") is None


def test_meta_words_custom_words_and_line_counts():
    text = _lines("Draft one.", *BODY)
    assert find_meta_words(text, words=("draft",)) == "draft"
    assert find_meta_words(text, words=("draft",), head_lines=0) is None
    assert find_meta_words(_lines(*BODY, "A revised end."), tail_lines=0) is None
    assert find_meta_words(text, words=()) is None


# --- CheckConfig --------------------------------------------------------------------------


def test_check_config_defaults_are_the_papers():
    config = CheckConfig()
    assert (config.ngram_words, config.ngram_cjk) == (10, 13)
    assert config.meta_words == ("revised", "revision", "response", "version", "paragraph")
    assert (config.meta_head_lines, config.meta_tail_lines) == (2, 3)
    assert config.max_tail_drift is None  # not one of the paper's checks: off unless asked for
    assert config.max_window_gzip is None  # nor this one
    assert config.min_words == 0  # nor a minimum length


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"ngram_words": 0}, "ngram_words"),
        ({"ngram_cjk": -1}, "ngram_cjk"),
        ({"meta_head_lines": -1}, "meta_head_lines"),
        ({"meta_words": "revised"}, "meta_words"),
        ({"max_tail_drift": 0.0}, "max_tail_drift"),
        ({"max_window_gzip": -1.0}, "max_window_gzip"),
        ({"min_words": -1}, "min_words"),
    ],
)
def test_check_config_rejects_bad_values_naming_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field) as info:
        CheckConfig(**kwargs)
    assert info.value.field == field


# --- check_text ---------------------------------------------------------------------------


def test_reasons_in_check_order():
    assert ALL_REASONS == (
        "empty",
        "repeated_ngram",
        "truncated",
        "no_final_punctuation",
        "meta_words",
        "tail_drift",
        "near_repeats",
        "too_few_words",
    )


def test_min_words_rejects_a_few_word_answer_and_counts_chinese_characters():
    on = CheckConfig(min_words=20)
    url = "See https://example.com/weather-station/manual."
    assert check_text(url, "stop") is None  # the paper's checks let a bare web address through
    assert check_text(url, "stop", on) == "too_few_words"
    twenty = " ".join(_prose(19, seed=3)) + " end."
    assert check_text(twenty, "stop", on) is None  # exactly the minimum passes
    assert check_text(twenty.split(" ", 1)[1], "stop", on) == "too_few_words"
    # 29 units: LonGen's count takes each character and each mark; there are no spaces at all.
    chinese = "春天来了，花开了，鸟儿在树上唱歌，孩子们在草地上跑来跑去。"
    assert check_text(chinese, "stop", on) is None
    assert check_text(chinese, "stop", CheckConfig(min_words=30)) == "too_few_words"
    # A text that fails an earlier check keeps that verdict.
    assert check_text("Too short and cut", "length", on) == "truncated"


def _prose(n: int, seed: int) -> list[str]:
    """n words of varied prose: no 10-word phrase repeats, and it compresses like clean text."""
    import random

    rng = random.Random(seed)
    vocab = [
        f"{a}{b}"
        for a in ("ka", "lo", "mi", "ne", "su", "to", "ve", "ri")
        for b in ("n", "st", "rk", "ph", "lt", "m")
    ]
    return [rng.choice(vocab) + rng.choice(("", "s", "ed", "ing")) for _ in range(n)]


def test_tail_drift_rejects_a_long_text_whose_end_repeats_itself():
    """The last third cycles through a few near-repeated clauses (no 10-word phrase repeats
    exactly): its gzip ratio is far above the first third's. Clean prose of the same length passes;
    a short text is not judged; the check is off by default."""
    head = _prose(300, 1)
    clauses = [
        ["high", "speed", "system", w, "companies", "make", "this", "idea", "easy"]
        for w in (f"zone{i}" for i in range(30))
    ]
    drifting = " ".join(head + [w for c in clauses for w in c][:150]) + "."
    clean = " ".join(_prose(450, 3)) + "."
    drift_on = CheckConfig(max_tail_drift=1.15)
    assert check_text(drifting, "stop", drift_on) == "tail_drift"
    assert check_text(clean, "stop", drift_on) is None
    assert check_text(drifting, "stop") is None  # off by default
    short = " ".join(head[:100] + [w for c in clauses for w in c][:90]) + "."
    assert len(short.split()) < drift_on.tail_drift_min_words and check_text(short, "stop", drift_on) is None


def test_near_repeats_rejects_a_window_of_near_repeated_clauses_anywhere():
    """A 200-word stretch in the middle cycles through clauses that differ in one word (no 10-word
    phrase repeats exactly): that window compresses far better than the made-up prose around it (a
    small vocabulary: about 2.7, where real prose is about 2), so the text fails even though its
    last third is clean (the tail-drift check would not see it)."""
    clauses = [
        ["high", "speed", "system", f"zone{i}", "companies", "make", "this", "idea", "easy"]
        for i in range(40)
    ]
    middle = [w for c in clauses for w in c][:200]
    text = " ".join(_prose(200, 1) + middle + _prose(200, 2)) + "."
    clean = " ".join(_prose(600, 3)) + "."
    on = CheckConfig(max_window_gzip=4.0)
    ratios = window_gzip_ratios(text)
    assert len(ratios) == 3 and ratios[1] > 4.0 > max(ratios[0], ratios[2])
    assert check_text(text, "stop", on) == "near_repeats"
    assert max(window_gzip_ratios(clean)) < 4.0 and check_text(clean, "stop", on) is None
    assert check_text(text, "stop") is None  # off by default
    # The checks before it still come first: a cut text is "truncated", whatever its windows.
    assert check_text(text, "length", on) == "truncated"


def test_window_gzip_ratios_use_whole_windows_from_the_first_word():
    words = _prose(450, 4)
    ratios = window_gzip_ratios(" ".join(words))
    assert ratios == [gzip_ratio(" ".join(words[i : i + 200])) for i in (0, 200)]  # the last 50 are left out
    assert window_gzip_ratios(" ".join(words[:199])) == []  # too short to judge
    assert window_gzip_ratios("a\n\n" + " ".join(words[1:200])) == [
        gzip_ratio(" ".join(["a", *words[1:200]]))
    ]


def test_good_texts_pass():
    assert check_text(GOOD_EN, "stop") is None
    assert check_text(GOOD_ZH, "stop") is None


def test_english_text_ending_with_full_stop_passes():
    assert check_text("A short answer.", "stop") is None
    assert check_text("A short answer.", "stop", language="en") is None


@pytest.mark.parametrize("text", ["", "  \n\t  "])
def test_empty(text):
    assert check_text(text, "stop") == REASON_EMPTY
    assert check_text(text, "length") == REASON_EMPTY  # empty is reported first


def test_truncated_english_and_chinese():
    assert check_text(GOOD_EN, "length") == REASON_TRUNCATED
    assert check_text(GOOD_ZH, "length") == REASON_TRUNCATED


def test_no_final_punctuation_english_and_chinese():
    assert check_text(GOOD_EN + " and then", "stop") == REASON_NO_FINAL_PUNCTUATION
    assert check_text(GOOD_ZH + "然后", "stop") == REASON_NO_FINAL_PUNCTUATION


def test_repeated_10_words_fails_9_passes():
    assert check_text(f"{WORDS_10} and then again {WORDS_10}.", "stop") == REASON_REPEATED_NGRAM
    assert check_text(f"{WORDS_9} and then again {WORDS_9}.", "stop") is None


def test_repeated_13_han_fails_12_passes():
    assert check_text(f"{HAN_13}，我们{HAN_13}。", "stop") == REASON_REPEATED_NGRAM
    assert check_text(f"{HAN_12}，我们{HAN_12}。", "stop") is None


def test_meta_word_in_line_1_fails_in_the_middle_passes():
    lines = ["The river rose.", "Farmers moved.", "Herds went up.", "Rain stopped.", "It fell again."]
    assert check_text("\n".join(["Revised version:", *lines]), "stop") == REASON_META_WORDS
    middle = [*lines[:2], "The revised plan worked.", *lines[2:]]
    assert check_text("\n".join(middle), "stop") is None


def test_meta_words_are_not_checked_in_chinese():
    text = "Revised version:\n" + GOOD_ZH
    assert check_text(text, "stop") is None  # detected as Chinese
    assert check_text("Revised text.", "stop", language="zh") is None
    assert check_text("Revised text.", "stop", language="en") == REASON_META_WORDS


def test_first_failing_check_is_reported():
    # A repeat is reported before how the text ends: a prefix already shows it (early abort).
    looping = f"Revised: {WORDS_10} and {WORDS_10}"
    assert check_text(looping, "length") == REASON_REPEATED_NGRAM
    assert check_text(looping, "stop") == REASON_REPEATED_NGRAM
    assert check_text(looping + ".", "stop") == REASON_REPEATED_NGRAM
    revised = f"Revised: {WORDS_10} and more"
    assert check_text(revised, "length") == REASON_TRUNCATED
    assert check_text(revised, "aborted") == REASON_TRUNCATED  # unfinished, whatever stopped it
    assert check_text(revised, "stop") == REASON_NO_FINAL_PUNCTUATION
    assert check_text(revised + ".", "stop") == REASON_META_WORDS


def test_explicit_language_picks_the_ngram_length():
    # Six Han characters repeated: caught with ngram_cjk=6 only when treated as Chinese.
    config = CheckConfig(ngram_words=7, ngram_cjk=6)
    text = "一二三四五六，一二三四五六。"
    assert check_text(text, "stop", config, language="zh") == REASON_REPEATED_NGRAM
    # As English: 。 does not end a sentence, and with "." the 6-gram is too short to fail.
    assert check_text(text, "stop", config, language="en") == REASON_NO_FINAL_PUNCTUATION
    assert check_text("一二三四五六，一二三四五六.", "stop", config, language="en") is None


def test_custom_config_meta_words_and_ngram():
    config = CheckConfig(ngram_words=3, meta_words=("draft",))
    assert check_text("a b c and a b c.", "stop", config) == REASON_REPEATED_NGRAM
    assert check_text("Draft one.\nBody.", "stop", config) == REASON_META_WORDS
    assert check_text("Revised one.\nBody.", "stop", config) is None
