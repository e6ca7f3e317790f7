"""Loading adapters into a running server at run time: vLLM's POST /v1/load_lora_adapter (with
VLLM_ALLOW_RUNTIME_LORA_UPDATING) and SGLang's POST /load_lora_adapter. llama-server has no such
API: its adapters are given at start (server.py, gguf_lora.py).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from selflengthen.engines.dispatch import is_loopback
from selflengthen.errors import ConfigError, EngineError


def lora_endpoints(api: str) -> tuple[str, str]:
    """(load path, unload path) of a server's runtime LoRA API."""
    if api == "vllm":
        return "/v1/load_lora_adapter", "/v1/unload_lora_adapter"
    if api == "sglang":
        return "/load_lora_adapter", "/unload_lora_adapter"
    raise ConfigError(f"no runtime LoRA API for '{api}'", field="engine.openai.lora_api")


def load_lora(
    url: str,
    name: str,
    path: str,
    *,
    api: str = "vllm",
    headers: dict[str, str] | None = None,
    scrub: Callable[[str], str] = lambda s: s,
    timeout: float = 300.0,
    attempts: int = 3,
) -> None:
    """Load the adapter at `path` (a path the server can read) under `name`. "Already loaded" is fine."""
    load, _ = lora_endpoints(api)
    last = ""
    for attempt in range(attempts):
        try:
            r = httpx.post(
                url + load,
                json={"lora_name": name, "lora_path": path},
                trust_env=not is_loopback(url),
                headers=headers,
                timeout=timeout,
            )
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
            time.sleep(min(2.0**attempt, 10.0))
            continue
        body = r.text
        if r.status_code == 200 and not _reports_failure(r):
            return
        if "already" in body.lower():
            return
        if r.status_code == 404:
            raise EngineError(
                f"{url} has no runtime LoRA endpoint ({load}, HTTP 404). For vLLM set "
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and --enable-lora; or name adapters you loaded "
                "yourself in engine.openai.adapter_models"
            )
        last = f"HTTP {r.status_code}: {' '.join(body.split())[:300]}"
        if r.status_code < 500:
            break
        time.sleep(min(2.0**attempt, 10.0))
    raise EngineError(scrub(f"cannot load adapter {path} as '{name}' on {url}: {last}"))


def _reports_failure(response: httpx.Response) -> bool:
    """SGLang may answer 200 with {"success": false, ...}."""
    try:
        data = response.json()
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("success") is False


def unload_lora(url: str, name: str, *, api: str = "vllm", headers: dict[str, str] | None = None) -> bool:
    """Best effort: free the server's slot of an adapter no role uses any more."""
    _, unload = lora_endpoints(api)
    try:
        return (
            httpx.post(
                url + unload,
                json={"lora_name": name},
                headers=headers,
                timeout=60.0,
                trust_env=not is_loopback(url),
            ).status_code
            == 200
        )
    except httpx.HTTPError:
        return False


def adapter_served_name(role: str, path: str | Path) -> str:
    """A served name unique to this adapter's files: a retrained adapter gets a new name (servers cache
    adapters by name), and a restart loading the same files reuses the same name."""
    p = Path(path).resolve()
    h = hashlib.sha256(str(p).encode())
    for f in sorted(p.glob("adapter_model.*")):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return f"{role}-{h.hexdigest()[:10]}"


def check_adapter_rank(path: str | Path, max_rank: int | None) -> None:
    """Fail early, naming the fields, when an adapter's rank exceeds what the server accepts."""
    if not max_rank:
        return
    config_file = Path(path) / "adapter_config.json"
    try:
        r = int(json.loads(config_file.read_text()).get("r", 0))
    except (OSError, ValueError):
        return
    if r > max_rank:
        raise ConfigError(
            f"adapter {path} has LoRA rank {r} but the server accepts at most {max_rank}; "
            "raise engine.server.max_lora_rank",
            field="engine.server.max_lora_rank",
        )
