"""Terminal presentation: rich progress bars and the end-of-round table. Only the CLI uses this."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
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
    for stage, key, mins in (("instructions", "instruct", "instruct"), ("answers", "generate", "generate"), ("extensions", "extend", "extend")):
        s = summary.get(stage, {})
        top = ", ".join(f"{r} {n}" for r, n in list(s.get("rejections", {}).items())[:3])
        table.add_row(stage, _fmt(s.get("made")), _fmt(s.get("kept")), top or "-", _fmt(s.get("mean_words")),
                      _fmt(s.get("median_words")), _fmt(minutes.get(mins)))
    for role, t in summary.get("training", {}).items():
        # the full reason is in summary.json; the table stays narrow enough for a terminal
        note = "skipped: no examples" if t.get("skipped") else f"{t.get('steps', '-')} steps"
        table.add_row(f"train {role}", _fmt(t.get("examples")), "-", f"loss {_fmt(t.get('final_loss'))}; {note}",
                      "-", "-", _fmt(minutes.get(f"train_{role}")))
    return table
