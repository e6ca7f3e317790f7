"""Text utilities: word counters, language detection, paragraph splitting, quality checks."""

from selflengthen.text.words import count_words, count_words_longbench, detect_language

__all__ = ["count_words", "count_words_longbench", "detect_language"]
