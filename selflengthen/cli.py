"""The `selflengthen` command line. Thin: parse, build a config, call one library function.

Heavy imports (torch, transformers, trl) happen inside commands, so `--help` is instant.
Library errors become one line `Error: ...` with exit status 2 for bad input (1 otherwise);
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

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
app.command("report", help="Write RUN/report/index.html (plots) and browse.html (every sample).")(
    report_command
)
app.command("collect")(collect_command)
app.command("train")(train_command)
app.command("export")(export_command)

_state = {"debug": False, "terminated": False}


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="show tracebacks instead of one-line errors"),
) -> None:
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
    config: Path = typer.Option(
        ..., "--config", "-c", help="YAML config, required (see configs/: demo.yaml, smoke.yaml, gpu.yaml)"
    ),
    run_dir: Path | None = typer.Option(
        None, "--run-dir", "-o", help="run directory; run again to resume (default: runs/<config name>)"
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="override a config field, e.g. --set extend.micro_iterations=2"
    ),
) -> None:
    """Run the whole Self-Lengthen loop (resumes a run directory that already has work)."""
    from selflengthen.config import load_config
    from selflengthen.console import console, print_table, progress_for_console, round_table
    from selflengthen.loop import run_selflengthen

    cfg = load_config(config, set_)
    _quiet_libraries()
    where = (
        str(run_dir)
        if run_dir is not None
        else f"{Path('runs') / cfg.name} (the default for this config; --run-dir sets it)"
    )
    run_dir = run_dir if run_dir is not None else Path("runs") / cfg.name
    console.print(
        f"[bold]selflengthen[/] run '{cfg.name}': {cfg.macro_iterations} macro-iterations -> {where}"
    )
    _terminate_as_interrupt()
    with progress_for_console() as progress:
        summaries = run_selflengthen(cfg, run_dir, progress=progress)
    for s in summaries:
        print_table(round_table(s))
    console.print(f"done: {run_dir}")


TERMINATED = "Interrupted by SIGTERM. Run the same command again to resume."


def _terminate_as_interrupt(grace_s: float = 10.0) -> None:
    """Unwind on SIGTERM like Ctrl-C. Unwinding waits for work already inside the engine (a batch of a
    minute or more on CPU), longer than a scheduler's grace period: after `grace_s` the process exits
    anyway. Records are flushed per line, so nothing finished is lost either way."""
    import logging
    import os
    import signal
    import threading
    import time

    def exit_after_grace() -> None:
        time.sleep(grace_s)
        sys.stderr.write(TERMINATED + "\n")
        sys.stderr.flush()
        os._exit(143)

    def on_sigterm(signum, frame):
        _state["terminated"] = True
        threading.Thread(target=exit_after_grace, name="selflengthen-sigterm", daemon=True).start()
        # Worker threads and tasks cut off by the interruption fail on the way out (a closed event loop);
        # that is the interruption itself, not news: the one line below says what happened.
        threading.excepthook = lambda args: None
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        # Unwind exactly as Ctrl-C does: asyncio's runner turns SIGINT into a cancellation of the run's
        # task (finally blocks run, servers stop, training is told to stop), then KeyboardInterrupt.
        os.kill(os.getpid(), signal.SIGINT)

    signal.signal(signal.SIGTERM, on_sigterm)


@app.command()
def summary(run_dir: Path = typer.Argument(..., help="a run directory")) -> None:
    """Print the round tables of a run."""
    from selflengthen.console import console, print_table, round_table
    from selflengthen.errors import InputError
    from selflengthen.store import round_dir
    from selflengthen.summary import load_summary

    if not (run_dir / "manifest.json").is_file():
        raise InputError(f"{run_dir} is not a run directory (no manifest.json)")
    k = 1
    while (s := load_summary(round_dir(run_dir, k))) is not None:
        print_table(round_table(s))
        k += 1
    if k == 1:
        console.print("no finished round yet")


@app.command()
def model(base: str = typer.Argument("embedded", help="'embedded', a model directory or a hub id")) -> None:
    """Prepare the base model (the embedded one is converted once into the cache) and print its path."""
    from selflengthen.model import resolve_base

    typer.echo(resolve_base(base))


@app.command("check-adapter")
def check_adapter(
    adapter: Path = typer.Argument(
        ..., help="a PEFT LoRA adapter directory (e.g. RUN/round-1/adapters/generator)"
    ),
    base: str = typer.Option("embedded", help="the base model the adapter was trained on"),
    gguf: Path | None = typer.Option(
        None, help="the base as GGUF for llama-server (default: the embedded model's)"
    ),
    tokens: int = typer.Option(32, min=1, help="greedy tokens compared per prompt"),
    tolerance: float = typer.Option(
        1.0, min=0.0, help="largest logit gap allowed where the engines pick differently"
    ),
    json_out: Path | None = typer.Option(None, "--json", help="also write the report as JSON"),
) -> None:
    """Check that an adapter means the same in llama-server (converted to GGUF) as in transformers + PEFT."""
    import json

    from selflengthen.console import console
    from selflengthen.engines.agreement import check_agreement
    from selflengthen.errors import InputError

    if not (adapter / "adapter_config.json").is_file():
        raise InputError(f"{adapter} is not a PEFT adapter directory (no adapter_config.json)")
    _quiet_libraries()
    report = check_agreement(
        adapter, base=base, gguf=str(gguf) if gguf else None, n_tokens=tokens, tolerance=tolerance
    )
    for p in report.prompts:
        flips = ", ".join(
            f"step {f['step']}: {f['llama']!r} vs {f['transformers']!r} (gap {f['gap']:.3f})" for f in p.flips
        )
        console.print(
            f"{'ok  ' if p.passed(tolerance) else 'FAIL'} agree "
            f"{p.agree_prefix}/{p.tokens} · scale 0 = base: "
            f"{p.scale0_equals_base} · adapter changes output: {p.adapter_changes_output} · {p.prompt[:50]!r}"
            + (f"\n     near-ties: {flips}" if flips else "")
        )
    if json_out:
        json_out.write_text(json.dumps(report.as_dict(), indent=1, ensure_ascii=False))
    console.print("agreement: " + ("PASSED" if report.passed else "FAILED") + f" (tolerance {tolerance})")
    if not report.passed:
        raise typer.Exit(1)


def _click_exception_types() -> tuple[tuple[type[Any], ...], tuple[type[Any], ...]]:
    """(usage-error classes, exit classes): typer >= 0.2x vendors click as `typer._click`, whose
    exceptions are not click's; catch both, or a usage error would end in a traceback."""
    import importlib

    errors: list[type[Any]] = []
    exits: list[type[Any]] = [typer.Exit]
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        errors += [c for c in (getattr(module, "ClickException", None),) if c is not None]
        exits += [c for c in (getattr(module, "Exit", None),) if c is not None]
    return tuple(errors), tuple(exits)


