"""A fault-injecting OpenAI-compatible server on loopback, for reliability tests and the kill bench.

It needs no model: `/v1/completions` (and `/v1/chat/completions`) answer with deterministic
canned English that passes `selflengthen.text.checks.check_text`, shaped by what the prompt asks
for (a self-instruct "Instruction 3", a yes/no judge, an answer, a stage-1 or stage-2 extension),
so a whole Steps 0-2 round over the OpenAI engine completes. `/v1/models` names one model.

At configured rates an attempt instead gets one of these faults:

    500       HTTP 500 with a short error body that echoes the Authorization header (a leak to mask)
    429       HTTP 429 with `Retry-After: <retry_after>`
    timeout   the handler sleeps `timeout_sleep` seconds (past the client's timeout), then answers
    reset     the connection is reset (SO_LINGER 0) without a reply
    empty     a valid completion with an empty text (data: the stage records reason "empty")
    garbage   HTTP 200 with a body that is not a completion (HTML, or JSON without choices)
    cutoff    HTTP 200 whose Content-Length promises more bytes than are sent

In a test:

    with FaultServer(rates={"500": 0.1, "reset": 0.05}, seed=3) as server:
        ... engine.openai.base_urls = [server.url] ...
        server.stats()  # {"requests": .., "ok": .., "faults": {"500": ..}, "by_path": {..}}

From a shell (prints `listening http://127.0.0.1:PORT/v1`, then serves until killed):

    python tests/faults/fault_server.py --rates 500=0.1,429=0.05 --latency 0.05
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import socket
import struct
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULTS = ("500", "429", "timeout", "reset", "empty", "garbage", "cutoff")
MODEL = "fault-base"

# ---------------------------------------------------------------- canned text

_GENRES = [
    "report",
    "essay",
    "guide",
    "story",
    "proposal",
    "article",
    "memoir",
    "handbook",
    "review",
    "chronicle",
    "manual",
    "case study",
]
_TOPICS = [
    "river ferries",
    "mountain weather stations",
    "village bakeries",
    "public libraries",
    "coral reefs",
    "night trains",
    "urban beekeeping",
    "glass recycling",
    "desert observatories",
    "harbour cranes",
    "community radio",
    "lighthouse keepers",
    "seed banks",
    "tram depots",
    "salt marshes",
    "clock makers",
]
_AUDIENCES = [
    "new volunteers",
    "city planners",
    "high school teachers",
    "first-time managers",
    "museum visitors",
    "retired engineers",
    "young farmers",
    "local journalists",
    "hospital staff",
    "travelling students",
]
_ASPECTS = [
    "daily routines",
    "hidden costs",
    "early history",
    "future risks",
    "training needs",
    "seasonal rhythms",
    "common mistakes",
    "surprising benefits",
    "legal questions",
    "tools and materials",
]
_ENDINGS = [
    "a practical checklist",
    "three open questions",
    "a short timeline",
    "a list of sources",
    "a reflective conclusion",
    "a set of recommendations",
    "a glossary of terms",
    "an action plan",
]

_PEOPLE = [
    "harbour master",
    "apprentice",
    "engineer",
    "reader",
    "night crew",
    "student",
    "council",
    "team",
    "expert",
    "teacher",
    "ferry captain",
    "baker",
    "volunteer",
    "museum guide",
    "gardener",
    "surveyor",
    "librarian",
    "pilot",
    "carpenter",
    "nurse",
]
_ADJ = [
    "quiet",
    "old",
    "careful",
    "curious",
    "patient",
    "young",
    "tired",
    "cheerful",
    "stubborn",
    "clever",
    "busy",
    "gentle",
    "serious",
    "restless",
    "modest",
    "bold",
    "thoughtful",
    "weary",
    "eager",
    "calm",
]
_VERBS = [
    "measures",
    "explains",
    "records",
    "repairs",
    "questions",
    "describes",
    "compares",
    "collects",
    "maps",
    "tests",
    "rebuilds",
    "studies",
    "sketches",
    "organises",
    "inspects",
    "translates",
    "polishes",
    "weighs",
]
_THINGS = [
    "schedule",
    "signal lamp",
    "budget",
    "letters",
    "water levels",
    "engine",
    "records",
    "coastal map",
    "deliveries",
    "safety rules",
    "toolbox",
    "weekly figures",
    "photographs",
    "timetable",
    "garden beds",
    "invoices",
    "ledger",
    "compass",
    "rope ladder",
    "weather log",
]
_THING_ADJ = [
    "faded",
    "new",
    "broken",
    "heavy",
    "spare",
    "wooden",
    "printed",
    "rusty",
    "shared",
    "missing",
    "borrowed",
    "tidy",
    "muddy",
    "copper",
    "folded",
    "painted",
    "winter",
    "morning",
    "secret",
    "second",
]
_PREPS = ["near", "behind", "inside", "beside", "under", "across", "along", "beyond", "above", "around"]
_PLACES = [
    "north pier",
    "old station",
    "archive",
    "canal",
    "upper deck",
    "stone bridge",
    "town square",
    "east gate",
    "river path",
    "reading room",
    "boat shed",
    "market hall",
    "chapel",
    "lock keeper's house",
    "quarry",
    "ferry slip",
]
_PLACE_ADJ = [
    "windy",
    "crowded",
    "empty",
    "sunny",
    "narrow",
    "famous",
    "forgotten",
    "busy",
    "silent",
    "flooded",
    "distant",
    "lively",
    "shaded",
    "frozen",
    "ancient",
    "rebuilt",
    "western",
    "southern",
    "lower",
    "outer",
]
_REASONS = [
    "because the season is changing",
    "so that nothing is forgotten",
    "while the rain keeps falling",
    "before the visitors arrive",
    "after a long debate",
    "since the last storm",
    "with unusual care",
    "without much fuss",
    "as the light fades",
    "for the annual review",
    "despite the early hour",
    "in spite of the noise",
    "until the bell rings",
    "once the tide turns",
    "whenever the wind drops",
    "as the council asked",
    "at the first chance",
    "on a grey afternoon",
    "with borrowed tools",
    "during the long holiday",
    "after the last ferry",
    "before the first frost",
    "at their own pace",
    "in honest detail",
]


def _sentence(rng: random.Random) -> str:
    c = rng.choice
    s = (
        f"the {c(_ADJ)} {c(_PEOPLE)} {c(_VERBS)} the {c(_THING_ADJ)} {c(_THINGS)} "
        f"{c(_PREPS)} the {c(_PLACE_ADJ)} {c(_PLACES)} {c(_REASONS)}"
    )
    return s[0].upper() + s[1:] + "."


def _paragraphs(rng: random.Random, n: int, sentences: int = 2) -> list[str]:
    return [" ".join(_sentence(rng) for _ in range(sentences)) for _ in range(n)]


def _instruction(rng: random.Random) -> str:
    return (
        f"Write a detailed {rng.choice(_GENRES)} about {rng.choice(_TOPICS)} for {rng.choice(_AUDIENCES)}, "
        f"covering their {rng.choice(_ASPECTS)} and {rng.choice(_ASPECTS)}, "
        f"and finish with {rng.choice(_ENDINGS)}."
    )


def _prompt_of(body: dict) -> str:
    if isinstance(body.get("prompt"), str):
        return body["prompt"]
    messages = body.get("messages") or []
    return "\n".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))


def canned_text(body: dict) -> tuple[str, str]:
    """(text, finish_reason) for a request: deterministic in the prompt and the request's seed."""
    prompt = _prompt_of(body)
    key = f"{body.get('seed')}|{prompt}".encode()
    rng = random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))
    tail = prompt.rstrip()
    if tail.endswith("Instruction 3:") or tail.endswith("指令3："):
        # A self-instruct continuation: instruction 3, then the model runs on (cut at the stop string).
        text = " " + _instruction(rng) + "\nInstruction 4: Write a poem."
    elif 'Answer only "yes" or "no"' in prompt:
        text = "Yes."
    elif "Here is an original outline" in prompt:
        # Stage 1 (no prefill after the assistant header) or stage 2 (continuing a prefill):
        # either way, fresh paragraphs that make the result longer than the outline.
        text = "\n\n".join(_paragraphs(rng, 6 if tail.endswith("assistant") else 3))
    else:
        text = "\n\n".join(_paragraphs(rng, 4))
    finish = "stop"
    limit = body.get("max_tokens")
    if isinstance(limit, int) and len(text.split()) * 1.3 > limit:  # roughly what a tokenizer would count
        text = " ".join(text.split(" ")[: max(1, int(limit / 1.3))])
        finish = "length"
    return text, finish


