"""`selflengthen run`'s help and first line, and progress as plain lines when output goes to a file."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time

from rich.console import Console

from selflengthen.console import PlainProgress


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "selflengthen.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_run_help_says_config_is_required_and_where_the_run_goes():
    out = _cli("run", "--help").stdout
    flat = " ".join(out.replace("│", " ").split())  # the box and the wrapping are typer's choice
    assert re.search(r"\* --config -c <path> YAML config, required", flat), out
    assert "[required]" in flat
    assert "(default: runs/<config name>)" in flat


def test_run_without_config_is_a_usage_error():
    done = _cli("run")
    assert done.returncode == 2 and "--config" in done.stderr and "Traceback" not in done.stderr


def test_plain_progress_prints_lines_with_rate_and_eta_on_a_timer():
    buffer = io.StringIO()
    out = Console(file=buffer, width=200, force_terminal=False)
    with PlainProgress(interval_s=0.05, out=out) as progress:
        task = progress.task("round 1 · answers", total=4)
        task.advance(2)
        time.sleep(0.3)
        task.advance(2)
        task.close()
        progress.log("round 1 done")
    lines = buffer.getvalue().splitlines()
    assert re.match(r"\d\d:\d\d:\d\d round 1 · answers: 0/4 \(0\.0/min, ETA -\)$", lines[0])
    assert any(re.search(r"answers: 2/4 \([\d.]+/min, ETA \d+s\)$", line) for line in lines), lines
    assert re.search(r"answers: 4/4 \([\d.]+/min, done in \d+s\)$", lines[-2]), lines
    assert lines[-1].endswith("round 1 done")
    assert not any("━" in line for line in lines)  # no bar characters in a log file
    # a closed task is no longer reported by the timer
    assert sum("4/4" in line for line in lines) == 1
