"""Generation backends behind one protocol (see base.py). `create_engine` picks one by config."""

from __future__ import annotations

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


def create_engine(engine_config, model_config, adapters: dict[str, str] | None = None) -> Engine:
    """Build the engine named by `engine_config.kind` for `model_config.base`.

    Heavy imports (torch, transformers) happen here, not at module import, so `--help` stays instant.
    """
    kind = engine_config.kind
    if kind == "transformers":
        from selflengthen.engines.transformers import TransformersEngine

        engine: Engine = TransformersEngine(model_config, engine_config)
    elif kind == "fake":
        from selflengthen.engines.fake import FakeEngine

        engine = FakeEngine()
    else:  # pydantic's Literal already rejects unknown kinds; this guards direct callers
        from selflengthen.errors import ConfigError

        raise ConfigError(f"unknown engine kind '{kind}'", field="engine.kind")
    if adapters:
        engine.set_adapters(adapters)
    return engine
