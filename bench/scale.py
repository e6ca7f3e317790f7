"""The bookkeeping of one round at scale: time per item and peak memory at 1k, 10k, 100k instructions.

    python bench/scale.py                        # 1,000 and 5,000 instructions: ~2-3 min on 2 cores
    python bench/scale.py --counts 1000,10000,100000 --json scale.json

Cost: about 4 ms per instruction on one core (at the defaults), and 4-5 x that again for the
tracemalloc child (`--no-tracemalloc` skips it); the run directory takes about 90 KB on disk per
instruction while a count runs (9 GB at 100k; removed after each count unless `--keep`).

No model: an INSTANT scripted engine answers every request at once, so what is measured is the
project's own code around the model, the part that must stay flat as a run grows. The round runs
through the real stage functions, exactly as `selflengthen run` calls them:

  instructions  written straight to round-1/instructions.jsonl (Step 0, self-instruct, is SKIPPED:
                it needs a judge and near-duplicate search, not part of this measurement)
  generate      Step 1, `run_generate`: per item the checks on texts, one JSONL line written and
                flushed per finished item
  select-ans    `finish_generate`: length-biased selection, the final answers.jsonl
  extend        Step 2, `run_extend`: the two-stage Extender, micro-steps, checks, one line per job
  select-ext    `finish_extend`: length-biased selection, the final extensions.jsonl
  sft           `build_sft_data`: round-1/sft/{generator,extender}.jsonl
  resume-scan   `run_generate` and `run_extend` again: nothing left to run, what a restart pays to
                find that out (reading the partial files' ids)

The engine's texts are made of sentences of random words from a fixed vocabulary, deterministic
from each request's seed, a few hundred words long (varied), so they pass the checks (final
punctuation, no repeated 10-gram, no meta words); `--fail-rate` of the Generator's answers come
back truncated (finish_reason "length") and are retried, so the check-and-retry path runs too.
Extender outputs scale with their outline, so a step usually lengthens the text and many jobs
pass the 1.2 x rule, as in a real round.

Each count runs in a fresh child process, so counts do not pollute each other's memory:
 - peak RSS: the child's high-water mark (VmHWM), reset before each stage (/proc/self/clear_refs);
   the whole child's `ru_maxrss` is reported too, and the RSS after imports, before any work;
 - Python peak: tracemalloc's peak of Python allocations per stage, in a SECOND child per count
   (tracemalloc slows allocation-heavy code 2-3 x, so the timed child runs without it);
   `--no-tracemalloc` skips that child.
Time per item is per instruction for the whole round and per record for each stage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ("generate", "select-ans", "extend", "select-ext", "sft", "resume-scan")

# ---------------------------------------------------------------- the instant engine

_META = {"revised", "revision", "response", "version", "paragraph"}


def _vocabulary(size: int = 4000) -> list[str]:
    """Pseudo-words from syllables, fixed for every run (seeded), none of them a meta word."""
    rng = random.Random(12345)
    onsets = [
        "b",
        "c",
        "d",
        "f",
        "g",
        "h",
        "l",
        "m",
        "n",
        "p",
        "r",
        "s",
        "t",
        "v",
        "w",
        "st",
        "tr",
        "pl",
        "gr",
        "ch",
    ]
    nuclei = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "io"]
    codas = ["", "", "n", "r", "s", "t", "l", "nd", "st", "m"]
    words: set[str] = set()
    while len(words) < size:
        word = "".join(
            rng.choice(onsets) + rng.choice(nuclei) for _ in range(rng.randint(1, 3))
        ) + rng.choice(codas)
        if word not in _META:
            words.add(word)
    return sorted(words)


VOCAB = _vocabulary()


def make_text(rng: random.Random, words: int, *, finished: bool = True) -> str:
    """About `words` words: sentences of 6-18 random words, paragraphs of 2-5 sentences. With
    `finished=False` the text stops mid-sentence (what a model cut off by max_tokens returns)."""
    words = max(words, 6)
    pool = rng.choices(VOCAB, k=words)
    paragraphs, sentences, i = [], [], 0
    per_paragraph = rng.randint(2, 5)
    while i < words:
        n = min(rng.randint(6, 18), words - i)
        sentence = pool[i : i + n]
        i += n
        sentences.append(sentence[0].capitalize() + " " + " ".join(sentence[1:]) + rng.choice(".....!?"))
        if len(sentences) == per_paragraph or i >= words:
            paragraphs.append(" ".join(sentences))
            sentences, per_paragraph = [], rng.randint(2, 5)
    text = "\n\n".join(paragraphs)
    return text if finished else text[:-1] + " and then"


class InstantEngine:
    """The Engine protocol, answered at once (no await on anything), keeping nothing per request.

    Generator requests get `answer_words` words (uniform in the range); `fail_rate` of them come
    back truncated. Extender stage 1 writes 0.8-1.6 x its outline's words (the first half of the
    text), stage 2 continues with 0.5-1.0 x the whole text's words after the pre-fill.
    """

    name = "instant"

    def __init__(self, answer_words: tuple[int, int] = (150, 450), fail_rate: float = 0.05):
        from selflengthen.prompts import template

        self.answer_words = answer_words
        self.fail_rate = fail_rate
        self.requests = 0
        self._template_words = len(template("extend_user", "en").format(query="", outline="").split())

    async def generate(self, request):
        from selflengthen.engines.base import Result

        self.requests += 1
        rng = random.Random(request.params.seed)
        if request.tag in ("stage1", "stage2"):
            # The outline's words, roughly: the prompt less the template and a typical query.
            outline = max(20, len(request.messages[-1]["content"].split()) - self._template_words - 12)
            scale = rng.uniform(0.8, 1.6) if request.tag == "stage1" else rng.uniform(0.5, 1.0)
            text = make_text(rng, int(outline * scale))
            # Stage 2's pre-fill ends on a paragraph break: the continuation starts a new paragraph.
            return Result(text=text, finish_reason="stop", completion_tokens=len(text) // 5)
        words = rng.randint(*self.answer_words)
        if rng.random() < self.fail_rate:
            text = make_text(rng, words, finished=False)
            return Result(text=text, finish_reason="length", completion_tokens=len(text) // 5)
        text = make_text(rng, words)
        return Result(text=text, finish_reason="stop", completion_tokens=len(text) // 5)

    def set_adapters(self, adapters: dict[str, str]) -> None:
        pass

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- one count, in a child process


def _rss_now_kb() -> int:
    return _status_kb("VmRSS")


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        m = re.search(rf"^{field}:\s+(\d+)", f.read(), re.M)
    return int(m.group(1)) if m else 0


def _reset_hwm() -> bool:
    """Reset the kernel's RSS high-water mark of this process (Linux); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _lines(path: Path) -> int:
    if not path.is_file():
        return 0
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def _disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def write_instructions(path: Path, count: int, seed: int) -> None:
    """`count` kept instructions, as Step 0 records them (id, text, language, words, verdict...)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    kinds = ["essay", "report", "story", "guide", "article", "history", "analysis", "review"]
    with open(path, "w", encoding="utf-8") as f:
        for i in range(count):
            topic = " ".join(rng.choices(VOCAB, k=rng.randint(2, 6)))
            text = f"Write a detailed {rng.choice(kinds)} about {topic}, with examples and sub-sections."
            row = {
                "id": f"r1-ins-{i:06d}",
                "text": text,
                "language": "en",
                "words": len(text.split()),
                "verdict": "kept",
                "model": "base",
                "attempts": [],
            }
            f.write(json.dumps(row) + "\n")


def bench_config(opts: argparse.Namespace):
    from selflengthen.config import load_config

    return load_config(
        None,
        [
            "seed_languages=[en]",
            f"seed={opts.seed}",
            f"generate.samples_per_instruction={opts.samples}",
            f"generate.retries={opts.generate_retries}",
            f"extend.jobs_per_answer={opts.jobs}",
            f"extend.micro_iterations={opts.micro}",
            f"extend.retries={opts.extend_retries}",
            f"engine.max_in_flight={opts.in_flight}",
        ],
    )


def measure_count(count: int, opts: argparse.Namespace, *, trace: bool) -> dict:
    """One round's bookkeeping for `count` instructions in a fresh run directory. Per stage: seconds,
    records, peak RSS (and with `trace`, tracemalloc's peak of Python allocations)."""
    import tracemalloc

    from selflengthen.stages.common import RoundContext
    from selflengthen.stages.extend import finish_extend, run_extend
    from selflengthen.stages.generate import finish_generate, run_generate
    from selflengthen.stages.sft_data import build_sft_data

    rss_after_imports_kb = _rss_now_kb()
    root = Path(tempfile.mkdtemp(prefix=f"scale-{count}-", dir=opts.workdir))
    try:
        engine = InstantEngine((opts.min_words, opts.max_words), opts.fail_rate)
        ctx = RoundContext.for_round(bench_config(opts), engine, root / "run", 1)
        rd = ctx.rd
        write_instructions(rd.instructions, count, opts.seed)

        def resume_scan() -> int:
            return asyncio.run(run_generate(ctx)) + asyncio.run(run_extend(ctx))

        steps = [
            ("generate", lambda: asyncio.run(run_generate(ctx)), lambda: _lines(rd.partial("answers"))),
            ("select-ans", lambda: finish_generate(ctx), lambda: _lines(rd.answers)),
            ("extend", lambda: asyncio.run(run_extend(ctx)), lambda: _lines(rd.partial("extensions"))),
            ("select-ext", lambda: finish_extend(ctx), lambda: _lines(rd.extensions)),
            (
                "sft",
                lambda: build_sft_data(ctx),
                lambda: _lines(rd.sft("generator")) + _lines(rd.sft("extender")),
            ),
            (
                "resume-scan",
                resume_scan,
                lambda: _lines(rd.partial("answers")) + _lines(rd.partial("extensions")),
            ),
        ]
        stages: dict[str, dict] = {}
        hwm_resettable = _reset_hwm()
        if trace:
            tracemalloc.start()
        started = time.perf_counter()
        for name, run, records in steps:
            _reset_hwm()
            if trace:
                tracemalloc.reset_peak()
                traced_before = tracemalloc.get_traced_memory()[0]
            t0 = time.perf_counter()
            out = run()
            seconds = time.perf_counter() - t0
            n = records()
            stage = {
                "seconds": round(seconds, 4),
                "records": n,
                "us_per_record": round(1e6 * seconds / max(n, 1), 1),
                "peak_rss_mb": round(_status_kb("VmHWM") / 1024, 1),
            }
            if trace:
                stage["py_peak_bytes"] = tracemalloc.get_traced_memory()[1] - traced_before
                stage["py_peak_mb"] = round(stage["py_peak_bytes"] / 2**20, 3)
            if name == "resume-scan":
                stage["ran_again"] = out  # must be 0: every item is already in the partial files
            elif isinstance(out, dict):
                stage["verdicts"] = out
            stages[name] = stage
        total = time.perf_counter() - started
        if trace:
            tracemalloc.stop()
        figures = {
            "count": count,
            "answers_partial": _lines(rd.partial("answers")),
            "answers": _lines(rd.answers),
            "extensions_partial": _lines(rd.partial("extensions")),
            "extensions": _lines(rd.extensions),
            "sft_generator": _lines(rd.sft("generator")),
            "sft_extender": _lines(rd.sft("extender")),
            "engine_requests": engine.requests,
            "seconds": round(total, 3),
            "us_per_instruction": round(1e6 * (total - stages["resume-scan"]["seconds"]) / count, 1),
            "disk_mb": round(_disk_bytes(root) / 2**20, 1),
            "rss_after_imports_mb": round(rss_after_imports_kb / 1024, 1),
            "peak_rss_mb": max(s["peak_rss_mb"] for s in stages.values())
            if hwm_resettable
            else round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "hwm_reset_per_stage": hwm_resettable,
            "stages": stages,
        }
        if trace:
            figures["py_peak_bytes"] = max(s["py_peak_bytes"] for s in stages.values())
            figures["py_peak_mb"] = round(figures["py_peak_bytes"] / 2**20, 3)
        return figures
    finally:
        if opts.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- the parent: children, table, ratios


def _child(count: int, argv: list[str], trace: bool) -> dict:
    """Run `measure_count` in a fresh interpreter (same flags); return its figures."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        out = tmp.name
    try:
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            *argv,
            "--child",
            str(count),
            "--child-out",
            out,
        ]
        if trace:
            cmd.append("--child-trace")
        subprocess.run(cmd, check=True)
        return json.loads(Path(out).read_text())
    finally:
        Path(out).unlink(missing_ok=True)


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def growth_per_item(lo: dict, hi: dict, stage: str | None = None) -> float:
    """Bytes of Python peak added per extra instruction (or, for a stage, per extra record): the
    slope between two counts, which is what a stage still keeps per item."""
    if stage is None:
        return (hi["py_peak_bytes"] - lo["py_peak_bytes"]) / max(hi["count"] - lo["count"], 1)
    a, b = lo["stages"][stage], hi["stages"][stage]
    return (b["py_peak_bytes"] - a["py_peak_bytes"]) / max(b["records"] - a["records"], 1)


def print_report(results: list[dict], opts: argparse.Namespace, out=sys.stdout) -> None:
    p = lambda *a: print(*a, file=out)  # noqa: E731
    p(
        "Round bookkeeping at scale (instant scripted engine; Step 0 self-instruct skipped: "
        "instructions.jsonl written directly)"
    )
    p(
        f"per instruction: {opts.samples} answers, {opts.jobs} extension jobs per kept answer, "
        f"{opts.micro} micro-step(s), answers {opts.min_words}-{opts.max_words} words, "
        f"fail rate {opts.fail_rate}, {opts.in_flight} items in flight"
    )
    head = (
        f"{'count':>8} {'answers':>8} {'exts':>8} {'sft':>8} {'requests':>9} {'wall s':>8} {'us/instr':>9} "
        f"{'rss0 MB':>8} {'peak MB':>8} {'growth':>7} {'py MB':>7} {'disk MB':>8}"
    )
    p(head)
    for r in results:
        py = f"{r['py_peak_mb']:>7.1f}" if "py_peak_mb" in r else f"{'-':>7}"
        p(
            f"{r['count']:>8} {r['answers_partial']:>8} {r['extensions_partial']:>8} "
            f"{r['sft_generator'] + r['sft_extender']:>8} {r['engine_requests']:>9} {r['seconds']:>8.2f} "
            f"{r['us_per_instruction']:>9.1f} {r['rss_after_imports_mb']:>8.1f} {r['peak_rss_mb']:>8.1f} "
            f"{r['peak_rss_mb'] - r['rss_after_imports_mb']:>7.1f} {py} {r['disk_mb']:>8.1f}"
        )
    p("  rss0 = RSS after imports; peak = highest per-stage RSS high-water mark; growth = peak - rss0;")
    p("  py = tracemalloc peak of Python allocations within a stage (separate child run)")
    p("")
    p("per stage: us per record written (records) / peak RSS MB / Python peak MB")
    p(f"{'count':>8} " + " ".join(f"{s:>26}" for s in STAGES))
    for r in results:
        cells = []
        for s in STAGES:
            st = r["stages"][s]
            py = f"{st['py_peak_mb']:.1f}" if "py_peak_mb" in st else "-"
            cells.append(
                f"{st['us_per_record']:>8.1f} ({st['records']:>7}) {st['peak_rss_mb']:>5.0f}/{py:>5}"
            )
        p(f"{r['count']:>8} " + " ".join(f"{c:>26}" for c in cells))
    if len(results) >= 2:
        lo, hi = results[0], results[-1]
        p("")
        p(f"ratios {hi['count']} / {lo['count']} instructions (flat = 1.0):")
        p(f"  time per item         {_ratio(hi['us_per_instruction'], lo['us_per_instruction'])}")
        p(f"  peak RSS              {_ratio(hi['peak_rss_mb'], lo['peak_rss_mb'])}")
        growth = [r["peak_rss_mb"] - r["rss_after_imports_mb"] for r in (hi, lo)]
        p(f"  RSS growth over rss0  {_ratio(*growth)}")
        if "py_peak_mb" in hi and "py_peak_mb" in lo:
            p(f"  Python peak           {_ratio(hi['py_peak_mb'], lo['py_peak_mb'])}")
            p(f"  Python peak growth    {growth_per_item(lo, hi):.0f} bytes per instruction")
            p("  what each stage still holds per record (Python peak growth / records growth):")
            for s in STAGES:
                p(f"    {s:<12} {growth_per_item(lo, hi, s):>6.0f} bytes per record")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python bench/scale.py",
        description="Time per item and peak memory of one round's bookkeeping (store, checks, generate, "
        "two-stage extend, length-biased selection, SFT data) at growing instruction counts, with an "
        "instant scripted engine (no model). Each count runs in a fresh child process.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument(
        "--counts", default="1000,5000", help="comma-separated instruction counts, smallest first"
    )
    ap.add_argument("--samples", type=int, default=2, help="Generator answers per instruction (paper: 2)")
    ap.add_argument("--jobs", type=int, default=2, help="extension jobs per kept answer (paper: 2)")
    ap.add_argument(
        "--micro",
        type=int,
        default=1,
        help="micro-steps per extension job (paper: 3; each one multiplies extension record size)",
    )
    ap.add_argument("--generate-retries", type=int, default=20, help="attempts per answer (paper: 20)")
    ap.add_argument("--extend-retries", type=int, default=3, help="attempts per extension job (paper: 20)")
    ap.add_argument("--min-words", type=int, default=150, help="shortest Generator answer, words")
    ap.add_argument("--max-words", type=int, default=450, help="longest Generator answer, words")
    ap.add_argument(
        "--fail-rate", type=float, default=0.05, help="share of Generator answers returned truncated"
    )
    ap.add_argument(
        "--in-flight", type=int, default=32, help="items a stage keeps running (engine.max_in_flight)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--no-tracemalloc",
        action="store_true",
        help="skip the second child per count that measures Python allocations with tracemalloc",
    )
    ap.add_argument(
        "--workdir", default=None, help="where run directories are made (None: the system temp dir)"
    )
    ap.add_argument("--keep", action="store_true", help="keep each count's run directory")
    ap.add_argument("--json", default=None, metavar="PATH", help="also write the figures to this JSON file")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-trace", action="store_true", help=argparse.SUPPRESS)
    return ap


def main(argv: list[str] | None = None, out=sys.stdout) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    opts = build_parser().parse_args(argv)
    if opts.child is not None:
        figures = measure_count(opts.child, opts, trace=opts.child_trace)
        Path(opts.child_out).write_text(json.dumps(figures))
        return figures
    counts = [int(c) for c in opts.counts.split(",") if c.strip()]
    results = []
    for count in counts:
        print(f"... {count} instructions", file=sys.stderr, flush=True)
        figures = _child(count, argv, trace=False)
        if not opts.no_tracemalloc:
            traced = _child(count, argv, trace=True)
            figures["py_peak_mb"], figures["py_peak_bytes"] = traced["py_peak_mb"], traced["py_peak_bytes"]
            figures["seconds_with_tracemalloc"] = traced["seconds"]
            for name, stage in traced["stages"].items():
                figures["stages"][name]["py_peak_mb"] = stage["py_peak_mb"]
                figures["stages"][name]["py_peak_bytes"] = stage["py_peak_bytes"]
        results.append(figures)
    print_report(results, opts, out)
    report = {
        "bench": "scale",
        "options": {k: v for k, v in vars(opts).items() if not k.startswith("child")},
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "results": results,
    }
    if len(results) >= 2:
        lo, hi = results[0], results[-1]
        report["ratios"] = {
            "time_per_item": _ratio(hi["us_per_instruction"], lo["us_per_instruction"]),
            "peak_rss": _ratio(hi["peak_rss_mb"], lo["peak_rss_mb"]),
        }
        if "py_peak_mb" in lo and "py_peak_mb" in hi:
            report["ratios"]["py_peak"] = _ratio(hi["py_peak_mb"], lo["py_peak_mb"])
            report["py_bytes_per_instruction"] = round(growth_per_item(lo, hi))
            report["py_bytes_per_record"] = {s: round(growth_per_item(lo, hi, s)) for s in STAGES}
    if opts.json:
        Path(opts.json).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
