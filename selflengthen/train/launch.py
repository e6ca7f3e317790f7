"""Where training runs: in this process, in a child process, or under `accelerate launch`.

`train.launcher` picks one (config.py documents the fields):

- `in_process` (default): `train_adapter` in this Python process. Laptop CPU, one GPU.
- `subprocess`: `python -m selflengthen.train` in a child; its output goes to
  `RUN/round-K/work/train-ROLE.log`, so a crash in training (out of memory, a CUDA error)
  is reported with the log's tail instead of taking the run down.
- `accelerate`: `accelerate launch --config_file <yaml> ... -m selflengthen.train ...` with a
  shipped config (multi_gpu = DDP, zero3 = DeepSpeed ZeRO-3, fsdp2 = FSDP2, in
  `selflengthen/train/accelerate/`) or your own YAML. Multi-node: every node runs the same
  command with its own `--machine_rank`; `format_multinode_command` gives that line with
  `$SLURM_NODEID` in place of the rank, to put in an `srun` script. The run directory must be
  on a file system every node sees.

No distributed code of our own: accelerate (torchrun) starts the processes; TRL's trainer
does the rest; only the main process writes the adapter.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from selflengthen.config import Config, TrainConfig
from selflengthen.errors import ConfigError, TrainingError
from selflengthen.model import pick_device
from selflengthen.store import RoundDir, adapter_complete, atomic_write_json
from selflengthen.train.sft import TrainingStopped, load_stats, train_adapter

log = logging.getLogger(__name__)

SHIPPED_ACCELERATE_CONFIGS = ("multi_gpu", "zero3", "fsdp2")
SLURM_MACHINE_RANK = "$SLURM_NODEID"  # srun sets it to 0..N-1 on each node
LOG_TAIL_LINES = 40


# ---------------------------------------------------------------- commands


def accelerate_config_path(name_or_path: str) -> Path:
    """The YAML for `train.accelerate_config`: a shipped name or a path to the user's own file."""
    if name_or_path in SHIPPED_ACCELERATE_CONFIGS:
        return Path(str(resources.files("selflengthen.train") / "accelerate" / f"{name_or_path}.yaml"))
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"'{name_or_path}' is neither a shipped accelerate config "
            f"({', '.join(SHIPPED_ACCELERATE_CONFIGS)}) nor an existing YAML file",
            field="train.accelerate_config",
        )
    return path.resolve()


def train_module_args(
    *,
    base: str,
    data: Path,
    out_dir: Path,
    config_json: str | Path,
    init_adapter: Path | None = None,
    work_dir: Path | None = None,
    device: str = "auto",
    dtype: str = "auto",
) -> list[str]:
    """The arguments of `python -m selflengthen.train` (see train/__main__.py)."""
    args = [
        "--base",
        str(base),
        "--data",
        str(data),
        "--out",
        str(out_dir),
        "--config-json",
        str(config_json),
    ]
    if init_adapter is not None:
        args += ["--init-adapter", str(init_adapter)]
    if work_dir is not None:
        args += ["--work-dir", str(work_dir)]
    return args + ["--device", device, "--dtype", dtype]


def build_subprocess_command(module_args: Sequence[str], python: str | None = None) -> list[str]:
    return [python or sys.executable, "-m", "selflengthen.train", *module_args]


def _train_config(config: Config | TrainConfig) -> TrainConfig:
    return config.train if isinstance(config, Config) else config


def resolve_num_processes(config: Config | TrainConfig, device: str = "auto") -> int:
    """`train.num_processes`, or (GPUs on this machine, at least 1) x `train.num_machines`."""
    tc = _train_config(config)
    if tc.num_processes:
        return tc.num_processes
    gpus = 0
    if not device.startswith("cpu"):
        import torch

        gpus = torch.cuda.device_count()
    return max(gpus, 1) * tc.num_machines


def build_accelerate_command(
    config: Config | TrainConfig,
    module_args: Sequence[str],
    *,
    num_processes: int | None = None,
    machine_rank: int | str | None = None,
) -> list[str]:
    """`accelerate launch --config_file <yaml> --num_processes N --num_machines M --machine_rank R
    --main_process_ip IP --main_process_port P -m selflengthen.train <module_args>`.

    `num_processes` is the total over all machines (accelerate's meaning); default from
    `resolve_num_processes`. `machine_rank` defaults to `train.machine_rank`."""
    tc = _train_config(config)
    n = num_processes if num_processes is not None else resolve_num_processes(tc)
    rank = tc.machine_rank if machine_rank is None else machine_rank
    return [
        "accelerate", "launch",
        "--config_file", str(accelerate_config_path(tc.accelerate_config)),
        "--num_processes", str(n),
        "--num_machines", str(tc.num_machines),
        "--machine_rank", str(rank),
        "--main_process_ip", tc.main_process_ip,
        "--main_process_port", str(tc.main_process_port),
        "-m", "selflengthen.train",
        *module_args,
    ]  # fmt: skip


