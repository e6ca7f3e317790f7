"""An engine for any OpenAI-compatible server: vLLM, SGLang, llama.cpp, hosted APIs.

Usage (config): `engine: {kind: openai, openai: {base_urls: [http://gpu1:8000/v1, http://gpu2:8000/v1]}}`.

Completions mode (default) renders the chat template here, with the model's own tokenizer,
and POSTs the string to `/v1/completions`: a prefill reaches the model byte for byte on every
server. Chat mode sends messages, with `continue_final_message` for a prefill (vLLM).

Requests go to the least-loaded URL with a free slot (`max_concurrency_per_url` each).
Timeouts, connection errors, cut-off or garbage responses, 429 and 5xx are retried with
exponential backoff and jitter (Retry-After honoured); other 4xx fail at once. Every request
has a bounded number of attempts and a wall-clock budget, and the engine as a whole fails
fast when nothing has succeeded for a while, so a dead server stops the run with a clear
EngineError instead of spinning. The API key is read from the environment variable named in
config, sent as a header, and scrubbed from every error message.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from selflengthen.engines.base import Request, Result, cut_at_stop, render_prompt
from selflengthen.errors import ConfigError, EngineError

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


def api_root(url: str) -> str:
    """`http://h:8000/v1/` -> `http://h:8000`: endpoints are joined to the root."""
    url = url.strip().rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent/invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def adapter_served_name(role: str, path: str | Path) -> str:
    """A served name unique to this adapter's files: a retrained adapter gets a new name (servers cache
    adapters by name), and a restart loading the same files reuses the same name."""
    p = Path(path).resolve()
    h = hashlib.sha256(str(p).encode())
    for f in sorted(p.glob("adapter_model.*")):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return f"{role}-{h.hexdigest()[:10]}"


@dataclass
class _Endpoint:
    url: str  # the API root, without /v1
    limit: int
    in_flight: int = 0
    sent: int = 0
    failures_in_row: int = 0
    cooldown_until: float = 0.0  # monotonic time; set after failures and Retry-After


@dataclass
class OpenAIStats:
    """Counters for reports and the fault-injection tests."""

    requests: int = 0
    attempts: int = 0
    retries: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # kind -> count
    prompt_tokens: int = 0
    completion_tokens: int = 0
    per_url: dict[str, int] = field(default_factory=dict)

    def fail(self, kind: str) -> None:
        self.failures[kind] = self.failures.get(kind, 0) + 1


class _Retryable(Exception):
    """One attempt failed in a way worth retrying."""

    def __init__(self, kind: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after


class _Fatal(Exception):
    """One attempt failed in a way no retry fixes (a 4xx other than 408/409/425/429)."""


class OpenAIEngine:
    """The Engine protocol over HTTP. Build it with `from_config` (which may start a managed server)."""

    name = "openai"

    def __init__(
        self,
        config: Any,
        *,
        tokenizer: Any = None,
        base_urls: list[str] | None = None,
        model: str | None = None,
        lora_api: str | None = None,
        sampling_fields: str | None = None,
        context_length: int | None = None,
        server: Any = None,
    ):
        self.config = config
        urls = base_urls if base_urls is not None else config.base_urls
        if not urls:
            raise ConfigError("no server URL given", field="engine.openai.base_urls")
        self.endpoints = [_Endpoint(api_root(u), config.max_concurrency_per_url) for u in urls]
        self.tokenizer = tokenizer
        if config.mode == "completions" and tokenizer is None:
            raise ConfigError("completions mode needs the model's tokenizer", field="engine.openai.mode")
        self.model = model or config.model
        self.lora_api = lora_api or (config.lora_api if config.lora_api != "auto" else "vllm")
        self.fields = sampling_fields or (
            config.sampling_fields if config.sampling_fields != "auto" else "vllm"
        )
        self.context_length = context_length if context_length is not None else config.context_length
        self.server = server  # a ManagedServer we own and stop in close(), or None
        self._key = self._read_key(config.api_key_env)
        self.routes: dict[str, str] = {}  # role -> served adapter name
        self.stats = OpenAIStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._cond: asyncio.Condition | None = None
        self._model_lock: asyncio.Lock | None = None
        self._failures_in_row = 0
        self._last_success = time.monotonic()
        self._broken: str | None = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_config(
        cls, engine_config: Any, model_config: Any, *, run_dir: str | Path | None = None
    ) -> OpenAIEngine:
        """The engine for `engine_config.openai`, starting `engine_config.server` first when managed."""
        cfg = engine_config.openai
        server = None
        kwargs: dict[str, Any] = {}
        if engine_config.server.managed:
            from selflengthen.engines.server import ManagedServer

            server = ManagedServer(engine_config.server, model_config, run_dir=run_dir)
            server.start()
            kwargs = dict(
                base_urls=[server.base_url],
                model=server.config.served_model_name,
                lora_api=cfg.lora_api if cfg.lora_api != "auto" else server.preset.lora_api,
                sampling_fields=cfg.sampling_fields
                if cfg.sampling_fields != "auto"
                else server.preset.sampling_fields,
                context_length=cfg.context_length or server.context_length,
            )
        try:
            tokenizer = load_tokenizer(cfg, model_config) if cfg.mode == "completions" else None
            return cls(cfg, tokenizer=tokenizer, server=server, **kwargs)
        except BaseException:
            if server is not None:
                server.stop()
            raise

    @staticmethod
    def _read_key(env_name: str | None) -> str | None:
        if not env_name:
            return None
        key = os.environ.get(env_name)
        if not key:
            raise ConfigError(
                f"the environment variable {env_name} (named in config) is not set",
                field="engine.openai.api_key_env",
            )
        return key

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key}"} if self._key else {}

    def scrub(self, text: str) -> str:
        """`text` with the API key masked: every message we raise or log goes through here."""
        return text.replace(self._key, "***") if self._key else text

    # ------------------------------------------------------------------ per event loop state

    def _ensure_loop(self) -> None:
        """Stages run under separate asyncio.run calls: clients and conditions belong to one loop."""
        loop = asyncio.get_running_loop()
        if self._loop is loop and self._client is not None:
            return
        self._loop = loop
        cfg = self.config
        timeout = httpx.Timeout(cfg.timeout_s, connect=cfg.connect_timeout_s)
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
        self._client = httpx.AsyncClient(timeout=timeout, limits=limits, headers=self._headers())
        self._cond = asyncio.Condition()
        self._model_lock = asyncio.Lock()
        for e in self.endpoints:
            e.in_flight = 0

    async def _acquire(self, avoid: str | None, deadline: float) -> _Endpoint:
        """The least-loaded endpoint with a free slot, avoiding the one that just failed if possible."""
        assert self._cond is not None
        async with self._cond:
            while True:
                now = time.monotonic()
                free = [e for e in self.endpoints if e.in_flight < e.limit]
                ready = [e for e in free if e.cooldown_until <= now]
                if ready:
                    best = min(
                        ready,
                        key=lambda e: (e.url == avoid and len(ready) > 1, e.in_flight / e.limit, e.sent),
                    )
                    best.in_flight += 1
                    best.sent += 1
                    return best
                wait = deadline - now
                if free:
                    wait = min(wait, min(e.cooldown_until for e in free) - now)
                if deadline - now <= 0:
                    raise _Retryable("budget", "no server slot before the request budget ran out")
                try:
                    await asyncio.wait_for(self._cond.wait(), timeout=max(wait, 0.001))
                except asyncio.TimeoutError:
                    pass

    async def _release(self, endpoint: _Endpoint) -> None:
        assert self._cond is not None
        async with self._cond:
            endpoint.in_flight -= 1
            self._cond.notify_all()

    # ------------------------------------------------------------------ the request

    async def generate(self, request: Request) -> Result:
        self._ensure_loop()
        if request.adapter is not None and request.adapter not in self.routes:
            raise EngineError(f"no adapter loaded for role '{request.adapter}' (call set_adapters first)")
        model = await self._served_model(request.adapter)
        path, body, prompt_tokens = self._build(request, model)
        data = await self._with_retries(path, body, request.tag)
        return self._parse_result(data, request, model, prompt_tokens)

    def _build(self, request: Request, model: str) -> tuple[str, dict[str, Any], int]:
        """(endpoint path, JSON body, prompt tokens counted here or 0) for one request."""
        p = request.params
        max_tokens = p.max_tokens
        prompt_tokens = 0
        body: dict[str, Any] = {"model": model}
        if self.config.mode == "completions":
            prompt = render_prompt(self.tokenizer, request.messages, request.prefill)
            body["prompt"] = prompt
            path = "/v1/completions"
            if self.context_length:
                prompt_tokens = len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
                room = self.context_length - prompt_tokens
                if room < 1:
                    raise EngineError(
                        f"request {request.tag}: prompt of {prompt_tokens} tokens leaves no room in the "
                        f"{self.context_length}-token context (engine.openai.context_length)"
                    )
                max_tokens = min(max_tokens, room)
        else:
            messages = list(request.messages)
            path = "/v1/chat/completions"
            if request.prefill:
                messages.append({"role": "assistant", "content": request.prefill})
                if self.fields != "openai":
                    body.update(continue_final_message=True, add_generation_prompt=False)
            body["messages"] = messages
        body.update(max_tokens=max_tokens, temperature=p.temperature, top_p=p.top_p)
        if p.stop:
            body["stop"] = list(p.stop)
        if p.seed is not None:
            body["seed"] = p.seed
        if self.fields == "vllm":
            body.update(top_k=p.top_k if p.top_k > 0 else -1, repetition_penalty=p.repetition_penalty)
        elif self.fields == "llamacpp":
            body.update(top_k=p.top_k, repeat_penalty=p.repetition_penalty)
        body.update(self.config.extra_body)
        return path, body, prompt_tokens

    def _parse_result(self, data: dict, request: Request, model: str, prompt_tokens: int) -> Result:
        choice = data["choices"][0]
        if self.config.mode == "completions":
            text = choice.get("text")
        else:
            text = (choice.get("message") or {}).get("content")
        text = text or ""
        text, stopped = cut_at_stop(text, request.params.stop)
        finish = "length" if choice.get("finish_reason") == "length" and not stopped else "stop"
        usage = data.get("usage") or {}
        completion_tokens = int(usage.get("completion_tokens") or 0)
        if not completion_tokens and self.tokenizer is not None and text:
            completion_tokens = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        result = Result(
            text=text,
            finish_reason=finish,
            prompt_tokens=int(usage.get("prompt_tokens") or prompt_tokens),
            completion_tokens=completion_tokens,
            model=model,
        )
        self.stats.prompt_tokens += result.prompt_tokens
        self.stats.completion_tokens += result.completion_tokens
        return result

    async def _with_retries(self, path: str, body: dict, tag: str) -> dict:
        cfg = self.config
        self.stats.requests += 1
        started = time.monotonic()
        deadline = started + cfg.request_budget_s
        last = "none"
        avoid: str | None = None
        attempts = 0
        for attempt in range(cfg.max_retries + 1):
            if self._broken:
                raise EngineError(self._broken)
            attempts = attempt + 1
            try:
                endpoint = await self._acquire(avoid, deadline)
            except _Retryable as exc:
                last = str(exc)
                break
            try:
                data = await self._attempt(endpoint, path, body, deadline)
            except _Fatal as exc:
                await self._release(endpoint)
                raise EngineError(
                    self.scrub(f"request {tag or '?'} to {endpoint.url}{path} failed: {exc}")
                ) from None
            except _Retryable as exc:
                await self._release(endpoint)
                last = f"{endpoint.url}: {exc}"
                self._on_failure(endpoint, exc)
                avoid = endpoint.url
                if attempt == cfg.max_retries:
                    break
                # Fail over to another healthy replica at once; back off when there is none.
                now = time.monotonic()
                elsewhere = any(e is not endpoint and e.cooldown_until <= now for e in self.endpoints)
                delay = (
                    0.0 if elsewhere and exc.retry_after is None else self._delay(attempt, exc.retry_after)
                )
                if time.monotonic() + delay >= deadline:
                    break
                self.stats.retries += 1
                log.info("retrying %s in %.1fs after %s", tag or path, delay, self.scrub(last))
                await asyncio.sleep(delay)
                continue
            await self._release(endpoint)
            self._on_success(endpoint)
            return data
        if self._broken:
            raise EngineError(self._broken)
        raise EngineError(
            self.scrub(
                f"request {tag or '?'} gave up after {attempts} attempt(s) in "
                f"{time.monotonic() - started:.1f}s "
                f"(engine.openai.max_retries={cfg.max_retries}, request_budget_s={cfg.request_budget_s:g}); "
                f"last error: {last}"
            )
        )

    async def _attempt(self, endpoint: _Endpoint, path: str, body: dict, deadline: float) -> dict:
        """One POST. Returns the parsed JSON or raises _Retryable / _Fatal."""
        assert self._client is not None
        self.stats.attempts += 1
        self.stats.per_url[endpoint.url] = self.stats.per_url.get(endpoint.url, 0) + 1
        # The read timeout bounds the gap between bytes; this bounds the whole attempt (a trickling
        # server must not hold a request forever).
        limit = min(
            self.config.timeout_s + self.config.connect_timeout_s, max(deadline - time.monotonic(), 0.001)
        )
        try:
            response = await asyncio.wait_for(
                self._client.post(endpoint.url + path, json=body), timeout=limit
            )
        except httpx.ConnectTimeout:
            raise _Retryable("timeout", f"no connection within {self.config.connect_timeout_s:g}s") from None
        except (asyncio.TimeoutError, httpx.TimeoutException) as exc:
            what = type(exc).__name__ if isinstance(exc, httpx.TimeoutException) else "deadline"
            raise _Retryable("timeout", f"no complete answer within {limit:.0f}s ({what})") from None
        except httpx.TransportError as exc:
            raise _Retryable("connection", f"{type(exc).__name__}: {exc}") from None
        status = response.status_code
        if status in RETRY_STATUS or status >= 500:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            raise _Retryable(f"http_{status}", f"HTTP {status}: {_snippet(response.text)}", retry_after)
        if status >= 400:
            raise _Fatal(f"HTTP {status}: {_snippet(response.text)}")
        try:
            data = response.json()
            choice = data["choices"][0]
            if not isinstance(choice, dict):
                raise TypeError("choice is not an object")
            text = choice.get("text") if "text" in choice else (choice.get("message") or {}).get("content")
            if text is not None and not isinstance(text, str):
                raise TypeError("text is not a string")
            if text is None and "message" not in choice:
                raise KeyError("text")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise _Retryable(
                "garbage", f"malformed response ({type(exc).__name__}: {exc}): {_snippet(response.text)}"
            ) from None
        return data

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        cfg = self.config
        if retry_after is not None:
            # Retry-After is a floor: wait at least that long, plus a little jitter against a stampede.
            return min(retry_after, cfg.retry_after_max_s) * (1.0 + 0.1 * random.random())
        base = min(cfg.backoff_max_s, cfg.backoff_initial_s * (2**attempt))
        return base * (0.5 + 0.5 * random.random())

    def _on_failure(self, endpoint: _Endpoint, exc: _Retryable) -> None:
        cfg = self.config
        self.stats.fail(exc.kind)
        endpoint.failures_in_row += 1
        now = time.monotonic()
        if exc.retry_after is not None:
            pause = min(exc.retry_after, cfg.retry_after_max_s)
        else:  # a failing replica is shunned for a while, or least-loaded dispatch would feed it everything
            pause = min(cfg.backoff_max_s, cfg.backoff_initial_s * 2 ** (endpoint.failures_in_row - 1))
        endpoint.cooldown_until = max(endpoint.cooldown_until, now + pause)
        self._failures_in_row += 1
        if (
            self._failures_in_row >= cfg.fail_fast_failures
            and now - self._last_success >= cfg.fail_fast_after_s
        ):
            urls = ", ".join(e.url for e in self.endpoints)
            self._broken = self.scrub(
                f"the server(s) at {urls} failed {self._failures_in_row} attempts in a row "
                "with no success for "
                f"{now - self._last_success:.0f}s (last: {exc}); stopping instead of retrying forever. "
                "Check the server (and its log), then run the same command again to resume"
            )

    def _on_success(self, endpoint: _Endpoint) -> None:
        endpoint.failures_in_row = 0
        endpoint.cooldown_until = 0.0
        self._failures_in_row = 0
        self._last_success = time.monotonic()

    # ------------------------------------------------------------------ model names and adapters

    async def _served_model(self, adapter: str | None) -> str:
        if self.model is None and (adapter is None or self.lora_api == "sglang"):
            assert self._model_lock is not None
            async with self._model_lock:
                if self.model is None:
                    self.model = await self._discover_model()
        if adapter is None:
            assert self.model is not None
            return self.model
        name = self.routes[adapter]
        # SGLang picks an adapter with "base:adapter" in the model field; vLLM serves it under its own name.
        return f"{self.model}:{name}" if self.lora_api == "sglang" and ":" not in name else name

    async def _discover_model(self) -> str:
        assert self._client is not None
        url = self.endpoints[0].url + "/v1/models"
        last = ""
        for attempt in range(self.config.max_retries + 1):
            try:
                response = await self._client.get(url, timeout=self.config.connect_timeout_s + 30)
                if response.status_code == 200:
                    return str(response.json()["data"][0]["id"])
                last = f"HTTP {response.status_code}: {_snippet(response.text)}"
                if response.status_code < 500 and response.status_code != 429:
                    break
            except (httpx.TransportError, ValueError, KeyError, IndexError, TypeError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if attempt < self.config.max_retries:
                await asyncio.sleep(self._delay(attempt, None))
        raise EngineError(self.scrub(f"cannot list models at {url} ({last}); set engine.openai.model"))

    def set_adapters(self, adapters: dict[str, str]) -> None:
        """Serve each role's adapter: a name from `adapter_models`, or loaded at run time under a name
        unique to its files (a retrained adapter is a new name, so no server serves a stale cache)."""
        for role, path in adapters.items():
            if role in self.config.adapter_models:
                self.routes[role] = self.config.adapter_models[role]
                continue
            if self.lora_api == "none":
                raise EngineError(
                    f"cannot serve the {role} adapter {path}: this server loads no adapters at run time "
                    "(engine.openai.lora_api = none). Use vLLM or SGLang, or load the adapters yourself "
                    "and name them in engine.openai.adapter_models"
                )
            check_adapter_rank(path, getattr(getattr(self.server, "config", None), "max_lora_rank", None))
            name = adapter_served_name(role, path)
            if self.routes.get(role) == name:
                continue
            from selflengthen.engines.server import load_lora, unload_lora

            for e in self.endpoints:
                load_lora(
                    e.url,
                    name,
                    str(Path(path).resolve()),
                    api=self.lora_api,
                    headers=self._headers(),
                    scrub=self.scrub,
                    timeout=max(self.config.connect_timeout_s, 300.0),
                )
            old = self.routes.get(role)
            self.routes[role] = name
            if old and old not in self.routes.values():
                for e in self.endpoints:
                    unload_lora(e.url, old, api=self.lora_api, headers=self._headers())

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            # Closing needs the loop that opened it; when that loop is gone, dropping it is all we can do.
            try:
                if self._loop is not None and not self._loop.is_closed() and not self._loop.is_running():
                    self._loop.run_until_complete(client.aclose())
            except RuntimeError:
                pass
        if self.server is not None:
            self.server.stop()


def _snippet(text: str, n: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n] + "..."


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


def load_tokenizer(cfg: Any, model_config: Any) -> Any:
    """The model's own tokenizer, so the prompt string equals what training and the other engines see."""
    from transformers import AutoTokenizer

    from selflengthen.model import resolve_base

    source = cfg.tokenizer or resolve_base(model_config.base)
    try:
        return AutoTokenizer.from_pretrained(source)
    except OSError as exc:
        raise ConfigError(
            f"cannot load the tokenizer '{source}': {exc}", field="engine.openai.tokenizer"
        ) from None
