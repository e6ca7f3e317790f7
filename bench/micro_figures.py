"""Figures of the micro reproduction's held-out answers, and its report files (tables, excerpts,
plot): pure functions over answer rows, used by bench/micro_reproduction.py and bench/dry_lever.py.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

from selflengthen.text.drift import WINDOW_WORDS, gzip_ratio, tail_head_ratio, window_gzip_ratios

PHRASE_WORDS = 10  # the paper's repeated-phrase check
EXCERPT_HEAD, EXCERPT_TAIL = 60, 30  # words shown from the start and the end of an answer
# A sentence this long is a run-on: the base model's longest sentence per held-out answer ran 18-69
# words, while the long answers of a trained 135M Generator that reach the token limit end in one
# sentence of 100 or more.
RUN_ON_WORDS = 80
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
GOALS = {"mean_ratio": 2.0, "median_ratio": 1.5, "length_score": 0.70, "length_score_gain": 0.25}


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------ figures of one text, of one round


def gzip_window_ratio(text: str, size: int = WINDOW_WORDS) -> float:
    """Mean gzip ratio over the text's consecutive windows of `size` words (the whole text if it
    is shorter): unlike the whole-text ratio, it does not rise with length alone."""
    if len(text.split()) <= size:
        return gzip_ratio(text)
    return statistics.mean(window_gzip_ratios(text, size))


def longest_sentence(text: str) -> int:
    """Words in the text's longest sentence (sentences end at . ! ? before a space, or at a line
    break, so list items and headings are sentences of their own), counted as every other word
    figure here is: with the pipeline's counter."""
    from selflengthen.text.words import count_words

    return max((count_words(s) for s in SENTENCE_END.split(text)), default=0)


def text_figures(row: dict) -> dict:
    from selflengthen.text.checks import find_repeated_ngram
    from selflengthen.text.words import count_words

    text = row["response"]
    return {
        "words": count_words(text),
        "repeated_phrase": find_repeated_ngram(text, PHRASE_WORDS) is not None,
        "cut": row.get("finish_reason") == "length",
        "gzip_ratio": gzip_ratio(text),
        "gzip_window": gzip_window_ratio(text),
        "tail_head": tail_head_ratio(text),
        "longest_sentence": longest_sentence(text),
    }


def round_figures(rows: list[dict], base: dict | None = None) -> dict:
    """One model's held-out figures; with the base model's, the ratios to it."""
    per = [text_figures(r) for r in rows]
    words = [p["words"] for p in per]
    tails = [p["tail_head"] for p in per if p["tail_head"] is not None]
    out = {
        "n": len(rows),
        "mean_words": round(statistics.mean(words), 1),
        "median_words": statistics.median(words),
        "repeated_phrase": round(sum(p["repeated_phrase"] for p in per) / len(per), 3),
        "cut": round(sum(p["cut"] for p in per) / len(per), 3),
        "gzip_ratio": round(statistics.mean(p["gzip_ratio"] for p in per), 3),
        "gzip_window": round(statistics.mean(p["gzip_window"] for p in per), 3),
        "tail_head": round(statistics.mean(tails), 3) if tails else None,
        "run_on": round(sum(p["longest_sentence"] >= RUN_ON_WORDS for p in per) / len(per), 3),
        "longest_sentence": statistics.median(p["longest_sentence"] for p in per),
        "words_all": words,
    }
    if base:
        out["mean_ratio"] = round(out["mean_words"] / base["mean_words"], 2) if base["mean_words"] else None
        out["median_ratio"] = (
            round(out["median_words"] / base["median_words"], 2) if base["median_words"] else None
        )
    return out


def length_score(path: Path) -> float:
    from selflengthen.evaluate.scoring import score_file

    return round(score_file("longen", path)["overall"], 3)


def goals(rounds: list[dict], scores: dict) -> list[tuple[str, bool | None]]:
    """The reproduction's targets, each met (True), missed (False) or not measured (None)."""
    if len(rounds) < 2:
        return []
    base, last = rounds[0], rounds[-1]
    out = [
        (
            f"round {last['round']} mean words >= {GOALS['mean_ratio']}x base",
            (last.get("mean_ratio") or 0) >= GOALS["mean_ratio"],
        ),
        (
            f"round {last['round']} median words >= {GOALS['median_ratio']}x base",
            (last.get("median_ratio") or 0) >= GOALS["median_ratio"],
        ),
    ]
    for key, what in (
        ("repeated_phrase", "repeated 10-word phrase share"),
        ("cut", "cut-at-limit share"),
        ("gzip_ratio", "mean gzip ratio"),
        ("gzip_window", f"mean gzip ratio per {WINDOW_WORDS}-word window"),
        ("tail_head", "gzip tail/head ratio"),
    ):
        ok = None if last[key] is None or base[key] is None else last[key] <= base[key]
        out.append((f"round {last['round']} {what} no worse than base", ok))
    final, start = scores.get("final"), scores.get("round-0")
    ok = (
        None
        if final is None or start is None
        else final >= GOALS["length_score"] and final - start >= GOALS["length_score_gain"]
    )
    out.append(
        (f"final length score >= {GOALS['length_score']} and >= base + {GOALS['length_score_gain']}", ok)
    )
    return out


# ------------------------------------------------------------------ report files


