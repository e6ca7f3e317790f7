"""Checks on a generated text: is it a finished, non-degenerate answer?

Every answer and extension passes through `check_text`. A failure is data, not an
exception: the caller records the reason code next to the raw text and moves on. Usage:

    reason = check_text(result.text, result.finish_reason)
    if reason is None: ...keep it...

The checks, in the order they are reported: the text is not empty; no n-gram of units repeats
(a looping model); the model was not cut off by the token limit; it ends with sentence-final
punctuation; for English, the first and last lines do not talk about "the revised
version" (the model commenting on its own rewrite instead of writing the text); and, when
`max_tail_drift` is set, a long text's last third does not repeat itself more than its first
third by that factor, and when `max_window_gzip` is set, no window of 200 words compresses better
than that (near-repeats anywhere in a text of 200 words or more; text/drift.py). Neither is one of
the paper's checks: both are off by default, and neither can fail on a prefix (no early abort).

A repeated n-gram is reported before the checks on how the text ends because it is the one
failure a prefix already shows: a generation stopped at its first repeat (early abort,
text/prefix.py) gets the same reason the full text would get. A looping text usually also
runs to the token limit; the loop is the cause worth recording.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from selflengthen.errors import ConfigError
from selflengthen.text.drift import tail_head_ratio, window_gzip_ratios
from selflengthen.text.words import count_words, detect_language

# Reason codes. They are written to the run store, so their spelling is part of the format.
REASON_EMPTY = "empty"
REASON_TRUNCATED = "truncated"
REASON_NO_FINAL_PUNCTUATION = "no_final_punctuation"
REASON_REPEATED_NGRAM = "repeated_ngram"
REASON_META_WORDS = "meta_words"
REASON_TAIL_DRIFT = "tail_drift"
REASON_NEAR_REPEATS = "near_repeats"
REASON_TOO_FEW_WORDS = "too_few_words"
# In the order check_text tests them: the first failing check is the one reported.
ALL_REASONS = (
    REASON_EMPTY,
    REASON_REPEATED_NGRAM,
    REASON_TRUNCATED,
    REASON_NO_FINAL_PUNCTUATION,
    REASON_META_WORDS,
    REASON_TAIL_DRIFT,
    REASON_NEAR_REPEATS,
    REASON_TOO_FEW_WORDS,
)

DEFAULT_META_WORDS = ("revised", "revision", "response", "version", "paragraph")

# --- units for the repetition check -------------------------------------------------------

_HAN_RANGES = "\u3400-\u4dbf\u4e00-\u9fff"
# CJK symbols and punctuation, plus the punctuation part of the full-width and half-width
# forms block (full-width digits and letters are left out: they are word characters).
_CJK_PUNCT_RANGES = "\u3000-\u303f\uff00-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65"
# One Han character, or a maximal run of anything that is neither space, Han nor CJK
# punctuation. CJK punctuation thus separates units and never becomes one.
_UNIT = re.compile(rf"[{_HAN_RANGES}]|[^\s{_HAN_RANGES}{_CJK_PUNCT_RANGES}]+")


def _is_punctuation(char: str) -> bool:
    return unicodedata.category(char).startswith("P")


def _strip_punctuation(unit: str) -> str:
    start, end = 0, len(unit)
    while start < end and _is_punctuation(unit[start]):
        start += 1
    while end > start and _is_punctuation(unit[end - 1]):
        end -= 1
    return unit[start:end]


def text_units(text: str) -> list[str]:
    """Units for repetition checks: each Han character, or each run of other non-space text.

    Units are lowercased and stripped of surrounding punctuation, so "Again," and "again"
    are the same unit; units that are only punctuation are dropped.
    """
    units = (_strip_punctuation(match.lower()) for match in _UNIT.findall(text))
    return [unit for unit in units if unit]


def find_repeated_ngram(text: str, n: int) -> str | None:
    """The first n-gram of units seen a second time (overlaps allowed), space-joined, or None."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    units = text_units(text)
    seen: set[tuple[str, ...]] = set()
    for start in range(len(units) - n + 1):
        gram = tuple(units[start : start + n])
        if gram in seen:
            return " ".join(gram)
        seen.add(gram)
    return None


# --- final punctuation --------------------------------------------------------------------

# English closers, including a closing quote or bracket after the full stop. "." is here:
# the reference code's Qwen variant rejected every English text ending in ".", a bug.
_FINAL_EN = frozenset(".!?\"')]}…’”")
# Chinese closers, plus the ASCII ones: Chinese answers often end with ASCII punctuation.
_FINAL_ZH = _FINAL_EN | frozenset("。！？…”’）】」』》")
# Markdown emphasis may wrap the last sentence ("**The end.**"); look through it.
_EMPHASIS = "*_"


def ends_with_sentence_punctuation(text: str, language: str) -> bool:
    """True when the last non-space character (past markdown emphasis) ends a sentence.

    `language` "zh" accepts Chinese and ASCII closers; any other language the English ones.
    """
    finals = _FINAL_ZH if language == "zh" else _FINAL_EN
    # Emphasis marks alone do not end a sentence: "**The end**" fails, "**The end.**" passes.
    tail = text.rstrip().rstrip(_EMPHASIS)
    return bool(tail) and tail[-1] in finals


