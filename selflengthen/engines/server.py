"""A server the run starts, waits for, feeds adapters to, and stops: vLLM, SGLang or llama.cpp.

Usage (config):
    engine: {kind: openai, server: {managed: true, preset: vllm, tensor_parallel_size: 2}}

The command comes from a preset or from `server.command`, a template with placeholders
({model} {port} ...; see ServerConfig and presets.py). The server runs in its own process group with its
output in RUN_DIR/logs/server.log; we poll GET /v1/models until it answers. `stop()` sends
SIGTERM to the group, then SIGKILL after `stop_timeout_s`; it runs at the end of the run, on
Ctrl-C (the engine's close() in a finally), at interpreter exit, on SIGTERM, and -- on Linux --
the server gets SIGTERM by itself if our process dies (PR_SET_PDEATHSIG), so a killed run never
leaves a server holding the GPUs. A server that exits by itself (a crash) is started again by
the engine that owns it, at most `engine.server.max_restarts` times (OpenAIEngine._revive).

Each round's adapters are loaded at run time under new names (lora_loading.py): vLLM's
POST /v1/load_lora_adapter (the preset sets VLLM_ALLOW_RUNTIME_LORA_UPDATING) or SGLang's
POST /load_lora_adapter. llama.cpp's own `llama-server` (preset llama-server, the fastest CPU
path) loads adapters only at start: each round's adapters are converted to GGUF (gguf_lora.py)
and the server restarts with both on `--lora`, scale 0 until a request names one. The
llama-cpp-python preset has no adapter support at run time.
"""

from __future__ import annotations

import atexit
import functools
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from selflengthen.engines.dispatch import is_loopback
from selflengthen.engines.presets import PRESETS, build_command, usable_cores, vllm_cpu_env
from selflengthen.errors import ConfigError, EngineError, ServerStartError


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now on `host` (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


_SPAWNER: ThreadPoolExecutor | None = None


def _spawner() -> ThreadPoolExecutor:
    """One thread that lives as long as the process, for starting servers off the main thread."""
    global _SPAWNER
    if _SPAWNER is None:
        _SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="selflengthen-server-start")
    return _SPAWNER


def _pdeathsig() -> None:  # pragma: no cover - runs in the child
    """Linux: the server gets SIGTERM when the process that started it dies (even by SIGKILL)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def child_env(config: Any, environ: Mapping[str, str], cores: int) -> dict[str, str]:
    """The server's environment: ours, then the preset's, then the config's `env`."""
    env = {**environ, **PRESETS[config.preset].env, **config.env}
    if config.preset == "vllm" and not config.command:  # vLLM's CPU build reads it; a GPU ignores it
        env.update(vllm_cpu_env(cores, env))
    # A preset names its console script (`vllm serve`): find this environment's even when the run
    # was started as .venv/bin/python without activating the environment.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    return env


