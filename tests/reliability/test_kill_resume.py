"""Kill -9 at chosen moments, restart, repeat: nothing finished is lost, nothing is duplicated.

One run directory serves every assertion (see harness.py for the setup: the real CLI over the
OpenAI engine and the fault server, real TRL training of a tiny model). It is killed five times:

1. during Step 0 (self-instruct), and 2. during Step 1 (generation), each time with a torn
   half-line appended to the file being written, as a crash in the middle of a write leaves it;
3. during Step 2 (extension);
4. during the Generator's training, after a checkpoint is on disk (its logged loss is marked, so
   the final adapter's history shows whether training resumed from it);
5. between the two trainings, the moment the Generator's adapter appears (before its checkpoints
   are deleted);

then run to the end. While the last run holds the directory, a second `selflengthen run` must be
refused. `bench/kill_trials.py` runs many more trials at random moments.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.faults.fault_server import FaultServer
from tests.reliability.harness import (
    MOMENTS,
    check_complete,
    check_interrupted,
    clean_steps,
    cli,
    cli_env,
    error_line,
    kill_at,
    load_adapters,
    run_config,
    start_run,
    tamper_checkpoint_losses,
    tear_last_line,
    write_config,
)

pytestmark = pytest.mark.slow
SENTINEL = 123.456


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory, tiny):
    base = tmp_path_factory.mktemp("kill")
    run_dir, log = base / "run", base / "run.log"
    out: dict = {"trials": [], "after_kill": []}
    with FaultServer(latency=(0.15, 0.3)) as server:
        config = write_config(base / "run.yaml", server.url, tiny)
        out["cfg"] = run_config(server.url, tiny)
        out["clean"] = clean_steps(config, base / "clean")

        for moment in ("instruct", "generate", "extend", "train_generator", "after_generator"):
            trial = kill_at(start_run(config, run_dir, log), run_dir, MOMENTS[moment])
            out["trials"].append(trial)
            out["after_kill"].append(check_interrupted(run_dir))
            if moment == "instruct":
                tear_last_line(run_dir / "round-1" / "instructions.jsonl")
            if moment == "generate":
                tear_last_line(run_dir / "round-1" / "work" / "answers.partial.jsonl")
            if moment == "train_generator":
                out["tampered"] = tamper_checkpoint_losses(run_dir, "generator", SENTINEL)

        final = start_run(config, run_dir, log)
        lock = run_dir / "run.lock"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and final.poll() is None:
            if lock.is_file() and lock.read_text().strip() == str(final.pid):
                break
            time.sleep(0.05)
        out["holder"] = final.pid
        out["second"] = subprocess.run(
            cli("run", "--config", str(config), "--run-dir", str(run_dir)),
            capture_output=True,
            text=True,
            timeout=300,
            env=cli_env(),
        )
        out["final_rc"] = final.wait(timeout=900)
    out.update(run_dir=run_dir, log=log.read_text(errors="replace"), tiny=tiny)
    return out


def test_each_kill_landed_in_its_stage_and_left_no_damage(killed_run):
    stages = [t.stage for t in killed_run["trials"]]
    assert all(t.killed and t.returncode == -9 for t in killed_run["trials"]), killed_run["trials"]
    assert stages == ["instruct", "generate", "extend", "train_generator", "train_extender"], killed_run[
        "trials"
    ]
    assert killed_run["after_kill"] == [[]] * 5  # a torn tail in an append-only file is allowed there
    assert killed_run["tampered"], "no checkpoint was on disk when the training was killed"


def test_final_run_completes_with_every_id_once_and_consistent_summary(killed_run):
    assert killed_run["final_rc"] == 0, killed_run["log"][-3000:]
    assert (
        check_complete(killed_run["run_dir"], killed_run["cfg"], killed_run["clean"]["instructions.jsonl"])
        == []
    )


def test_ids_equal_a_clean_run(killed_run):
    r = killed_run["run_dir"] / "round-1"
    ids = {
        name: {json.loads(line)["id"] for line in (r / name).read_text().splitlines()}
        for name in ("instructions.jsonl", "answers.jsonl")
    }
    assert ids["instructions.jsonl"] == killed_run["clean"]["instructions.jsonl"]
    assert ids["answers.jsonl"] == killed_run["clean"]["answers.jsonl"]
    assert "r1-torn" not in (r / "answers.jsonl").read_text() + (r / "instructions.jsonl").read_text()


def test_training_resumed_from_its_checkpoint(killed_run):
    summary = json.loads((killed_run["run_dir"] / "round-1" / "summary.json").read_text())
    generator, extender = summary["training"]["generator"], summary["training"]["extender"]
    assert generator["loss_history"][0] == [
        1,
        SENTINEL,
    ]  # logged before the kill, read back from the checkpoint
    assert [step for step, _ in generator["loss_history"]] == [1, 2, 3]
    assert extender["loss_history"][0][1] != SENTINEL and extender["steps"] == 3


def test_adapters_load(killed_run):
    assert load_adapters(killed_run["run_dir"], killed_run["tiny"]) == []


def test_second_writer_refused_and_crashed_holders_did_not_block(killed_run):
    second = killed_run["second"]
    assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-2000:]
    line = error_line(second.stderr)
    assert "in use" in line and f"pid {killed_run['holder']}" in line, second.stderr
    assert "Traceback" not in second.stderr + second.stdout
    # Three SIGKILLed holders before it, and the final run still got the directory.
    assert killed_run["final_rc"] == 0
