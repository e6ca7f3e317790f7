"""The paper's two claims at small scale, on the embedded 135M model and 2 CPU cores, in one command:

    python bench/micro_reproduction.py --run-dir runs/micro --plot-to docs/results/micro-reproduction.png
    python bench/micro_reproduction.py --quick             # a tiny version (minutes): checks the plumbing
    python bench/micro_reproduction.py --run-dir runs/micro --report-only   # answer what is missing, report

1. `selflengthen run` with `configs/reproduce-micro.yaml` (resumable): 3 macro-iterations, then the
   final stage (collect -> length constraints -> final SFT) on a word range the model can reach.
2. Held-out answers, one flushed line each (a rerun answers only what is missing), all with the
   config's decoding (DRY included) and the last round's token budget, so no round is cut shorter:
   the base model (round 0) and each round's Generator answer the held-out instructions
   (configs/micro/heldout*.jsonl); the base and the final model answer a length-constrained set in
   LonGen's format (configs/micro/constrained-200-1500.jsonl). None of them may appear among the
   run's instructions (checked, reported as heldout_in_training).
3. Per round: mean and median words and their ratio to the base model's; the share with a repeated
   10-word phrase (the paper's check); the share cut at the token limit; the mean gzip compression
   ratio (bytes / gzipped bytes: a looping text compresses well); and the mean ratio of that figure
   on each answer's last third to its first third (a small model's text drifts into near-repeats
   at its end, which no 10-word check sees). LonGen's length score, base vs final model.
   RUN/heldout/: figures.json, table.md, excerpts.md (base vs round 3, same query), lengths.png.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).parents[1]
CONFIG = ROOT / "configs" / "reproduce-micro.yaml"
QUICK_CONFIG = ROOT / "configs" / "micro" / "quick.yaml"
HELDOUT = (ROOT / "configs" / "micro" / "heldout.jsonl", ROOT / "configs" / "micro" / "heldout-more.jsonl")
CONSTRAINED = ROOT / "configs" / "micro" / "constrained-200-1500.jsonl"
PHRASE_WORDS = 10  # the paper's repeated-phrase check
EXCERPT_HEAD, EXCERPT_TAIL = 60, 30  # words shown from the start and the end of an answer
GOALS = {"mean_ratio": 2.0, "median_ratio": 1.5, "length_score": 0.70, "length_score_gain": 0.25}


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------ figures of one text, of one round


def gzip_ratio(text: str) -> float:
    """Bytes over gzipped bytes (gzip's fixed header included, so short texts compare alike)."""
    raw = text.encode("utf-8")
    return len(raw) / len(gzip.compress(raw, mtime=0)) if raw else 0.0


def tail_head_ratio(text: str) -> float | None:
    """gzip ratio of the last third of the words over that of the first third (> 1: the end
    repeats itself more than the start); None for texts too short to have thirds (< 30 words)."""
    words = text.split()
    if len(words) < 30:
        return None
    third = len(words) // 3
    return gzip_ratio(" ".join(words[-third:])) / gzip_ratio(" ".join(words[:third]))


def text_figures(row: dict) -> dict:
    from selflengthen.text.checks import find_repeated_ngram
    from selflengthen.text.words import count_words

    text = row["response"]
    return {
        "words": count_words(text),
        "repeated_phrase": find_repeated_ngram(text, PHRASE_WORDS) is not None,
        "cut": row.get("finish_reason") == "length",
        "gzip_ratio": gzip_ratio(text),
        "tail_head": tail_head_ratio(text),
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
        "tail_head": round(statistics.mean(tails), 3) if tails else None,
        "words_all": words,
    }
    if base:
        out["mean_ratio"] = round(out["mean_words"] / base["mean_words"], 2) if base["mean_words"] else None
        out["median_ratio"] = round(out["median_words"] / base["median_words"], 2) if base["median_words"] else None
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
        (f"round {last['round']} mean words >= {GOALS['mean_ratio']}x base", (last.get("mean_ratio") or 0) >= GOALS["mean_ratio"]),
        (f"round {last['round']} median words >= {GOALS['median_ratio']}x base", (last.get("median_ratio") or 0) >= GOALS["median_ratio"]),
    ]
    for key, what in (("repeated_phrase", "repeated 10-word phrase share"), ("cut", "cut-at-limit share"),
                      ("gzip_ratio", "mean gzip ratio"), ("tail_head", "gzip tail/head ratio")):
        ok = None if last[key] is None or base[key] is None else last[key] <= base[key]
        out.append((f"round {last['round']} {what} no worse than base", ok))
    final, start = scores.get("final"), scores.get("round-0")
    ok = None if final is None or start is None else final >= GOALS["length_score"] and final - start >= GOALS["length_score_gain"]
    out.append((f"final length score >= {GOALS['length_score']} and >= base + {GOALS['length_score_gain']}", ok))
    return out


