"""`selflengthen collect / train / export`: thin commands over final.py and export.py.

    selflengthen collect runs/demo --min-words 300          # -> runs/demo/final/sft.jsonl
    selflengthen train runs/demo --final                    # -> runs/demo/final/model/
    selflengthen train runs/demo --round 2 --role generator # retrain one round's adapter
    selflengthen export runs/demo --format llamafactory --out data/ --style sharegpt

The config is the run's own (manifest.json), changed with `--set key=value`. Heavy imports
happen inside the commands, so `--help` is instant; our errors reach the main CLI, which prints
them as one line.
"""

# ruff: noqa: B008  (typer reads each option from its parameter's default: that call is the point)
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from selflengthen.config import Config


class ExportFormat(str, Enum):
    trl = "trl"
    messages = "messages"
    llamafactory = "llamafactory"
    hf = "hf"


class LlamaFactoryStyle(str, Enum):
    alpaca = "alpaca"
    sharegpt = "sharegpt"


class Role(str, Enum):
    generator = "generator"
    extender = "extender"


def load_run_config(run_dir: Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The config a run was started with (its manifest.json), with `key.sub=value` overrides."""
    import json

    from pydantic import ValidationError

    from selflengthen.config import Config, apply_overrides, explain_validation_error
    from selflengthen.errors import InputError

    manifest = Path(run_dir) / "manifest.json"
    if not manifest.is_file():
        raise InputError(
            f"{run_dir} is not a run directory (no manifest.json); start one with `selflengthen run`"
        )
    try:
        data = json.loads(manifest.read_text(encoding="utf-8")).get("config", {})
    except json.JSONDecodeError as exc:
        raise InputError(f"{manifest}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    apply_overrides(data, overrides)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise explain_validation_error(exc, Config, str(manifest)) from None


def _overrides(set_: list[str], **fields: object) -> list[str]:
    """`--set` items plus the command's own options (those given) as final.* overrides."""
    extra = [
        f"final.{k}={str(v).lower() if isinstance(v, bool) else v}"
        for k, v in fields.items()
        if v is not None
    ]
    return list(set_) + extra


def collect_command(
    run_dir: Path = typer.Argument(..., help="a run directory"),
    min_words: int | None = typer.Option(
        None, "--min-words", help="keep responses of at least this many words"
    ),
    max_words: int | None = typer.Option(None, "--max-words", help="... and at most this many"),
    extra_answers: int | None = typer.Option(
        None, "--extra-answers", help="also answer this many fresh queries with the last Generator"
    ),
    rewrite: bool | None = typer.Option(
        None,
        "--rewrite/--no-rewrite",
        help="weave constraints in with the LLM (default) or with templates only",
    ),
    set_: list[str] = typer.Option([], "--set", help="override a config field, e.g. --set final.unit=500"),
    redo: bool = typer.Option(False, "--redo", help="delete RUN/final and build it again"),
) -> None:
    """Collect every kept answer and extension, add length constraints: RUN/final/sft.jsonl."""
    from selflengthen.console import progress_for_console
    from selflengthen.final import prepare_final_data
    from selflengthen.store import RunLock

    overrides = _overrides(
        set_, min_words=min_words, max_words=max_words, extra_answers=extra_answers, rewrite=rewrite
    )
    config = load_run_config(run_dir, overrides)
    with RunLock(run_dir), progress_for_console() as progress:
        stats = prepare_final_data(config, run_dir, progress=progress, redo=redo)
    c, n = stats["collect"], stats["length"]
    removed = ", ".join(f"{k} {v}" for k, v in c["removed"].items())
    typer.echo(f"collected {c['candidates']} candidates, kept {c['kept']} (removed: {removed})")
    types = ", ".join(f"{k} {v}" for k, v in n["types"].items())
    rewrites = ", ".join(f"{k} {v}" for k, v in n["rewrite"].items()) or "none"
    typer.echo(f"length constraints: {types}; rewrites: {rewrites}; dropped {sum(n['dropped'].values())}")
    typer.echo(f"final SFT set: {stats['sft']} ({n['kept']} examples)")


def train_command(
    run_dir: Path = typer.Argument(..., help="a run directory"),
    final: bool = typer.Option(False, "--final", help="train the final model on RUN/final/sft.jsonl"),
    round_: int | None = typer.Option(
        None, "--round", help="retrain this round's adapters from its SFT sets"
    ),
    role: Role | None = typer.Option(None, "--role", help="only this role (with --round)"),
    set_: list[str] = typer.Option([], "--set", help="override a config field, e.g. --set final.method=full"),
    force: bool = typer.Option(False, "--force", help="train again even if the output is complete"),
    print_command: bool = typer.Option(
        False,
        "--print-command",
        help="with --round: print the per-node `accelerate launch` line (for SLURM), train nothing",
    ),
) -> None:
    """Train the final long-output model (--final) or one round's adapters (--round K)."""
    from selflengthen.errors import InputError
    from selflengthen.final import train_final
    from selflengthen.store import RunLock

    if final == (round_ is not None):
        raise InputError("say what to train: --final, or --round K (optionally with --role)")
    config = load_run_config(run_dir, set_)
    if print_command:
        if round_ is None:
            raise InputError("--print-command goes with --round K")
        for line in _multinode_lines(config, run_dir, round_, role.value if role else None):
            typer.echo(line)
        return
    with RunLock(run_dir):
        if final:
            stats = train_final(config, run_dir, force=force)
            typer.echo(f"final model ({config.final.method}): {run_dir / 'final' / 'model'}  {_brief(stats)}")
            return
        assert round_ is not None
        for name, stats in _train_round(config, run_dir, round_, role.value if role else None, force):
            typer.echo(f"round {round_} {name}: {_brief(stats)}")


def _multinode_lines(config, run_dir: Path, k: int, role: str | None) -> list[str]:
    """The shell line each node runs (machine rank from $SLURM_NODEID), one per role."""
    from selflengthen.model import resolve_base
    from selflengthen.store import adapter_complete, round_dir
    from selflengthen.train.launch import format_multinode_command, role_module_args

    rd, base = round_dir(run_dir, k), resolve_base(config.model.base)
    lines = []
    for name in [role] if role else ["generator", "extender"]:
        previous = round_dir(run_dir, k - 1).adapter(name)
        init = previous if k > 1 and adapter_complete(previous) else None
        lines.append(format_multinode_command(config, role_module_args(config, base, rd, name, init)))
    return lines


def _brief(stats: dict) -> str:
    if not stats:
        return "already trained"
    examples, steps = stats.get("examples", 0), stats.get("steps", "?")
    return f"{examples} examples, {steps} steps, final loss {stats.get('final_loss')}"


def _train_round(config, run_dir: Path, k: int, role: str | None, force: bool):
    from selflengthen.errors import InputError
    from selflengthen.model import resolve_base
    from selflengthen.store import adapter_complete, round_dir
    from selflengthen.train.launch import train_role

    rd = round_dir(run_dir, k)
    base = None
    for name in [role] if role else ["generator", "extender"]:
        if not rd.sft(name).is_file():
            raise InputError(f"no SFT set at {rd.sft(name)}: round {k} has not built its data yet")
        if adapter_complete(rd.adapter(name)) and not force:
            yield name, {}
            continue
        previous = round_dir(run_dir, k - 1).adapter(name)
        init = previous if k > 1 and adapter_complete(previous) else None
        base = base or resolve_base(config.model.base)
        yield name, train_role(config, base, rd, name, init)


def export_command(
    run_dir: Path = typer.Argument(..., help="a run directory"),
    format: ExportFormat = typer.Option(
        ...,
        "--format",
        "-f",
        help="trl or hf (TRL masks the prompt), messages (OpenAI chat; TRL trains on the prompt too "
        "unless assistant_only_loss, which needs template generation markers), llamafactory (masks "
        "the prompt by default)",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="output directory"),
    dataset: list[str] = typer.Option(
        [], "--dataset", "-d", help="final, round-K-generator or round-K-extender (repeatable; default: all)"
    ),
    style: LlamaFactoryStyle = typer.Option(
        LlamaFactoryStyle.alpaca, "--style", help="LLaMA-Factory file style (with --format llamafactory)"
    ),
    push_to_hub: str | None = typer.Option(
        None,
        "--push-to-hub",
        metavar="REPO",
        help="also upload each dataset to this hub repo (needs HF_TOKEN)",
    ),
    private: bool = typer.Option(False, "--private", help="create the hub repo as private"),
) -> None:
    """Export the round SFT sets and the final set for TRL, OpenAI, LLaMA-Factory or `datasets`.

    Loss masks: `trl` and `hf` (prompt-completion) train on the answer only in TRL; `messages`
    trains on every token in TRL (prompt included) unless assistant_only_loss=True with a chat
    template that has generation markers (OpenAI fine-tuning learns assistant turns only);
    `llamafactory` masks the prompt by default (train_on_prompt: false).
    """
    from selflengthen.export import export_datasets

    written = export_datasets(
        run_dir,
        format.value,
        out,
        names=dataset or None,
        style=style.value,
        push_to_hub=push_to_hub,
        private=private,
    )
    for name, info in written.items():
        hub = f", pushed to {info['hub']}" if "hub" in info else ""
        typer.echo(f"{name}: {info['rows']} rows -> {info['path']}{hub}")
    if format is ExportFormat.llamafactory:
        typer.echo(f"registered in {out / 'dataset_info.json'}")
