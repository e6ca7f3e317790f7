"""A small run directory as the run store writes it, for report tests."""

from __future__ import annotations

import json
from pathlib import Path


def _jsonl(path: Path, rows: list[dict], torn: str = "") -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows) + torn, encoding="utf-8")


ANSWER_TEXT = "The river rises in the hills.\n\nIt runs past the old mill.\n\nThen it meets the sea at dawn."
STEP = {
    "former": "The river rises in the hills.",
    "stage1_output": (
        "The river rises in the green hills above the town.\n\nSpring rain feeds it.\n\nIn short, a river."
    ),
    "stage1_kept": "The river rises in the green hills above the town.\n\nSpring rain feeds it.\n\n",
    "continuation": (
        "It runs past the old mill. Then it meets the sea at dawn, where gulls circle the harbour."
    ),
    "result": "",
    "words": 600,
    "finish_reason": "stop",
    "accepted": True,
    "reason": None,
}
STEP["result"] = STEP["stage1_kept"] + STEP["continuation"]
STEP_RESULT = STEP["result"]


def make_run(root: Path, *, with_eval: bool = True, with_growth: bool = False) -> Path:
    """Round 1 complete (jsonl + summary), round 2 half-written (answers only, torn last line,
    no summary), and eval files for the three benchmarks plus a judge file."""
    run = root / "demo"
    (run / "round-1").mkdir(parents=True)
    (run / "round-2").mkdir()
    (run / "manifest.json").write_text(
        json.dumps(
            {
                "package": "selflengthen",
                "version": "0.1.0",
                "config": {"name": "demo-run", "macro_iterations": 2, "model": {"base": "embedded"}},
            }
        ),
        encoding="utf-8",
    )
    r1 = run / "round-1"
    _jsonl(
        r1 / "instructions.jsonl",
        [
            {
                "id": f"i{i}",
                "text": f"Write about {i}.",
                "words": 3,
                "verdict": "kept" if i < 3 else "judge_no",
                "model": "base",
            }
            for i in range(4)
        ],
    )
    _jsonl(
        r1 / "answers.jsonl",
        [
            {
                "id": f"a{i}",
                "instruction_id": "i0",
                "query": "Write about 0.",
                "text": ANSWER_TEXT if i == 0 else f"Answer number {i}.",
                "words": 400 + 20 * i,
                "verdict": "kept" if i % 2 == 0 else "truncated",
                "model": "base",
                # a0 was kept at its second try; the truncated ones failed twice
                "attempts": [{"reason": "truncated", "words": 900, "finish_reason": "length"}]
                * (1 if i == 0 else i % 2 * 2),
            }
            for i in range(8)
        ],
    )
    _jsonl(
        r1 / "extensions.jsonl",
        [
            {
                "id": f"e{i}",
                "answer_id": "a0",
                "instruction_id": "i0",
                "query": "Write about 0.",
                "text": STEP_RESULT if i == 0 else f"Extension {i}.",
                "words": 600 + 30 * i,
                "answer_words": 400,
                "ratio": round((600 + 30 * i) / 400, 3),
                "verdict": "kept" if i < 3 else "too_short",
                "model": "base",
                "steps": [STEP] if i == 0 else [],
                "attempts": []
                if i < 3
                else [{"reason": "too_short", "words": 410, "step_reasons": ["not_longer"]}],
            }
            for i in range(5)
        ],
    )
    (r1 / "summary.json").write_text(
        json.dumps(
            {
                "round": 1,
                "instructions": {"made": 4, "kept": 3, "rejections": {"judge_no": 1}},
                "answers": {
                    "made": 8,
                    "kept": 4,
                    "rejections": {"truncated": 4},
                    "mean_words": 460.0,
                    "median_words": 460,
                },
                "extensions": {"made": 5, "kept": 3, "rejections": {"too_short": 2}, "mean_words": 630.0},
                "training": {
                    "generator": {
                        "examples": 3,
                        "dropped_too_long": 0,
                        "final_loss": 1.9,
                        "loss_history": [[1, 2.3], [2, 2.1], [3, 1.9]],
                        "seconds": 10.0,
                    },
                    "extender": {
                        "examples": 3,
                        "dropped_too_long": 1,
                        "final_loss": 2.0,
                        "loss_history": [[1, 2.5], [2, 2.0]],
                        "seconds": 12.0,
                    },
                },
                "minutes": {"instruct": 1.0, "generate": 5.0, "extend": 7.0, "train": 4.0},
            }
        ),
        encoding="utf-8",
    )
    _jsonl(
        run / "round-2" / "answers.jsonl",
        [
            {
                "id": f"b{i}",
                "instruction_id": "i1",
                "text": "z",
                "words": 700 + 10 * i,
                "verdict": "kept",
                "model": "generator",
            }
            for i in range(4)
        ],
        torn='{"id": "b4", "instr',
    )
    if with_growth:
        _growth_files(run)
    if with_eval:
        ev = run / "eval"
        ev.mkdir(exist_ok=True)
        _jsonl(
            ev / "longen.jsonl",
            [
                {
                    "language": "en",
                    "range": "2-4k",
                    "type": "about",
                    "constraint": "around 20 words",
                    "query": "q",
                    "idx": 0,
                    "benchmark": "longen",
                    "response": "word " * 20,
                    "words": 20,
                    "finish_reason": "stop",
                },
                {
                    "language": "zh",
                    "range": "2-4k",
                    "type": "below",
                    "constraint": "小于二十字",
                    "query": "问",
                    "idx": 1,
                    "benchmark": "longen",
                    "response": "",
                    "words": 0,
                    "finish_reason": "length",
                },
            ],
        )
        _jsonl(
            ev / "longbench_write.jsonl",
            [
                {"prompt": "Write 100 words", "type": "News", "length": 100, "response": "word " * 50},
            ],
        )
        _jsonl(ev / "ruler.jsonl", [{"prompt": "p", "length": 1000, "response": "word " * 300}])
        scores = {
            "Relevance": 8,
            "Coherence": 7,
            "Accuracy": 9,
            "Consistency": 8,
            "Clarity": 8,
            "Creativity": 6,
            "Engagement": 7,
        }
        _jsonl(
            ev / "longen.judge.jsonl",
            [
                {
                    "constraint": "around 20 words",
                    "type": "about",
                    "query": "q",
                    "response": "r",
                    "idx": 0,
                    "benchmark": "longen",
                    "judge": {"scores": scores, "score": 53 / 7, "raw": ["{...}"], "attempts": 1},
                },
            ],
        )
        (ev / "notes.jsonl").write_text('{"something": "else"}\n', encoding="utf-8")
    return run


