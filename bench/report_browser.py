"""The report's sample browser at scale: a generated run of N records (default 100k), how long
`selflengthen report` takes, what it writes, and how long the page takes to show its first
page and to open a record.

    python bench/report_browser.py                   # 100k records in a temporary directory
    python bench/report_browser.py --records 20000 --words 300 --keep runs/bench-browser

The run has 2 rounds; each round's records are 1/5 instructions, 2/5 answers (1 in 4 dropped
as truncated after a retry) and 2/5 extensions with one micro-step each (an outline, a stage-1
output, a continuation and a result), texts of about --words words. The page's own script
is timed in node with a stand-in DOM (tests/unit/evaluate/browser_driver.js): reading the
data files, filtering and building the table HTML, not the browser's layout and paint.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))
DRIVER = ROOT / "tests" / "unit" / "evaluate" / "browser_driver.js"
VOCAB = (
    "river mountain city garden market history science music winter harbor village teacher engine "
    "library forest signal morning bridge window letter island theory planet culture station"
).split()


def text(rng: random.Random, words: int) -> str:
    tokens = [rng.choice(VOCAB) for _ in range(words)]
    paragraphs = [" ".join(tokens[i : i + 40]) + "." for i in range(0, len(tokens), 40)]
    return "\n\n".join(paragraphs)


def make_run(run: Path, records: int, words: int) -> None:
    rng = random.Random(0)
    per_round = records // 2
    n_inst = per_round // 5
    (run / "manifest.json").parent.mkdir(parents=True, exist_ok=True)
    (run / "manifest.json").write_text(json.dumps({"config": {"name": "bench"}}))
    for k in (1, 2):
        rd = run / f"round-{k}"
        rd.mkdir()
        with (rd / "instructions.jsonl").open("w") as f:
            for i in range(n_inst):
                f.write(
                    json.dumps(
                        {
                            "id": f"r{k}-i{i}",
                            "text": f"Write about {rng.choice(VOCAB)} {i}.",
                            "words": 4,
                            "verdict": "kept",
                            "model": "base",
                            "attempts": [],
                        }
                    )
                    + "\n"
                )
        answers = []
        with (rd / "answers.jsonl").open("w") as f:
            for i in range(n_inst):
                for j in range(2):
                    n = int(words * rng.uniform(0.6, 1.4))
                    kept = rng.random() > 0.25
                    row = {
                        "id": f"r{k}-i{i}-a{j}",
                        "instruction_id": f"r{k}-i{i}",
                        "query": "q",
                        "text": text(rng, n),
                        "words": n,
                        "verdict": "kept" if kept else "truncated",
                        "model": "base",
                        "attempts": []
                        if kept
                        else [{"reason": "truncated", "words": n, "finish_reason": "length"}],
                    }
                    answers.append((row["id"], f"r{k}-i{i}", n))
                    f.write(json.dumps(row) + "\n")
        with (rd / "extensions.jsonl").open("w") as f:
            written = 0
            for aid, iid, n in answers:
                for j in range(2):
                    if written >= per_round - n_inst - len(answers):
                        break
                    written += 1
                    m = int(n * rng.uniform(1.0, 2.0))
                    kept_text, cont = text(rng, m // 2), text(rng, m - m // 2)
                    step = {
                        "former": text(rng, n // 2),
                        "stage1_output": kept_text + "\n\n" + text(rng, m // 4),
                        "stage1_kept": kept_text + "\n\n",
                        "continuation": cont,
                        "result": kept_text + "\n\n" + cont,
                        "words": m,
                        "finish_reason": "stop",
                        "accepted": True,
                        "reason": None,
                    }
                    f.write(
                        json.dumps(
                            {
                                "id": f"{aid}-e{j}",
                                "answer_id": aid,
                                "instruction_id": iid,
                                "query": "q",
                                "text": step["result"],
                                "words": m,
                                "answer_words": n,
                                "ratio": round(m / n, 3),
                                "verdict": "kept" if m > 1.2 * n else "too_short",
                                "model": "base",
                                "steps": [step],
                                "attempts": [],
                            }
                        )
                        + "\n"
                    )


def size(path: Path) -> int:
    return (
        sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        if path.is_dir()
        else path.stat().st_size
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--words", type=int, default=150, help="about this many words per answer")
    ap.add_argument("--repeats", type=int, default=3, help="page timings: median of this many runs")
    ap.add_argument(
        "--keep", type=Path, help="write the run here and keep it (default: a temporary directory)"
    )
    args = ap.parse_args()
    from selflengthen.evaluate.report import build_report

    base = args.keep or Path(tempfile.mkdtemp(prefix="bench-browser-"))
    run = base / "run"
    shutil.rmtree(run, ignore_errors=True)
    started = time.perf_counter()
    make_run(run, args.records, args.words)
    made = time.perf_counter() - started
    jsonl = sum(size(p) for p in run.glob("round-*/*.jsonl"))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    index = build_report(run)
    built = time.perf_counter() - started
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = index.parent
    browse = out / "browse"
    manifest = json.loads((browse / "manifest.js").read_text()[len("SL.manifest(") : -3])
    first_paint = (
        size(out / "browse.html")
        + size(browse / "manifest.js")
        + size(browse / manifest["rounds"][0]["index"])
    )
    chunks = list(browse.glob("round-*/*.js"))
    print(
        f"run: {manifest['records']:,} records in "
        f"{len(manifest['rounds'])} rounds, {jsonl / 1e6:.1f} MB of JSONL "
        f"(generated in {made:.1f} s)"
    )
    print(
        f"selflengthen report: {built:.1f} s; peak RSS {rss_before / 1024:.0f} -> {rss_after / 1024:.0f} MB"
    )
    print(
        f"browser files: {size(browse) / 1e6:.1f} MB in {len(chunks)} chunks (largest "
        f"{max(size(c) for c in chunks) / 1e6:.2f} MB); index per round "
        + ", ".join(f"{size(browse / r['index']) / 1e6:.2f} MB" for r in manifest["rounds"])
    )
    print(f"first paint reads {first_paint / 1e6:.2f} MB (page + manifest + round 1's index)")
    node = shutil.which("node")
    if node is None:
        print("node not installed: page timings skipped")
    else:
        target = (
            f"r1-i{args.records // 2 // 5 // 4}-a0-e0"  # extensions cover the first half of the instructions
        )
        ready, opened = [], []
        for _ in range(args.repeats):
            res = subprocess.run(
                [node, str(DRIVER), str(out), "1", target, json.dumps({"f-sort": "ratio-"})],
                capture_output=True,
                text=True,
                check=True,
            )
            page = json.loads(res.stdout)
            ready.append(page["ready_ms"])
            opened.append(page["open_ms"])
        print(
            f"page script in node ({args.repeats} runs, median): first "
            "page (load manifest + index, filter, sort by "
            f"ratio, table) {statistics.median(ready):.0f} ms; open a "
            "record (load its chunks, draw its steps) "
            f"{statistics.median(opened):.0f} ms; status: {page['status']}"
        )
    if args.keep is None:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
