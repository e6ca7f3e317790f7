"""Faults from servers, end to end: a round over the OpenAI engine against the fault server.

At moderate fault rates (every kind forced at least once: 500, 429 + Retry-After, timeouts,
reset connections, empty and garbage completions, cut-off bodies) the round completes and its
records are whole; an empty completion is recorded as data with its reason. At a 100% failure
rate the run stops within a bounded time and a bounded number of attempts, with one clear line.
Both runs carry an API key in the environment: it reaches the server and nothing else (every
file of the run, stdout, stderr and a DEBUG log of every library are searched). The engine's
unit tests (tests/unit/engines) check each retry rule in isolation.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.faults.fault_server import FaultServer
from tests.reliability.harness import (
    check_complete,
    check_interrupted,
    cli,
    cli_env,
    error_line,
    load_adapters,
    run_config,
    write_config,
)

pytestmark = pytest.mark.slow

KEY = "sk-secret-xyz-4f1c9e27b3"
KEY_ENV = "SL_TEST_API_KEY"
MODERATE = {
    "500": 0.05,
    "429": 0.03,
    "timeout": 0.02,
    "reset": 0.04,
    "empty": 0.04,
    "garbage": 0.04,
    "cutoff": 0.04,
}
# Each kind at least once, successes between them (so the run never sees enough failures in a row
# to give up); the first request of a run is a self-instruct one, so its empty answer is recorded.
FIRST = ["empty", "500", None, "429", None, "timeout", None, "reset", None, "garbage", None, "cutoff"]
DEAD = {
    "all 500": {"500": 1.0},
    "every kind of failure": {
        "500": 0.2,
        "429": 0.15,
        "timeout": 0.15,
        "reset": 0.2,
        "garbage": 0.15,
        "cutoff": 0.15,
    },
}


def _run(base: Path, server: FaultServer, tiny: Path, name: str, **overrides) -> dict:
    """`selflengthen run` with the API key in its environment and every library logging at DEBUG
    to a file (through a sitecustomize module), so the secrets test sees every log line."""
    site = base / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        "import logging, os\n"
        "logging.basicConfig(level=logging.DEBUG, filename=os.environ['SL_TEST_LOG'],\n"
        "                    format='%(name)s %(levelname)s %(message)s')\n"
    )
    config = write_config(
        base / f"{name}.yaml", server.url, tiny, **{"engine.openai.api_key_env": KEY_ENV}, **overrides
    )
    run_dir, log = base / name, base / f"{name}.debug.log"
    env = cli_env(**{KEY_ENV: KEY, "SL_TEST_LOG": str(log)})
    env["PYTHONPATH"] = f"{site}:{env['PYTHONPATH']}"
    started = time.monotonic()
    done = subprocess.run(
        cli("run", "--config", str(config), "--run-dir", str(run_dir)),
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    return {
        "done": done,
        "seconds": time.monotonic() - started,
        "run_dir": run_dir,
        "log": log,
        "stats": server.stats(),
        "auth": [h.get("Authorization") for h in server.headers_seen],
        "cfg": run_config(server.url, tiny, **overrides),
    }


@pytest.fixture(scope="module")
def faulty_round(tmp_path_factory, tiny):
    base = tmp_path_factory.mktemp("faults")
    with FaultServer(MODERATE, script=FIRST, retry_after="1", timeout_sleep=2.5, seed=7) as server:
        return _run(base, server, tiny, "moderate")


@pytest.fixture(scope="module", params=sorted(DEAD))
def dead_server_run(request, tmp_path_factory, tiny):
    base = tmp_path_factory.mktemp("dead")
    with FaultServer(DEAD[request.param], retry_after="1", timeout_sleep=2.5, seed=3) as server:
        return _run(base, server, tiny, "dead")


def test_round_completes_at_moderate_fault_rates(faulty_round, tiny):
    done = faulty_round["done"]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr
    assert check_complete(faulty_round["run_dir"], faulty_round["cfg"]) == []
    assert load_adapters(faulty_round["run_dir"], tiny) == []
    faults = faulty_round["stats"]["faults"]
    assert set(faults) == set(MODERATE), faults  # every kind was served at least once ...
    summary = json.loads((faulty_round["run_dir"] / "round-1" / "summary.json").read_text())
    assert (
        summary["answers"]["kept"] >= 1 and summary["extensions"]["kept"] >= 1
    )  # ... and the round still did its work


def test_failures_were_retried_and_bad_output_recorded(faulty_round):
    stats = faulty_round["stats"]
    posts = stats["by_path"]["/v1/completions"]
    retried = sum(n for kind, n in stats["faults"].items() if kind != "empty")
    assert posts == stats["ok"] + sum(stats["faults"].values())
    assert retried >= 6  # each was retried: the round completed all the same
    # The forced first fault, an empty completion, is a valid answer: the stage records it as data.
    rows = [json.loads(line) for line in (faulty_round["run_dir"] / "round-1" / "instructions.jsonl").open()]
    reasons = [a["reason"] for row in rows for a in row["attempts"]]
    assert "empty" in reasons or "judge_unclear" in reasons, reasons


def test_total_failure_stops_with_one_clear_line_in_bounded_time(dead_server_run):
    done, cfg = dead_server_run["done"], dead_server_run["cfg"]
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    line = error_line(done.stderr)
    assert "stopping instead of retrying forever" in line or "gave up after" in line, line
    assert "127.0.0.1" in line  # names the server
    openai = cfg["engine"]["openai"]
    in_flight = 2 * cfg["engine"]["batch_size"]
    posts = dead_server_run["stats"]["by_path"].get("/v1/completions", 0)
    assert 1 <= posts <= in_flight * (openai["max_retries"] + 1), posts  # a bounded retry budget
    assert dead_server_run["seconds"] < openai["request_budget_s"] + 60, dead_server_run["seconds"]
    assert check_interrupted(dead_server_run["run_dir"]) == []


def _leaks(result: dict) -> list[str]:
    key = KEY.encode()
    found = [str(p) for p in result["run_dir"].rglob("*") if p.is_file() and key in p.read_bytes()]
    done = result["done"]
    found += [name for name, text in (("stdout", done.stdout), ("stderr", done.stderr)) if KEY in text]
    if result["log"].is_file() and key in result["log"].read_bytes():
        found.append(f"{result['log']} (DEBUG log of every library)")
    return found


def test_api_key_reaches_the_server_and_nothing_else(faulty_round, dead_server_run):
    for result in (faulty_round, dead_server_run):
        assert result["auth"] and set(result["auth"]) == {f"Bearer {KEY}"}  # the key was really used
        assert result["log"].is_file() and result["log"].stat().st_size > 0
        assert _leaks(result) == []
        # The 500s echo the Authorization header (as a careless proxy might): it was masked, not dropped.
        assert b"Bearer ***" in result["log"].read_bytes()
    manifest = json.loads((faulty_round["run_dir"] / "manifest.json").read_text())
    assert manifest["config"]["engine"]["openai"]["api_key_env"] == KEY_ENV  # named, never held