def training_texts(run_dir: Path, k: int) -> dict:
    """The Generator's training texts of round k: how many, their mean / median words, mean gzip
    tail / head and share with a run-on sentence, and the learning rate its adapter was trained at
    (when its stats say)."""
    from selflengthen.text.words import count_words

    path = Path(run_dir) / f"round-{k}" / "sft" / "generator.jsonl"
    if not path.is_file():
        return {}
    texts = [r["completion"][-1]["content"] for r in read_rows(path)]
    words = [count_words(t) for t in texts]
    drift = [d for d in map(tail_head_ratio, texts) if d is not None]
    stats_file = Path(run_dir) / f"round-{k}" / "adapters" / "generator" / "training_stats.json"
    stats = json.loads(stats_file.read_text()) if stats_file.is_file() else {}
    return {
        "train_n": len(words),
        "train_mean_words": round(statistics.mean(words)) if words else None,
        "train_median_words": statistics.median(words) if words else None,
        "train_tail_head": round(statistics.mean(drift), 3) if drift else None,
        "train_run_on": round(sum(longest_sentence(t) >= RUN_ON_WORDS for t in texts) / len(texts), 3)
        if texts
        else None,
        "train_lr": stats.get("learning_rate"),
    }


def excerpt(text: str) -> str:
    words = text.split()
    if len(words) <= EXCERPT_HEAD + EXCERPT_TAIL:
        return " ".join(words)
    return " ".join(words[:EXCERPT_HEAD]) + " [...] " + " ".join(words[-EXCERPT_TAIL:])


def excerpts(first: list[dict], last: list[dict], label: str, count: int = 3) -> str:
    """The first `count` held-out queries (not picked for effect): base vs the last round."""
    parts = [
        f"# Held-out excerpts: base vs {label}\n",
        f"The first {EXCERPT_HEAD} and last {EXCERPT_TAIL} words of the first {count} held-out answers.\n",
    ]
    by_query = {r["query"]: r for r in last}
    for row in first[:count]:
        other = by_query.get(row["query"])
        if other is None:
            continue
        parts.append(f"## {row['query']}\n")
        for name, r in (("base", row), (label, other)):
            parts.append(
                f"**{name}** ({text_figures(r)['words']} words, finish: {r.get('finish_reason')}):\n\n"
                f"> {excerpt(r['response'])}\n"
            )
    return "\n".join(parts)


COLUMNS = [
    ("round", "round"),
    ("n", "n"),
    ("mean_words", "mean words"),
    ("median_words", "median words"),
    ("mean_ratio", "mean / base"),
    ("median_ratio", "median / base"),
    ("repeated_phrase", "repeated 10-word phrase"),
    ("cut", "cut at limit"),
    ("gzip_ratio", "gzip ratio"),
    ("gzip_window", f"gzip ratio, {WINDOW_WORDS}-word windows"),
    ("tail_head", "gzip tail / head"),
    ("run_on", f"a sentence of {RUN_ON_WORDS}+ words"),
    ("longest_sentence", "longest sentence, median words"),
    ("train_n", "Generator training texts"),
    ("train_mean_words", "their mean words"),
    ("train_tail_head", "their gzip tail / head"),
    ("train_run_on", f"their share with a {RUN_ON_WORDS}+ word sentence"),
    ("train_lr", "learning rate"),
]


def table(rounds: list[dict], scores: dict, checks: list, by_seed: dict | None = None) -> str:
    lines = ["| " + " | ".join(c[1] for c in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r.get(c[0], "-")) for c in COLUMNS) + " |" for r in rounds]
    seeds = list(next(iter(by_seed.values()))) if by_seed else []
    head = "".join(f" seed {s} |" for s in seeds)
    lines += ["", f"| model | LonGen length score (constrained set, mean over seeds) |{head}"]
    lines += ["|---|---|" + "---|" * len(seeds)]
    for label, score in scores.items():
        cells = "".join(f" {v} |" for v in (by_seed or {}).get(label, {}).values())
        lines.append(f"| {label} | {score} |{cells}")
    if checks:
        lines += ["", "| goal | met |", "|---|---|"]
        lines += [f"| {what} | {'-' if ok is None else 'yes' if ok else 'no'} |" for what, ok in checks]
    return "\n".join(lines) + "\n"


def plot(rounds: list[dict], scores: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [3, 1]})
    data = [r["words_all"] for r in rounds]
    a.boxplot(data, positions=range(len(data)), widths=0.5, showmeans=True)
    for i, words in enumerate(data):  # every answer, spread sideways so equal lengths stay visible
        a.scatter([i + (j % 7 - 3) * 0.03 for j in range(len(words))], words, s=9, alpha=0.5, color="C0")
    a.set_xticks(range(len(data)), [str(r["round"]) for r in rounds])
    a.set_xlabel("round (0 = base model)")
    a.set_ylabel("words, held-out answers")
    a.set_ylim(bottom=0)  # from zero: a shift of a few dozen words must not look like a trend
    labels = list(scores)
    b.bar(range(len(labels)), [scores[k] for k in labels], color=["C7", "C2"][: len(labels)] or "C2")
    b.set_xticks(range(len(labels)), ["base" if k == "round-0" else k for k in labels])
    b.set_ylim(0, 1)
    b.set_ylabel("LonGen length score")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
