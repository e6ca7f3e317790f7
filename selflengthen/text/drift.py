"""How much a text repeats itself, by how well it compresses: the drift no n-gram check sees.

A small model's long text often ends in near-repeats ("a system called high speed high speed
where companies ... make this idea easy"): no 10-word phrase repeats exactly, yet the last part
says the same few things again. gzip finds those repeats. The whole-text ratio rises with length
alone (gzip finds more common words to share in a longer text), so these figures compare parts of
equal size: the last third of a text against its first third, or consecutive windows of a fixed
number of words (the worst window is where a text comes closest to a loop).
"""

from __future__ import annotations

import gzip

MIN_THIRD_WORDS = 10  # thirds shorter than this say nothing
WINDOW_WORDS = 200  # words per window: long enough for gzip to see repeats, short enough to be local


def gzip_ratio(text: str) -> float:
    """Bytes over gzipped bytes (gzip's fixed header included, so short texts compare alike)."""
    raw = text.encode("utf-8")
    return len(raw) / len(gzip.compress(raw, mtime=0)) if raw else 0.0


def tail_head_ratio(text: str) -> float | None:
    """gzip ratio of the last third of the words over that of the first third (> 1: the end
    repeats itself more than the start); None for texts too short to have thirds (< 30 words).
    Words are whitespace-separated: a Chinese text without spaces has none to cut, and gets None."""
    words = text.split()
    if len(words) < 3 * MIN_THIRD_WORDS:
        return None
    third = len(words) // 3
    return gzip_ratio(" ".join(words[-third:])) / gzip_ratio(" ".join(words[:third]))


def window_gzip_ratios(text: str, size: int = WINDOW_WORDS) -> list[float]:
    """gzip ratio of each whole window of `size` whitespace-separated words, counted from the first
    word and joined by single spaces; a last window shorter than `size` is left out, so a text of
    fewer words has none. Windows of one size compare texts of any length on repetition alone."""
    words = text.split()
    return [gzip_ratio(" ".join(words[i : i + size])) for i in range(0, len(words) - size + 1, size)]
