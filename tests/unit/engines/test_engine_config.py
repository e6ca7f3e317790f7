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
