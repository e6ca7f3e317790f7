"""Length-biased sampling: prefer longer texts without keeping only the longest.

Sort by length; the item at position p (0 = shortest) of N has rank r = 1 - p/N and is kept
when random() > 2 r^3. So the shortest ~20.6% (r^3 >= 1/2) are never kept and about 60% are
kept overall. One sort: O(N log N) (the reference code looked each item up with list.index,
O(N^2)). Streams the stage's partial file: per line, 21 bytes are held in memory.
"""

from __future__ import annotations

import hashlib
import random
from array import array
from pathlib import Path

import numpy as np

from selflengthen.records import KEPT, PASSED, SAMPLED_OUT
from selflengthen.store import atomic_write_jsonl, read_jsonl

__all__ = ["KEPT", "PASSED", "SAMPLED_OUT", "finalize_with_selection", "length_biased_keep"]


def length_biased_keep(lengths: list[int], rng: random.Random, ties: list[str] | None = None) -> list[bool]:
    """keep[i] for each length. Equal lengths are ordered by `ties` (the ids) when given, else by input
    order: items finish in any order, so only the ids make a decision independent of it."""
    n = len(lengths)
    if ties is not None:
        order = sorted(range(n), key=lambda i: (lengths[i], ties[i]))
    else:
        order = sorted(range(n), key=lengths.__getitem__)
    return _draw_in_rank_order(order, rng).tolist()


def _draw_in_rank_order(order: list[int], rng: random.Random) -> np.ndarray:
    """keep[i] for the item at position p of `order` (shortest first): random() > 2 r^3, r = 1 - p/N."""
    n = len(order)
    keep = np.zeros(n, dtype=np.bool_)
    for position, i in enumerate(order):
        r = 1.0 - position / n
        keep[i] = rng.random() > 2.0 * r**3
    return keep


def id_hash(item_id: str) -> int:
    """A 64-bit key for an id: ties between equal lengths are ordered by it, which makes the order
    independent of the order items finished, in 8 bytes instead of the id string."""
    return int.from_bytes(hashlib.blake2b(item_id.encode(), digest_size=8).digest(), "little")


def finalize_with_selection(partial: Path, final: Path, *, enabled: bool, seed: int) -> dict[str, int]:
    """Write `final` from `partial`: passed items become "kept" or "length_biased_sampling".
    Returns counts by verdict.

    Memory is a few compact arrays, about 21 bytes per line, never the ids or the records: per line
    its id's 64-bit hash, its length and whether it passed; then one O(N log N) sort by (length,
    hash). A line whose id already appeared (a partial file appended twice) is left out; ids are
    compared exactly, the hashes only find the candidates."""
    hashes, lengths, passed = array("Q"), array("q"), bytearray()
    for row in read_jsonl(partial):
        hashes.append(id_hash(row["id"]))
        ok = row.get("verdict") == PASSED
        passed.append(ok)
        lengths.append(int(row["words"]) if ok else 0)
    h = np.frombuffer(hashes, dtype=np.uint64)
    repeat = _repeated_lines(partial, h)
    chosen = np.frombuffer(passed, dtype=np.bool_) & ~repeat
    keep = np.ones(len(h), dtype=np.bool_)
    if enabled and chosen.any():
        rows = np.flatnonzero(chosen)
        length = np.frombuffer(lengths, dtype=np.int64)[rows]
        keep[rows] = _keep_by_rank(length, h[rows], random.Random(seed))
    counts: dict[str, int] = {}

    def out():
        for j, row in enumerate(read_jsonl(partial)):
            if repeat[j]:  # never duplicate, even if a partial file was appended twice
                continue
            if row.get("verdict") == PASSED:
                row["verdict"] = KEPT if keep[j] else SAMPLED_OUT
            counts[row["verdict"]] = counts.get(row["verdict"], 0) + 1
            yield row

    atomic_write_jsonl(final, out())
    return counts


def _keep_by_rank(lengths: np.ndarray, ties: np.ndarray, rng: random.Random) -> np.ndarray:
    """length_biased_keep over arrays: the same rule, the same draws in the same rank order."""
    return _draw_in_rank_order(np.lexsort((ties, lengths)).tolist(), rng)  # by length, then id hash


def _repeated_lines(partial: Path, hashes: np.ndarray) -> np.ndarray:
    """repeat[j]: line j's id already appeared on an earlier line. Only lines whose hash occurs
    more than once are read again to compare their ids, so hash collisions never drop a record."""
    repeat = np.zeros(len(hashes), dtype=np.bool_)
    if len(hashes) < 2:
        return repeat
    values, counts = np.unique(hashes, return_counts=True)
    shared = values[counts > 1]
    if not len(shared):
        return repeat
    candidates = np.isin(hashes, shared)
    seen: set[str] = set()
    for j, row in enumerate(read_jsonl(partial)):
        if candidates[j]:
            repeat[j] = row["id"] in seen
            seen.add(row["id"])
    return repeat
