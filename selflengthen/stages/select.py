"""Length-biased sampling: prefer longer texts without keeping only the longest.

Sort by length; the item at position p (0 = shortest) of N has rank r = 1 - p/N and is kept
when random() > 2 r^3. So the shortest ~20.6% (r^3 >= 1/2) are never kept and about 60% are
kept overall. One sort: O(N log N) (the reference code looked each item up with list.index,
O(N^2)). Streams the stage's partial file: only ids and lengths are held in memory.
"""

from __future__ import annotations

import random
from pathlib import Path

from selflengthen.store import atomic_write_jsonl, read_jsonl

PASSED = "passed"  # a partial record that passed the checks and awaits selection
KEPT = "kept"
SAMPLED_OUT = "length_biased_sampling"


def length_biased_keep(lengths: list[int], rng: random.Random, ties: list[str] | None = None) -> list[bool]:
    """keep[i] for each length. Equal lengths are ordered by `ties` (the ids) when given, else by input
    order: items finish in any order, so only the ids make a decision independent of it."""
    n = len(lengths)
    if ties is not None:
        order = sorted(range(n), key=lambda i: (lengths[i], ties[i]))
    else:
        order = sorted(range(n), key=lengths.__getitem__)
    keep = [False] * n
    for position, i in enumerate(order):
        r = 1.0 - position / n
        keep[i] = rng.random() > 2.0 * r**3
    return keep


def finalize_with_selection(partial: Path, final: Path, *, enabled: bool, seed: int) -> dict[str, int]:
    """Write `final` from `partial`: passed items become "kept" or "length_biased_sampling".
    Returns counts by verdict."""
    ids, lengths = [], []
    for row in read_jsonl(partial):
        if row.get("verdict") == PASSED:
            ids.append(row["id"])
            lengths.append(int(row["words"]))
    if enabled:
        decided = dict(zip(ids, length_biased_keep(lengths, random.Random(seed), ties=ids)))
    else:
        decided = dict.fromkeys(ids, True)
    counts: dict[str, int] = {}

    def rows():
        seen: set[str] = set()
        for row in read_jsonl(partial):
            if row["id"] in seen:  # never duplicate, even if a partial file was appended twice
                continue
            seen.add(row["id"])
            if row.get("verdict") == PASSED:
                row["verdict"] = KEPT if decided[row["id"]] else SAMPLED_OUT
            counts[row["verdict"]] = counts.get(row["verdict"], 0) + 1
            yield row

    atomic_write_jsonl(final, rows())
    return counts
