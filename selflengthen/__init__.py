"""Self-Lengthen: an instruct LLM learns to write long texts from its own outputs.

Quan et al., 2024, arXiv 2410.23933. See README.md for the two commands a newcomer needs.

    from selflengthen import load_config, run, arun
    summaries = run(load_config("configs/smoke.yaml"), "runs/smoke")        # in a script
    summaries = await arun(load_config("configs/smoke.yaml"), "runs/smoke")  # in a notebook

The names below load lazily: `import selflengthen` stays cheap (no torch, no engine code).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> the module that defines it
_EXPORTS = {
    "Config": "selflengthen.config",
    "load_config": "selflengthen.config",
    "run": "selflengthen.loop",
    "arun": "selflengthen.loop",
    "create_engine": "selflengthen.engines",
    "Engine": "selflengthen.engines.base",
    "Request": "selflengthen.engines.base",
    "Result": "selflengthen.engines.base",
    "SamplingParams": "selflengthen.engines.base",
}

__all__ = [
    "Config",
    "Engine",
    "Request",
    "Result",
    "SamplingParams",
    "__version__",
    "arun",
    "create_engine",
    "load_config",
    "run",
]

if TYPE_CHECKING:
    from selflengthen.config import Config, load_config
    from selflengthen.engines import create_engine
    from selflengthen.engines.base import Engine, Request, Result, SamplingParams
    from selflengthen.loop import arun, run


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'selflengthen' has no attribute '{name}'")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
