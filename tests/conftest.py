"""Shared test setup: the embedded model's converted copy lives in one cache per test session
(under pytest's temporary directory) unless SELFLENGTHEN_CACHE is already set."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _model_cache(tmp_path_factory):
    if not os.environ.get("SELFLENGTHEN_CACHE"):
        os.environ["SELFLENGTHEN_CACHE"] = str(tmp_path_factory.getbasetemp() / "selflengthen-cache")
    yield
