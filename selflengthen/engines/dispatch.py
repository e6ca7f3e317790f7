"""Sending JSON requests to several server replicas, robustly: the HTTP half of the OpenAI engine.

    dispatcher = Dispatcher(config, ["http://gpu1:8000/v1", "http://gpu2:8000/v1"])
    data = await dispatcher.post("/v1/completions", body, tag="r1-a0", validate=check_choices)

Each request goes to the least-loaded replica with a free slot (`max_concurrency_per_url` each),
avoiding one that just failed. Timeouts, connection errors, cut-off bodies, responses that fail
`validate`, 408/409/425/429 and 5xx are retried with exponential backoff and jitter, honouring
Retry-After (a 429 also pauses that replica for everyone); a failure moves the request to another
healthy replica at once. Other 4xx fail at once. Bounds: `max_retries` attempts after the first
and `request_budget_s` of wall time per request; and once `fail_fast_failures` attempts in a row
have failed with no success for `fail_fast_after_s`, every request fails with one clear
EngineError, so a dead server stops the run instead of spinning. The API key is sent as a header
and masked (`scrub`) in every message we raise or log.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from selflengthen.errors import EngineError

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


def api_root(url: str) -> str:
    """`http://h:8000/v1/` -> `http://h:8000`: endpoints are joined to the root."""
    url = url.strip().rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def is_loopback(url: str) -> bool:
    """Whether `url` points at this machine. Requests there bypass HTTP(S)_PROXY from the
    environment: a cluster's proxy cannot reach our loopback server."""
    host = (httpx.URL(url).host or "").strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


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


def snippet(text: str, n: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n] + "..."


@dataclass
class Endpoint:
    url: str  # the API root, without /v1
    limit: int
    in_flight: int = 0
    sent: int = 0
    failures_in_row: int = 0
    cooldown_until: float = 0.0  # monotonic time; set after failures and Retry-After


@dataclass
class DispatchStats:
    """Counters for reports and the fault-injection tests."""

    requests: int = 0
    attempts: int = 0
    retries: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # kind -> count
    prompt_tokens: int = 0
    completion_tokens: int = 0
    per_url: dict[str, int] = field(default_factory=dict)
    aborted: int = 0  # streams closed early by their consumer (early abort)

    def fail(self, kind: str) -> None:
        self.failures[kind] = self.failures.get(kind, 0) + 1


class StreamConsumer(Protocol):
    """Reads one streamed answer (see Dispatcher.post)."""

    garbage: str | None  # set by the dispatcher when an event is not JSON
    plain: bool  # set by the dispatcher when the server answered with one JSON body instead

    def feed(self, event: Any) -> bool:
        """Take one event; True = stop reading (the answer is complete enough)."""

    def result(self) -> Any:
        """The answer as one JSON-like object; raises ValueError when the stream was incomplete."""


