"""Text utilities: word counters, language detection, paragraph splitting, quality checks."""

from selflengthen.text.checks import CheckConfig, check_text, find_repeated_ngram
from selflengthen.text.paragraphs import (
    former_half,
    join_paragraphs,
    keep_leading_fraction,
    split_paragraphs,
)
from selflengthen.text.words import count_words, count_words_longbench, detect_language

__all__ = [
    "CheckConfig",
    "check_text",
    "count_words",
    "count_words_longbench",
    "detect_language",
    "find_repeated_ngram",
    "former_half",
    "join_paragraphs",
    "keep_leading_fraction",
    "split_paragraphs",
]
