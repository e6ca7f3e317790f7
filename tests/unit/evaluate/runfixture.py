"""A small run directory as the run store writes it, for report tests."""

from __future__ import annotations

import json
from pathlib import Path


def _jsonl(path: Path, rows: list[dict], torn: str = "") -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows) + torn, encoding="utf-8")


def make_run(root: Path, *, with_eval: bool = True) -> Path:
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
                "text": "x",
                "words": 400 + 20 * i,
                "verdict": "kept" if i % 2 == 0 else "truncated",
                "model": "base",
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
                "text": "y",
                "words": 600 + 30 * i,
                "verdict": "kept" if i < 3 else "too_short",
                "model": "base",
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
                "extensions": {"made": 6, "kept": 3, "rejections": {"too_short": 2}, "mean_words": 630.0},
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
    if with_eval:
        ev = run / "eval"
        ev.mkdir()
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
