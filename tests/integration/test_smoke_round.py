"""A real smoke round on the embedded SmolLM2, killed part-way and resumed.

One run serves every assertion (a round costs minutes on 2 cores): the run is SIGKILLed once
answers have started to land, a torn line is appended as a crash would leave it, and the
same command is run again. Then the layout, the records, the summary and the adapters are
checked from outside, as a user would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.audit import audit_layout, audit_records, audit_summary, lines

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke.yaml"
pytestmark = pytest.mark.slow


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "selflengthen.cli", *args]


_lines = lines


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    partial = run_dir / "round-1" / "work" / "answers.partial.jsonl"
    proc = subprocess.Popen(
        _cli("run", "--config", str(SMOKE), "--run-dir", str(run_dir)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
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
    done = subprocess.run(
        _cli("run", "--config", str(SMOKE), "--run-dir", str(run_dir)),
        capture_output=True,
        text=True,
        timeout=2400,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return run_dir, before_kill, done


def test_layout(smoke_run):
    audit_layout(smoke_run[0])


def test_records_have_ids_parents_and_verdicts(smoke_run):
    audit_records(smoke_run[0])


def test_resume_kept_finished_items(smoke_run):
    run_dir, before_kill, _ = smoke_run
    final = {row["id"]: row for row in _lines(run_dir / "round-1" / "answers.jsonl")}
    assert before_kill
    for row in before_kill:  # finished before the kill: kept as they were, not redone
        assert final[row["id"]]["text"] == row["text"]


def test_summary_agrees_with_records(smoke_run):
    run_dir, _, done = smoke_run
    audit_summary(run_dir)
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
    again = subprocess.run(
        _cli("run", "--config", str(SMOKE), "--run-dir", str(run_dir)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*.jsonl")} == snapshot
    from selflengthen.store import RunLock

    with RunLock(run_dir):
        busy = subprocess.run(
            _cli("run", "--config", str(SMOKE), "--run-dir", str(run_dir)),
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ},
        )
    assert busy.returncode == 2 and "in use" in busy.stderr and "Traceback" not in busy.stderr
