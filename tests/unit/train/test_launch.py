"""The launchers' exact commands, the shipped accelerate configs, and the dispatch of train_role
(training itself is faked here; tests/integration/test_train_launchers.py runs it for real)."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

import selflengthen.train.launch as launch
from selflengthen.config import Config, TrainConfig
from selflengthen.errors import ConfigError, TrainingError
from selflengthen.store import round_dir

SHIPPED = Path(launch.__file__).parent / "accelerate"
ARGS = ["--base", "/m", "--data", "/r/sft.jsonl", "--out", "/r/adapter", "--config-json", "/r/c.json"]


# ---------------------------------------------------------------- config fields


def test_train_config_launcher_defaults():
    tc = TrainConfig()
    assert tc.launcher == "in_process" and tc.accelerate_config == "multi_gpu"
    assert (tc.num_processes, tc.num_machines, tc.machine_rank) == (0, 1, 0)
    assert (tc.main_process_ip, tc.main_process_port) == ("127.0.0.1", 29500)


@pytest.mark.parametrize(
    "bad",
    [
        {"launcher": "torchrun"},
        {"machine_rank": 2, "num_machines": 2},
        {"main_process_port": 0},
        {"num_machines": 0},
    ],
)
def test_train_config_rejects(bad):
    with pytest.raises(ValidationError):
        TrainConfig(**bad)


# ---------------------------------------------------------------- shipped accelerate configs


@pytest.mark.parametrize(
    "name, kind", [("multi_gpu", "MULTI_GPU"), ("zero3", "DEEPSPEED"), ("fsdp2", "FSDP")]
)
def test_shipped_accelerate_configs_load(name, kind):
    from accelerate.commands.config.config_args import load_config_from_file

    path = launch.accelerate_config_path(name)
    assert path == SHIPPED / f"{name}.yaml" and path.is_file()
    loaded = load_config_from_file(str(path))
    assert loaded.distributed_type.value == kind
    assert loaded.compute_environment.value == "LOCAL_MACHINE"
    if name == "zero3":
        ds = loaded.deepspeed_config
        assert ds["zero_stage"] == 3 and ds["zero3_save_16bit_model"] is True
        assert ds["deepspeed_multinode_launcher"] == "standard"  # one launch per node, as SLURM runs it
    if name == "fsdp2":
        assert loaded.fsdp_config["fsdp_version"] == 2
        assert loaded.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    if name == "multi_gpu":
        assert loaded.mixed_precision == "no"  # bf16 comes from the trainer on GPU; CPU stays fp32


def test_accelerate_config_own_file_and_missing(tmp_path):
    own = tmp_path / "mine.yaml"
    own.write_text("distributed_type: MULTI_GPU\n")
    assert launch.accelerate_config_path(str(own)) == own.resolve()
    with pytest.raises(ConfigError) as err:
        launch.accelerate_config_path("zero2")
    assert err.value.field == "train.accelerate_config" and "multi_gpu, zero3, fsdp2" in str(err.value)


# ---------------------------------------------------------------- exact commands


def test_build_accelerate_command_exact():
    tc = TrainConfig(
        launcher="accelerate",
        accelerate_config="zero3",
        num_processes=16,
        num_machines=2,
        machine_rank=1,
        main_process_ip="10.0.0.1",
        main_process_port=29555,
    )
    assert launch.build_accelerate_command(tc, ARGS) == [
        "accelerate", "launch",
        "--config_file", str(SHIPPED / "zero3.yaml"),
        "--num_processes", "16",
        "--num_machines", "2",
        "--machine_rank", "1",
        "--main_process_ip", "10.0.0.1",
        "--main_process_port", "29555",
        "-m", "selflengthen.train",
        *ARGS,
    ]  # fmt: skip


def test_build_accelerate_command_takes_whole_config_and_overrides():
    config = Config(train={"launcher": "accelerate", "num_processes": 4})
    cmd = launch.build_accelerate_command(config, ARGS, num_processes=2, machine_rank="0")
    assert cmd[:12] == [
        "accelerate", "launch", "--config_file", str(SHIPPED / "multi_gpu.yaml"),
        "--num_processes", "2", "--num_machines", "1", "--machine_rank", "0",
        "--main_process_ip", "127.0.0.1",
    ]  # fmt: skip
    assert cmd[12:16] == ["--main_process_port", "29500", "-m", "selflengthen.train"]


def test_resolve_num_processes():
    assert launch.resolve_num_processes(TrainConfig(num_processes=3)) == 3
    assert launch.resolve_num_processes(TrainConfig(num_machines=4), device="cpu") == 4


def test_format_multinode_command_for_slurm():
    tc = TrainConfig(
        accelerate_config="fsdp2",
        num_processes=16,
        num_machines=2,
        main_process_ip="node-01",
        main_process_port=29600,
    )
    args = [*ARGS[:-1], "/runs/my run/c.json"]  # a path with a space is quoted
    line = launch.format_multinode_command(tc, args)
    assert line == (
        f"accelerate launch --config_file {SHIPPED / 'fsdp2.yaml'} --num_processes 16 --num_machines 2 "
        '--machine_rank "$SLURM_NODEID" --main_process_ip node-01 --main_process_port 29600 '
        "-m selflengthen.train --base /m --data /r/sft.jsonl --out /r/adapter "
        "--config-json '/runs/my run/c.json'"
    )
    # what bash runs on node 1: the placeholder expands, everything else stays one word
    words = shlex.split(line.replace('"$SLURM_NODEID"', "1"))
    assert words[words.index("--machine_rank") + 1] == "1" and words[-1] == "/runs/my run/c.json"
    assert '"$RANK"' in launch.format_multinode_command(tc, args, machine_rank="$RANK")


def test_module_args_and_subprocess_command():
    args = launch.train_module_args(
        base="/m", data=Path("/d.jsonl"), out_dir=Path("/o"), config_json="/c.json", device="cpu"
    )
    assert args == [
        "--base", "/m", "--data", "/d.jsonl", "--out", "/o", "--config-json", "/c.json",
        "--device", "cpu", "--dtype", "auto",
    ]  # fmt: skip
    args = launch.train_module_args(
        base="/m", data=Path("/d.jsonl"), out_dir=Path("/o"), config_json="/c.json",
        init_adapter=Path("/prev"), work_dir=Path("/w"), device="cuda", dtype="bfloat16",
    )  # fmt: skip
    assert args[8:] == [
        "--init-adapter",
        "/prev",
        "--work-dir",
        "/w",
        "--device",
        "cuda",
        "--dtype",
        "bfloat16",
    ]
    assert launch.build_subprocess_command(args) == [sys.executable, "-m", "selflengthen.train", *args]


# ---------------------------------------------------------------- running a child with its log


def test_run_logged_appends_output(tmp_path):
    log = tmp_path / "work" / "train.log"
    launch.run_logged(
        [sys.executable, "-c", "print('step 1'); import sys; print('warn', file=sys.stderr)"], log
    )
    launch.run_logged([sys.executable, "-c", "print('again')"], log)
    text = log.read_text()
    assert "step 1" in text and "warn" in text and "again" in text and text.count("=== ") == 2


def test_run_logged_failure_raises_with_error_line_and_tail(tmp_path):
    log = tmp_path / "train.log"
    script = (
        "import sys\nfor i in range(100): print('line', i)\n"
        "print('Error: no training examples left', file=sys.stderr)\nsys.exit(1)"
    )
    with pytest.raises(TrainingError) as err:
        launch.run_logged([sys.executable, "-c", script], log, what="training the generator")
    message = str(err.value)
    assert message.startswith("training the generator failed: no training examples left")
    assert str(log) in message and "line 99" in message and "line 10\n" not in message


def test_run_logged_crash_without_error_line(tmp_path):
    with pytest.raises(TrainingError, match="exit status 3"):
        launch.run_logged([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "t.log")


def test_run_logged_missing_program(tmp_path):
    with pytest.raises(TrainingError, match="cannot start"):
        launch.run_logged([str(tmp_path / "nope")], tmp_path / "t.log")


# ---------------------------------------------------------------- train_role dispatch


def _round(tmp_path):
    rd = round_dir(tmp_path / "run", 2)
    rd.sft_dir.mkdir(parents=True)
    rd.sft("generator").write_text("{}\n")
    return rd


def _fake_adapter(out: Path, stats: dict) -> None:
    out.mkdir(parents=True)
    (out / "adapter_config.json").write_text("{}")
    (out / "adapter_model.safetensors").write_bytes(b"x")
    (out / "training_stats.json").write_text(json.dumps(stats))


def test_train_role_in_process(tmp_path, monkeypatch):
    rd = _round(tmp_path)
    seen = {}
    monkeypatch.setattr(launch, "train_adapter", lambda **kw: seen.update(kw) or {"steps": 1})
    config = Config(model={"device": "cpu"}, train={"gradient_checkpointing": True})
    assert launch.train_role(config, "/base", rd, "generator", Path("/prev")) == {"steps": 1}
    assert seen["out_dir"] == rd.adapter("generator") and seen["data"] == rd.sft("generator")
    assert seen["work_dir"] == rd.work / "train-generator" and seen["init_adapter"] == Path("/prev")
    assert (
        seen["device"] == "cpu"
        and seen["gradient_checkpointing"] is True
        and seen["train_config"] is config.train
    )


def test_train_role_scales_the_learning_rate_by_round(tmp_path, monkeypatch):
    """Round 2 of a run with factor 0.4 trains at 0.4 x the configured rate; round 1 at the rate
    itself; the child launchers get the same rate in their config file."""
    seen: list[float] = []
    monkeypatch.setattr(
        launch, "train_adapter", lambda **kw: seen.append(kw["train_config"].learning_rate) or {}
    )
    config = Config(model={"device": "cpu"}, train={"learning_rate": 1e-3, "learning_rate_round_factor": 0.4})
    launch.train_role(config, "/base", round_dir(tmp_path / "run", 1), "generator", None)
    rd = _round(tmp_path)
    launch.train_role(config, "/base", rd, "generator", None)
    launch.train_role(config, "/base", round_dir(tmp_path / "run", 3), "generator", None)
    assert seen == pytest.approx([1e-3, 4e-4, 1.6e-4])
    assert config.train.learning_rate == 1e-3  # the run's own section is unchanged

    launch.role_module_args(config, "/base", rd, "extender", None)
    written = TrainConfig.model_validate_json((rd.work / "train-extender.config.json").read_text())
    assert written.learning_rate == pytest.approx(4e-4)
    with pytest.raises(ValueError):
        Config(train={"learning_rate_round_factor": 1.5})


@pytest.mark.parametrize("launcher", ["subprocess", "accelerate"])
def test_train_role_child_launchers(tmp_path, monkeypatch, launcher):
    rd = _round(tmp_path)
    calls = []

    def fake_run(cmd, log_path, *, env=None, what="training", stop=None):
        calls.append((cmd, log_path, env, what))
        _fake_adapter(rd.adapter("generator"), {"steps": 2, "processes": 2})

    monkeypatch.setattr(launch, "run_logged", fake_run)
    monkeypatch.setattr(launch, "_accelerate_executable", lambda: "/venv/bin/accelerate")
    config = Config(
        model={"device": "cpu"},
        train={"launcher": launcher, "num_processes": 2, "max_steps": 2, "lora": {"r": 8}},
    )
    stats = launch.train_role(config, "/base", rd, "generator", None)
    assert stats == {"steps": 2, "processes": 2}
    ((cmd, log_path, env, what),) = calls
    assert log_path == rd.work / "train-generator.log" and what == "training the generator"
    config_file = rd.work / "train-generator.config.json"
    assert TrainConfig.model_validate_json(config_file.read_text()) == config.train
    module_args = [
        "--base", "/base", "--data", str(rd.sft("generator")), "--out", str(rd.adapter("generator")),
        "--config-json", str(config_file), "--work-dir", str(rd.work / "train-generator"),
        "--device", "cpu", "--dtype", "auto",
    ]  # fmt: skip
    if launcher == "subprocess":
        assert cmd == [sys.executable, "-m", "selflengthen.train", *module_args]
    else:
        expected = launch.build_accelerate_command(config, module_args, num_processes=2)
        assert cmd == ["/venv/bin/accelerate", *expected[1:]]
        assert env == {"ACCELERATE_USE_CPU": "true"}


def test_train_role_child_without_adapter_fails(tmp_path, monkeypatch):
    rd = _round(tmp_path)
    monkeypatch.setattr(launch, "run_logged", lambda *a, **k: None)
    config = Config(model={"device": "cpu"}, train={"launcher": "subprocess"})
    with pytest.raises(TrainingError, match="without writing an adapter"):
        launch.train_role(config, "/base", rd, "extender", None)


def test_train_role_multinode_logs_the_node_command(tmp_path, monkeypatch, caplog):
    rd = _round(tmp_path)
    monkeypatch.setattr(launch, "run_logged", lambda *a, **k: None)
    monkeypatch.setattr(launch, "_accelerate_executable", lambda: "accelerate")
    config = Config(
        model={"device": "cpu"},
        train={"launcher": "accelerate", "num_processes": 4, "num_machines": 2, "machine_rank": 1,
               "main_process_ip": "10.1.1.1"},
    )  # fmt: skip
    with caplog.at_level("WARNING", logger="selflengthen.train.launch"):
        stats = launch.train_role(config, "/base", rd, "generator", None)
    assert stats == {"machine_rank": 1}  # rank 0's node writes the adapter
    assert (
        '--machine_rank "$SLURM_NODEID"' in caplog.text
        and "--num_processes 4 --num_machines 2" in caplog.text
    )
