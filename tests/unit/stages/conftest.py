"""Helpers for exact stage tests with the scripted FakeEngine."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from selflengthen.config import load_config
from selflengthen.engines.fake import FakeEngine
from selflengthen.stages.common import RoundContext


def make_ctx(
    tmp_path: Path, script, overrides: list[str] | None = None, k: int = 1, roles=None
) -> RoundContext:
    config = load_config(None, ["seed_languages=[en]", *(overrides or [])])
    return RoundContext.for_round(config, FakeEngine(script), tmp_path, k, trained_roles=roles)


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def ctx_factory(tmp_path):
    return lambda script, overrides=None, **kw: make_ctx(tmp_path, script, overrides, **kw)