# ------------------------------------------------------------------ answering


def check_heldout_unseen(run_dir: Path, queries: list[str]) -> int:
    """How many held-out queries appear among the run's instructions (must be 0)."""
    seen = set()
    for f in sorted(Path(run_dir).glob("round-*/instructions.jsonl")):
        seen.update(json.loads(line)["text"].strip() for line in f.read_text().splitlines() if line.strip())
    return sum(q.strip() in seen for q in queries)


def models(config, run_dir: Path) -> list[tuple[str, Path | None]]:
    """(label, adapter) of every model with a finished adapter: round-0 (the base), round-k, final."""
    from selflengthen.final import final_paths
    from selflengthen.store import adapter_complete, round_dir

    out: list[tuple[str, Path | None]] = [("round-0", None)]
    for k in range(1, config.macro_iterations + 1):
        adapter = round_dir(run_dir, k).adapter("generator")
        if not adapter_complete(adapter):
            break
        out.append((f"round-{k}", adapter))
    final = final_paths(run_dir).model
    if config.final.enabled and config.final.method == "lora" and adapter_complete(final):
        out.append(("final", final))
    return out


def decoding(config):
    """Every model answers with the config's sampling (DRY included) and the last round's budget."""
    from selflengthen.engines.base import SamplingParams

    budget = config.max_tokens_for_round(config.macro_iterations)
    return SamplingParams.from_config(config.sampling, max_tokens=budget, seed=1234)


def answer(engine_factory: Callable, label: str, adapter: Path | None, sets: dict[str, list[dict]],
           out: Path, params, concurrency: int) -> dict[str, Path]:
    """One model answers each named set into out/LABEL-SET.jsonl (resumable), all sets at once."""
    from selflengthen.evaluate.generate import generate_answers

    files = {name: out / f"{label}-{name}.jsonl" for name in sets}
    missing = [n for n, rows in sets.items() if not files[n].is_file() or len(read_rows(files[n])) < len(rows)]
    if not missing:
        return files
    engine = engine_factory(label, adapter)
    try:
        async def all_sets():
            await asyncio.gather(*(generate_answers(engine, sets[n], "longen", files[n], params,
                                                    adapter="generator" if adapter else None,
                                                    concurrency=concurrency) for n in missing))
        asyncio.run(all_sets())
    finally:
        engine.close()
    return files


def real_engine_factory(config, out: Path) -> Callable:
    def make(label: str, adapter: Path | None):
        from selflengthen.engines import create_engine

        adapters = {"generator": str(adapter)} if adapter else None
        return create_engine(config.engine, config.model, adapters, run_dir=out / f"server-{label}")
    return make


# ------------------------------------------------------------------ the report


def training_texts(run_dir: Path, k: int) -> dict:
    """The Generator's training texts of round k: how many, and their mean / median words."""
    from selflengthen.text.words import count_words

    path = Path(run_dir) / f"round-{k}" / "sft" / "generator.jsonl"
    if not path.is_file():
        return {}
    words = [count_words(r["completion"][-1]["content"]) for r in read_rows(path)]
    return {"train_n": len(words), "train_mean_words": round(statistics.mean(words)) if words else None,
            "train_median_words": statistics.median(words) if words else None}


def excerpt(text: str) -> str:
    words = text.split()
    if len(words) <= EXCERPT_HEAD + EXCERPT_TAIL:
        return " ".join(words)
    return " ".join(words[:EXCERPT_HEAD]) + " [...] " + " ".join(words[-EXCERPT_TAIL:])


def excerpts(first: list[dict], last: list[dict], label: str, count: int = 3) -> str:
    """The first `count` held-out queries (not picked for effect): base vs the last round."""
    parts = [f"# Held-out excerpts: base vs {label}\n",
             f"The first {EXCERPT_HEAD} and last {EXCERPT_TAIL} words of the first {count} held-out answers.\n"]
    by_query = {r["query"]: r for r in last}
    for row in first[:count]:
        other = by_query.get(row["query"])
        if other is None:
            continue
        parts.append(f"## {row['query']}\n")
        for name, r in (("base", row), (label, other)):
            parts.append(f"**{name}** ({text_figures(r)['words']} words, finish: {r.get('finish_reason')}):\n\n"
                         f"> {excerpt(r['response'])}\n")
    return "\n".join(parts)


COLUMNS = [("round", "round"), ("n", "n"), ("mean_words", "mean words"), ("median_words", "median words"),
           ("mean_ratio", "mean / base"), ("median_ratio", "median / base"),
           ("repeated_phrase", "repeated 10-word phrase"), ("cut", "cut at limit"), ("gzip_ratio", "gzip ratio"),
           ("tail_head", "gzip tail / head"), ("train_n", "Generator training texts"),
           ("train_mean_words", "their mean words")]