def completion(body: dict, text: str, finish: str, chat: bool) -> dict:
    tokens = max(1, int(len(text.split()) * 1.3))
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return {
        "id": "cmpl-fault",
        "object": "chat.completion" if chat else "text_completion",
        "model": body.get("model", MODEL),
        "choices": [choice],
        "usage": {"prompt_tokens": 10, "completion_tokens": tokens, "total_tokens": 10 + tokens},
    }


# ---------------------------------------------------------------- the server


class FaultServer:
    """A threaded HTTP server on 127.0.0.1 (port 0 = a free one) that injects faults at `rates`.

    rates: fault name -> probability per completion attempt (their sum at most 1).
    retry_after: the Retry-After value sent with 429 (seconds, a string as servers send it).
    timeout_sleep: how long a `timeout` fault sleeps before answering (set it past the client timeout).
    latency: (min, max) seconds each normal completion takes, so stages last long enough to be killed.
    seed: the fault draws' seed (the draw order follows the arrival order of requests).
    script: faults (or None) for the first completion attempts, before the random draws: to make sure
        each kind happens at least once.
    """

    def __init__(
        self,
        rates: dict[str, float] | None = None,
        *,
        retry_after: str = "0",
        timeout_sleep: float = 3.0,
        latency: tuple[float, float] = (0.0, 0.0),
        seed: int = 0,
        port: int = 0,
        script: list[str | None] | None = None,
    ):
        self.rates = dict(rates or {})
        unknown = set(self.rates) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown fault(s) {sorted(unknown)}; known: {', '.join(FAULTS)}")
        if sum(self.rates.values()) > 1.0 + 1e-9:
            raise ValueError("fault rates must sum to at most 1")
        self.retry_after = retry_after
        self.timeout_sleep = timeout_sleep
        self.latency = latency
        self._rng = random.Random(seed)
        self._script = list(script or [])
        unknown |= {f for f in self._script if f is not None and f not in FAULTS}
        if unknown:
            raise ValueError(f"unknown fault(s) {sorted(unknown)}; known: {', '.join(FAULTS)}")
        self._lock = threading.Lock()
        self.requests = 0
        self.ok = 0
        self.faults: Counter[str] = Counter()
        self.by_path: Counter[str] = Counter()
        self.headers_seen: list[dict[str, str]] = []
        self._stop = threading.Event()
        self.httpd = _Server(("127.0.0.1", port), _make_handler(self))
        self.port = self.httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def set_rates(self, rates: dict[str, float]) -> None:
        with self._lock:
            self.rates = dict(rates)

    def draw(self) -> str | None:
        """The fault for the next completion attempt, or None for a normal answer."""
        with self._lock:
            if self._script:
                return self._script.pop(0)
            x = self._rng.random()
            for name in FAULTS:
                p = self.rates.get(name, 0.0)
                if x < p:
                    return name
                x -= p
            return None

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "ok": self.ok,
                "faults": dict(self.faults),
                "by_path": dict(self.by_path),
            }

    def start(self) -> FaultServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes sleeping `timeout` handlers
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:  # a client hung up: expected here
        pass


