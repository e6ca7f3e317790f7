"""A smoke round through the Python API, from inside a running event loop as in a notebook: the
run awaits every stage on that loop, training runs off it (the loop keeps serving other tasks
meanwhile), and the run passes the same audit as the CLI's."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.integration.audit import audit_run

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"
pytestmark = pytest.mark.slow


class Log:
    """A Progress that keeps the time of each message."""

    def __init__(self):
        self.messages: list[tuple[float, str]] = []

    def task(self, description, total, done=0):
        from selflengthen.progress import NullProgress

        return NullProgress().task(description, total, done)

    def log(self, message):
        self.messages.append((time.monotonic(), message))


def test_smoke_round_awaited_in_a_running_event_loop(tmp_path):
    from selflengthen import arun, load_config

    config = load_config(SMOKE)
    run_dir = tmp_path / "run"
    log = Log()
    beats: list[float] = []

    async def notebook_cell():
        async def heartbeat():  # another task of the notebook's loop
            while True:
                beats.append(time.monotonic())
                await asyncio.sleep(0.2)

        beat = asyncio.create_task(heartbeat())
        try:
            return await arun(config, run_dir, progress=log)
        finally:
            beat.cancel()

    summaries = asyncio.run(notebook_cell())
    assert [s["round"] for s in summaries] == [1]
    audit_run(run_dir)
    # The loop stayed free while both roles trained: the heartbeat kept beating in that window.
    training_started = next(t for t, m in log.messages if "training the generator" in m)
    round_done = next(t for t, m in log.messages if m == "round 1 done")
    during = [t for t in beats if training_started < t < round_done]
    assert round_done - training_started > 1.0 and len(during) >= (round_done - training_started) / 2
