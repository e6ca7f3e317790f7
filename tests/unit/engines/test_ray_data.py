"""The Ray Data engine without Ray: the processor config, rows and results it builds, and one job
through stand-in `ray` modules."""

from __future__ import annotations

import asyncio
import sys
import types

import pytest

from selflengthen.config import EngineConfig, ModelConfig, RayEngineConfig
from selflengthen.engines.base import Request, SamplingParams
from selflengthen.engines.ray_data import (
    INDEX,
    RayDataEngine,
    build_processor,
    processor_config_kwargs,
    request_row,
    result_from_row,
    sampling_params_dict,
)
from selflengthen.errors import ConfigError
from tests.unit.engines.httpfake import FakeTokenizer


def test_processor_config_kwargs():
    config = RayEngineConfig(
        concurrency=8,
        tensor_parallel_size=2,
        batch_size=32,
        max_model_len=32768,
        max_lora_rank=16,
        accelerator_type="H100",
        engine_kwargs={"gpu_memory_utilization": 0.9},
    )
    assert processor_config_kwargs(config, "/models/qwen") == {
        "model_source": "/models/qwen",
        "engine_kwargs": {
            "enable_lora": True,
            "max_loras": 2,
            "max_lora_rank": 16,
            "tensor_parallel_size": 2,
            "pipeline_parallel_size": 1,
            "max_model_len": 32768,
            "gpu_memory_utilization": 0.9,
        },
        "concurrency": 8,
        "batch_size": 32,
        "chat_template_stage": False,
        "tokenize_stage": True,
        "detokenize_stage": True,
        "accelerator_type": "H100",
    }
    assert "max_model_len" not in processor_config_kwargs(RayEngineConfig(), "m")["engine_kwargs"]


def test_rows_and_results():
    params = SamplingParams(max_tokens=100, seed=3, top_k=0)
    assert sampling_params_dict(params) == {
        "temperature": 0.7,
        "top_p": 0.8,
        "top_k": -1,
        "repetition_penalty": 1.1,
        "max_tokens": 100,
        "stop": ["\n---", "\n\n\n"],
        "seed": 3,
    }
    assert request_row(4, "P", params, None) == {
        INDEX: 4,
        "prompt": "P",
        "sampling_params": sampling_params_dict(params),
    }
    assert request_row(0, "P", params, "/runs/r/round-1/adapters/generator")["model"].endswith("generator")
    cut = result_from_row(
        {"generated_text": "a b c", "num_generated_tokens": 100, "num_input_tokens": 9}, params, "g"
    )
    assert (cut.finish_reason, cut.prompt_tokens, cut.completion_tokens, cut.model) == ("length", 9, 100, "g")
    done = result_from_row({"generated_text": "Done.\n---\nps", "num_generated_tokens": 100}, params, "base")
    assert (done.text, done.finish_reason) == ("Done.", "stop")
    short = result_from_row({"generated_text": "Short.", "num_generated_tokens": 2}, params, "base")
    assert short.finish_reason == "stop"


def test_build_processor_without_ray_names_the_install(monkeypatch):
    # Hide Ray's submodules too: where an earlier test imported ray.data.llm, hiding only the
    # top-level package would still let `from ray.data.llm import ...` succeed.
    for name in [name for name in sys.modules if name == "ray" or name.startswith("ray.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"pip install 'ray\[data,llm\]"):
        build_processor(RayEngineConfig(), "m")


class FakeDataset:
    def __init__(self, rows):
        self.rows = rows

    def take_all(self):
        return self.rows


def install_fake_ray(monkeypatch, seen):
    ray = types.ModuleType("ray")
    ray.data = types.ModuleType("ray.data")
    ray.data.llm = types.ModuleType("ray.data.llm")
    ray.is_initialized = lambda: True
    ray.data.from_items = lambda rows: FakeDataset(list(rows))

    class Config:
        def __init__(self, **kwargs):
            seen["config"] = kwargs

    def fake_build_processor(config):
        seen["built"] = config

        def processor(dataset):
            seen.setdefault("jobs", []).append(dataset.rows)
            out = [
                {**row, "generated_text": f"answer {row[INDEX]} via {row.get('model', 'base')}.",
                 "num_generated_tokens": 5, "num_input_tokens": 7}
                for row in reversed(dataset.rows)  # Ray does not keep order
            ]  # fmt: skip
            return FakeDataset(out)

        return processor

    ray.data.llm.vLLMEngineProcessorConfig = Config
    ray.data.llm.build_processor = fake_build_processor
    for name, module in (("ray", ray), ("ray.data", ray.data), ("ray.data.llm", ray.data.llm)):
        monkeypatch.setitem(sys.modules, name, module)


def test_one_job_through_stand_in_ray(monkeypatch, tmp_path):
    seen: dict = {}
    install_fake_ray(monkeypatch, seen)
    adapter = tmp_path / "generator"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (tmp_path / "config.json").write_text("{}")  # a model directory, as far as resolve_base can tell
    engine_config = EngineConfig(kind="ray", ray={"job_wait_s": 0.05, "concurrency": 2})
    engine = RayDataEngine(ModelConfig(base=str(tmp_path)), engine_config, tokenizer=FakeTokenizer())
    with pytest.raises(ConfigError, match="no PEFT adapter"):
        engine.set_adapters({"extender": str(tmp_path)})
    engine.set_adapters({"generator": str(adapter)})

    async def go():
        requests = [
            Request(
                [{"role": "user", "content": f"q{i}"}], adapter="generator" if i % 2 else None, prefill="P:"
            )
            for i in range(5)
        ]
        return await asyncio.gather(*(engine.generate(r) for r in requests))

    results = asyncio.run(go())
    engine.close()
    assert len(seen["jobs"]) == 1 and seen["config"]["concurrency"] == 2
    rows = seen["jobs"][0]
    assert [r["prompt"] for r in rows][0].endswith("<|assistant|>P:")
    assert [r.get("model") for r in rows] == [None, str(adapter), None, str(adapter), None]
    assert [r.text for r in results][:2] == ["answer 0 via base.", f"answer 1 via {adapter}."]
    assert results[1].model == "generator" and results[0].model == "base"


def test_placement_group_lets_a_replica_run_on_cpus():
    config = RayEngineConfig(placement_group={"bundles": [{"CPU": 1}]})
    assert processor_config_kwargs(config, "m")["placement_group_config"] == {"bundles": [{"CPU": 1}]}
    assert "placement_group_config" not in processor_config_kwargs(RayEngineConfig(), "m")
