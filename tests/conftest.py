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


_LLAMA_CHECKS: dict[str, str | None] = {}


def require_llama(preset: str) -> None:
    """For tests that need a llama.cpp server ('llama-server' or 'llamacpp' = llama-cpp-python): skip
    when it is not installed (fail under CI, where setup installs it), and fail with the cause in one
    line when it is installed but cannot run here (a crash, a binary built for another CPU), once per
    session rather than as a bare exit status in every test."""
    import importlib.util

    from selflengthen.engines.presets import llama_server_path

    installed = (
        llama_server_path() is not None
        if preset == "llama-server"
        else importlib.util.find_spec("llama_cpp") is not None
    )
    if not installed:
        message = f"{preset} is not installed: `bash scripts/setup.sh --test` builds it"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    if preset not in _LLAMA_CHECKS:
        from selflengthen.engines.llama_build import check
        from selflengthen.errors import SelfLengthenError

        try:
            check(preset)
            _LLAMA_CHECKS[preset] = None
        except SelfLengthenError as exc:
            _LLAMA_CHECKS[preset] = str(exc).splitlines()[0]
    cause = _LLAMA_CHECKS[preset]
    if cause is not None:
        pytest.fail(f"{preset} cannot run on this machine: {cause}", pytrace=False)
