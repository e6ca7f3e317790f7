"""The report's headline: how long the texts are, round after round.

Per round k it gathers the words of the kept answers and kept extensions, and, when the run
directory holds them, held-out answers and benchmark scores:

    RUN/heldout/round-K-NAME.jsonl    answers of round K's Generator (K = 0: the base model) to
                                      instructions that never entered training (bench/micro_reproduction.py)
    RUN/eval/round-K/NAME.jsonl       `eval generate` answers of round K's model: lengths, and the
                                      LonGen / LongBench-Write length score when the rows are one of those
    RUN/eval/round-K/NAME.json        `eval score --json` output saved there: its "overall" score

and the final SFT set (RUN/final/constrained.jsonl), whose section also lists constraint types.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from selflengthen.errors import DataError
from selflengthen.evaluate import plots
from selflengthen.evaluate.files import LONGBENCH_WRITE, LONGEN, detect_benchmark
from selflengthen.evaluate.report_data import Round, iter_lines, read_json, words_of
from selflengthen.evaluate.report_doc import Doc

FINAL = "final"
_TITLES = {LONGEN: "LonGen", LONGBENCH_WRITE: "LongBench-Write S_l"}


def _group(k: int) -> str:
    return f"round {k}"


def _per_round_files(run: Path) -> list[tuple[int, str, Path]]:
    """(round, series name, file) of held-out answers and per-round eval outputs."""
    found = []
    for path in sorted((run / "heldout").glob("round-*-*.jsonl")):
        match = re.fullmatch(r"round-(\d+)-(.+)\.jsonl", path.name)
        if match:
            found.append((int(match.group(1)), f"held-out {match.group(2)}", path))
    for folder in sorted((run / "eval").glob("round-*")):
        match = re.fullmatch(r"round-(\d+)", folder.name)
        if match and folder.is_dir():
            for path in sorted(folder.glob("*.json*")):
                found.append((int(match.group(1)), path.stem, path))
    return found


def growth_data(
    run: Path, rounds: list[Round], notes: list[str]
) -> tuple[dict[str, dict[str, list[int]]], list[str], dict[str, dict[str, float]]]:
    """(series, groups, scores) for plots.growth."""
    from selflengthen.evaluate.scoring import score_rows

    series: dict[str, dict[str, list[int]]] = {"kept answers": {}, "kept extensions": {}}
    scores: dict[str, dict[str, float]] = {}
    ks = {r.k for r in rounds}
    for r in rounds:
        for stage, name in (("answers", "kept answers"), ("extensions", "kept extensions")):
            if r.kept_words.get(stage):
                series[name][_group(r.k)] = r.kept_words[stage]
    for k, name, path in _per_round_files(run):
        if path.suffix == ".json":
            data = read_json(path, notes)
            if data and isinstance(data.get("overall"), (int, float)):
                scores.setdefault(name, {})[_group(k)] = float(data["overall"])
                ks.add(k)
            continue
        rows = [row for row in iter_lines(path, notes) if isinstance(row.get("response"), str)]
        words = [n for n in (words_of(row, "response") for row in rows) if n is not None]
        if not words:
            continue
        ks.add(k)
        series.setdefault(name, {})[_group(k)] = words
        benchmark = detect_benchmark(rows, path)
        if benchmark in _TITLES:
            try:
                overall = score_rows(benchmark, rows, str(path))["overall"]
            except DataError as exc:
                notes.append(f"{path.relative_to(run)}: not scored ({exc})")
                continue
            scores.setdefault(f"{_TITLES[benchmark]}: {name}", {})[_group(k)] = float(overall)
    # One axis for every score: LonGen's 0-1 scores become 0-100 like LongBench-Write's S_l.
    scores = {
        (f"{name} (x100)" if all(v <= 1.0 for v in by.values()) else name): (
            {g: round(v * 100, 1) for g, v in by.items()} if all(v <= 1.0 for v in by.values()) else by
        )
        for name, by in scores.items()
    }
    groups = [_group(k) for k in sorted(ks)]
    final = final_records(run, notes)
    if final:
        series["final SFT set"] = {FINAL: [r["words"] for r in final]}
        groups.append(FINAL)
    return series, groups, scores


def final_records(run: Path, notes: list[str]) -> list[dict[str, Any]]:
    """The final SFT set's records (kept rows of RUN/final/constrained.jsonl) with words and type."""
    path = run / "final" / "constrained.jsonl"
    if not path.is_file():
        return []
    out = []
    for row in iter_lines(path, notes):
        n = words_of(row, "response")
        if row.get("verdict", "kept") == "kept" and n is not None:
            out.append({"words": n, "type": str(row.get("type", "unknown"))})
    return out


def growth_section(doc: Doc, run: Path, rounds: list[Round], out: Path, notes: list[str]) -> None:
    series, groups, scores = growth_data(run, rounds, notes)
    if not plots.growth(series, groups, scores, out / "growth.png"):
        return
    doc.heading(2, "Growth: length per round")
    doc.image("growth.png", "word counts per round: kept answers, kept extensions, held-out answers")
    rows = []
    for name, by_group in series.items():
        for group in groups:
            words = sorted(by_group.get(group) or [])
            if words:
                mean = sum(words) / len(words)
                rows.append([group, name, len(words), words[len(words) // 2], mean, words[-1]])
    doc.table(["round", "series", "n", "median words", "mean words", "max words"], rows)
    if scores:
        doc.table(["score", *groups], [[name, *[v.get(g) for g in groups]] for name, v in scores.items()])


def final_section(doc: Doc, run: Path, out: Path, notes: list[str]) -> None:
    final = run / "final"
    if not final.is_dir():
        return
    doc.heading(2, "Final stage")
    collect = read_json(final / "collect_stats.json", notes)
    length = read_json(final / "length_stats.json", notes)
    if collect:
        low, high = (collect.get("word_range") or [None, None])[:2]
        removed: dict = collect["removed"] if isinstance(collect.get("removed"), dict) else {}
        doc.para(
            f"Collected {collect.get('candidates')} candidates, kept {collect.get('kept')} of {low}-{high} "
            f"words (removed: {', '.join(f'{k} {v}' for k, v in removed.items()) or 'none'})."
        )
    records = final_records(run, notes)
    by_type: dict[str, list[int]] = {}
    for r in records:
        by_type.setdefault(r["type"], []).append(r["words"])
    if length and isinstance(length.get("types"), dict):
        rows = []
        for kind, n in length["types"].items():
            words = sorted(by_type.get(kind, []))
            low, mid, high = (words[0], words[len(words) // 2], words[-1]) if words else (None, None, None)
            rows.append([kind, n, low, mid, high])
        doc.table(["constraint type", "examples", "min words", "median words", "max words"], rows)
        rewrite: dict = length["rewrite"] if isinstance(length.get("rewrite"), dict) else {}
        by = ", ".join(f"{k} {v}" for k, v in rewrite.items()) or "nothing yet"
        doc.para(f"Final SFT set: {length.get('kept')} examples; constraints woven in by {by}.")
    if plots.lengths_by_type(by_type, out / "final_lengths.png"):
        doc.image("final_lengths.png", "final SFT set lengths by constraint type")
    stats = read_json(final / "model" / "training_stats.json", notes)
    if stats:
        keys = ("method", "examples", "steps", "final_loss", "train_tokens", "seconds")
        doc.table(["final training", "value"], [[k, stats[k]] for k in keys if k in stats])
