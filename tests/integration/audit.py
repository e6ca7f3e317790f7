"""The checks every finished smoke run must pass, whoever ran it (the CLI or the Python API):
the layout, ids, parents and verdicts of the records, and a summary that agrees with them."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def audit_layout(run_dir: Path) -> None:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["version"] and manifest["config"]["name"] == "smoke"
    r = run_dir / "round-1"
    for name in (
        "instructions.jsonl",
        "answers.jsonl",
        "extensions.jsonl",
        "sft/generator.jsonl",
        "sft/extender.jsonl",
        "summary.json",
    ):
        assert (r / name).is_file(), name
    for role in ("generator", "extender"):
        assert (r / "adapters" / role / "adapter_config.json").is_file()
        assert (r / "adapters" / role / "adapter_model.safetensors").is_file()


def audit_records(run_dir: Path) -> None:
    r = run_dir / "round-1"
    instructions = {row["id"]: row for row in lines(r / "instructions.jsonl")}
    answers = {row["id"]: row for row in lines(r / "answers.jsonl")}
    extensions = lines(r / "extensions.jsonl")
    for path in r.rglob("*.jsonl"):
        ids = [row["id"] for row in lines(path)]
        assert len(ids) == len(set(ids)), f"duplicate id in {path}"
        assert "r1-torn" not in ids
    for a in answers.values():
        assert a["instruction_id"] in instructions and instructions[a["instruction_id"]]["verdict"] == "kept"
        assert {"text", "words", "verdict", "model"} <= set(a)
        assert a["verdict"] == "kept" or a["verdict"] in {
            "length_biased_sampling",
            "truncated",
            "no_final_punctuation",
            "repeated_ngram",
            "meta_words",
            "empty",
        }
    assert any(a["verdict"] == "kept" for a in answers.values())
    for e in extensions:
        assert answers[e["answer_id"]]["verdict"] == "kept"
        assert {"text", "words", "verdict", "model", "steps"} <= set(e)
        for step in e["steps"]:
            assert step["result"] == step["stage1_kept"] + step["continuation"]
            assert {"former", "stage1_output", "accepted"} <= set(step)
    kept = [e for e in extensions if e["verdict"] == "kept"]
    assert kept, "the smoke round kept no extension: nothing to train on"
    assert all(e["words"] > 1.2 * answers[e["answer_id"]]["words"] for e in kept)


def audit_summary(run_dir: Path) -> None:
    r = run_dir / "round-1"
    summary = json.loads((r / "summary.json").read_text())
    answers = lines(r / "answers.jsonl")
    assert summary["answers"]["made"] == len(answers)
    assert summary["answers"]["kept"] == sum(a["verdict"] == "kept" for a in answers)
    verdicts = Counter(a["verdict"] for a in answers)
    assert (
        summary["answers"]["rejections"].get("length_biased_sampling", 0)
        == verdicts["length_biased_sampling"]
    )
    assert summary["extensions"]["kept"] == len(lines(r / "sft" / "generator.jsonl"))
    for role in ("generator", "extender"):
        t = summary["training"][role]
        assert t["examples"] >= 1 and t["steps"] == 2 and len(t["loss_history"]) == 2


def audit_run(run_dir: Path) -> None:
    audit_layout(run_dir)
    audit_records(run_dir)
    audit_summary(run_dir)
