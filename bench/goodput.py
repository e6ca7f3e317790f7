"""Goodput: seconds and tokens per KEPT extension, ours against the reference design, same engine.

    python bench/goodput.py                                   # llama-server if installed, else transformers
    python bench/goodput.py --instructions 8 --reps 2 --max-tokens 512 --json out.json
    python bench/goodput.py --set checks.early_abort=false    # ours without early abort
    python bench/goodput.py --decoding paper                  # ours with the paper's sampling too

A user pays for kept samples, not for tokens/s. One round's Steps 1-2 on the embedded model, from
the same instructions, with the paper's 10-word repeated n-gram check, driven two ways:
 ours       the project's stages: many items in flight, early abort (a generation stops at the
            first token where a repeated 10-word phrase already rejects it), and by default
            anti-loop decoding (DRY, as configs/reproduce-micro.yaml sets it for this model);
 reference  the paper's reference scripts' design (bench/reference_design.py): 32 then 16
            threads of blocking requests, a barrier between the steps, every text generated to
            its end, with the paper's sampling (its scripts have no anti-loop decoding).
With `--decoding paper` (or `--reference-decoding anti-loop`) both sample alike, so the two differ by
design alone.
Each run gets a fresh managed server (or a fresh transformers engine); the order alternates
between repetitions. Both draw the same sampling seeds per item. Printed per run and as medians:
wall seconds, generated tokens, kept extensions, seconds and tokens per kept extension, and the
share of Step-2 tries (extension job attempts) kept. The last line is
`speedup = X`: the median of reference s/kept over the median of ours s/kept (n/a where a design
kept nothing in at least half its runs). The line before it gives seconds per Step-2 try and the
share of tries kept, with the expected s/kept from the two. By default the designs decode
differently and keep a try with different probabilities, so each design's share is pooled over its
own runs. When both decode alike, early abort changes no verdict, so that share is the same for
both and is pooled over both designs' runs: with a handful of kept items a run, the steadier
estimate. A line before them counts each design's failed Step-2 tries by reason.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from reference_design import reference_steps_1_2  # noqa: E402
from round_steps import engine_overrides, seed_instructions, steps_1_2, write_instructions  # noqa: E402

ROOT = Path(__file__).parents[1]


def extension_tries(run_dir: Path) -> tuple[int, dict[str, int]]:
    """Step-2 tries, and the failed ones by reason."""
    from selflengthen.store import read_jsonl, round_dir

    # A job's failed tries are its attempts; a job that passed the 1.2 x rule adds its one good try.
    passed = ("kept", "passed", "length_biased_sampling")
    rows = list(read_jsonl(round_dir(run_dir, 1).extensions))
    failed = Counter(a["reason"] for row in rows for a in row.get("attempts", ()))
    return sum(len(row.get("attempts", ())) + (row.get("verdict") in passed) for row in rows), dict(failed)


def run_ours(config, make_engine, run_dir: Path, instructions: list[str]) -> dict:
    engine = make_engine(run_dir)
    try:
        seconds, tokens, counts = steps_1_2(config, engine, run_dir / "ours", instructions)
        aborted = getattr(getattr(engine, "stats", None), "aborted", None)
    finally:
        engine.close()
    tries, failed = extension_tries(run_dir / "ours")
    return {
        "seconds": seconds,
        "tokens": tokens,
        "kept": counts["extensions_kept"],
        "tries": tries,
        "failed_tries": failed,
        "answers_kept": counts["answers_kept"],
        "streams_aborted": aborted,
    }


def run_reference(config, make_engine, run_dir: Path, instructions: list[str], workers) -> dict:
    engine = make_engine(run_dir)
    try:
        ref_dir = run_dir / "reference"
        write_instructions(ref_dir, instructions)
        before = engine.stats.completion_tokens
        started = time.perf_counter()
        counts = reference_steps_1_2(config, engine, ref_dir, instructions, workers)
        seconds = time.perf_counter() - started
        tokens = engine.stats.completion_tokens - before
    finally:
        engine.close()
    return {
        "seconds": seconds,
        "tokens": tokens,
        "kept": counts["extensions_passed"],
        "tries": counts["extension_tries"],
        "failed_tries": counts["failed_tries"],
        "answers_kept": counts["answers_kept"],
    }


def per_kept(run: dict) -> dict:
    kept = run["kept"]
    run["s_per_kept"] = run["seconds"] / kept if kept else float("inf")
    run["tokens_per_kept"] = run["tokens"] / kept if kept else float("inf")
    run["share_kept"] = kept / run["tries"] if run["tries"] else 0.0
    run["s_per_try"] = run["seconds"] / max(run["tries"], 1)
    return run


def row(name: str, r: dict) -> str:
    return (
        f"| {name} | {r['seconds']:.0f} | {r['tokens']:,} | {r['kept']} | {r['s_per_kept']:.1f} | "
        f"{r['tokens_per_kept']:,.0f} | {r['kept']}/{r['tries']} = {r['share_kept']:.2f} |"
    )


MEDIAN_KEYS = (
    "seconds",
    "tokens",
    "kept",
    "tries",
    "s_per_kept",
    "tokens_per_kept",
    "share_kept",
    "s_per_try",
)


def summarize(fig: dict) -> list[str]:
    """Medians, the per-try estimate and the speedup of `fig["runs"]`, into `fig`; the lines to print,
    the last one `speedup = X` (or `speedup = n/a (...)`)."""
    medians = {}
    for design in ("ours", "reference"):
        runs = [r for r in fig["runs"] if r["design"] == design]
        medians[design] = {k: statistics.median(r[k] for r in runs) for k in MEDIAN_KEYS}
    fig["medians"] = medians
    lines = [
        f"| **{d}, median** | {m['seconds']:.0f} | {m['tokens']:,.0f} | {m['kept']:g} | "
        f"{m['s_per_kept']:.1f} | {m['tokens_per_kept']:,.0f} | {m['share_kept']:.2f} |"
        for d, m in medians.items()
    ]
    ours, ref = medians["ours"], medians["reference"]
    # Why tries failed, each design's runs together: what the rest of its seconds paid for.
    failed = {d: Counter() for d in medians}
    for r in fig["runs"]:
        failed[r["design"]].update(r.get("failed_tries", {}))
    fig["failed_tries"] = {d: dict(c.most_common()) for d, c in failed.items()}
    if any(failed.values()):
        lines.append(
            "failed Step-2 tries by reason: "
            + "; ".join(
                f"{d} " + (", ".join(f"{k} {n}" for k, n in c.most_common()) or "none")
                for d, c in failed.items()
            )
        )
    # A design that kept nothing in half its runs or more has no s/kept to compare (its median is
    # infinite): the bench says so rather than print an infinite or undefined speedup.
    finite = all(0 < m["s_per_kept"] < float("inf") for m in (ours, ref))
    speedup = ref["s_per_kept"] / ours["s_per_kept"] if finite else float("nan")
    fig["speedup"] = round(speedup, 2) if finite else None
    # With a handful of kept extensions a run, s/kept moves 2x with one item. Early abort changes no
    # verdict (tests/unit/stages/test_early_abort.py), so a try is kept with the same probability in
    # both designs: pooling both designs' tries estimates that probability with all the data, and
    # the ratio of expected s/kept is then the ratio of seconds per try.
    # Where the designs decode differently, a try is kept with different probabilities, so each
    # design's share is pooled over its own runs.
    same = fig.get("decoding", "paper") == fig.get("reference_decoding", "paper")
    pooled: dict[str, float] = {}
    for d in medians:
        runs = [r for r in fig["runs"] if same or r["design"] == d]
        tries = sum(r["tries"] for r in runs)
        pooled[d] = sum(r["kept"] for r in runs) / tries if tries else 0.0
    per_try = {d: m["s_per_try"] for d, m in medians.items()}
    fig["pooled_share_kept"] = (
        round(pooled["ours"], 3) if same else {d: round(v, 3) for d, v in pooled.items()}
    )
    fig["seconds_per_try"] = {d: round(v, 1) for d, v in per_try.items()}
    fig["speedup_per_try"] = round(per_try["reference"] / per_try["ours"], 2)

    def expected(d: str) -> str:
        return f"{per_try[d] / pooled[d]:.1f}" if pooled[d] else "inf"

    shares = (
        f"both designs pooled: {pooled['ours']:.3f}"
        if same
        else f"each design's runs pooled: ours {pooled['ours']:.3f}, reference {pooled['reference']:.3f}"
    )

    tokens_ratio = (
        f"{ref['tokens_per_kept'] / ours['tokens_per_kept']:.2f}" if finite else "n/a (a design kept none)"
    )
    lines += [
        f"tokens per kept extension: reference / ours = {tokens_ratio}; share of Step-2 tries kept: "
        f"ours {ours['share_kept']:.2f}, reference {ref['share_kept']:.2f}",
        f"seconds per Step-2 try: ours {per_try['ours']:.1f}, reference {per_try['reference']:.1f}; "
        f"share kept, {shares}; expected s/kept: ours {expected('ours')}, "
        f"reference {expected('reference')}; speedup per try = {fig['speedup_per_try']:.2f}",
    ]
    if finite:
        lines.append(f"speedup = {speedup:.2f}")
    else:
        empty = " and ".join(d for d, m in medians.items() if m["s_per_kept"] == float("inf"))
        lines.append(
            f"speedup = n/a ({empty} kept no extension in half its runs or more: "
            "run more instructions or repetitions)"
        )
    return lines


def decodings(config, ours: str, reference: str):
    """(ours' config, the reference's config, the DRY settings "anti-loop" means): each design's
    sampling is the paper's or the anti-loop one; all else is shared."""
    from selflengthen.config import dry_unsupported, load_config

    # model_copy skips the config's own check that the engine applies DRY: ask it here, so that no
    # figure says "anti-loop" for texts an engine decoded without it.
    problem = dry_unsupported(config.engine)
    if problem and "anti-loop" in (ours, reference):
        raise SystemExit(f"anti-loop decoding asked for, but {problem}; use --decoding paper")
    # The reference scripts sample without anti-loop decoding. "anti-loop" is the config's own DRY
    # section where it turns DRY on, else the one the project uses for this model.
    dry = config.sampling.dry
    if dry.multiplier == 0:
        dry = load_config(ROOT / "configs" / "reproduce-micro.yaml").sampling.dry
    decoded = {
        "paper": config.sampling.model_copy(update={"dry": dry.model_copy(update={"multiplier": 0.0})}),
        "anti-loop": config.sampling.model_copy(update={"dry": dry}),
    }
    return (
        config.model_copy(update={"sampling": decoded[ours]}),
        config.model_copy(update={"sampling": decoded[reference]}),
        dry,
    )


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", default="auto", choices=["auto", "transformers", "llama-server"])
    ap.add_argument("--instructions", type=int, default=8)
    ap.add_argument(
        "--max-tokens", type=int, default=512, help="answers' max new tokens (extensions: x1.5, demo)"
    )
    ap.add_argument("--slots", type=int, default=16, help="llama-server slots / transformers batch size")
    ap.add_argument("--reps", type=int, default=2, help="repetitions; the order alternates")
    ap.add_argument("--workers", default="32,16", help="the reference design's Step 1 and Step 2 threads")
    ap.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    ap.add_argument("--set", action="append", default=[], help="config override, as for `selflengthen run`")
    ap.add_argument(
        "--decoding",
        default="anti-loop",
        choices=["anti-loop", "paper"],
        help="ours' decoding: DRY anti-loop decoding as in configs/reproduce-micro.yaml (default), or the "
        "paper's sampling as the reference's",
    )
    ap.add_argument(
        "--reference-decoding",
        default="paper",
        choices=["paper", "anti-loop"],
        help="the reference's decoding: the paper's sampling, as its scripts (default), or ours' anti-loop "
        "decoding, to see what the design alone gains with it",
    )
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)

    from selflengthen.config import load_config
    from selflengthen.engines import create_engine
    from selflengthen.engines.presets import llama_server_path

    kind = args.engine
    if kind == "auto":
        kind = "llama-server" if llama_server_path() else "transformers"
    # The demo's settings for this model, with the paper's 10-word repeated n-gram check.
    config = load_config(
        args.config,
        [
            f"sampling.max_tokens={args.max_tokens}",
            "sampling.max_tokens_growth=1.0",
            "checks.ngram_words=10",
            *engine_overrides(kind, args.slots),
            *args.set,
        ],
    )
    config, reference_config, dry = decodings(config, args.decoding, args.reference_decoding)
    workers = tuple(int(w) for w in args.workers.split(","))
    instructions = seed_instructions(args.instructions)

    def make_engine(run_dir: Path):
        return create_engine(config.engine, config.model, run_dir=run_dir)

    fig: dict = {
        "engine": kind,
        "instructions": args.instructions,
        "max_tokens": args.max_tokens,
        "slots": args.slots,
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg(),
        "early_abort": config.checks.early_abort,
        "decoding": args.decoding,
        "reference_decoding": args.reference_decoding,
        "dry": dry.model_dump(),
        "runs": [],
    }
    header = (
        "| run | wall s | generated tokens | kept extensions | s / kept | tokens / kept | Step-2 tries kept |"
    )
    print(
        f"engine {kind}, {args.instructions} instructions, max_tokens {args.max_tokens}, {args.slots} slots, "
        f"10-word n-gram check, early abort {'on' if config.checks.early_abort else 'off'}, ours' decoding "
        f"{args.decoding}, the reference's {args.reference_decoding} (anti-loop: DRY multiplier "
        f"{dry.multiplier:g}); "
        f"load average {os.getloadavg()[0]:.1f} before",
        flush=True,
    )
    print(header + "\n|---|---|---|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            order = ["ours", "reference"] if rep % 2 == 0 else ["reference", "ours"]
            for design in order:
                run_dir = Path(tmp) / f"{design}-{rep}"
                if design == "ours":
                    r = run_ours(config, make_engine, run_dir, instructions)
                else:
                    r = run_reference(reference_config, make_engine, run_dir, instructions, workers)
                r = per_kept(dict(r, design=design, rep=rep, load=os.getloadavg()[0]))
                fig["runs"].append(r)
                print(row(f"{design} ({rep + 1})", r), flush=True)
    lines = summarize(fig)
    fig["load_after"] = os.getloadavg()
    lines[-2] += f"; load average {fig['load_after'][0]:.1f} after"
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=1, default=str))
    print("\n".join(lines))
    return fig


if __name__ == "__main__":
    main()
