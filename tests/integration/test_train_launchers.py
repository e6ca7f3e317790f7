"""Real training through each launcher on the embedded model (tiny: 4 rows, 1-2 steps, CPU).

The `accelerate` launcher runs a true 2-process `accelerate launch` (torchrun, DDP over gloo on
CPU) with the shipped multi_gpu config, and must write an adapter in the same format as the
in-process launcher on the same data.
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest

from selflengthen.config import Config
from selflengthen.errors import TrainingError
from selflengthen.model import resolve_base
from selflengthen.store import adapter_complete, round_dir
from selflengthen.train.launch import train_role

pytestmark = pytest.mark.slow

FIXTURE = Path(__file__).parent.parent / "unit" / "train" / "prompt_completion.jsonl"
ROLE = "generator"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(**train) -> Config:
    return Config(
        model={"device": "cpu"},
        train={"max_steps": 2, "max_length": 256, "save_steps": 50, "warmup_ratio": 0.0, **train},
    )


def _round(tmp_path: Path, name: str):
    rd = round_dir(tmp_path / name, 1)
    rd.sft_dir.mkdir(parents=True)
    shutil.copy(FIXTURE, rd.sft(ROLE))
    return rd


@pytest.fixture(scope="module")
def base() -> str:
    return resolve_base("embedded")


@pytest.fixture(scope="module")
def in_process_adapter(base, tmp_path_factory) -> Path:
    rd = _round(tmp_path_factory.mktemp("inproc"), "run")
    stats = train_role(_config(), base, rd, ROLE, None)
    assert stats["steps"] == 2 and stats["processes"] == 1
    return rd.adapter(ROLE)


def _format(adapter: Path) -> dict:
    from safetensors import safe_open

    config = json.loads((adapter / "adapter_config.json").read_text())
    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as f:
        tensors = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
    return {
        "files": sorted(p.name for p in adapter.iterdir()),
        "config_keys": sorted(config),
        "target_modules": sorted(config["target_modules"]),
        "r": config["r"],
        "lora_alpha": config["lora_alpha"],
        "peft_type": config["peft_type"],
        "task_type": config["task_type"],
        "tensors": tensors,
    }


def _loads_with_peft(base: str, adapter: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), str(adapter)
    )
    lora = [n for n, _ in model.named_parameters() if "lora_B" in n]
    assert lora and model.active_adapter == "default"


def test_accelerate_two_processes_writes_the_same_adapter(base, in_process_adapter, tmp_path):
    rd = _round(tmp_path, "run")
    config = _config(launcher="accelerate", num_processes=2, main_process_port=_free_port())
    stats = train_role(config, base, rd, ROLE, None)
    out = rd.adapter(ROLE)
    assert adapter_complete(out)
    assert stats["processes"] == 2 and stats["steps"] == 2 and stats["examples"] == 4
    assert json.loads((out / "training_stats.json").read_text()) == stats
    assert _format(out) == _format(in_process_adapter)
    log = (rd.work / f"train-{ROLE}.log").read_text()
    assert "accelerate launch --config_file" in log and "multi_gpu.yaml --num_processes 2" in log
    assert not (rd.work / f"train-{ROLE}").exists()  # checkpoints removed once the adapter is in place
    assert not list(rd.adapters.glob(".*tmp*"))  # one writer, no leftovers from the other rank
    _loads_with_peft(base, out)


def test_subprocess_launcher_one_step_then_continue(base, in_process_adapter, tmp_path):
    rd = _round(tmp_path, "run")
    config = _config(launcher="subprocess", max_steps=1)
    stats = train_role(config, base, rd, ROLE, in_process_adapter)  # round k continues round k-1's adapter
    out = rd.adapter(ROLE)
    assert (
        stats["steps"] == 1 and stats["processes"] == 1 and stats["continued_from"] == str(in_process_adapter)
    )
    assert _format(out)["files"] == _format(in_process_adapter)["files"]
    assert (rd.work / f"train-{ROLE}.log").is_file() and (rd.work / f"train-{ROLE}.config.json").is_file()
    _loads_with_peft(base, out)


def test_subprocess_launcher_failure_carries_the_reason(base, tmp_path):
    rd = _round(tmp_path, "run")
    config = _config(launcher="subprocess", max_length=8)  # every example is longer: nothing to train on
    with pytest.raises(TrainingError) as err:
        train_role(config, base, rd, ROLE, None)
    message = str(err.value)
    assert message.startswith("training the generator failed: no training examples left")
    assert str(rd.work / f"train-{ROLE}.log") in message
    assert not rd.adapter(ROLE).exists()
