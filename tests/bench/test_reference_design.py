"""bench/reference_design.py stops at once when the run fails or is interrupted, instead of waiting for
every queued item and every request in flight; and it names a failed Step-2 try as the pipeline does."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from concurrent.futures import CancelledError
from types import SimpleNamespace

import pytest

from selflengthen.config import Config
from selflengthen.engines.fake import FakeEngine
from tests.bench.conftest import BENCH, load_bench

sys.path.insert(0, str(BENCH))  # the script imports its sibling round_steps, as when run from bench/
reference_design = load_bench("reference_design")


class HangingEngine(FakeEngine):
    """The first item's request fails after a moment; every other one waits for an hour. (By item, not
    by arrival: map() reports errors in item order.)"""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def generate(self, request):
        self.calls += 1
        if request.tag == "r1-bench-0000-a0":
            await asyncio.sleep(0.3)
            raise RuntimeError("engine down")
        await asyncio.sleep(3600)
        return await super().generate(request)


def test_an_error_in_one_worker_stops_the_others_and_the_queue(tmp_path):
    engine = HangingEngine()
    outcome: dict = {}

    def run() -> None:
        try:
            reference_design.reference_steps_1_2(
                Config(), engine, tmp_path, [f"Write essay {i}." for i in range(12)], workers=(4, 2)
            )
        except BaseException as exc:  # noqa: BLE001 - the test inspects whatever came out
            outcome["error"] = exc

    started = time.perf_counter()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), "the bench waited for requests that never finish"
    assert isinstance(outcome.get("error"), RuntimeError) and "engine down" in str(outcome["error"])
    assert time.perf_counter() - started < 30
    # The 4 threads' first items reached the engine, and at most one more (the failed thread takes
    # the next item before the error reaches the main thread); the queued rest were cancelled.
    assert 4 <= engine.calls <= 5


def test_a_cancelled_client_refuses_new_requests(tmp_path):
    from selflengthen.engines.base import Request, SamplingParams

    client = reference_design.BlockingClient(HangingEngine())
    try:
        client.cancel()
        with pytest.raises(CancelledError):
            client(Request([{"role": "user", "content": "hi"}], SamplingParams()))
    finally:
        client.close()


def test_failed_tries_are_named_as_the_pipeline_names_them(tmp_path):
    """The same scripted round through the reference design and through the project's stages: each
    design's failed Step-2 tries, by reason, are the same, and cover every way a try fails."""
    from selflengthen.config import load_config

    goodput = load_bench("goodput")
    round_steps = load_bench("round_steps")
    config = load_config(
        None,
        [
            "generate.samples_per_instruction=1",
            "select.length_biased=false",
            "extend.jobs_per_answer=1",
            "extend.micro_iterations=2",
            "extend.retries=2",
            "checks.ngram_words=10",
        ],
    )
    words = "sea sky sand wind rain salt foam reef gull tide shell dune".split()
    answer = " ".join(f"The {w} is here." for w in words)  # 48 words, no 10-word phrase twice
    loop = "the waves roll in and the waves roll out again " * 4

    def script(request):
        prompt = request.messages[-1]["content"]
        if request.tag not in ("stage1", "stage2"):
            return answer
        if request.tag == "stage1":
            return answer
        if "essay 0" in prompt:  # loops in every step: repeated_ngram
            return f" {loop}end."
        if "essay 1" in prompt:  # clean but shorter than the text before: not_longer
            return " Short."
        if "essay 3" in prompt:  # a little longer (under 1.2 x), then a loop: too_short
            return f" {loop}end." if "Marker" in prompt else f" {answer} Marker one two."
        return " " + " ".join(f"Then the {w} grew {v}." for w in words for v in ("old", "new"))

    instructions = ["Write essay 0.", "Write essay 1.", "Write essay 2.", "Write essay 3."]
    counts = reference_design.reference_steps_1_2(
        config, FakeEngine(script), tmp_path / "reference", instructions, workers=(2, 2)
    )
    ours = FakeEngine(script)
    ours.stats = SimpleNamespace(completion_tokens=0)  # what the bench reads of a real engine
    round_steps.steps_1_2(config, ours, tmp_path / "ours", instructions)
    tries, failed = goodput.extension_tries(tmp_path / "ours")
    expected = {"repeated_ngram": 2, "not_longer": 2, "too_short": 2}
    assert counts["failed_tries"] == expected and failed == expected
    assert counts["extension_tries"] == tries == 7 and counts["extensions_passed"] == 1