def _growth_files(run: Path) -> None:
    """Held-out answers of rounds 0-2, a LonGen answers file and a saved score per round, and final/."""
    (run / "heldout").mkdir()
    for k in range(3):
        _jsonl(
            run / "heldout" / f"round-{k}-heldout.jsonl",
            [
                {"query": f"q{i}", "response": "word " * (300 + 100 * k + i), "finish_reason": "stop"}
                for i in range(5)
            ],
        )
    for k in (1, 2):
        folder = run / "eval" / f"round-{k}"
        folder.mkdir(parents=True, exist_ok=True)
        _jsonl(
            folder / "longen.jsonl",
            [
                {
                    "language": "en",
                    "range": "2-4k",
                    "type": "about",
                    "constraint": "around 100 words",
                    "query": "q",
                    "idx": 0,
                    "benchmark": "longen",
                    "response": "word " * (60 + 40 * (k - 1)),
                },
            ],
        )
        (folder / "longbench.json").write_text(json.dumps({"overall": 40.0 + 10 * k}), encoding="utf-8")
    final = run / "final"
    final.mkdir()
    _jsonl(
        final / "constrained.jsonl",
        [
            {
                "id": f"c{i}",
                "type": ("about", "range", "below")[i % 3],
                "words": 500 + 50 * i,
                "response": "r",
                "verdict": "kept",
            }
            for i in range(6)
        ],
    )
    (final / "collect_stats.json").write_text(
        json.dumps({"candidates": 9, "kept": 6, "removed": {"too_short": 3}, "word_range": [200, 1500]}),
        encoding="utf-8",
    )
    (final / "length_stats.json").write_text(
        json.dumps(
            {"kept": 6, "types": {"about": 2, "range": 2, "above": 0, "below": 2}, "rewrite": {"template": 6}}
        ),
        encoding="utf-8",
    )