def format_multinode_command(
    config: Config | TrainConfig,
    module_args: Sequence[str],
    *,
    num_processes: int | None = None,
    machine_rank: str = SLURM_MACHINE_RANK,
) -> str:
    """The shell line each node runs, for a SLURM script (`srun --ntasks-per-node=1 bash -c '...'`).

    The machine rank is left as the shell variable `machine_rank` (default `$SLURM_NODEID`,
    which srun sets to 0..N-1), so one line serves every node; everything else is quoted."""
    argv = build_accelerate_command(config, module_args, num_processes=num_processes, machine_rank="@RANK@")
    return " ".join(f'"{machine_rank}"' if a == "@RANK@" else shlex.quote(a) for a in argv)


# ---------------------------------------------------------------- running a command with its log in the run


def run_logged(
    cmd: Sequence[str],
    log_path: Path,
    *,
    env: dict[str, str] | None = None,
    what: str = "training",
    stop: threading.Event | None = None,
) -> None:
    """Run `cmd` with stdout and stderr appended to `log_path`; a non-zero exit raises TrainingError
    with the error line and the log's tail. Ctrl-C, an exception here or `stop` (set by the caller
    from another thread) stops the child."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    with open(log_path, "a", encoding="utf-8") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(cmd)}\n")
        out.flush()
        try:
            proc = subprocess.Popen(
                list(cmd), stdout=out, stderr=subprocess.STDOUT, env=full_env, start_new_session=True
            )
        except OSError as exc:
            raise TrainingError(f"cannot start {what}: {cmd[0]}: {exc}") from exc
        try:
            rc = _wait(proc, stop)
        except BaseException:
            _stop(proc)
            raise
    if rc != 0:
        tail = log_tail(log_path)
        errors = [line for line in tail.splitlines() if line.startswith("Error: ")]
        reason = errors[-1][len("Error: ") :] if errors else f"exit status {rc}"
        raise TrainingError(f"{what} failed: {reason} (log: {log_path}); last lines:\n{tail}")


def _wait(proc: subprocess.Popen, stop: threading.Event | None) -> int:
    """The child's exit status; raises TrainingStopped as soon as `stop` is set."""
    while True:
        try:
            return proc.wait(timeout=None if stop is None else 0.2)
        except subprocess.TimeoutExpired:
            if stop is not None and stop.is_set():
                raise TrainingStopped("training was stopped") from None


def _stop(proc: subprocess.Popen) -> None:
    """Stop the child and everything it started (accelerate's workers): it leads its own session."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _accelerate_executable() -> str:
    sibling = Path(sys.executable).parent / "accelerate"
    found = str(sibling) if sibling.is_file() else shutil.which("accelerate")
    if not found:
        raise TrainingError("train.launcher is 'accelerate' but the `accelerate` command is not installed")
    return found


# ---------------------------------------------------------------- one training, whichever the launcher


def run_training(
    tc: TrainConfig,
    *,
    base: str,
    data: Path,
    out_dir: Path,
    work_dir: Path,
    log_path: Path,
    config_json: Path,
    device: str,
    dtype: str,
    init_adapter: Path | None = None,
    full: bool = False,
    what: str = "training",
    stop: threading.Event | None = None,
) -> dict:
    """Train into `out_dir` with `tc.launcher`: `train_adapter` in this process, or the module entry
    point in a child (`subprocess`, `accelerate`), whose TrainConfig goes to `config_json` and whose
    output goes to `log_path`. `full` trains every weight, in this process only. Setting `stop` from
    another thread ends the training early with TrainingStopped."""
    if tc.launcher == "in_process":
        return train_adapter(
            base=base,
            data=data,
            out_dir=out_dir,
            train_config=tc,
            init_adapter=init_adapter,
            work_dir=work_dir,
            device=device,
            dtype=dtype,
            gradient_checkpointing=tc.gradient_checkpointing,
            full=full,
            stop=stop,
        )
    if full:
        raise ConfigError(
            "final.method 'full' trains in this process only; set train.launcher=in_process "
            "(or final.method=lora to use the subprocess/accelerate launchers)",
            field="train.launcher",
        )
    atomic_write_json(config_json, tc.model_dump(mode="json"))
    module_args = train_module_args(
        base=base,
        data=data,
        out_dir=out_dir,
        config_json=config_json,
        init_adapter=init_adapter,
        work_dir=work_dir,
        device=device,
        dtype=dtype,
    )
    return launch_training(tc, module_args, out_dir, log_path, device, what=what, stop=stop)


def train_role(
    config: Config,
    base: str,
    rd: RoundDir,
    role: str,
    init_adapter: Path | None,
    *,
    stop: threading.Event | None = None,
) -> dict:
    """Train `role`'s adapter of round `rd` with the configured launcher; returns its stats."""
    return run_training(
        config.train.for_round(rd.k),
        base=base,
        log_path=rd.work / f"train-{role}.log",
        **_role_paths(rd, role),
        device=pick_device(config.model.device),
        dtype=config.model.dtype,
        init_adapter=init_adapter,
        what=f"training the {role}",
        stop=stop,
    )


