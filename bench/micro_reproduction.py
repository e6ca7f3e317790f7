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
import json
import os
import platform
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

sys.path.insert(0, str(Path(__file__).parent))  # bench/ is a folder of scripts, not a package
from micro_figures import (  # noqa: E402
    excerpts,
    goals,
    length_score,
    plot,
    read_rows,
    round_figures,
    table,
    training_texts,
)

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


# Decoding seeds for the constrained set: one 16-query length score moves 0.2-0.3 with the seed.
SEEDS = (1234, 777, 4242)


def decoding(config, seed: int = SEEDS[0]):
    """Every model answers with the config's sampling (DRY included) and the last round's budget."""
    from selflengthen.engines.base import SamplingParams

    budget = config.max_tokens_for_round(config.macro_iterations)
    return SamplingParams.from_config(config.sampling, max_tokens=budget, seed=seed)


def constrained_names(seeds: tuple[int, ...]) -> dict[str, int]:
    """The constrained set's name per decoding seed: `constrained` (the first), `constrained-seedN`."""
    return {("constrained" if i == 0 else f"constrained-seed{s}"): s for i, s in enumerate(seeds)}


def constrained_sets(constrained: list[dict], config, seeds: tuple[int, ...]) -> dict[str, tuple]:
    """The constrained set once per decoding seed, each with its decoding."""
    return {name: (constrained, decoding(config, seed)) for name, seed in constrained_names(seeds).items()}


def answer(
    engine_factory: Callable,
    label: str,
    adapter: Path | None,
    sets: dict[str, tuple[list[dict], object]],
    out: Path,
    concurrency: int,
) -> dict[str, Path]:
    """One model answers each named set (rows, decoding) into out/LABEL-SET.jsonl (resumable), all
    sets at once."""
    from selflengthen.evaluate.generate import generate_answers

    files = {name: out / f"{label}-{name}.jsonl" for name in sets}
    missing = [
        n for n, (rows, _) in sets.items() if not files[n].is_file() or len(read_rows(files[n])) < len(rows)
    ]
    if not missing:
        return files
    engine = engine_factory(label, adapter)
    try:

        async def all_sets():
            await asyncio.gather(
                *(
                    generate_answers(
                        engine,
                        sets[n][0],
                        "longen",
                        files[n],
                        sets[n][1],
                        adapter="generator" if adapter else None,
                        concurrency=concurrency,
                    )
                    for n in missing
                )
            )

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


