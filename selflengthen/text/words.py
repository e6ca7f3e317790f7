"""Word counters and language detection.

`count_words` is the pipeline's counter and LonGen's: every CJK character (including CJK
punctuation and full-width forms) counts as one word, and the rest is split on whitespace.
`count_words_longbench` is LongBench-Write's own counter: Han characters plus runs of ASCII
letters. The two differ on purpose; each benchmark is scored with its own.
"""

from __future__ import annotations

import re

# U+4E00-9FFF CJK ideographs, U+3000-303F CJK punctuation, U+FF00-FFEF full-width forms.
_LONGEN_CJK = re.compile(r"[\u4e00-\u9fff\u3000-\u303f\uff00-\uffef]")
_HAN = re.compile(r"[\u4e00-\u9fff]")
_ASCII_WORD = re.compile(r"\b[a-zA-Z]+\b")


def count_words(text: str) -> int:
    """LonGen word count: one per CJK character, plus whitespace-separated tokens of the rest."""
    cjk = len(_LONGEN_CJK.findall(text))
    rest = _LONGEN_CJK.sub(" ", text)
    return cjk + len(rest.split())


def count_words_longbench(text: str) -> int:
    """LongBench-Write word count: Han characters plus `\\b[a-zA-Z]+\\b` tokens."""
    return len(_HAN.findall(text)) + len(_ASCII_WORD.findall(text))


def detect_language(text: str) -> str:
    """'zh' when Han characters make up at least a fifth of the non-space characters, else 'en'.

    A fifth, not a half: Chinese answers often carry English terms, numbers and markdown.
    """
    chars = [c for c in text if not c.isspace()]
    if not chars:
        return "en"
    han = len(_HAN.findall(text))
    return "zh" if han * 5 >= len(chars) else "en"
