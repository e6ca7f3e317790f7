"""The paper's effect at small scale: do the Generator's answers grow round after round?

    python bench/micro_reproduction.py --run-dir runs/micro            # run (or resume) and report
    python bench/micro_reproduction.py --run-dir runs/micro --report-only

Runs `configs/reproduce-micro.yaml` (3 macro-iterations on the embedded model), then lets the base
model (round 0) and each round's Generator answer a held-out set of instructions that never
enters training (configs/micro/heldout.jsonl, checked against every instruction of the run) and
a small length-constrained set in LonGen's format (configs/micro/constrained.jsonl). Writes
RUN/heldout/*.jsonl (resumable), RUN/heldout/figures.json, RUN/heldout/table.md and the plot
(also to --plot-to). Same sampling for every round: the config's sampling with the LAST round's
max_tokens, so a longer answer is never cut by a smaller budget.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
CONFIG = ROOT / "configs" / "reproduce-micro.yaml"
HELDOUT = ROOT / "configs" / "micro" / "heldout.jsonl"
CONSTRAINED = ROOT / "configs" / "micro" / "constrained.jsonl"


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_heldout_unseen(run_dir: Path, heldout: list[str]) -> int:
    """How many held-out queries appear among the run's instructions (must be 0)."""
    seen = set()
    for f in sorted(run_dir.glob("round-*/instructions.jsonl")):
        seen.update(json.loads(line)["text"].strip() for line in f.read_text().splitlines() if line.strip())
    return sum(q.strip() in seen for q in heldout)


def answer_sets(config, run_dir: Path, k: int, adapter: Path | None) -> tuple[Path, Path]:
    """Round k's Generator (k = 0: the base) answers both sets; resumable files under RUN/heldout."""
    from selflengthen.engines import create_engine
    from selflengthen.engines.base import SamplingParams
    from selflengthen.evaluate.generate import generate_answers

    out = run_dir / "heldout"
    out.mkdir(exist_ok=True)
    s = config.sampling
    params = SamplingParams(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k,
                            repetition_penalty=s.repetition_penalty, stop=tuple(s.stop), seed=1234,
                            max_tokens=config.max_tokens_for_round(config.macro_iterations))
    adapters = {"generator": str(adapter)} if adapter else None
    engine = create_engine(config.engine, config.model, adapters, run_dir=out / f"server-round-{k}")
    files = (out / f"round-{k}-heldout.jsonl", out / f"round-{k}-constrained.jsonl")

    async def both() -> None:  # one event loop for the engine
        for source, target in zip((HELDOUT, CONSTRAINED), files, strict=True):
            await generate_answers(engine, read_rows(source), "longen", target, params,
                                   adapter="generator" if adapter else None, concurrency=32)

    try:
        asyncio.run(both())
    finally:
        engine.close()
    return files


def figures_for(heldout_file: Path, constrained_file: Path) -> dict:
    from selflengthen.evaluate.scoring import diagnostics, score_file

    rows = read_rows(heldout_file)
    words = [int(r["words"]) for r in rows]
    d = diagnostics(rows, [r["response"] for r in rows], words)
    return {
        "n": len(rows),
        "mean_words": round(statistics.mean(words), 1),
        "median_words": statistics.median(words),
        "hit_token_limit": d["truncated"],
        "repeated_13gram": d["repeated_13gram"],
        "length_score": round(score_file("longen", constrained_file)["overall"], 3),
    }


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [r["round"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    a.plot(ks, [r["mean_words"] for r in rows], "o-", label="mean")
    a.plot(ks, [r["median_words"] for r in rows], "s--", label="median")
    a.set_xlabel("round (0 = base model)")
    a.set_ylabel("words, held-out answers")
    a.set_xticks(ks)
    a.set_ylim(bottom=0)  # from zero: a change of a few dozen words must not look like a trend
    a.legend()
    b.plot(ks, [r["length_score"] for r in rows], "o-", color="C2")
    b.set_xlabel("round (0 = base model)")
    b.set_ylabel("LonGen-style length score (0-1)")
    b.set_xticks(ks)
    b.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", default="runs/micro", help="run directory (resumes)")
    ap.add_argument("--config", default=str(CONFIG))
    ap.add_argument("--set", action="append", default=[], help="config override, as for `selflengthen run`")
    ap.add_argument("--report-only", action="store_true", help="do not run the loop; answer and report what exists")
    ap.add_argument("--plot-to", help="also save the plot here (e.g. docs/results/micro-reproduction.png)")
    args = ap.parse_args(argv)

    from selflengthen.config import load_config
    from selflengthen.store import adapter_complete, round_dir

    config = load_config(args.config, args.set)
    run_dir = Path(args.run_dir)
    started = time.time()
    if not args.report_only:
        cmd = [sys.executable, "-m", "selflengthen.cli", "run", "--config", args.config, "--run-dir", str(run_dir)]
        cmd += [x for s in args.set for x in ("--set", s)]
        subprocess.run(cmd, check=True)
    loop_minutes = (time.time() - started) / 60
    heldout = [r["query"] for r in read_rows(HELDOUT)] + [r["query"] for r in read_rows(CONSTRAINED)]
    leaked = check_heldout_unseen(run_dir, heldout)
    table = []
    for k in range(0, config.macro_iterations + 1):
        adapter = None if k == 0 else round_dir(run_dir, k).adapter("generator")
        if adapter is not None and not adapter_complete(adapter):
            print(f"round {k}: no Generator adapter (yet); stopping the table here")
            break
        files = answer_sets(config, run_dir, k, adapter)
        row = {"round": k, **figures_for(*files)}
        summary = run_dir / f"round-{k}" / "summary.json"
        if k and summary.is_file():
            s = json.loads(summary.read_text())
            row["kept_extensions"] = s.get("extensions", {}).get("kept")
        table.append(row)
        print(json.dumps(row), flush=True)
    out = run_dir / "heldout"
    meta = {"config": args.config, "overrides": args.set, "heldout_in_training": leaked, "hardware": hardware(),
            "minutes_this_call": round((time.time() - started) / 60, 1), "loop_minutes": round(loop_minutes, 1)}
    (out / "figures.json").write_text(json.dumps({"rows": table, **meta}, indent=1))
    plot(table, out / "lengths.png")
    if args.plot_to:
        plot(table, Path(args.plot_to))
    columns = ["round", "mean_words", "median_words", "hit_token_limit", "repeated_13gram", "length_score",
               "kept_extensions"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "-")) for c in columns) + " |" for r in table]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps(meta))
    return table


if __name__ == "__main__":
    main()
