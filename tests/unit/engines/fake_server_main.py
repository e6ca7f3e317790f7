"""A stand-in server process for ManagedServer tests: `python fake_server_main.py --port P [--mode M]`.

Modes: ok (answers /v1/models and completions), stubborn (ignores SIGTERM), crash (exits at
once), never (never answers); --die-on-post N crashes mid-request. Prints a line on start, so
the log can be checked. With --child it also forks a grandchild that records its pid in a file
(to check the process group is stopped).
"""

import argparse
import json
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--mode", default="ok")
parser.add_argument("--pidfile", default="")
parser.add_argument("--record", default="", help="append each POST's path and body to this file")
parser.add_argument(
    "--die-on-post", type=int, default=0, help="exit (status 9, no answer) on the Nth POST: a crash"
)
args = parser.parse_args()

print(f"fake server starting on {args.port} in mode {args.mode}", flush=True)
if args.mode == "crash":
    print("fatal: no GPU found", flush=True)
    sys.exit(3)
if args.mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if args.pidfile:
    pid = os.fork()
    if pid == 0:  # a worker, like vLLM's engine processes
        while True:
            time.sleep(1)
    with open(args.pidfile, "w") as f:
        f.write(f"{os.getpid()} {pid}")
if args.mode == "never":
    while True:
        time.sleep(1)


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def _reply(self, data):
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._reply({"data": [{"id": "base"}]})

    posts = 0

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        Handler.posts += 1
        if Handler.posts == args.die_on_post:
            print("fatal: segmentation fault (simulated)", flush=True)
            os._exit(9)
        if args.record:
            with open(args.record, "a") as f:
                f.write(f"{os.getpid()} {self.path} {body.decode()}\n")
        self._reply(
            {
                "choices": [
                    {"message": {"role": "assistant", "content": "served."}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1},
            }
        )


HTTPServer(("127.0.0.1", args.port), Handler).serve_forever()