class ManagedServer:
    """One server process: `start()` returns when it answers, `stop()` always leaves nothing running."""

    def __init__(self, config: Any, model_config: Any = None, *, run_dir: str | Path | None = None):
        self.config = config
        self.preset = PRESETS[config.preset]
        self.model_config = model_config
        if config.log_file:
            self.log_path = Path(config.log_file)
        elif run_dir is not None:
            self.log_path = Path(run_dir) / "logs" / "server.log"
        else:
            from selflengthen.model import cache_dir

            self.log_path = cache_dir() / "logs" / f"server-{os.getpid()}.log"
        self.port = config.port or free_port(config.host)
        self.process: subprocess.Popen | None = None
        self.argv: list[str] = []
        self.lora_files: list[str] = []  # llama-server: GGUF adapters given at start, ids in this order
        self._log_file: Any = None
        self._log_start = 0  # offset in the log where the current attempt's lines begin
        self._old_sigterm: Any = None
        self._lock = threading.Lock()
        # Set by SIGTERM: the run is ending, so requests still in flight must not start the server again
        # (to them it looks like a suspended server) while the run unwinds.
        self.terminated = False

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.config.host in ("0.0.0.0", "") else self.config.host
        return f"http://{host}:{self.port}"

    @property
    def context_length(self) -> int:
        return self.config.n_ctx if self.preset.uses_n_ctx else 0

    def command(self, lora_modules: dict[str, str] | None = None) -> list[str]:
        base = getattr(self.model_config, "base", None)

        def model() -> str:
            from selflengthen.model import resolve_base

            if base is None:
                raise ConfigError("the server command needs model.base", field="model.base")
            return resolve_base(base)

        def gguf() -> str:
            if self.config.gguf:
                if not Path(self.config.gguf).is_file():
                    raise ConfigError(
                        f"GGUF file '{self.config.gguf}' does not exist", field="engine.server.gguf"
                    )
                return str(self.config.gguf)
            if base == "embedded":
                from selflengthen.model import embedded_gguf

                return str(embedded_gguf())
            if base and str(base).endswith(".gguf") and Path(base).is_file():
                return str(base)
            raise ConfigError(
                f"the {self.config.preset} preset serves a GGUF file: set engine.server.gguf",
                field="engine.server.gguf",
            )

        return build_command(
            self.config,
            port=self.port,
            model=model,
            gguf=gguf,
            lora_modules=lora_modules,
            lora_files=self.lora_files,
        )

    def gguf_path(self) -> str:
        """The GGUF file a llama.cpp preset serves (the base that adapters are converted against)."""
        argv = self.command()
        return argv[argv.index("--model") + 1] if "--model" in argv else ""

    def serve_lora_files(self, files: list[str]) -> None:
        """(Re)start the server with exactly these GGUF adapters (llama-server loads adapters only at
        start)."""
        files = [str(f) for f in files]
        if files == self.lora_files and self.is_running():
            return
        self.stop()
        self.lora_files = files
        self.start()

    # ------------------------------------------------------------------ lifecycle

    def start(self, lora_modules: dict[str, str] | None = None) -> str:
        """Start the server and wait until GET /v1/models answers 200. Returns the base URL."""
        if self.process is not None and self.process.poll() is None:
            return self.base_url
        if self.terminated:
            raise EngineError("the run got SIGTERM: the managed server it stopped is not started again")
        if self.process is not None:  # it exited by itself: close its log before a new one opens
            self.stop()
        self.argv = self.command(lora_modules)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab", buffering=0)  # noqa: SIM115 - closed in stop()
        self._log_start = self._log_file.tell()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self._log_file.write(f"\n# {stamp} selflengthen starts: {shlex.join(self.argv)}\n".encode())
        env = child_env(self.config, os.environ, usable_cores())
        popen = functools.partial(
            subprocess.Popen,
            self.argv,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # its own process group: we stop the server and all its workers
            preexec_fn=_pdeathsig if sys.platform.startswith("linux") else None,  # noqa: PLW1509
        )
        try:
            # The death signal fires when the *thread* that forked the server exits, not the process.
            # A restart from an asyncio.to_thread worker would be killed when that asyncio.run ends
            # (its executor's threads exit), so off the main thread one long-lived thread forks.
            if threading.current_thread() is threading.main_thread():
                self.process = popen()
            else:
                self.process = _spawner().submit(popen).result()
        except OSError as exc:
            self._close_log()
            raise EngineError(f"cannot start the server `{self.argv[0]}`: {exc}") from None
        atexit.register(self.stop)
        self._install_sigterm()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self.base_url

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.config.ready_timeout_s
        url = self.base_url + "/v1/models"
        delay = 0.2
        while True:
            assert self.process is not None
            code = self.process.poll()
            if code is not None:
                cause = describe_exit(code)
                tail = self.log_tail()
                raise ServerStartError(
                    f"the server ({Path(self.argv[0]).name}) exited before it "
                    f"was ready ({cause}){exit_advice(code)}; "
                    f"its log ({self.log_path}) ends:\n" + tail,
                    cause=cause,
                    log_tail=tail,
                )
            try:
                if httpx.get(url, timeout=5.0, trust_env=not is_loopback(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() >= deadline:
                raise EngineError(
                    f"the server did not answer {url} within {self.config.ready_timeout_s:g}s "
                    f"(engine.server.ready_timeout_s); its log ({self.log_path}) ends:\n" + self.log_tail()
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 2.0)

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def crashed(self) -> int | None:
        """The exit status of a server that exited while we still held it (None: running, or stopped
        by us)."""
        return None if self.process is None else self.process.poll()

    def stop(self) -> int | None:
        """SIGTERM to the server's process group, SIGKILL after stop_timeout_s. Safe to call twice."""
        with self._lock:
            process, self.process = self.process, None
            code = None
            if process is not None:
                by_itself = process.poll() is not None  # it had already exited: a crash, not our stop
                code = _terminate_group(process, self.config.stop_timeout_s)
                if self._log_file is not None and not self._log_file.closed:
                    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
                    what = "found the server exited by itself" if by_itself else "stopped the server"
                    self._log_file.write(f"# {stamp} selflengthen {what} (status {code})\n".encode())
            self._close_log()
            self._restore_sigterm()
            try:
                atexit.unregister(self.stop)
            except Exception:  # pragma: no cover
                pass
            return code

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the current (or last) attempt wrote: an earlier start's lines are not mixed in."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_start)
                text = f.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(the log is empty)"

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    # SIGTERM to us (a scheduler preempting the job) must not orphan the server: stop it, then let
    # the previous handler (by default: die by SIGTERM) run.
    def _install_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread() or self._old_sigterm is not None:
            return
        previous = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum: int, frame: Any) -> None:
            self.terminated = True
            self.stop()
            if callable(previous):
                previous(signum, frame)
            elif previous != signal.SIG_IGN:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGTERM)

        signal.signal(signal.SIGTERM, on_sigterm)
        self._old_sigterm = (previous, on_sigterm)

    def _restore_sigterm(self) -> None:
        if self._old_sigterm is None or threading.current_thread() is not threading.main_thread():
            return
        previous, ours = self._old_sigterm
        self._old_sigterm = None
        if signal.getsignal(signal.SIGTERM) is ours:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)

    def __enter__(self) -> ManagedServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def describe_exit(code: int) -> str:
    """'status 1' or 'killed by SIGILL: illegal instruction' for a Popen return code."""
    if code >= 0:
        return f"status {code}"
    try:
        sig = signal.Signals(-code)
    except ValueError:
        return f"killed by signal {-code}"
    meaning = signal.strsignal(sig) or ""
    return f"killed by {sig.name}" + (f": {meaning.lower()}" if meaning else "")


def exit_advice(code: int) -> str:
    """What to do about a server that died by a signal before it was ready ('' when nothing to add)."""
    if code in (-signal.SIGILL, -signal.SIGSEGV, -signal.SIGBUS):
        return (
            ": a llama.cpp binary built for instructions this CPU cannot run "
            "does this; rebuild llama.cpp without the cache "
            "(`bash scripts/setup.sh` checks and rebuilds it) or use `--set engine.kind=transformers`"
        )
    if code == -signal.SIGKILL:
        return ": often the kernel's out-of-memory killer (see `dmesg`)"
    return ""


def _terminate_group(process: subprocess.Popen, timeout: float) -> int | None:
    def signal_group(sig: int) -> None:
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                process.send_signal(sig)
            except ProcessLookupError:
                pass

    if process.poll() is None:
        signal_group(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            signal_group(signal.SIGKILL)
            process.wait()
    # Workers the server forked may outlive it: the group gets a last SIGKILL either way.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return process.returncode