def report(
    config,
    run_dir: Path,
    heldout: list[dict],
    constrained: list[dict],
    engine_factory: Callable,
    *,
    concurrency: int = 32,
    plot_to: Path | None = None,
    meta: dict | None = None,
    seeds: tuple[int, ...] = SEEDS,
    only: set[str] | None = None,
    heldout_seed: int = SEEDS[0],
) -> dict:
    """Answer what is missing, then write RUN/heldout/{figures.json, table.md, excerpts.md, lengths.png}."""
    out = Path(run_dir) / "heldout"
    out.mkdir(parents=True, exist_ok=True)
    params = decoding(config, heldout_seed)
    started = time.time()
    rounds, scores, answers, by_seed = [], {}, {}, {}
    found = [m for m in models(config, run_dir) if only is None or m[0] in only or m[0] == "round-0"]
    # Answer the comparisons that decide the goals first (the base, the last round, the final
    # model): each model takes minutes on a CPU, and a run stopped midway then still has them.
    last_round = [label for label, _ in found if label.startswith("round-")][-1]
    first = {"round-0", last_round, "final"}
    answered = {}
    for label, adapter in sorted(found, key=lambda m: m[0] not in first):
        sets = {} if label == "final" else {"heldout": (heldout, params)}
        # the constrained set compares the base with the final model: without one it is not answered
        if label == "final" or (label == "round-0" and any(m[0] == "final" for m in found)):
            sets.update(constrained_sets(constrained, config, seeds))
        answered[label] = answer(engine_factory, label, adapter, sets, out, concurrency)
    for label, _ in found:
        files = answered[label]
        if "constrained" in files:
            # the mean over the decoding seeds decides the goal; each seed's score is reported too
            by_seed[label] = {
                seed: length_score(files[name]) for name, seed in constrained_names(seeds).items()
            }
            scores[label] = round(sum(by_seed[label].values()) / len(by_seed[label]), 3)
        if "heldout" in files:
            answers[label] = read_rows(files["heldout"])
            k = int(label.split("-")[1])
            row = {
                "round": k,
                **round_figures(answers[label], rounds[0] if rounds else None),
                **training_texts(run_dir, k),
            }
            rounds.append(row)
    checks = goals(rounds, scores)
    figures = {
        "rounds": rounds,
        "length_scores": scores,
        "length_scores_by_seed": by_seed,
        "goals": checks,
        "heldout_in_training": check_heldout_unseen(run_dir, [r["query"] for r in heldout + constrained]),
        "decoding": {
            "max_tokens": params.max_tokens,
            "dry": dataclasses.asdict(params.dry) if params.dry else None,
        },
        "answer_minutes": round((time.time() - started) / 60, 1),
        **(meta or {}),
    }
    (out / "figures.json").write_text(json.dumps(figures, indent=1))
    (out / "table.md").write_text(table(rounds, scores, checks, by_seed))
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
    ap.add_argument(
        "--config", help=f"default {CONFIG.relative_to(ROOT)} ({QUICK_CONFIG.relative_to(ROOT)} with --quick)"
    )
    ap.add_argument("--set", action="append", default=[], help="config override, as for `selflengthen run`")
    ap.add_argument(
        "--quick", action="store_true", help="a tiny version in minutes: tiny rounds, 3 queries a set"
    )
    ap.add_argument("--limit", type=int, help="answer only the first N queries of each held-out set")
    ap.add_argument(
        "--report-only", action="store_true", help="do not run the loop; answer and report what exists"
    )
    ap.add_argument("--plot-to", help="also save the plot here (e.g. docs/results/micro-reproduction.png)")
    ap.add_argument(
        "--seeds",
        default=",".join(map(str, SEEDS)),
        help="decoding seeds for the constrained set; its length score is their mean (default %(default)s)",
    )
    ap.add_argument(
        "--heldout-seed",
        type=int,
        default=SEEDS[0],
        help="decoding seed of the held-out answers (default %(default)s); another seed, in a copy of the "
        "run without its held-out answers, gives a second draw of the same comparison",
    )
    ap.add_argument(
        "--models",
        help="answer and report only these models besides the base, e.g. round-2,final (default: all found)",
    )
    args = ap.parse_args(argv)
    try:
        seeds = tuple(int(x) for x in args.seeds.split(","))
    except ValueError:
        ap.error(f"--seeds: comma-separated integers, got {args.seeds!r}")
    if len(set(seeds)) != len(seeds):
        ap.error(f"--seeds: each seed once, got {args.seeds!r}")

    from selflengthen.config import load_config

    config_path = args.config or str(QUICK_CONFIG if args.quick else CONFIG)
    run_dir = Path(args.run_dir or ("runs/micro-quick" if args.quick else "runs/micro"))
    limit = args.limit or (3 if args.quick else None)
    config = load_config(config_path, args.set)
    started = time.time()
    if not args.report_only:
        cmd = [
            sys.executable,
            "-m",
            "selflengthen.cli",
            "run",
            "--config",
            config_path,
            "--run-dir",
            str(run_dir),
        ]
        loop = subprocess.run(cmd + [x for s in args.set for x in ("--set", s)])
        if loop.returncode != 0:  # interrupted (it resumes) or failed: the loop has said why
            sys.exit(loop.returncode)
    heldout = [r for path in HELDOUT for r in read_rows(path)][:limit]
    constrained = read_rows(CONSTRAINED)[:limit]
    meta = {
        "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        "config": config_path,
        "overrides": args.set,
        "heldout_seed": args.heldout_seed,
        "hardware": hardware(),
        "loop_minutes": round((time.time() - started) / 60, 1),
    }
    figures = report(
        config,
        run_dir,
        heldout,
        constrained,
        real_engine_factory(config, run_dir / "heldout"),
        plot_to=Path(args.plot_to) if args.plot_to else None,
        meta=meta,
        seeds=seeds,
        only=set(args.models.split(",")) if args.models else None,
        heldout_seed=args.heldout_seed,
    )
    print((run_dir / "heldout" / "table.md").read_text())
    print(json.dumps({k: v for k, v in figures.items() if k not in ("rounds", "goals")}))
    return figures


if __name__ == "__main__":
    main()
