"""A run report people would rather look at than read. Usage:

    index = build_report("runs/demo")   # writes runs/demo/report/{index.html, report.md, *.png}

It reads what the run store holds: manifest.json, round-K/{instructions,answers,extensions}
.jsonl and round-K/summary.json, and eval/*.jsonl (benchmark answers or judge records).
Any of it may be missing or half-written (a round still running): that part is skipped, a
torn line is ignored, and a note says what could not be read. The HTML needs no server and
no network: styles are inline and the plots are PNG files beside it.
"""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selflengthen.errors import DataError
from selflengthen.evaluate import plots
from selflengthen.evaluate.files import LONGBENCH_WRITE, LONGEN, RULER, detect_benchmark, read_jsonl
from selflengthen.text.words import count_words

STAGES = ("instructions", "answers", "extensions")
ROLES = ("generator", "extender")
_TITLES = {LONGEN: "LonGen", LONGBENCH_WRITE: "LongBench-Write", RULER: "LongWrite-Ruler"}


# ------------------------------------------------------------------ a tiny document model


class _Doc:
    """Headings, paragraphs, tables and images, rendered to both Markdown and HTML."""

    def __init__(self) -> None:
        self.blocks: list[tuple[str, Any]] = []

    def heading(self, level: int, text: str) -> None:
        self.blocks.append(("h", (level, text)))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, headers: list[str], rows: list[list[Any]]) -> None:
        if rows:
            self.blocks.append(("table", (headers, [[_fmt(c) for c in row] for row in rows])))

    def image(self, name: str, alt: str) -> None:
        self.blocks.append(("img", (name, alt)))

    def markdown(self) -> str:
        out = []
        for kind, value in self.blocks:
            if kind == "h":
                out.append("#" * value[0] + " " + value[1])
            elif kind == "p":
                out.append(value)
            elif kind == "table":
                headers, rows = value
                cells = [headers, ["---"] * len(headers), *rows]
                out.append(
                    "\n".join("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in cells)
                )
            else:
                out.append(f"![{value[1]}]({value[0]})")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        e = html.escape
        body = []
        for kind, value in self.blocks:
            if kind == "h":
                body.append(f"<h{value[0]}>{e(value[1])}</h{value[0]}>")
            elif kind == "p":
                body.append(f"<p>{e(value)}</p>")
            elif kind == "table":
                headers, rows = value
                head = "".join(f"<th>{e(h)}</th>" for h in headers)
                trs = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
            else:
                body.append(f'<figure><img src="{e(value[0])}" alt="{e(value[1])}"></figure>')
        return _HTML.format(title=e(title), body="\n".join(body))


_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; }}
h1 {{ border-bottom: 2px solid #2e7d32; padding-bottom: .2em; }}
h2 {{ margin-top: 2em; border-bottom: 1px solid #ddd; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 14px; }}
th, td {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
th {{ background: #f3f3f3; }} td:first-child, th:first-child {{ text-align: left; }}
img {{ max-width: 100%; }} figure {{ margin: 1em 0; }}
</style></head>
<body>
{body}
</body></html>
"""


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:.0f}"
        return f"{value:.3f}".rstrip("0").rstrip(".") if value else "0"
    return str(value)


# ------------------------------------------------------------------ reading the run, tolerantly


@dataclass
class _Round:
    k: int
    summary: dict[str, Any] | None = None
    kept_words: dict[str, list[int]] = field(default_factory=dict)  # stage -> words of kept items
    counts: dict[str, tuple[int, int, dict[str, int]]] = field(
        default_factory=dict
    )  # stage -> made, kept, why not


def _read_json(path: Path, notes: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        notes.append(f"{path.name} in {path.parent.name}: unreadable ({exc}); skipped")
        return None
    return data if isinstance(data, dict) else None


def _read_lines(path: Path, notes: list[str]) -> list[dict[str, Any]]:
    rows, bad = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").split("\n"):  # not splitlines(): U+2028
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(obj, dict):
            rows.append(obj)
    if bad:
        notes.append(f"{path.parent.name}/{path.name}: {bad} unreadable line(s) ignored")
    return rows


def _count_verdicts(rows: list[dict[str, Any]]) -> tuple[int, int, dict[str, int]]:
    """(items, kept, rejections) the way summary.json counts them: each failed attempt's reason,
    plus a final verdict that no attempt explains (e.g. length_biased_sampling)."""
    reasons: Counter[str] = Counter()
    kept = 0
    for row in rows:
        attempts = [a for a in row.get("attempts") or () if isinstance(a, dict)]
        for attempt in attempts:
            reasons[str(attempt.get("reason", "unknown"))] += 1
        verdict = row.get("verdict", "unknown")
        if verdict == "kept":
            kept += 1
        elif verdict not in {a.get("reason") for a in attempts}:
            reasons[str(verdict)] += 1
    return len(rows), kept, dict(reasons.most_common())


def _load_round(path: Path, k: int, notes: list[str]) -> _Round:
    data = _Round(k, summary=_read_json(path / "summary.json", notes))
    for stage in STAGES:
        file = path / f"{stage}.jsonl"
        if not file.is_file():
            continue
        rows = _read_lines(file, notes)
        data.counts[stage] = _count_verdicts(rows)
        words = []
        for r in rows:
            if r.get("verdict") != "kept":
                continue
            n = r.get("words")
            if not isinstance(n, int) and isinstance(r.get("text"), str):
                n = count_words(r["text"])
            if isinstance(n, int):
                words.append(n)
        data.kept_words[stage] = words
    return data


def _rounds(run: Path, notes: list[str]) -> list[_Round]:
    found = []
    for path in run.glob("round-*"):
        match = re.fullmatch(r"round-(\d+)", path.name)
        if match and path.is_dir():
            found.append(_load_round(path, int(match.group(1)), notes))
    return sorted(found, key=lambda r: r.k)


def _stage_counts(rnd: _Round, stage: str) -> tuple[int, int, dict[str, int]] | None:
    """(made, kept, rejections) from summary.json, else counted from the stage's records."""
    part = (rnd.summary or {}).get(stage)
    if isinstance(part, dict) and isinstance(part.get("made"), int):
        rejections = part.get("rejections") if isinstance(part.get("rejections"), dict) else {}
        clean = {str(k): int(v) for k, v in rejections.items() if isinstance(v, (int, float))}
        return part["made"], int(part.get("kept") or 0), clean
    return rnd.counts.get(stage) or None


def _mean_words(rnd: _Round, stage: str) -> float | None:
    part = (rnd.summary or {}).get(stage)
    if isinstance(part, dict) and isinstance(part.get("mean_words"), (int, float)):
        return float(part["mean_words"])
    words = rnd.kept_words.get(stage)
    return sum(words) / len(words) if words else None


# ------------------------------------------------------------------ sections


def _overview(doc: _Doc, manifest: dict[str, Any] | None, rounds: list[_Round]) -> None:
    if manifest:
        rows = [[k, v] for k, v in manifest.items() if isinstance(v, (str, int, float, bool))]
        config = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
        model = config.get("model") if isinstance(config.get("model"), dict) else {}
        for key, value in (
            ("name", config.get("name")),
            ("macro_iterations", config.get("macro_iterations")),
            ("seed", config.get("seed")),
            ("model.base", model.get("base")),
        ):
            if value is not None:
                rows.append([key, value])
        doc.table(["run", "value"], rows)
    means = [(r.k, _mean_words(r, "answers")) for r in rounds]
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
            counts = _stage_counts(r, stage)
            cells.append(f"{counts[1]} / {counts[0]}" if counts else None)
            if stage != "instructions":
                cells.append(_mean_words(r, stage))
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


def _pipeline_plots(doc: _Doc, rounds: list[_Round], out: Path) -> None:
    by_round = {
        r.k: {"answers": r.kept_words.get("answers"), "extensions": r.kept_words.get("extensions")}
        for r in rounds
    }
    if by_round and plots.word_distributions(by_round, out / "lengths.png"):
        doc.heading(2, "Lengths of kept answers and extensions")
        doc.image("lengths.png", "word-count distribution per round")
    stages = []
    for r in rounds:
        for stage in STAGES:
            counts = _stage_counts(r, stage)
            if counts:
                stages.append((f"round {r.k} {stage}", *counts))
    if plots.funnel(stages, out / "funnel.png"):
        doc.heading(2, "Funnel: what was kept, and why the rest was not")
        doc.image("funnel.png", "funnel of each stage with rejection reasons")
        doc.table(
            ["stage", "made", "kept", "rejections"],
            [
                [label, made, kept, ", ".join(f"{k}: {v}" for k, v in rej.items()) or None]
                for label, made, kept, rej in stages
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


def _score_tables(doc: _Doc, benchmark: str, scores: dict[str, Any]) -> None:
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


def _eval_section(doc: _Doc, run: Path, out: Path, notes: list[str]) -> None:
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
    """Write RUN/report/index.html and report.md with PNG plots; return the index.html path."""
    run = Path(run_dir)
    if not run.is_dir():
        raise DataError(f"{run}: run directory not found")
    out = run / "report"
    out.mkdir(exist_ok=True)
    for stale in out.glob("*.png"):  # plots a previous report drew but this one may not
        stale.unlink()
    notes: list[str] = []
    manifest = _read_json(run / "manifest.json", notes)
    rounds = _rounds(run, notes)
    title = f"Self-Lengthen run: {run.resolve().name}"
    doc = _Doc()
    doc.heading(1, title)
    _overview(doc, manifest, rounds)
    _pipeline_plots(doc, rounds, out)
    _eval_section(doc, run, out, notes)
    if notes:
        doc.heading(2, "Notes")
        for note in notes:
            doc.para(note)
    (out / "report.md").write_text(doc.markdown(), encoding="utf-8")
    index = out / "index.html"
    index.write_text(doc.html(title), encoding="utf-8")
    return index
