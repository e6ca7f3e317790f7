"""`collect`, `train` and `export` through typer's CliRunner (registered here as cli.py does)."""

import json
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from selflengthen.errors import InputError
from selflengthen.final_cli import collect_command, export_command, train_command

from .runfixture import make_run, read_jsonl, small_config

app = typer.Typer()
app.command("collect")(collect_command)
app.command("train")(train_command)
app.command("export")(export_command)
runner = CliRunner()


@pytest.mark.parametrize("command", ["collect", "train", "export"])
def test_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "run_dir" in result.output.lower()


def test_help_does_not_import_heavy_modules():
    code = (
        "import sys, selflengthen.final_cli, selflengthen.final, selflengthen.export;"
        "print(sorted(m for m in ('torch', 'transformers', 'trl', 'datasets') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_collect_then_export(tmp_path):
    run = make_run(tmp_path, small_config())
    result = runner.invoke(app, ["collect", str(run), "--no-rewrite", "--min-words", "250"])
    assert result.exit_code == 0, result.output
    assert "kept" in result.output and "final SFT set" in result.output
    settings = json.loads((run / "final" / "settings.json").read_text())
    assert settings["final"]["min_words"] == 250 and settings["final"]["rewrite"] is False
    kept = [r for r in read_jsonl(run / "final" / "collected.jsonl") if r["verdict"] == "kept"]
    assert len(read_jsonl(run / "final" / "sft.jsonl")) == len(kept)

    result = runner.invoke(app, ["collect", str(run), "--min-words", "300", "--no-rewrite"])
    assert result.exit_code == 1 and "--redo" in str(result.exception)
    result = runner.invoke(app, ["collect", str(run), "--min-words", "300", "--no-rewrite", "--redo"])
    assert result.exit_code == 0, result.output

    out = tmp_path / "lf"
    result = runner.invoke(
        app,
        [
            "export",
            str(run),
            "--format",
            "llamafactory",
            "--out",
            str(out),
            "--style",
            "sharegpt",
            "-d",
            "final",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / "dataset_info.json").read_text())["final"]["formatting"] == "sharegpt"
    result = runner.invoke(app, ["export", str(run), "--format", "yaml", "--out", str(out)])
    assert result.exit_code == 2  # click's usage error names the allowed formats


def test_train_needs_a_target(tmp_path):
    run = make_run(tmp_path, small_config())
    result = runner.invoke(app, ["train", str(run)])
    assert isinstance(result.exception, InputError) and "--final" in str(result.exception)
    result = runner.invoke(app, ["train", str(run), "--final"])
    assert isinstance(result.exception, InputError) and "collect" in str(result.exception)


def test_train_round_skips_complete_adapters(tmp_path):
    run = make_run(tmp_path, small_config())
    for role in ("generator", "extender"):
        adapter = run / "round-1" / "adapters" / role
        adapter.mkdir(parents=True)
        (adapter / "adapter_config.json").write_text("{}")
        (adapter / "adapter_model.safetensors").write_bytes(b"x")
    result = runner.invoke(app, ["train", str(run), "--round", "1"])
    assert result.exit_code == 0, result.output
    assert result.output.count("already trained") == 2


def test_collect_with_nothing_in_range_fails_with_the_counts(tmp_path):
    run = make_run(tmp_path, small_config())
    result = runner.invoke(
        app, ["collect", str(run), "--no-rewrite", "--min-words", "3000", "--max-words", "8000"]
    )
    assert result.exit_code != 0
    message = str(result.exception)
    assert "kept 0 of 24 candidates: 24 below 3,000 words, 0 above 8,000" in message, message
    assert "--min-words" in message
    assert not (run / "final" / "sft.jsonl").exists()
    # the main CLI prints it as one line and exits non-zero
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from selflengthen.cli import main; main()",
            "collect",
            str(run),
            "--no-rewrite",
            "--min-words",
            "3000",
            "--max-words",
            "8000",
        ],
        capture_output=True,
        text=True,
    )
    errors = [line for line in (out.stderr + out.stdout).splitlines() if line.startswith("Error:")]
    assert out.returncode != 0 and len(errors) == 1 and "24 below 3,000 words" in errors[0]


def test_export_help_says_which_format_masks_the_prompt():
    result = runner.invoke(app, ["export", "--help"], terminal_width=200)
    text = " ".join(result.output.split())
    assert "messages" in text and "trains on every token in TRL (prompt included)" in text
    assert "masks the prompt by default" in text
