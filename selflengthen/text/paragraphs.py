"""Paragraph splitting for the Extender.

The Extender's stage 1 sees the "former" half of an answer's paragraphs, and keeps only the
leading two thirds of what it writes (the tail is often a hurried ending). These helpers do
that cutting. Usage:

    paragraphs = split_paragraphs(answer)
    outline = join_paragraphs(former_half(paragraphs))
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from fractions import Fraction

# A line break, any number of whitespace-only lines, another line break. `\s*` may span
# several blank lines, so runs of blank lines make one separator, not empty paragraphs.
_BLANK_LINE = re.compile(r"\n\s*\n")

# Float fractions are snapped to the nearest ratio with a denominator up to this bound, so
# 2/3 given as 0.666... keeps floor(2n/3) paragraphs instead of one fewer (float error).
_MAX_DENOMINATOR = 10**6


def _stripped_nonempty(parts: list[str]) -> list[str]:
    stripped = (part.strip() for part in parts)
    return [part for part in stripped if part]


def split_paragraphs(text: str) -> list[str]:
    """Split on blank lines; if that gives 2 or fewer paragraphs, split on single newlines.

    The fallback exists because small models often separate paragraphs with one newline;
    without it the Extender would get a one-paragraph "former half" of nothing.
    """
    paragraphs = _stripped_nonempty(_BLANK_LINE.split(text))
    if len(paragraphs) <= 2:
        paragraphs = _stripped_nonempty(text.split("\n"))
    return paragraphs


def join_paragraphs(paragraphs: Sequence[str]) -> str:
    """Join paragraphs with one blank line between them (the inverse of the first split)."""
    return "\n\n".join(paragraphs)


def former_half(paragraphs: Sequence[str]) -> list[str]:
    """The first floor(n/2) paragraphs: the outline the Extender enriches in stage 1."""
    return list(paragraphs[: len(paragraphs) // 2])


def keep_leading_fraction(paragraphs: Sequence[str], fraction: float | Fraction = 2 / 3) -> list[str]:
    """The first floor(n * fraction) paragraphs, computed exactly (n=3 keeps 2, n=6 keeps 4)."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be between 0 and 1, got {fraction!r}")
    exact = Fraction(fraction).limit_denominator(_MAX_DENOMINATOR)
    # Integer floor division on numerator and denominator: no float rounding can drop one.
    keep = len(paragraphs) * exact.numerator // exact.denominator
    return list(paragraphs[:keep])
