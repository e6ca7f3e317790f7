"""The in-process vLLM engine's pure parts, without vLLM: the LLM arguments, finish reasons, adapter ranks.
The engine itself runs for real in tests/integration/test_vllm.py."""

from __future__ import annotations

import json

import pytest

from selflengthen.config import VllmEngineConfig, load_config
from selflengthen.engines.vllm_offline import adapter_rank, finish_reason, llm_kwargs
from selflengthen.errors import ConfigError, EngineError


def test_llm_kwargs():
    config = VllmEngineConfig(
        dtype="bfloat16",
        max_model_len=2048,
        kv_cache_gib=1.5,
        max_num_seqs=32,
        engine_kwargs={"enforce_eager": True},
    )
    assert llm_kwargs(config, "/m", 5) == {
        "model": "/m",
        "dtype": "bfloat16",
        "max_model_len": 2048,
        "enable_lora": True,
        "max_loras": 2,
        "max_lora_rank": 16,
        "seed": 5,
        "max_num_seqs": 32,
        "kv_cache_memory_bytes": 1536 * 1024 * 1024,
        "enforce_eager": True,
    }
    defaults = llm_kwargs(VllmEngineConfig(), "/m", 0)
    assert "max_num_seqs" not in defaults and "kv_cache_memory_bytes" not in defaults


def test_auto_dtype_is_bfloat16_only_where_it_is_native():
    auto = VllmEngineConfig()
    assert llm_kwargs(auto, "/m", 0)["dtype"] == "bfloat16"  # a GPU
    assert llm_kwargs(auto, "/m", 0, {"avx2", "fma"})["dtype"] == "float32"  # AVX2 only: emulated
    assert llm_kwargs(auto, "/m", 0, {"avx512f", "avx512_bf16"})["dtype"] == "bfloat16"
    assert llm_kwargs(auto, "/m", 0, {"amx_bf16", "amx_tile"})["dtype"] == "bfloat16"
    assert (
        llm_kwargs(VllmEngineConfig(dtype="bfloat16"), "/m", 0, {"avx2"})["dtype"] == "bfloat16"
    )  # as asked


def test_a_rank_vllm_refuses_is_a_config_error():
    with pytest.raises(ConfigError) as err:
        llm_kwargs(VllmEngineConfig(max_lora_rank=24), "/m", 0)
    assert err.value.field == "engine.vllm.max_lora_rank"


def test_finish_reasons():
    assert finish_reason("stop", "done", ()) == ("done", "stop")
    assert finish_reason("length", "cut", ()) == ("cut", "length")
    # a stop string vLLM left in (include_stop_str_in_output) is cut, and the text ended on it
    assert finish_reason("length", "one\n---two", ("\n---",)) == ("one", "stop")
    with pytest.raises(EngineError, match="abort"):
        finish_reason("abort", "", ())


def test_adapter_rank(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8}))
    assert adapter_rank(str(tmp_path)) == 8
    assert adapter_rank(str(tmp_path / "missing")) == 0


def test_engine_kind_vllm_in_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("engine:\n  kind: vllm\n  vllm:\n    max_model_len: 1024\n")
    config = load_config(path, [])
    assert config.engine.kind == "vllm" and config.engine.vllm.max_model_len == 1024
    path.write_text("engine:\n  kind: vllm\n  vllm:\n    max_model_length: 1024\n")
    with pytest.raises(ConfigError):
        load_config(path, [])


def test_the_vllm_preset_on_a_vllm_cpu_install(monkeypatch):
    """vllm-cpu's `vllm` command fails before reading its arguments (it asks for the version of a
    distribution named "vllm"): the preset then runs the API server module with the same arguments."""
    from importlib import metadata

    from selflengthen.config import ServerConfig
    from selflengthen.engines import presets

    installed = {"vllm-cpu": "0.32.0"}

    def version(name):
        if name not in installed:
            raise metadata.PackageNotFoundError(name)
        return installed[name]

    monkeypatch.setattr(metadata, "version", version)
    argv = presets.build_command(ServerConfig(preset="vllm", max_lora_rank=16), port=9, model="/m")
    assert (
        argv[1:5] == ["-m", "vllm.entrypoints.openai.api_server", "--model", "/m"] and "--enable-lora" in argv
    )
    installed["vllm"] = "0.32.0"
    assert presets.build_command(ServerConfig(preset="vllm", max_lora_rank=16), port=9, model="/m")[:3] == [
        "vllm",
        "serve",
        "/m",
    ]


def test_on_two_cores_vllm_cpu_reserves_none_unless_the_user_chose():
    from selflengthen.engines.presets import vllm_cpu_env

    assert vllm_cpu_env(2, {}) == {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    assert vllm_cpu_env(1, {}) == {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    assert vllm_cpu_env(4, {}) == {}  # vLLM's own default (1 reserved) stands
    assert vllm_cpu_env(2, {"VLLM_CPU_NUM_OF_RESERVED_CPU": "1"}) == {}


def test_the_managed_vllm_server_gets_the_same_environment():
    from selflengthen.config import ServerConfig
    from selflengthen.engines.server import child_env

    environ = {"HOME": "/home/u", "PATH": "/usr/bin"}
    env = child_env(ServerConfig(preset="vllm", env={"HF_HOME": "/cache"}), environ, cores=2)
    assert (
        env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0" and env["HF_HOME"] == "/cache" and env["HOME"] == "/home/u"
    )
    assert env["PATH"].endswith("/usr/bin")  # this environment's bin/ first
    assert "VLLM_CPU_NUM_OF_RESERVED_CPU" not in child_env(ServerConfig(preset="vllm"), environ, cores=16)
    # The config's own env wins, and other presets or the user's own command are left alone.
    chosen = ServerConfig(preset="vllm", env={"VLLM_CPU_NUM_OF_RESERVED_CPU": "1"})
    assert child_env(chosen, environ, cores=2)["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "1"
    assert "VLLM_CPU_NUM_OF_RESERVED_CPU" not in child_env(ServerConfig(preset="sglang"), environ, cores=2)
    custom = ServerConfig(command="{python} serve.py --port {port}")
    assert "VLLM_CPU_NUM_OF_RESERVED_CPU" not in child_env(custom, environ, cores=2)
