"""Disk full: the run stops with one clear line and leaves no corrupted file; once there is room
again, the same command finishes the round.

Two ways to run out: the run directory on a 96 KiB tmpfs (needs root and mount permission,
skipped otherwise), and a per-process file-size limit (RLIMIT_FSIZE, with SIGXFSZ ignored so a
write past it fails with EFBIG instead of killing the process), which needs no privilege.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
from pathlib import Path

import pytest

from tests.faults.fault_server import FaultServer
from tests.reliability.harness import (
    check_complete,
    check_interrupted,
    cli,
    cli_env,
    error_line,
    leftover_temporaries,
    run_config,
    stage_of,
    write_config,
)

pytestmark = pytest.mark.slow


def _mount(path: Path, size: str) -> str | None:
    """Mount a tmpfs of `size` at `path`; the reason it cannot be done, or None."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True
    )
    return None if done.returncode == 0 else f"mount -t tmpfs not permitted here: {done.stderr.strip()}"


def _run(config: Path, run_dir: Path, preexec=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        cli("run", "--config", str(config), "--run-dir", str(run_dir)),
        capture_output=True,
        text=True,
        timeout=600,
        env=cli_env(),
        preexec_fn=preexec,
    )


def test_full_disk_stops_cleanly_and_the_run_resumes_when_there_is_room(tmp_path, tiny):
    mnt = tmp_path / "small"
    mnt.mkdir()
    reason = _mount(mnt, "96k")
    if reason:
        pytest.skip(reason)
    run_dir = mnt / "run"
    try:
        with FaultServer() as server:
            config = write_config(tmp_path / "run.yaml", server.url, tiny)
            full = _run(config, run_dir)
            assert full.returncode == 1, full.stdout[-2000:] + full.stderr[-2000:]
            line = error_line(full.stderr)
            assert (
                "disk full" in line and "No space left on device" in line and "run the same command" in line
            )
            assert stage_of(run_dir) != "done"
            assert (
                check_interrupted(run_dir) == []
            )  # every JSON(L) file whole; a torn tail only where repaired
            assert leftover_temporaries(run_dir) == []  # failed atomic writes removed their temporaries

            subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
            again = _run(config, run_dir)
            assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
            assert check_complete(run_dir, run_config(server.url, tiny)) == []
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_file_size_limit_stops_cleanly(tmp_path, tiny):
    run_dir = tmp_path / "run"
    with FaultServer() as server:
        config = write_config(tmp_path / "run.yaml", server.url, tiny)
        done = _run(config, run_dir, _file_size_limit(24 * 1024))  # the extensions outgrow it
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    line = error_line(done.stderr)
    assert "file too large" in line and "ulimit -f" in line, line
    assert stage_of(run_dir) != "done"
    assert check_interrupted(run_dir) == []
    assert leftover_temporaries(run_dir) == []
