"""`selflengthen train RUN --round K --print-command`: the per-node line users wrap in SLURM."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from selflengthen.cli import app
from selflengthen.config import Config


def test_print_command_gives_one_accelerate_line_per_role(tmp_path):
    config = Config()
    config.model.base = str(tmp_path / "model")  # a model directory: resolve_base needs its config.json
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"version": "0", "config": config.model_dump(mode="json")}))
    result = CliRunner().invoke(
        app,
        [
            "train",
            str(run),
            "--round",
            "2",
            "--print-command",
            "--set",
            "train.launcher=accelerate",
            "--set",
            "train.num_machines=2",
            "--set",
            "train.num_processes=16",
            "--set",
            "train.main_process_ip=10.1.2.3",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 2
    for line, role in zip(lines, ("generator", "extender"), strict=True):
        assert line.startswith("accelerate launch --config_file ")
        assert (
            '--num_processes 16 --num_machines 2 --machine_rank "$SLURM_NODEID" --main_process_ip 10.1.2.3'
            in line
        )
        assert f"-m selflengthen.train --base {tmp_path / 'model'}" in line
        assert f"--out {run / 'round-2' / 'adapters' / role}" in line
    assert not (run / "round-2" / "adapters").exists()  # printing trains nothing