def _role_paths(rd: RoundDir, role: str) -> dict[str, Any]:
    """Where a role's training reads and writes within its round."""
    return {
        "data": rd.sft(role),
        "out_dir": rd.adapter(role),
        "work_dir": rd.work / f"train-{role}",
        "config_json": rd.work / f"train-{role}.config.json",
    }


def role_module_args(
    config: Config, base: str, rd: RoundDir, role: str, init_adapter: Path | None
) -> list[str]:
    """Write the role's TrainConfig beside its log and return the `-m selflengthen.train` arguments
    (for `format_multinode_command` too: the paths must be the same on every node)."""
    paths = _role_paths(rd, role)
    atomic_write_json(paths["config_json"], config.train.for_round(rd.k).model_dump(mode="json"))
    return train_module_args(
        base=base,
        init_adapter=init_adapter,
        device=pick_device(config.model.device),
        dtype=config.model.dtype,
        **paths,
    )


def launch_training(
    tc: TrainConfig,
    module_args: list[str],
    out_dir: Path,
    log_path: Path,
    device: str,
    *,
    what: str = "training",
    stop: threading.Event | None = None,
) -> dict:
    """Run the `subprocess` or `accelerate` launcher for prepared module arguments."""
    env: dict[str, Any] = {}
    if tc.launcher == "subprocess":
        cmd = build_subprocess_command(module_args)
    else:
        cmd = build_accelerate_command(tc, module_args, num_processes=resolve_num_processes(tc, device))
        if tc.num_machines > 1:
            line = format_multinode_command(
                tc, module_args, num_processes=int(cmd[cmd.index("--num_processes") + 1])
            )
            log.warning(
                "multi-node training: run this on every node (machine_rank %s here):\n%s",
                tc.machine_rank,
                line,
            )
        if device.startswith("cpu"):
            env["ACCELERATE_USE_CPU"] = "true"  # DDP over gloo on CPU machines
            if tc.accelerate_config in ("zero3", "fsdp2"):
                # accelerate 1.15's AcceleratorState.__init__ takes DeepSpeed only `if ... and not cpu`, and
                # the FSDP plugin only for GPU-like distributed types (MULTI_CPU is not among them): on CPU
                # both train as plain DDP over gloo.
                log.warning(
                    "train.accelerate_config %s on CPU: accelerate trains it as DDP over gloo "
                    "(no sharding); the adapter is the same",
                    tc.accelerate_config,
                )
        cmd = [_accelerate_executable(), *cmd[1:]]
    run_logged(cmd, log_path, env=env, what=what, stop=stop)
    if not adapter_complete(out_dir):
        if tc.launcher == "accelerate" and tc.machine_rank != 0:
            return {"machine_rank": tc.machine_rank}  # rank 0 writes the adapter
        raise TrainingError(f"{what} ended without writing an adapter to {out_dir} (log: {log_path})")
    return load_stats(out_dir)


async def train_off_loop(train: Callable[..., dict], /, *args: Any, **kwargs: Any) -> dict:
    """Await `train(*args, stop=..., **kwargs)` in a worker thread, so the event loop stays free while
    a model trains. When the awaiting task is cancelled (Ctrl-C in a run), the training is asked to
    stop and this waits until it has: the run lock must not be released under a training that
    still writes its checkpoints."""
    stop = threading.Event()
    worker = asyncio.ensure_future(asyncio.to_thread(train, *args, stop=stop, **kwargs))
    try:
        return await asyncio.shield(worker)
    except asyncio.CancelledError:
        stop.set()
        await asyncio.wait([worker])
        if not worker.cancelled():
            worker.exception()  # TrainingStopped, expected: retrieved so asyncio does not log it
        raise
