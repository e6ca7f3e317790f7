"""Terminal presentation: rich progress bars and the end-of-round table. Only the CLI uses this."""

from __future__ import annotations

import threading
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

console = Console(stderr=True)


class RichTask:
    def __init__(self, bars: Progress, task_id):
        self._bars, self._id = bars, task_id

    def advance(self, n: int = 1) -> None:
        self._bars.advance(self._id, n)

    def close(self) -> None:
        self._bars.stop_task(self._id)


class RichProgress:
    """Progress bars per stage on stderr (stdout stays clean for --json outputs)."""

    def __init__(self) -> None:
        self.bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        )

    def __enter__(self) -> RichProgress:
        self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()

    def task(self, description: str, total: int, done: int = 0) -> RichTask:
        return RichTask(self.bars, self.bars.add_task(description, total=total, completed=done))

    def log(self, message: str) -> None:
        self.bars.console.log(message)


class PlainTask:
    def __init__(self, owner: PlainProgress, description: str, total: int, done: int):
        self.owner, self.description, self.total = owner, description, total
        self.done = self.start_done = done
        self.started = time.monotonic()
        self.closed = False

    def advance(self, n: int = 1) -> None:
        self.done += n

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.owner.report(self)

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        made = self.done - self.start_done
        rate = made / elapsed if elapsed > 0 else 0.0
        left = self.total - self.done
        if self.closed:
            eta = f"done in {_duration(elapsed)}"
        elif made and left > 0:
            eta = f"ETA {_duration(left / rate)}"
        else:
            eta = "ETA -"
        return f"{self.description}: {self.done}/{self.total} ({rate * 60:.1f}/min, {eta})"


class PlainProgress:
    """Progress as plain lines for a log file (nohup, a cluster job): redrawn bars never reach a file,
    so every `interval_s` each running stage prints one line with done/total, rate and ETA."""

    def __init__(self, interval_s: float = 30.0, out: Console | None = None) -> None:
        self.interval_s = interval_s
        self.out = out or console
        self.tasks: list[PlainTask] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PlainProgress:
        self._thread = threading.Thread(target=self._tick, name="selflengthen-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _tick(self) -> None:
        while not self._stop.wait(self.interval_s):
            for task in [t for t in self.tasks if not t.closed]:
                self.report(task)

    def report(self, task: PlainTask) -> None:
        self.out.print(f"{time.strftime('%H:%M:%S')} {task.line()}", highlight=False, soft_wrap=True)

    def task(self, description: str, total: int, done: int = 0) -> PlainTask:
        task = PlainTask(self, description, total, done)
        self.tasks.append(task)
        self.report(task)
        return task

    def log(self, message: str) -> None:
        self.out.print(f"{time.strftime('%H:%M:%S')} {message}", highlight=False, soft_wrap=True)


def progress_for_console() -> RichProgress | PlainProgress:
    """Bars on a terminal; plain lines every 30 s when stderr goes to a file or a pipe."""
    return RichProgress() if console.is_terminal else PlainProgress()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def print_table(table: Table) -> None:
    """Print a table whole. On a terminal rich fits it to the window; into a file or a pipe rich
    assumes 80 columns and would cut cells ("instructio…"), so there the table gets its natural
    width (a log file holds every cell)."""
    if console.is_terminal:
        console.print(table)
        return
    width = Console(file=console.file, width=100_000).measure(table).maximum
    Console(file=console.file, width=max(width, 80), no_color=console.no_color).print(table)


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.1f}" if isinstance(v, float) else str(v)


def round_table(summary: dict) -> Table:
    """The figures a user wants after each round."""
    k = summary.get("round")
    table = Table(title=f"Round {k}", show_lines=False)
    for col in ("stage", "made", "kept", "top rejections", "mean words", "median words", "minutes"):
        table.add_column(col, justify="right" if col not in ("stage", "top rejections") else "left")
    minutes = summary.get("minutes", {})
    for stage, mins in (("instructions", "instruct"), ("answers", "generate"), ("extensions", "extend")):
        s = summary.get(stage, {})
        top = ", ".join(f"{r} {n}" for r, n in list(s.get("rejections", {}).items())[:3])
        table.add_row(
            stage,
            _fmt(s.get("made")),
            _fmt(s.get("kept")),
            top or "-",
            _fmt(s.get("mean_words")),
            _fmt(s.get("median_words")),
            _fmt(minutes.get(mins)),
        )
    for role, t in summary.get("training", {}).items():
        # the full reason is in summary.json
        note = "skipped: no examples" if t.get("skipped") else f"{t.get('steps', '-')} steps"
        table.add_row(
            f"train {role}",
            _fmt(t.get("examples")),
            "-",
            f"loss {_fmt(t.get('final_loss'))}; {note}",
            "-",
            "-",
            _fmt(minutes.get(f"train_{role}")),
        )
    return table
