"""Exact and near-duplicate detection for instructions (Step 0) and collected pairs.

Exact: the same text after lower-casing and dropping punctuation and spaces. Near: Jaccard
similarity of unit 3-gram sets at or above a threshold. An inverted index from shingle to
entries keeps lookups far from O(N) per query for realistic pools.
"""

from __future__ import annotations

import re
from collections import defaultdict

from selflengthen.text.checks import text_units

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalize(text: str) -> str:
    return _NON_WORD.sub("", text.lower())


def shingles(text: str, n: int = 3) -> frozenset[tuple[str, ...]]:
    units = text_units(text)
    if len(units) < n:
        return frozenset([tuple(units)]) if units else frozenset()
    return frozenset(tuple(units[i : i + n]) for i in range(len(units) - n + 1))


class Deduplicator:
    def __init__(self, threshold: float = 0.7):
        self.threshold = threshold
        self._exact: set[str] = set()
        self._sets: list[frozenset] = []
        self._index: dict[tuple[str, ...], list[int]] = defaultdict(list)

    def __len__(self) -> int:
        return len(self._sets)

    def find(self, text: str) -> str | None:
        """'duplicate', 'near_duplicate' or None."""
        if normalize(text) in self._exact:
            return "duplicate"
        mine = shingles(text)
        if not mine:
            return None
        overlap: dict[int, int] = defaultdict(int)
        for sh in mine:
            for j in self._index.get(sh, ()):
                overlap[j] += 1
        for j, inter in overlap.items():
            union = len(mine) + len(self._sets[j]) - inter
            if union and inter / union >= self.threshold:
                return "near_duplicate"
        return None

    def add(self, text: str) -> None:
        self._exact.add(normalize(text))
        mine = shingles(text)
        j = len(self._sets)
        self._sets.append(mine)
        for sh in mine:
            self._index[sh].append(j)
