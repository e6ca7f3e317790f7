"""A real smoke round on the embedded SmolLM2, killed part-way and resumed.

One run serves every assertion (a round costs minutes on 2 cores): the run is SIGKILLed once
answers have started to land, a torn line is appended as a crash would leave it, and the
same command is run again. Then the layout, the records, the summary and the adapters are
checked from outside, as a user would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke.yaml"
pytestmark = pytest.mark.slow


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "selflengthen.cli", *args]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    partial = run_dir / "round-1" / "work" / "answers.partial.jsonl"
    proc = subprocess.Popen(_cli("run", "--config", str(SMOKE), "--run-dir", str(run_dir)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if partial.exists() and partial.read_text().count("\n") >= 1:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before_kill = _lines(partial)
    with open(partial, "a") as f:  # what a crash in the middle of a write leaves
        f.write('{"id": "r1-torn", "text": "half a rec')
    done = subprocess.run(_cli("run", "--config", str(SMOKE), "--run-dir", str(run_dir)),
                          capture_output=True, text=True, timeout=2400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return run_dir, before_kill, done


def test_layout(smoke_run):
    run_dir, _, _ = smoke_run
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["version"] and manifest["config"]["name"] == "smoke"
    r = run_dir / "round-1"
    for name in ("instructions.jsonl", "answers.jsonl", "extensions.jsonl", "sft/generator.jsonl",
                 "sft/extender.jsonl", "summary.json"):
        assert (r / name).is_file(), name
    for role in ("generator", "extender"):
        assert (r / "adapters" / role / "adapter_config.json").is_file()
        assert (r / "adapters" / role / "adapter_model.safetensors").is_file()


def test_records_have_ids_parents_and_verdicts(smoke_run):
    run_dir, _, _ = smoke_run
    r = run_dir / "round-1"
    instructions = {row["id"]: row for row in _lines(r / "instructions.jsonl")}
    answers = {row["id"]: row for row in _lines(r / "answers.jsonl")}
    extensions = _lines(r / "extensions.jsonl")
    for path in r.rglob("*.jsonl"):
        ids = [row["id"] for row in _lines(path)]
        assert len(ids) == len(set(ids)), f"duplicate id in {path}"
        assert "r1-torn" not in ids
    for a in answers.values():
        assert a["instruction_id"] in instructions and instructions[a["instruction_id"]]["verdict"] == "kept"
        assert {"text", "words", "verdict", "model"} <= set(a)
        assert a["verdict"] == "kept" or a["verdict"] in {"length_biased_sampling", "truncated", "no_final_punctuation",
                                                          "repeated_ngram", "meta_words", "empty"}
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


def test_resume_kept_finished_items(smoke_run):
    run_dir, before_kill, _ = smoke_run
    final = {row["id"]: row for row in _lines(run_dir / "round-1" / "answers.jsonl")}
    assert before_kill
    for row in before_kill:  # finished before the kill: kept as they were, not redone
        assert final[row["id"]]["text"] == row["text"]


def test_summary_agrees_with_records(smoke_run):
    run_dir, _, done = smoke_run
    r = run_dir / "round-1"
    summary = json.loads((r / "summary.json").read_text())
    answers = _lines(r / "answers.jsonl")
    assert summary["answers"]["made"] == len(answers)
    assert summary["answers"]["kept"] == sum(a["verdict"] == "kept" for a in answers)
    verdicts = Counter(a["verdict"] for a in answers)
    assert summary["answers"]["rejections"].get("length_biased_sampling", 0) == verdicts["length_biased_sampling"]
    assert summary["extensions"]["kept"] == len(_lines(r / "sft" / "generator.jsonl"))
    for role in ("generator", "extender"):
        t = summary["training"][role]
        assert t["examples"] >= 1 and t["steps"] == 2 and len(t["loss_history"]) == 2
    assert "Round 1" in done.stdout + done.stderr  # the table is printed


def test_adapters_load_and_change_the_model(smoke_run):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selflengthen.model import resolve_base

    run_dir, _, _ = smoke_run
    base_dir = resolve_base("embedded")
    tok = AutoTokenizer.from_pretrained(base_dir)
    ids = tok("Write a story about a lighthouse.", return_tensors="pt")
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    with torch.no_grad():
        ref = base(**ids).logits
    model = PeftModel.from_pretrained(base, str(run_dir / "round-1" / "adapters" / "generator"))
    with torch.no_grad():
        out = model(**ids).logits
    assert not torch.allclose(ref, out)  # trained LoRA weights are not the zero init


def test_rerun_is_a_no_op_and_second_writer_refused(smoke_run):
    run_dir, _, _ = smoke_run
    snapshot = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*.jsonl")}
    again = subprocess.run(_cli("run", "--config", str(SMOKE), "--run-dir", str(run_dir)),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*.jsonl")} == snapshot
    from selflengthen.store import RunLock

    with RunLock(run_dir):
        busy = subprocess.run(_cli("run", "--config", str(SMOKE), "--run-dir", str(run_dir)),
                              capture_output=True, text=True, timeout=300, env={**os.environ})
    assert busy.returncode == 2 and "in use" in busy.stderr and "Traceback" not in busy.stderr