_DISK_FULL = ("No space left on device", "Disk quota exceeded", "File too large")


def _environment_error(exc: BaseException) -> str | None:
    """One line for a failure of the machine rather than of our code (disk full, a file-size limit,
    permissions), or None. Finished work is on disk: the same command resumes."""
    import errno

    resume = "then run the same command again to resume"
    free = f"free some space (or use another --run-dir), {resume}"
    limit = f"raise the file-size limit (`ulimit -f`), {resume}"
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"disk full{where}: {exc.strerror}; {free}"
        if exc.errno == errno.EFBIG:
            return f"file too large{where}: {exc.strerror}; {limit}"
        return f"{exc.strerror or type(exc).__name__}{where}"
    text = str(exc)
    for phrase in _DISK_FULL:  # libraries that wrap the OS error (safetensors, torch.save)
        if phrase in text:
            kind, advice = ("file too large", limit) if phrase == "File too large" else ("disk full", free)
            return f"{kind}: {phrase} ({type(exc).__name__}); {advice}"
    return None


def main() -> None:
    usage_errors, exits = _click_exception_types()
    try:
        code = app(standalone_mode=False)
        # typer turns Ctrl-C (and SIGTERM, which unwinds as one) into a *returned* 130 in this mode
        if code == 130:
            raise KeyboardInterrupt
        if isinstance(code, int) and code:
            sys.exit(code)
    except SelfLengthenError as exc:
        if _state["debug"]:
            raise
        typer.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        if _state.get("terminated"):
            typer.echo(TERMINATED, err=True)
            sys.exit(143)
        typer.echo("Interrupted. Run the same command again to resume.", err=True)
        sys.exit(130)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:  # click usage errors, the machine's errors (disk full), and our bugs
        if isinstance(exc, usage_errors):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, exits):
            sys.exit(exc.exit_code)
        line = None if _state["debug"] else _environment_error(exc)
        if line is None:
            raise
        typer.echo(f"Error: {line}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
