"""The `selflengthen` command line. Thin: parse, build a config, call one library function.

Heavy imports (torch, transformers, trl) happen inside commands, so `--help` is instant.
Library errors become one line `Error: ...` with exit status 2 for bad input (1 otherwise);
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from selflengthen.errors import SelfLengthenError
from selflengthen.evaluate.cli import eval_app, report_command
from selflengthen.final_cli import collect_command, export_command, train_command

app = typer.Typer(
    help="Self-Lengthen: teach an instruct LLM to write long texts with its own knowledge.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(eval_app, name="eval")
app.command("report", help="Write RUN/report/index.html and report.md with plots.")(report_command)
app.command("collect")(collect_command)
app.command("train")(train_command)
app.command("export")(export_command)

_state = {"debug": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="show tracebacks instead of one-line errors")) -> None:
    _state["debug"] = debug


def _quiet_libraries() -> None:
    """Our own progress bars and tables say what is happening; the libraries' per-load bars and
    advisory warnings would bury them. Called by commands that load models."""
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


@app.command()
def run(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (see configs/)"),
    run_dir: Path = typer.Option(Path("runs/default"), "--run-dir", "-o", help="run directory; run again to resume"),
    set_: list[str] = typer.Option([], "--set", help="override a config field, e.g. --set extend.micro_iterations=2"),
) -> None:
    """Run the whole Self-Lengthen loop (resumes a run directory that already has work)."""
    from selflengthen.config import load_config
    from selflengthen.console import RichProgress, console, round_table
    from selflengthen.loop import run_selflengthen

    cfg = load_config(config, set_)
    _quiet_libraries()
    console.print(f"[bold]selflengthen[/] run '{cfg.name}': {cfg.macro_iterations} macro-iterations -> {run_dir}")
    with RichProgress() as progress:
        summaries = run_selflengthen(cfg, run_dir, progress=progress)
    for s in summaries:
        console.print(round_table(s))
    console.print(f"done: {run_dir}")


@app.command()
def summary(run_dir: Path = typer.Argument(..., help="a run directory")) -> None:
    """Print the round tables of a run."""
    from selflengthen.console import console, round_table
    from selflengthen.errors import InputError
    from selflengthen.store import round_dir
    from selflengthen.summary import load_summary

    if not (run_dir / "manifest.json").is_file():
        raise InputError(f"{run_dir} is not a run directory (no manifest.json)")
    k = 1
    while (s := load_summary(round_dir(run_dir, k))) is not None:
        console.print(round_table(s))
        k += 1
    if k == 1:
        console.print("no finished round yet")


@app.command()
def model(base: str = typer.Argument("embedded", help="'embedded', a model directory or a hub id")) -> None:
    """Prepare the base model (the embedded one is converted once into the cache) and print its path."""
    from selflengthen.model import resolve_base

    typer.echo(resolve_base(base))


def main() -> None:
    try:
        app(standalone_mode=False)
    except SelfLengthenError as exc:
        if _state["debug"]:
            raise
        typer.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("Interrupted. Run the same command again to resume.", err=True)
        sys.exit(130)
    except (typer.Abort,):
        sys.exit(1)
    except Exception as exc:  # click usage errors and the like
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