def _make_handler(server: FaultServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
            self._bytes(status, json.dumps(data).encode(), headers)

        def _bytes(
            self,
            status: int,
            data: bytes,
            headers: dict[str, str] | None = None,
            content_type: str = "application/json",
        ) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            with server._lock:
                server.requests += 1
                server.by_path[self.path] += 1
                server.headers_seen.append(dict(self.headers.items()))
            if self.path.rstrip("/") in ("/v1/models", "/models"):
                self._json(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
            elif self.path == "/stats":
                self._json(200, server.stats())
            elif self.path == "/health":
                self._json(200, {"status": "ok"})
            else:
                self._json(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            with server._lock:
                server.requests += 1
                server.by_path[self.path] += 1
                server.headers_seen.append(dict(self.headers.items()))
            if self.path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter"):
                self._bytes(200, b"Success", content_type="text/plain")
                return
            chat = self.path == "/v1/chat/completions"
            if self.path != "/v1/completions" and not chat:
                self._json(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                body = json.loads(raw)
                assert isinstance(body, dict)
            except (ValueError, AssertionError):
                self._json(400, {"error": {"message": "body is not a JSON object"}})
                return
            fault = server.draw()
            if fault is not None:
                with server._lock:
                    server.faults[fault] += 1
                self._fault(fault, body, chat)
                return
            lo, hi = server.latency
            if hi > 0:
                time.sleep(random.uniform(lo, hi))
            text, finish = canned_text(body)
            with server._lock:
                server.ok += 1
            self._json(200, completion(body, text, finish, chat))

        def _fault(self, fault: str, body: dict, chat: bool) -> None:
            if fault == "500":
                # Like a careless proxy, echo the request's credentials: the client must mask them.
                auth = self.headers.get("Authorization", "none")
                self._json(500, {"error": {"message": f"internal server error (injected; auth {auth})"}})
            elif fault == "429":
                self._json(
                    429,
                    {"error": {"message": "too many requests (injected)"}},
                    {"Retry-After": server.retry_after},
                )
            elif fault == "timeout":
                server._stop.wait(server.timeout_sleep)
                try:
                    text, finish = canned_text(body)
                    self._json(200, completion(body, text, finish, chat))
                except OSError:
                    pass  # the client gave up long ago
            elif fault == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()
            elif fault == "empty":
                self._json(200, completion(body, "", "stop", chat))
            elif fault == "garbage":
                if random.random() < 0.5:
                    self._bytes(200, b"<html><body>502 Bad Gateway</body></html>", content_type="text/html")
                else:
                    self._json(200, {"object": "error", "detail": "no choices here"})
            elif fault == "cutoff":
                text, finish = canned_text(body)
                data = json.dumps(completion(body, text, finish, chat)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

    return Handler


def parse_rates(text: str) -> dict[str, float]:
    """`500=0.1,429=0.05` -> {"500": 0.1, "429": 0.05}."""
    rates = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        rates[name.strip()] = float(value)
    return rates


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rates", default="", help="fault=rate,... e.g. 500=0.1,429=0.05,reset=0.05")
    parser.add_argument("--retry-after", default="0")
    parser.add_argument("--timeout-sleep", type=float, default=3.0)
    parser.add_argument("--latency", default="0,0", help="min,max seconds per normal completion")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    lo, hi = (float(x) for x in args.latency.split(","))
    server = FaultServer(
        parse_rates(args.rates),
        retry_after=args.retry_after,
        timeout_sleep=args.timeout_sleep,
        latency=(lo, hi),
        seed=args.seed,
        port=args.port,
    )
    print(f"listening {server.url}", flush=True)
    try:
        server.httpd.serve_forever(0.05)
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
        sys.stdout.flush()


if __name__ == "__main__":
    main()
