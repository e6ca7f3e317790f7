"""Engine settings in a run config: nested sections, did-you-mean, no secrets in the dump."""

from __future__ import annotations

import pytest

from selflengthen.config import dump_config, load_config
from selflengthen.errors import ConfigError


def test_openai_engine_from_yaml_and_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-never-dumped")
    path = tmp_path / "run.yaml"
    path.write_text(
        "engine:\n"
        "  kind: openai\n"
        "  max_in_flight: 256\n"
        "  openai:\n"
        "    base_urls: [http://10.0.0.1:8000/v1, http://10.0.0.2:8000/v1]\n"
        "    api_key_env: MY_KEY\n"
        "    max_concurrency_per_url: 128\n"
        "  server:\n"
        "    preset: vllm\n"
    )
    config = load_config(path, ["engine.server.tensor_parallel_size=4", "engine.openai.mode=chat"])
    assert config.engine.openai.base_urls[1] == "http://10.0.0.2:8000/v1"
    assert config.engine.server.tensor_parallel_size == 4 and config.engine.openai.mode == "chat"
    assert (
        "sk-never-dumped" not in repr(dump_config(config))
        and dump_config(config)["engine"]["openai"]["api_key_env"] == "MY_KEY"
    )


def test_unknown_engine_keys_suggest_the_closest_name(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("engine:\n  kind: openai\n  openai:\n    max_retry: 3\n")
    with pytest.raises(
        ConfigError,
        match=r"line 4: unknown key 'engine.openai.max_retry' \(did you mean 'engine.openai.max_retries'\?\)",
    ):
        load_config(path)
    with pytest.raises(ConfigError, match="engine.kind"):
        load_config(None, ["engine.kind=vllm-offline"])
    with pytest.raises(ConfigError, match="engine.server.port"):
        load_config(None, ["engine.server.port=70000"])


def test_engine_auto_picks_llama_server_only_where_it_is_the_faster_engine(monkeypatch):
    from selflengthen.config import EngineConfig, ModelConfig
    from selflengthen.engines import presets, resolve_auto

    monkeypatch.setattr(presets, "llama_server_path", lambda: "/opt/llama-server")
    cpu = ModelConfig(base="embedded", device="cpu")
    picked = resolve_auto(EngineConfig(kind="auto"), cpu)
    assert (picked.kind, picked.server.managed, picked.server.preset) == ("openai", True, "llama-server")
    # a GPU, a base that is no GGUF, or no binary: transformers
    assert (
        resolve_auto(EngineConfig(kind="auto"), ModelConfig(base="embedded", device="cuda")).kind
        == "transformers"
    )
    assert (
        resolve_auto(EngineConfig(kind="auto"), ModelConfig(base="/models/qwen", device="cpu")).kind
        == "transformers"
    )
    monkeypatch.setattr(presets, "llama_server_path", lambda: None)
    assert resolve_auto(EngineConfig(kind="auto"), cpu).kind == "transformers"


def test_llama_server_command_loads_adapters_in_one_comma_list():
    from selflengthen.config import ServerConfig
    from selflengthen.engines.presets import build_command
    from selflengthen.errors import ConfigError

    cfg = ServerConfig(managed=True, preset="llama-server", binary=None, parallel=4, n_ctx=1000)
    sh = "/bin/sh"
    cfg = cfg.model_copy(update={"binary": sh})
    argv = build_command(cfg, port=9, model="m", gguf="/b.gguf", lora_files=["/r/e.gguf", "/r/g.gguf"])
    assert (
        argv[0] == sh
        and argv[argv.index("--ctx-size") + 1] == "4000"
        and argv[argv.index("--parallel") + 1] == "4"
    )
    assert argv[argv.index("--lora") + 1] == "/r/e.gguf,/r/g.gguf" and argv.count("--lora") == 1
    assert "--lora-init-without-apply" in argv
    assert "--lora" not in build_command(cfg, port=9, model="m", gguf="/b.gguf")
    with pytest.raises(ConfigError, match="commas"):
        build_command(cfg, port=9, model="m", gguf="/b.gguf", lora_files=["/a,b.gguf"])


def test_llama_server_threads_and_poll(monkeypatch):
    from selflengthen.config import ServerConfig
    from selflengthen.engines.presets import build_command

    monkeypatch.setattr("os.cpu_count", lambda: 6)
    cfg = ServerConfig(managed=True, preset="llama-server", binary="/bin/sh")
    argv = build_command(cfg, port=9, model="m", gguf="/b.gguf")
    assert argv[argv.index("--threads") + 1] == "6"  # None: every core
    assert argv[argv.index("--poll") + 1] == str(cfg.poll)
    cfg = cfg.model_copy(update={"threads": 1, "poll": 0})
    argv = build_command(cfg, port=9, model="m", gguf="/b.gguf")
    assert (argv[argv.index("--threads") + 1], argv[argv.index("--poll") + 1]) == ("1", "0")
    with pytest.raises(ValueError, match="poll"):
        ServerConfig(poll=101)
