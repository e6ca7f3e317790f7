"""Fixtures of the reliability tests: the tiny model (made once per session) and the fault server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.reliability.harness import tiny_model


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    cache = Path(os.environ.get("SELFLENGTHEN_CACHE") or tmp_path_factory.mktemp("cache"))
    return tiny_model(cache)
