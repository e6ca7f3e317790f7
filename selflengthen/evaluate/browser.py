"""The sample browser: every instruction, answer and extension of a run, with each extension's
micro-steps, in a static page that opens from disk (file://, no server, no network).

    n = write_browser(Path("runs/demo"), Path("runs/demo/report"), notes=[])

Writes REPORT/browse.html (page, styles and code inline) and REPORT/browse/:

    manifest.js                 SL.manifest({...}): the rounds, their record counts and index files
    round-K-index.js            SL.index(K, {...}): one compact row per record of round K (kind, id,
                                instruction, verdict, words, ratio, chunk), columns as arrays
    round-K/KIND-C.js           SL.chunk("K/KIND/C", [...]): the full records, at most CHUNK_BYTES each

The page loads the manifest and the first round's index (small: no texts), then a round's index
when that round is chosen, and a record's chunks only when it is opened; so the first paint of
a 100k-record run reads a few MB, whatever the run's size (bench/report_browser.py measures it).
Data files are scripts, not JSON fetched by the page, because browsers refuse fetch() on file://.
The files are written streaming, one record at a time: a run's texts never sit in memory at once.
"""

from __future__ import annotations

import html
import json
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from selflengthen.evaluate.report_data import STAGES, iter_lines, round_dirs, words_of
from selflengthen.text.paragraphs import split_paragraphs

CHUNK_BYTES = 1_500_000  # per chunk file: a record opens after reading about this much
SNIPPET = 160  # characters of an instruction shown in the list
KINDS = {"instructions": 0, "answers": 1, "extensions": 2}


def _js(call: str, *args: Any) -> str:
    body = ", ".join(json.dumps(a, ensure_ascii=False, separators=(",", ":")) for a in args)
    return f"{call}({body});\n"


def _write(path: Path, text: str) -> int:
    data = text.encode("utf-8", errors="replace")  # a lone surrogate in a record must not stop the report
    path.write_bytes(data)
    return len(data)


class _Chunks:
    """Full records of one kind of one round, cut into script files of about CHUNK_BYTES."""

    def __init__(self, folder: Path, k: int, kind: str):
        self.folder, self.k, self.kind = folder, k, kind
        self.number, self.size, self.bytes = 0, 0, 0
        self.parts: list[Any] = []

    def add(self, record: dict[str, Any]) -> int:
        """Add a record; returns the number of the chunk it lands in."""
        text = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
        if self.parts and self.size + len(text) > CHUNK_BYTES:
            self.flush()
        self.parts.append(text)
        self.size += len(text)
        return self.number

    def flush(self) -> None:
        if self.parts:
            key = json.dumps(f"{self.k}/{self.kind}/{self.number}")
            text = f"SL.chunk({key}, [\n" + ",\n".join(self.parts) + "\n]);\n"
            self.bytes += _write(self.folder / f"{self.kind}-{self.number}.js", text)
            self.number += 1
            self.parts, self.size = [], 0


def _step_view(step: dict[str, Any]) -> dict[str, Any]:
    """A micro-step as the page shows it: the stage-1 output as paragraphs with how many of them
    were kept (the leading 2/3 that pre-filled stage 2), so the page marks exactly those."""
    out = {k: v for k, v in step.items() if k != "stage1_output"}
    output = step.get("stage1_output")
    if isinstance(output, str):
        out["stage1_paragraphs"] = split_paragraphs(output)
        kept = step.get("stage1_kept")
        out["stage1_kept_n"] = len(split_paragraphs(kept)) if isinstance(kept, str) else 0
    return out


def _round(folder: Path, k: int, path: Path, notes: list[str]) -> tuple[dict[str, Any], int]:
    """Write round k's chunks; return its index and the bytes written."""
    folder.mkdir(parents=True, exist_ok=True)
    verdicts: dict[str, int] = {"kept": 0}
    instructions: list[list[Any]] = []  # [id, snippet, words]
    where: dict[str, int] = {}  # instruction id -> position in `instructions`
    answer_of: dict[str, int] = {}  # answer id -> its instruction's position
    cols: dict[str, list[Any]] = {c: [] for c in ("kind", "id", "inst", "verdict", "words", "ratio", "chunk")}
    written = 0

    def instruction_for(iid: Any, query: Any) -> int:
        if iid not in where:  # an answer whose instruction record is missing: a placeholder row
            where[iid] = len(instructions)
            instructions.append([str(iid), str(query or "")[:SNIPPET], None])
        return where[iid]

    for stage in STAGES:
        file = path / f"{stage}.jsonl"
        if not file.is_file():
            continue
        chunks = _Chunks(folder, k, stage)
        for row in iter_lines(file, notes):
            rid = str(row.get("id", f"{stage}-{len(cols['id'])}"))
            if stage == "instructions":
                inst = instruction_for(rid, row.get("text"))
                instructions[inst][2] = words_of(row)
                record = row
            elif stage == "answers":
                inst = instruction_for(row.get("instruction_id"), row.get("query"))
                answer_of[rid] = inst
                record = {k: v for k, v in row.items() if k != "query"}
            else:
                known = answer_of.get(str(row.get("answer_id")))
                inst = (
                    known
                    if known is not None
                    else instruction_for(row.get("instruction_id"), row.get("query"))
                )
                steps = row.get("steps") if isinstance(row.get("steps"), list) else []
                record = {k: v for k, v in row.items() if k not in ("query", "steps")}
                record["steps"] = [_step_view(s) for s in steps if isinstance(s, dict)]
            verdict = str(row.get("verdict", "unknown"))
            ratio = row.get("ratio")
            cols["kind"].append(KINDS[stage])
            cols["id"].append(rid)
            cols["inst"].append(inst)
            cols["verdict"].append(verdicts.setdefault(verdict, len(verdicts)))
            cols["words"].append(words_of(row))
            cols["ratio"].append(round(ratio, 3) if isinstance(ratio, (int, float)) else None)
            cols["chunk"].append(chunks.add(record))
        chunks.flush()
        written += chunks.bytes
    index = {"round": k, "instructions": instructions, "verdicts": list(verdicts), "rows": cols}
    return index, written


def write_browser(run: Path, out: Path, notes: list[str]) -> int:
    """Write browse.html and browse/ for `run` under `out`; returns the number of records (0:
    nothing to browse, and nothing written)."""
    folder = out / "browse"
    shutil.rmtree(folder, ignore_errors=True)  # a previous report's chunks
    rounds, total = [], 0
    for k, path in round_dirs(run):
        if not any((path / f"{stage}.jsonl").is_file() for stage in STAGES):
            continue
        index, _ = _round(folder / f"round-{k}", k, path, notes)
        n = len(index["rows"]["id"])
        name = f"round-{k}-index.js"
        _write(folder / name, _js("SL.index", k, index))
        rounds.append({"k": k, "records": n, "index": name})
        total += n
    if not total:
        shutil.rmtree(folder, ignore_errors=True)
        (out / "browse.html").unlink(missing_ok=True)
        return 0
    manifest = {"run": run.resolve().name, "rounds": rounds, "records": total}
    _write(folder / "manifest.js", _js("SL.manifest", manifest))
    page = resources.files("selflengthen.evaluate").joinpath("browse.html").read_text(encoding="utf-8")
    _write(out / "browse.html", page.replace("__TITLE__", html.escape(f"Samples: {run.resolve().name}")))
    return total
