"""Collect: every kept answer and extension of every round, deduplicated and filtered by length.

    stats = collect(run_dir, out=RUN/final/collected.jsonl, cfg=config.final)

Sources, in order: round-1/answers.jsonl, round-1/extensions.jsonl, round-2/..., then the
optional extra Generator answers (`generate_extra`, under RUN/final/extra/). A text is a
candidate when its verdict is "kept" (plus "length_biased_sampling" with
`include_sampled_out`). Filters, each counted: empty query or text, fewer than `min_words` or
more than `max_words` LonGen words, exact duplicate, near duplicate. Candidates are
deduplicated longest first, so of two near-identical texts the more extended one stays.
Every candidate is written to the output with its verdict, so nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

from selflengthen.config import Config, FinalConfig
from selflengthen.engines.base import GENERATOR, Engine
from selflengthen.progress import NullProgress, Progress
from selflengthen.records import KEPT, SAMPLED_OUT
from selflengthen.store import RoundDir, adapter_complete, atomic_write_json, atomic_write_jsonl, read_jsonl
from selflengthen.text.checks import text_units
from selflengthen.text.dedup import normalize
from selflengthen.text.words import count_words, detect_language

EMPTY, TOO_SHORT, TOO_LONG = "empty", "too_short", "too_long"
DUPLICATE, NEAR_DUPLICATE = "duplicate", "near_duplicate"
FILTERS = (EMPTY, TOO_SHORT, TOO_LONG, DUPLICATE, NEAR_DUPLICATE)


def round_numbers(run_dir: Path) -> list[int]:
    """The rounds that have a directory, in order."""
    found = []
    for path in Path(run_dir).glob("round-*"):
        suffix = path.name.split("-", 1)[1]
        if path.is_dir() and suffix.isdigit():
            found.append(int(suffix))
    return sorted(found)


def sources(run_dir: Path, extra_answers: Path | None) -> list[tuple[str, Path, str]]:
    """(label, file, kind) of every file collect reads that exists."""
    out = []
    for k in round_numbers(run_dir):
        rd = RoundDir(Path(run_dir), k)
        out += [
            (f"round-{k}/answers", rd.answers, "answer"),
            (f"round-{k}/extensions", rd.extensions, "extension"),
        ]
    if extra_answers is not None:
        out.append(("final/extra/answers", extra_answers, "extra_answer"))
    return [(label, path, kind) for label, path, kind in out if path.is_file()]


class NearDuplicates:
    """Exact and near-duplicate detection for long texts, with MinHash and banded LSH.

    The instruction deduplicator keeps every 3-gram set in memory; for thousands of 2,000-8,000
    word responses that is gigabytes, so here each text is summarised by `num_perm` minimum
    hashes of its unit 5-grams (their agreement estimates the Jaccard similarity) and bucketed
    by bands of them, so only likely twins are compared.
    """

    _PRIME = (1 << 61) - 1

    def __init__(self, threshold: float, *, num_perm: int = 128, bands: int = 32, ngram: int = 5):
        import numpy as np

        if num_perm % bands:
            raise ValueError("num_perm must be a multiple of bands")
        self.threshold, self.bands, self.rows, self.ngram = threshold, bands, num_perm // bands, ngram
        # Fixed coefficients: the same texts give the same verdicts in every run.
        rng = np.random.default_rng(20241031)
        self._a = rng.integers(1, 1 << 32, num_perm, dtype=np.uint64)
        self._b = rng.integers(0, 1 << 32, num_perm, dtype=np.uint64)
        self._exact: set[bytes] = set()
        self._buckets: list[dict[bytes, list[int]]] = [{} for _ in range(bands)]
        self._signatures: list = []

    def signature(self, text: str):
        import numpy as np

        units = text_units(text)
        grams = {" ".join(units[i : i + self.ngram]) for i in range(max(1, len(units) - self.ngram + 1))}
        hashes = np.fromiter((zlib.crc32(g.encode()) for g in grams), dtype=np.uint64, count=len(grams))
        # a < 2^32 and h < 2^32, so a*h + b stays inside uint64 before the modulo.
        return ((np.outer(hashes, self._a) + self._b) % np.uint64(self._PRIME)).min(axis=0)

    def fingerprint(self, text: str) -> tuple[bytes, object]:
        """(digest of the normalized text, MinHash signature): all `check` needs, about 1 KB."""
        return hashlib.sha1(normalize(text).encode()).digest(), self.signature(text)

    def _bands(self, signature) -> Iterator[tuple[int, bytes]]:
        for band in range(self.bands):
            yield band, signature[band * self.rows : (band + 1) * self.rows].tobytes()

    def check(self, fingerprint: tuple[bytes, object]) -> str | None:
        """DUPLICATE or NEAR_DUPLICATE of a text added before, or None (and then it is added)."""
        digest, signature = fingerprint
        if digest in self._exact:
            return DUPLICATE
        seen: set[int] = set()
        for band, key in self._bands(signature):
            for j in self._buckets[band].get(key, ()):
                if j not in seen:
                    seen.add(j)
                    if float((self._signatures[j] == signature).mean()) >= self.threshold:
                        return NEAR_DUPLICATE
        self._exact.add(digest)
        j = len(self._signatures)
        self._signatures.append(signature)
        for band, key in self._bands(signature):
            self._buckets[band].setdefault(key, []).append(j)
        return None


def _candidates(files: Sequence[tuple[str, Path, str]], include_sampled_out: bool) -> Iterator[dict]:
    wanted = {KEPT, SAMPLED_OUT} if include_sampled_out else {KEPT}
    for label, path, kind in files:
        for row in read_jsonl(path):
            if row.get("verdict") not in wanted:
                continue
            text = str(row.get("text", ""))
            query = str(row.get("query", ""))
            yield {
                "id": row["id"],
                "source": label,
                "kind": kind,
                "query": query,
                "response": text,
                "words": count_words(text),
                "language": detect_language(query or text),
                "model": row.get("model"),
            }


def collect(
    run_dir: Path,
    out: Path,
    cfg: FinalConfig,
    *,
    extra_answers: Path | None = None,
    stats_path: Path | None = None,
) -> dict:
    """Write every candidate to `out` with its verdict ("kept" or the filter that removed it).

    Returns the statistics (also written to `stats_path` when given): candidates and kept per
    source, and how many each filter removed.
    """
    files = sources(run_dir, extra_answers)
    dedup = NearDuplicates(cfg.near_duplicate_threshold)
    # Pass 1 keeps only lengths and fingerprints, not the texts: collected sets can be gigabytes.
    lengths: list[tuple[int, int]] = []  # (words, position)
    seen_words: list[int] = []  # every non-empty candidate's length, to say why nothing was kept
    verdicts: list[str | None] = []
    prints: dict[int, tuple[bytes, object]] = {}
    for position, cand in enumerate(_candidates(files, cfg.include_sampled_out)):
        empty = not cand["query"].strip() or not cand["response"].strip()
        if not empty:
            seen_words.append(cand["words"])
        if empty:
            verdict: str | None = EMPTY
        elif cand["words"] < cfg.min_words:
            verdict = TOO_SHORT
        elif cand["words"] > cfg.max_words:
            verdict = TOO_LONG
        else:
            verdict = None
            prints[position] = dedup.fingerprint(cand["response"])
            lengths.append((cand["words"], position))
        verdicts.append(verdict)
    # Longest first, so of two near-identical texts the more extended one is kept.
    for _, position in sorted(lengths, key=lambda wp: (-wp[0], wp[1])):
        verdicts[position] = dedup.check(prints.pop(position)) or KEPT

    removed: Counter[str] = Counter()
    per_source: dict[str, Counter[str]] = {}
    kept_words: list[int] = []

    def rows() -> Iterator[dict]:
        for position, cand in enumerate(_candidates(files, cfg.include_sampled_out)):
            verdict = verdicts[position]
            cand["verdict"] = verdict
            counts = per_source.setdefault(cand["source"], Counter())
            counts["candidates"] += 1
            if verdict == KEPT:
                counts["kept"] += 1
                kept_words.append(cand["words"])
            else:
                removed[str(verdict)] += 1
            yield cand

    atomic_write_jsonl(out, rows())
    stats = {
        "candidates": len(verdicts),
        "kept": len(kept_words),
        "removed": {name: removed.get(name, 0) for name in FILTERS},
        "by_source": {label: dict(c) for label, c in per_source.items()},
        "word_range": [cfg.min_words, cfg.max_words],
        "kept_words": _figures(kept_words),
        "candidate_words": _figures(seen_words),
        "sources": [label for label, _, _ in files],
    }
    if stats_path is not None:
        atomic_write_json(stats_path, stats)
    return stats


def _figures(words: list[int]) -> dict:
    if not words:
        return {}
    ordered = sorted(words)
    return {
        "min": ordered[0],
        "median": ordered[len(ordered) // 2],
        "mean": round(sum(ordered) / len(ordered), 1),
        "max": ordered[-1],
    }


def nothing_kept_message(stats: dict) -> str:
    """One line on why collect kept nothing: what each filter removed, the lengths it saw, and
    the options that change the word range."""
    low, high = stats["word_range"]
    removed = stats["removed"]
    if not stats["candidates"]:
        return (
            "collect found no candidates: no round has a kept answer or extension yet "
            f"(read {', '.join(stats['sources']) or 'no files'})"
        )
    seen = stats.get("candidate_words") or {}
    lengths = (
        f"lengths seen {seen['min']:,}-{seen['max']:,} words, median {seen['median']:,}"
        if seen
        else "no non-empty text"
    )
    others = ", ".join(f"{removed[k]} {k}" for k in (EMPTY, DUPLICATE, NEAR_DUPLICATE) if removed.get(k))
    return (
        f"collect kept 0 of {stats['candidates']} candidates: {removed.get(TOO_SHORT, 0)} below "
        f"{low:,} words, {removed.get(TOO_LONG, 0)} above {max(high, 0):,}"
        + (f", {others}" if others else "")
        + f" ({lengths}); set a range they reach with --min-words/--max-words "
        "(final.min_words/final.max_words)"
    )


# ------------------------------------------------------------------------- extra answers


def latest_generator(run_dir: Path) -> Path | None:
    """The newest complete Generator adapter of the run (the last round's, if it trained)."""
    for k in reversed(round_numbers(run_dir)):
        path = RoundDir(Path(run_dir), k).adapter(GENERATOR)
        if adapter_complete(path):
            return path
    return None


def extra_round_dir(run_dir: Path, extra_dir: Path) -> RoundDir:
    """A RoundDir whose files lie under `extra_dir` (RUN/final/extra), so the round stages write there."""
    k = (round_numbers(run_dir) or [0])[-1] + 1
    rd = RoundDir(Path(run_dir), k)
    old = rd.path
    for name, value in list(vars(rd).items()):
        if isinstance(value, Path):
            setattr(rd, name, Path(extra_dir) / value.relative_to(old))
    return rd


async def generate_extra(
    config: Config, engine: Engine, run_dir: Path, extra_dir: Path, progress: Progress | None = None
) -> Path:
    """`final.extra_answers` fresh self-instructed queries, one Generator answer each (resumable).

    The queries avoid every instruction of the run (exact and near duplicates); the answers
    come from the newest Generator adapter, with the next round's token budget. No
    length-biased sampling: the word range filter of `collect` decides. Returns answers.jsonl.
    """
    from selflengthen.prompts import load_seeds
    from selflengthen.stages.common import RoundContext
    from selflengthen.stages.generate import finish_generate, run_generate
    from selflengthen.stages.instruct import run_instruct

    rd = extra_round_dir(run_dir, extra_dir)
    if rd.answers.is_file():
        return rd.answers
    cfg = config.model_copy(deep=True)
    cfg.instruct.count = config.final.extra_answers
    cfg.instruct.answer_seeds = 0
    cfg.generate.samples_per_instruction = 1  # one answer per query: more distinct queries
    cfg.select.length_biased = False
    adapter = latest_generator(run_dir)
    if adapter is not None:
        engine.set_adapters({GENERATOR: str(adapter)})
    ctx = RoundContext(
        config=cfg,
        engine=engine,
        round=rd.k,
        rd=rd,
        progress=progress or NullProgress(),
        generator=GENERATOR if adapter is not None else None,
    )
    previous = [
        row["text"]
        for k in round_numbers(run_dir)
        for row in read_jsonl(RoundDir(Path(run_dir), k).instructions)
        if row.get("verdict") == KEPT
    ]
    await run_instruct(ctx, load_seeds(cfg.seeds_file), previous)
    await run_generate(ctx)
    finish_generate(ctx)
    return rd.answers