class Retryable(Exception):
    """One attempt failed in a way worth retrying."""

    def __init__(self, kind: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after


class Fatal(Exception):
    """One attempt failed in a way no retry fixes (a 4xx other than 408/409/425/429)."""


class Dispatcher:
    """Replicas, slots, retries. `config` holds the OpenAIEngineConfig timing and retry fields."""

    def __init__(
        self,
        config: Any,
        urls: list[str],
        *,
        headers: dict[str, str] | None = None,
        scrub: Callable[[str], str] = lambda s: s,
    ):
        self.config = config
        self.endpoints = [Endpoint(api_root(u), config.max_concurrency_per_url) for u in urls]
        self.headers = headers or {}
        self.scrub = scrub
        self.stats = DispatchStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._closing: asyncio.Task | None = None
        self._waiters: list[asyncio.Future] = []  # requests waiting for a free slot
        self._failures_in_row = 0
        self._last_success = time.monotonic()
        self.broken: str | None = None  # set once the engine gave up on the servers
        # A managed server's owner sets this: after a connection failure it restarts a server that
        # has died and returns True (retry at once), or returns False (nothing of ours to restart).
        self.revive: Callable[[], Awaitable[bool]] | None = None

    # ------------------------------------------------------------------ the HTTP client

    def client(self) -> httpx.AsyncClient:
        """The HTTP client, opened on first use. Its connections belong to the event loop that opened
        it, so one dispatcher serves one event loop (a run awaits all its stages on one)."""
        loop = asyncio.get_running_loop()
        if self._client is None:
            cfg = self.config
            self._loop = loop
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(cfg.timeout_s, connect=cfg.connect_timeout_s),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
                headers=self.headers,
                trust_env=not all(is_loopback(e.url) for e in self.endpoints),
            )
        elif self._loop is not loop:
            raise EngineError(
                "this engine's HTTP connections belong to another event loop: await all of a run's "
                "requests on one loop, or close() the engine before using it on another"
            )
        return self._client

    def close(self) -> None:
        """Close the connections: on their loop when it is idle or runs in another thread; called on
        the running loop's own thread (a run closing its engine), as a task of that loop."""
        client, loop, self._client, self._loop = self._client, self._loop, None, None
        if client is None or loop is None or loop.is_closed():
            return
        if not loop.is_running():
            loop.run_until_complete(client.aclose())
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._closing = loop.create_task(client.aclose())  # held: a loop keeps weak task refs
        else:
            asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(timeout=30)

    # ------------------------------------------------------------------ slots

    async def _acquire(self, avoid: str | None, deadline: float) -> Endpoint:
        """The least-loaded endpoint with a free slot, avoiding the one that just failed if possible."""
        while True:
            now = time.monotonic()
            free = [e for e in self.endpoints if e.in_flight < e.limit]
            ready = [e for e in free if e.cooldown_until <= now]
            if ready:
                best = min(
                    ready, key=lambda e: (e.url == avoid and len(ready) > 1, e.in_flight / e.limit, e.sent)
                )
                best.in_flight += 1
                best.sent += 1
                return best
            if deadline - now <= 0:
                raise Retryable("budget", "no server slot before the request budget ran out")
            wait = deadline - now
            if free:  # slots exist but their servers are cooling down: wait for the first to come back
                wait = min(wait, min(e.cooldown_until for e in free) - now)
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, timeout=max(wait, 0.001))
            except asyncio.TimeoutError:
                pass
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def _release(self, endpoint: Endpoint) -> None:
        """Free a slot (synchronous, so it also runs when the request is cancelled) and wake the waiters."""
        endpoint.in_flight -= 1
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    # ------------------------------------------------------------------ requests

    async def post(
        self,
        path: str,
        body: dict,
        *,
        tag: str = "",
        validate: Callable[[Any], None] | None = None,
        stream: Callable[[], StreamConsumer] | None = None,
    ) -> Any:
        """POST `body` to `path` on some replica and return the JSON answer, retrying as described
        above. `validate(data)` raises ValueError/KeyError/IndexError/TypeError on a garbage answer.

        With `stream`, the body asks for server-sent events: each attempt gets a fresh consumer from
        `stream()`, fed every event; when `feed` returns True the response is closed at once (the
        server sees the client go and stops generating) and the consumer's `result()` is the answer."""
        self.client()  # fails at once on a second event loop, before any slot is taken
        cfg = self.config
        self.stats.requests += 1
        started = time.monotonic()
        deadline = started + cfg.request_budget_s
        last = "none"
        avoid: str | None = None
        retry_after: float | None = None
        attempts = 0
        for attempt in range(cfg.max_retries + 1):
            if self.broken:
                raise EngineError(self.broken)
            attempts = attempt + 1
            try:
                endpoint = await self._acquire(avoid, deadline)
            except Retryable as exc:
                last = str(exc)
                break
            try:
                data = await self._attempt(endpoint, path, body, deadline, validate, stream)
            except Fatal as exc:
                raise EngineError(
                    self.scrub(f"request {tag or '?'} to {endpoint.url}{path} failed: {exc}")
                ) from None
            except Retryable as exc:
                last = f"{endpoint.url}: {exc}"
                failure = exc
            else:
                self._on_success(endpoint)
                return data
            finally:
                self._release(endpoint)
            if failure.kind == "connection" and self.revive is not None and await self.revive():
                self.stats.retries += 1
                log.info("retrying %s at once: its server had died and was started again", tag or path)
                continue
            self._on_failure(endpoint, failure)
            avoid, retry_after = endpoint.url, failure.retry_after
            if attempt == cfg.max_retries:
                break
            # Fail over to another healthy replica at once; back off when there is none.
            now = time.monotonic()
            elsewhere = any(e.url != avoid and e.cooldown_until <= now for e in self.endpoints)
            delay = 0.0 if elsewhere and retry_after is None else self.delay(attempt, retry_after)
            if now + delay >= deadline:
                break
            self.stats.retries += 1
            log.info("retrying %s in %.1fs after %s", tag or path, delay, self.scrub(last))
            await asyncio.sleep(delay)
        if self.broken:
            raise EngineError(self.broken)
        raise EngineError(
            self.scrub(
                f"request {tag or '?'} gave up after {attempts} attempt(s) "
                f"in {time.monotonic() - started:.1f}s "
                f"(engine.openai.max_retries={cfg.max_retries}, request_budget_s={cfg.request_budget_s:g}); "
                f"last error: {last}"
            )
        )

    async def _attempt(
        self,
        endpoint: Endpoint,
        path: str,
        body: dict,
        deadline: float,
        validate: Callable[[Any], None] | None,
        stream: Callable[[], StreamConsumer] | None = None,
    ) -> Any:
        """One POST. Returns the parsed JSON or raises Retryable / Fatal."""
        client = self.client()
        self.stats.attempts += 1
        self.stats.per_url[endpoint.url] = self.stats.per_url.get(endpoint.url, 0) + 1
        # The read timeout bounds the gap between bytes; this bounds the whole attempt (a trickling
        # server must not hold a request forever).
        limit = min(
            self.config.timeout_s + self.config.connect_timeout_s, max(deadline - time.monotonic(), 0.001)
        )
        consumer = stream() if stream is not None else None
        try:
            if consumer is not None:
                response = await asyncio.wait_for(
                    self._stream(endpoint.url + path, body, consumer), timeout=limit
                )
            else:
                response = await asyncio.wait_for(client.post(endpoint.url + path, json=body), timeout=limit)
        except httpx.ConnectTimeout:
            raise Retryable("timeout", f"no connection within {self.config.connect_timeout_s:g}s") from None
        except (asyncio.TimeoutError, httpx.TimeoutException) as exc:
            what = type(exc).__name__ if isinstance(exc, httpx.TimeoutException) else "deadline"
            raise Retryable("timeout", f"no complete answer within {limit:.0f}s ({what})") from None
        except httpx.TransportError as exc:
            raise Retryable("connection", f"{type(exc).__name__}: {exc}") from None
        status = response.status_code
        if status in RETRY_STATUS or status >= 500:
            wait = parse_retry_after(response.headers.get("retry-after"))
            raise Retryable(f"http_{status}", f"HTTP {status}: {snippet(response.text)}", wait)
        if status >= 400:
            raise Fatal(f"HTTP {status}: {snippet(response.text)}")
        try:
            data = response.json() if consumer is None or consumer.plain else consumer.result()
            if validate is not None:
                validate(data)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            shown = snippet(response.text) if consumer is None or consumer.plain else "(streamed)"
            message = f"malformed response ({type(exc).__name__}: {exc}): {shown}"
            raise Retryable("garbage", message) from None
        return data

    async def _stream(self, url: str, body: dict, consumer: StreamConsumer) -> httpx.Response:
        """POST and feed the server-sent events to `consumer` until it has enough or the stream ends.
        Returns the response (its body read only when it is an error)."""
        async with self.client().stream("POST", url, json=body) as response:
            if response.status_code >= 400 or "text/event-stream" not in response.headers.get(
                "content-type", ""
            ):
                # An error, or a server that ignores `stream` and answers with one JSON body: read it
                # whole (no early abort then; the checks still judge the full text).
                await response.aread()
                consumer.plain = True
                return response
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue  # blank separators and SSE comments
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                try:
                    event = json.loads(payload)
                except ValueError:
                    consumer.garbage = snippet(payload)
                    break
                if consumer.feed(event):
                    self.stats.aborted += 1
                    break  # leaving the block closes the connection: the server stops this sequence
        return response

    async def get_json(self, path: str) -> Any:
        """GET `path` from the first replica, with the same retry bounds (used for /v1/models)."""
        client = self.client()
        url = self.endpoints[0].url + path
        last = ""
        for attempt in range(self.config.max_retries + 1):
            try:
                response = await client.get(url, timeout=self.config.connect_timeout_s + 30)
                if response.status_code == 200:
                    return response.json()
                last = f"HTTP {response.status_code}: {snippet(response.text)}"
                if response.status_code not in RETRY_STATUS and response.status_code < 500:
                    break
            except (httpx.TransportError, ValueError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if attempt < self.config.max_retries:
                await asyncio.sleep(self.delay(attempt, None))
        raise EngineError(self.scrub(f"GET {url} failed: {last}"))

    # ------------------------------------------------------------------ backoff and health

    def delay(self, attempt: int, retry_after: float | None) -> float:
        cfg = self.config
        if retry_after is not None:
            # Retry-After is a floor: wait at least that long, plus a little jitter against a stampede.
            return min(retry_after, cfg.retry_after_max_s) * (1.0 + 0.1 * random.random())
        base = min(cfg.backoff_max_s, cfg.backoff_initial_s * (2**attempt))
        return base * (0.5 + 0.5 * random.random())

    def _on_failure(self, endpoint: Endpoint, exc: Retryable) -> None:
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
        quiet = now - self._last_success
        if self._failures_in_row >= cfg.fail_fast_failures and quiet >= cfg.fail_fast_after_s:
            urls = ", ".join(e.url for e in self.endpoints)
            self.broken = self.scrub(
                f"the server(s) at {urls} failed {self._failures_in_row} attempts in a row with no success "
                f"for {quiet:.0f}s (last: {exc}); stopping instead of retrying forever. "
                "Check the server (and its log), then run the same command again to resume"
            )

    def _on_success(self, endpoint: Endpoint) -> None:
        endpoint.failures_in_row = 0
        endpoint.cooldown_until = 0.0
        self._failures_in_row = 0
        self._last_success = time.monotonic()