def table(rounds: list[dict], scores: dict, checks: list) -> str:
    lines = ["| " + " | ".join(c[1] for c in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r.get(c[0], "-")) for c in COLUMNS) + " |" for r in rounds]
    lines += ["", "| model | LonGen length score (constrained set) |", "|---|---|"]
    lines += [f"| {label} | {score} |" for label, score in scores.items()]
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


def report(config, run_dir: Path, heldout: list[dict], constrained: list[dict], engine_factory: Callable,
           *, concurrency: int = 32, plot_to: Path | None = None, meta: dict | None = None) -> dict:
    """Answer what is missing, then write RUN/heldout/{figures.json, table.md, excerpts.md, lengths.png}."""
    out = Path(run_dir) / "heldout"
    out.mkdir(parents=True, exist_ok=True)
    params = decoding(config)
    started = time.time()
    rounds, scores, answers = [], {}, {}
    for label, adapter in models(config, run_dir):
        sets = {"constrained": constrained} if label == "final" else {"heldout": heldout}
        if label == "round-0":
            sets["constrained"] = constrained
        files = answer(engine_factory, label, adapter, sets, out, params, concurrency)
        if "constrained" in files:
            scores[label] = length_score(files["constrained"])
        if "heldout" in files:
            answers[label] = read_rows(files["heldout"])
            k = int(label.split("-")[1])
            row = {"round": k, **round_figures(answers[label], rounds[0] if rounds else None), **training_texts(run_dir, k)}
            rounds.append(row)
    checks = goals(rounds, scores)
    figures = {"rounds": rounds, "length_scores": scores, "goals": checks,
               "heldout_in_training": check_heldout_unseen(run_dir, [r["query"] for r in heldout + constrained]),
               "decoding": {"max_tokens": params.max_tokens, "dry": dataclasses.asdict(params.dry) if params.dry else None},
               "answer_minutes": round((time.time() - started) / 60, 1), **(meta or {})}
    (out / "figures.json").write_text(json.dumps(figures, indent=1))
    (out / "table.md").write_text(table(rounds, scores, checks))
    if len(rounds) > 1:
        last = f"round-{rounds[-1]['round']}"
        (out / "excerpts.md").write_text(excerpts(answers["round-0"], answers[last], last))
    if rounds:
        plot(rounds, scores, out / "lengths.png")
        if plot_to:
            plot(rounds, scores, Path(plot_to))
    return figures


def hardware() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPU cores ({cpu}), no GPU, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", help="run directory (resumes); default runs/micro, or runs/micro-quick")
    ap.add_argument("--config", help=f"default {CONFIG.relative_to(ROOT)} ({QUICK_CONFIG.relative_to(ROOT)} with --quick)")
    ap.add_argument("--set", action="append", default=[], help="config override, as for `selflengthen run`")
    ap.add_argument("--quick", action="store_true", help="a tiny version in minutes: tiny rounds, 3 queries a set")
    ap.add_argument("--limit", type=int, help="answer only the first N queries of each held-out set")
    ap.add_argument("--report-only", action="store_true", help="do not run the loop; answer and report what exists")
    ap.add_argument("--plot-to", help="also save the plot here (e.g. docs/results/micro-reproduction.png)")
    args = ap.parse_args(argv)

    from selflengthen.config import load_config

    config_path = args.config or str(QUICK_CONFIG if args.quick else CONFIG)
    run_dir = Path(args.run_dir or ("runs/micro-quick" if args.quick else "runs/micro"))
    limit = args.limit or (3 if args.quick else None)
    config = load_config(config_path, args.set)
    started = time.time()
    if not args.report_only:
        cmd = [sys.executable, "-m", "selflengthen.cli", "run", "--config", config_path, "--run-dir", str(run_dir)]
        subprocess.run(cmd + [x for s in args.set for x in ("--set", s)], check=True)
    heldout = [r for path in HELDOUT for r in read_rows(path)][:limit]
    constrained = read_rows(CONSTRAINED)[:limit]
    meta = {"command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
            "config": config_path, "overrides": args.set, "hardware": hardware(),
            "loop_minutes": round((time.time() - started) / 60, 1)}
    figures = report(config, run_dir, heldout, constrained, real_engine_factory(config, run_dir / "heldout"),
                     plot_to=Path(args.plot_to) if args.plot_to else None, meta=meta)
    print((run_dir / "heldout" / "table.md").read_text())
    print(json.dumps({k: v for k, v in figures.items() if k not in ("rounds", "goals")}))
    return figures


if __name__ == "__main__":
    main()
