"""A scriptable OpenAI-compatible HTTP server on 127.0.0.1 for engine tests.

`FakeServer(handler)` runs in a background thread; `handler(seen)` returns a `Reply` (or None
for a normal completion). Replies can be delayed, cut off mid-body or reset. Every request is
kept in `requests`, and `max_concurrent` records the most requests it ever held at once.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    json: Any


@dataclass
class Reply:
    status: int = 200
    json: Any = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    action: str | None = None  # "reset": drop the connection; "cutoff": promise more bytes than sent
    events: list[Any] | None = None  # server-sent events, one "data:" line each, then "data: [DONE]"
    event_delay: float = 0.0  # seconds between events, as a server generating tokens


def completion(
    text: str = "Hello there.", finish: str = "stop", prompt_tokens: int = 5, tokens: int = 3
) -> dict:
    return {
        "id": "cmpl-1",
        "object": "text_completion",
        "choices": [{"index": 0, "text": text, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": tokens,
            "total_tokens": prompt_tokens + tokens,
        },
    }


def chat_completion(text: str = "Hello there.", finish: str = "stop") -> dict:
    return {
        "id": "chat-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3},
    }


def default_handler(seen: Seen) -> Reply:
    if seen.path == "/v1/models":
        return Reply(json={"object": "list", "data": [{"id": "served-base", "object": "model"}]})
    if seen.path == "/v1/chat/completions":
        return Reply(json=chat_completion())
    if seen.path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter", "/load_lora_adapter"):
        return Reply(body=b"Success")
    return Reply(json=completion())


class FakeServer:
    def __init__(self, handler: Callable[[Seen], Reply | None] | None = None):
        self.handler = handler or default_handler
        self.requests: list[Seen] = []
        self.current = 0
        self.max_concurrent = 0
        self.events_sent = 0  # streamed events written before the client hung up (or all of them)
        self.hangups = 0  # streams whose client closed the connection before the end
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with outer._lock:
                    outer.requests.append(seen)
                    outer.current += 1
                    outer.max_concurrent = max(outer.max_concurrent, outer.current)
                try:
                    reply = outer.handler(seen) or default_handler(seen)
                    if reply.delay:
                        time.sleep(reply.delay)
                    self._send(reply)
                finally:
                    with outer._lock:
                        outer.current -= 1

            def _send(self, reply: Reply) -> None:
                if reply.action == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()
                    return
                if reply.events is not None:
                    self._stream(reply)
                    return
                data = reply.body if reply.body is not None else json.dumps(reply.json).encode()
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                if reply.action == "cutoff":
                    self.send_header("Content-Length", str(len(data) + 100))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, reply: Reply) -> None:
                self.send_response(reply.status)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                lines = [f"data: {json.dumps(e)}\n\n".encode() for e in reply.events or ()]
                try:
                    for line in [*lines, b"data: [DONE]\n\n"]:
                        self.wfile.write(line)
                        self.wfile.flush()
                        with outer._lock:
                            outer.events_sent += 1
                        time.sleep(reply.event_delay)
                except (BrokenPipeError, ConnectionResetError):
                    with outer._lock:
                        outer.hangups += 1

            do_GET = _serve
            do_POST = _serve

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256  # many clients connect at once

            def handle_error(self, request: Any, client_address: Any) -> None:  # a client hung up: fine
                pass

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def posts(self, path: str = "/v1/completions") -> list[Seen]:
        return [r for r in self.requests if r.method == "POST" and r.path == path]

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class FakeTokenizer:
    """Enough of a HF tokenizer for completions mode: a visible chat template, whitespace tokens."""

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        text = "".join(f"<|{m['role']}|>{m['content']}<|end|>\n" for m in messages)
        return text + ("<|assistant|>" if add_generation_prompt else "")

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": list(range(len(text.split())))}


def closed_port() -> int:
    """A loopback port nobody listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
