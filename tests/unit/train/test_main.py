"""`python -m selflengthen.train`: argument parsing, the config JSON, and errors as exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import selflengthen.train.sft as sft
from selflengthen.config import TrainConfig
from selflengthen.errors import ConfigError, TrainingError
from selflengthen.train import __main__ as entry


def test_help_runs():
    out = subprocess.run(
        [sys.executable, "-m", "selflengthen.train", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "--config-json" in out.stdout and "--init-adapter" in out.stdout


def test_load_train_config_inline_and_file(tmp_path):
    tc = TrainConfig(max_steps=3, lora={"r": 4})
    assert entry.load_train_config(tc.model_dump_json()) == tc
    path = tmp_path / "c.json"
    path.write_text(tc.model_dump_json())
    assert entry.load_train_config(str(path)) == tc


@pytest.mark.parametrize("value, match", [("/no/such.json", "no such file"), ("{not json", "not JSON"),
                                          ('{"max_step": 2}', "did you mean 'max_steps'")])  # fmt: skip
def test_load_train_config_errors(value, match):
    with pytest.raises(ConfigError, match=match):
        entry.load_train_config(value)


def _argv(tmp_path, *extra):
    return ["--base", "/m", "--data", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "a"),
            "--config-json", '{"max_steps": 1}', *extra]  # fmt: skip


def test_main_calls_train_adapter(tmp_path, monkeypatch, capsys):
    seen = {}
    monkeypatch.setattr(sft, "train_adapter", lambda **kw: seen.update(kw) or {"steps": 1})
    argv = _argv(
        tmp_path, "--init-adapter", "/prev", "--work-dir", "/w", "--device", "cpu", "--dtype", "float32"
    )
    assert entry.main(argv) == 0
    assert (
        seen["base"] == "/m" and seen["out_dir"] == tmp_path / "a" and seen["init_adapter"] == Path("/prev")
    )
    assert seen["work_dir"] == Path("/w") and seen["device"] == "cpu" and seen["dtype"] == "float32"
    assert seen["train_config"].max_steps == 1 and seen["gradient_checkpointing"] is False
    assert capsys.readouterr().out.strip() == '{"steps": 1}'


def test_main_turns_our_errors_into_exit_status(tmp_path, monkeypatch, capsys):
    def fail(**kw):
        raise TrainingError("no training examples left in d.jsonl")

    monkeypatch.setattr(sft, "train_adapter", fail)
    assert entry.main(_argv(tmp_path)) == TrainingError.exit_code
    assert capsys.readouterr().err.strip() == "Error: no training examples left in d.jsonl"
    argv = _argv(tmp_path)
    argv[-1] = '{"launcher": "ray"}'
    assert entry.main(argv) == 2
    assert capsys.readouterr().err.startswith("Error: ")


def test_trained_tokens_reads_trls_logged_count():
    from transformers import TrainerState

    from selflengthen.train.sft import trained_tokens

    state = TrainerState()
    state.log_history = [
        {"loss": 2.0, "num_tokens": 300.0, "step": 1},
        {"loss": 1.5, "num_tokens": 671.0, "step": 2},
        {"train_runtime": 3.0, "step": 2},
    ]
    assert trained_tokens(state) == 671
    state.log_history = []
    state.num_input_tokens_seen = 55
    assert trained_tokens(state) == 55
    state.num_input_tokens_seen = 0
    assert trained_tokens(state) == 0
