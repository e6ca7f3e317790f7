"""Generation backends behind one protocol (see base.py). `create_engine` picks one by config."""

from __future__ import annotations

import logging
from pathlib import Path

from selflengthen.engines.base import (
    EXTENDER,
    GENERATOR,
    Engine,
    Request,
    Result,
    SamplingParams,
    cut_at_stop,
    render_prompt,
)

log = logging.getLogger(__name__)

__all__ = [
    "EXTENDER",
    "GENERATOR",
    "Engine",
    "Request",
    "Result",
    "SamplingParams",
    "create_engine",
    "cut_at_stop",
    "render_prompt",
]


def create_engine(
    engine_config, model_config, adapters: dict[str, str] | None = None, *, run_dir: str | Path | None = None
) -> Engine:
    """Build the engine named by `engine_config.kind` for `model_config.base`.

    `auto` whose managed llama-server dies before it is ready (a signal, a bad binary) warns once
    and builds the transformers engine; an explicit `openai` with a managed server fails loudly.

    `run_dir` is where a managed server writes its log (RUN_DIR/logs/server.log). Heavy imports
    (torch, transformers, ray) happen here, not at module import, so `--help` stays instant.
    """
    if engine_config.kind == "auto":
        resolved = resolve_auto(engine_config, model_config)
        if resolved.kind == "openai":
            from selflengthen.errors import ServerStartError

            try:
                return _build(resolved, model_config, adapters, run_dir)
            except ServerStartError as exc:
                # auto promised a working run, not a particular engine: the slower engine still runs.
                log.warning(
                    "engine.kind auto: the managed llama-server exited before it was ready (%s); "
                    "carrying on with the transformers engine (about half the speed). Its log ends:\n%s",
                    exc.cause,
                    exc.log_tail,
                )
        engine_config = engine_config.model_copy(update={"kind": "transformers"})
    return _build(engine_config, model_config, adapters, run_dir)


def _build(
    engine_config, model_config, adapters: dict[str, str] | None, run_dir: str | Path | None
) -> Engine:
    kind = engine_config.kind
    if kind == "transformers":
        from selflengthen.engines.transformers import TransformersEngine

        engine: Engine = TransformersEngine(model_config, engine_config)
    elif kind == "openai":
        from selflengthen.engines.openai import OpenAIEngine

        engine = OpenAIEngine.from_config(engine_config, model_config, run_dir=run_dir)
    elif kind == "vllm":
        from selflengthen.engines.vllm_offline import VllmEngine

        engine = VllmEngine(model_config, engine_config)
    elif kind == "ray":
        from selflengthen.engines.ray_data import RayDataEngine

        engine = RayDataEngine(model_config, engine_config)
    elif kind == "fake":
        from selflengthen.engines.fake import FakeEngine

        engine = FakeEngine()
    else:  # pydantic's Literal already rejects unknown kinds; this guards direct callers
        from selflengthen.errors import ConfigError

        raise ConfigError(f"unknown engine kind '{kind}'", field="engine.kind")
    if adapters:
        try:
            engine.set_adapters(adapters)
        except BaseException:
            engine.close()  # a managed server must not outlive a failed start
            raise
    return engine


def resolve_auto(engine_config, model_config):
    """`engine.kind: auto`: llama.cpp's llama-server, managed by the run, where it is the faster engine
    (CPU, a GGUF base, the binary installed: about 2x transformers, docs/performance.md); else
    transformers."""
    from selflengthen.engines.presets import llama_server_path
    from selflengthen.model import pick_device

    gguf_base = model_config.base == "embedded" or bool(engine_config.server.gguf)
    have_server = bool(engine_config.server.binary) or llama_server_path() is not None
    if gguf_base and have_server and pick_device(model_config.device) == "cpu":
        server = engine_config.server.model_copy(update={"managed": True, "preset": "llama-server"})
        return engine_config.model_copy(update={"kind": "openai", "server": server})
    return engine_config.model_copy(update={"kind": "transformers"})
