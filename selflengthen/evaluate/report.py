"""A run report people would rather look at than read. Usage:

    index = build_report("runs/demo")   # writes runs/demo/report/{index.html, report.md, *.png, browse.html}

It reads what the run store holds: manifest.json, round-K/{instructions,answers,extensions}
.jsonl and round-K/summary.json, eval/*.jsonl (benchmark answers or judge records), held-out
answers and per-round scores (report_growth.py), and final/. Any of it may be missing or
half-written (a round still running): that part is skipped, a torn line is ignored, and a note
says what could not be read. The HTML needs no server and no network: styles are inline, the
plots are PNG files beside it, and browse.html (the sample browser, browser.py) loads its data
from script files under browse/.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from selflengthen.errors import DataError
from selflengthen.evaluate import plots
from selflengthen.evaluate.browser import write_browser
from selflengthen.evaluate.files import LONGBENCH_WRITE, LONGEN, RULER, detect_benchmark, read_jsonl
from selflengthen.evaluate.report_data import STAGES, Round, load_rounds, mean_words, read_json, stage_counts
from selflengthen.evaluate.report_doc import Doc
from selflengthen.evaluate.report_growth import final_section, growth_section

ROLES = ("generator", "extender")
_TITLES = {LONGEN: "LonGen", LONGBENCH_WRITE: "LongBench-Write", RULER: "LongWrite-Ruler"}


# ------------------------------------------------------------------ sections


def _overview(doc: Doc, manifest: dict[str, Any] | None, rounds: list[Round]) -> None:
    if manifest:
        rows = [[k, v] for k, v in manifest.items() if isinstance(v, (str, int, float, bool))]
        config: dict = manifest["config"] if isinstance(manifest.get("config"), dict) else {}
        model: dict = config["model"] if isinstance(config.get("model"), dict) else {}
        for key, value in (
            ("name", config.get("name")),
            ("macro_iterations", config.get("macro_iterations")),
            ("seed", config.get("seed")),
            ("model.base", model.get("base")),
        ):
            if value is not None:
                rows.append([key, value])
        doc.table(["run", "value"], rows)
    means = [(r.k, mean_words(r, "answers")) for r in rounds]
    means = [(k, m) for k, m in means if m is not None]
    if len(means) >= 2:
        doc.para(
            f"Mean kept answer length went from {means[0][1]:.0f} words (round {means[0][0]}) "
            f"to {means[-1][1]:.0f} words (round {means[-1][0]})."
        )
    rows = []
    for r in rounds:
        cells: list[Any] = [r.k]
        for stage in STAGES:
            counts = stage_counts(r, stage)
            cells.append(f"{counts.kept} / {counts.made}" if counts else None)
            if stage != "instructions":
                cells.append(mean_words(r, stage))
        minutes = (r.summary or {}).get("minutes")
        cells.append(
            sum(v for v in minutes.values() if isinstance(v, (int, float)))
            if isinstance(minutes, dict)
            else None
        )
        rows.append(cells)
    doc.heading(2, "Rounds")
    doc.table(
        [
            "round",
            "instructions kept/made",
            "answers kept/made",
            "answer mean words",
            "extensions kept/made",
            "extension mean words",
            "minutes",
        ],
        rows,
    )
    if not rounds:
        doc.para("No round directories yet.")


def _pipeline_plots(doc: Doc, rounds: list[Round], out: Path) -> None:
    stages = []
    for r in rounds:
        for stage in STAGES:
            counts = stage_counts(r, stage)
            if counts:
                stages.append((f"round {r.k} {stage}", counts))
    if plots.funnel([(label, c.kept, c.verdicts, c.attempts) for label, c in stages], out / "funnel.png"):
        doc.heading(2, "Funnel: what was kept, and why the rest was not")
        doc.image("funnel.png", "items of each stage by final verdict, and failed attempts by reason")
        doc.table(
            ["stage", "made", "kept", "not kept, by final verdict", "failed attempts (retries included)"],
            [
                [
                    label,
                    c.made,
                    c.kept,
                    ", ".join(f"{k}: {v}" for k, v in c.verdicts.items()) or None,
                    ", ".join(f"{k}: {v}" for k, v in c.attempts.items()) or None,
                ]
                for label, c in stages
            ],
        )
    curves: dict[str, dict[int, list[tuple[float, float]]]] = {role: {} for role in ROLES}
    table = []
    for r in rounds:
        training = (r.summary or {}).get("training")
        if not isinstance(training, dict):
            continue
        for role, info in training.items():
            if not isinstance(info, dict):
                continue
            history = info.get("loss_history") or []
            points = [
                (float(p[0]), float(p[1]))
                for p in history
                if isinstance(p, (list, tuple))
                and len(p) == 2
                and all(isinstance(x, (int, float)) for x in p)
            ]
            curves.setdefault(role, {})[r.k] = points
            table.append(
                [
                    r.k,
                    role,
                    info.get("examples"),
                    info.get("dropped_too_long"),
                    info.get("final_loss"),
                    info.get("seconds"),
                ]
            )
    if table:
        doc.heading(2, "Training")
        if plots.training_loss(curves, out / "loss.png"):
            doc.image("loss.png", "training loss per round and role")
        doc.table(["round", "role", "examples", "dropped (too long)", "final loss", "seconds"], table)


def _score_tables(doc: Doc, benchmark: str, scores: dict[str, Any]) -> None:
    if benchmark == RULER:
        doc.table(
            ["required words", "n", "mean words", "max words"],
            [[k, v["n"], v["mean_words"], v["max_words"]] for k, v in scores["by_length"].items()],
        )
    else:
        unit = "S_l (0-100)" if benchmark == LONGBENCH_WRITE else "score (0-1)"
        rows: list[list[Any]] = [["overall", scores["overall"]]]
        for group in ("by_type", "by_range", "by_bucket", "by_language"):
            for key, value in scores.get(group, {}).items():
                rows.append([f"{group[3:]}: {key}", value])
        doc.table(["group", unit], rows)
    d = scores["diagnostics"]
    doc.table(
        ["diagnostic", "value"],
        [
            ["hit the token limit (share)", d["truncated"]],
            ["repeated 13-gram (share)", d["repeated_13gram"]],
            ["mean words", d["mean_words"]],
        ],
    )


def _eval_section(doc: Doc, run: Path, out: Path, notes: list[str]) -> None:
    from selflengthen.evaluate.judge import RUBRICS, summarize
    from selflengthen.evaluate.scoring import length_points, score_rows

    files = sorted((run / "eval").glob("*.jsonl")) if (run / "eval").is_dir() else []
    if files:
        doc.heading(2, "Evaluation")
    for path in files:
        try:
            numbered = read_jsonl(path, drop_torn_tail=True)
            rows = [row for _, row in numbered]
            benchmark = detect_benchmark(rows, path)
            if benchmark is None:
                notes.append(f"eval/{path.name}: not a known benchmark's answers; skipped")
                continue
            doc.heading(3, f"{_TITLES[benchmark]}: {path.name} ({len(rows)} rows)")
            if any(isinstance(row.get("judge"), dict) for row in rows) and benchmark in RUBRICS:
                summary = summarize(rows, benchmark)
                doc.table(
                    ["dimension", f"mean ({summary['scale']})"],
                    [*[[k, v] for k, v in summary["dimensions"].items()], ["overall", summary["overall"]]],
                )
                doc.para(
                    f"Judged {summary['n']} answers; {summary['unparsable']} judge outputs stayed unparsable."
                )
                continue
            _score_tables(doc, benchmark, score_rows(benchmark, rows, str(path), [n for n, _ in numbered]))
            name = "eval_" + re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem) + ".png"
            title = f"{_TITLES[benchmark]}: required vs produced words"
            if plots.required_vs_produced(length_points(benchmark, rows, str(path)), title, out / name):
                doc.image(name, title)
        except DataError as exc:
            notes.append(f"eval/{path.name}: {exc}")


def build_report(run_dir: str | Path) -> Path:
    """Write RUN/report/index.html, report.md, PNG plots and the sample browser; return index.html."""
    run = Path(run_dir)
    if not run.is_dir():
        raise DataError(f"{run}: run directory not found")
    out = run / "report"
    out.mkdir(exist_ok=True)
    for stale in out.glob("*.png"):  # plots a previous report drew but this one may not
        stale.unlink()
    notes: list[str] = []
    manifest = read_json(run / "manifest.json", notes)
    rounds = load_rounds(run, notes)
    title = f"Self-Lengthen run: {run.resolve().name}"
    doc = Doc()
    doc.heading(1, title)
    _overview(doc, manifest, rounds)
    growth_section(doc, run, rounds, out, notes)
    browsed = write_browser(run, out, notes)
    if browsed:
        doc.heading(2, "Samples")
        doc.link(
            "browse.html",
            "Browse every sample",
            f": {browsed} records (instructions, answers, extensions with their micro-steps); "
            "filter by round, verdict and length, sort by length or ratio.",
        )
    _pipeline_plots(doc, rounds, out)
    final_section(doc, run, out, notes)
    _eval_section(doc, run, out, notes)
    if notes:
        doc.heading(2, "Notes")
        for note in notes:
            doc.para(note)
    (out / "report.md").write_text(doc.markdown(), encoding="utf-8")
    index = out / "index.html"
    index.write_text(doc.html(title), encoding="utf-8")
    return index