# --- meta words ---------------------------------------------------------------------------


def _meta_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    # Longest first, so a word that is a prefix of another cannot shadow it in the group.
    alternatives = "|".join(re.escape(word) for word in sorted(words, key=len, reverse=True))
    # Whole words only ("versioning" does not count); plurals ("responses") do.
    return re.compile(rf"\b({alternatives})(?:s|es)?\b", re.IGNORECASE)


def find_meta_words(
    text: str,
    words: tuple[str, ...] = DEFAULT_META_WORDS,
    head_lines: int = 2,
    tail_lines: int = 3,
) -> str | None:
    """The first meta word (as listed in `words`) in the first or last non-empty lines, or None.

    Only the edges are searched: that is where a model writes "Here is the revised version"
    or "This response expands ...". The same words in the body are ordinary prose. The
    caller decides the language; the check is meant for English.
    """
    if head_lines < 0 or tail_lines < 0:
        raise ValueError(f"head_lines and tail_lines must be >= 0, got {head_lines}, {tail_lines}")
    if not words:
        return None
    lines = [line for line in text.splitlines() if line.strip()]
    head = list(range(min(head_lines, len(lines))))
    # A short text's head and tail overlap; search each line once.
    tail = [i for i in range(max(len(lines) - tail_lines, 0), len(lines)) if i not in head]
    by_lower = {word.lower(): word for word in words}
    pattern = _meta_pattern(words)
    for index in head + tail:
        match = pattern.search(lines[index])
        if match:
            return by_lower.get(match.group(1).lower(), match.group(1))
    return None


# --- the whole check ----------------------------------------------------------------------


@dataclass(frozen=True)
class CheckConfig:
    """Thresholds of `check_text`; the defaults are the paper's."""

    ngram_words: int = 10  # repeated run of this many words fails a space-separated text
    ngram_cjk: int = 13  # ... of this many units fails a Chinese text (one per Han char)
    meta_words: tuple[str, ...] = DEFAULT_META_WORDS
    meta_head_lines: int = 2  # first non-empty lines searched for meta words
    meta_tail_lines: int = 3  # last non-empty lines searched for meta words
    max_tail_drift: float | None = None  # tail/head gzip ratio above this fails a long text
    tail_drift_min_words: int = 300  # shorter texts are not judged: their thirds are too small
    max_window_gzip: float | None = None  # a 200-word window compressing better than this fails
    min_words: int = 0  # a finished text of fewer words (Han characters count one each) fails

    def __post_init__(self) -> None:
        for name in ("ngram_words", "ngram_cjk"):
            if getattr(self, name) < 1:
                raise ConfigError(f"must be at least 1, got {getattr(self, name)}", field=name)
        for name in ("meta_head_lines", "meta_tail_lines"):
            if getattr(self, name) < 0:
                raise ConfigError(f"must be at least 0, got {getattr(self, name)}", field=name)
        if self.min_words < 0:
            raise ConfigError(f"must be at least 0, got {self.min_words}", field="min_words")
        # A bare string would be searched letter by letter; catch it here, not in a run.
        if isinstance(self.meta_words, str):
            raise ConfigError("must be a list of words, not one string", field="meta_words")
        for name in ("max_tail_drift", "max_window_gzip"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"must be above 0, got {value}", field=name)


DEFAULT_CHECK_CONFIG = CheckConfig()


def check_text(
    text: str,
    finish_reason: str,
    config: CheckConfig = DEFAULT_CHECK_CONFIG,
    language: str | None = None,
) -> str | None:
    """None when `text` passes every check, else the reason code of the first that fails.

    `language` defaults to `detect_language(text)`; "zh" uses the CJK n-gram length and
    skips the meta-word check (the meta words are English).
    """
    if not text.strip():
        return REASON_EMPTY
    if language is None:
        language = detect_language(text)
    n = config.ngram_cjk if language == "zh" else config.ngram_words
    if find_repeated_ngram(text, n) is not None:
        return REASON_REPEATED_NGRAM
    if finish_reason in ("length", "aborted"):  # an aborted text is unfinished too
        return REASON_TRUNCATED
    if not ends_with_sentence_punctuation(text, language):
        return REASON_NO_FINAL_PUNCTUATION
    if language == "en" and find_meta_words(
        text, tuple(config.meta_words), config.meta_head_lines, config.meta_tail_lines
    ):
        return REASON_META_WORDS
    if config.max_tail_drift is not None and len(text.split()) >= config.tail_drift_min_words:
        drift = tail_head_ratio(text)
        if drift is not None and drift > config.max_tail_drift:
            return REASON_TAIL_DRIFT
    limit = config.max_window_gzip
    if limit is not None and max(window_gzip_ratios(text), default=0.0) > limit:
        return REASON_NEAR_REPEATS
    if config.min_words and count_words(text) < config.min_words:
        return REASON_TOO_FEW_WORDS
    return None
