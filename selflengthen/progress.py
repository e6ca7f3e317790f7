"""Progress reporting seam. Library code reports through a `Progress`; the CLI plugs in rich bars.
Library code never prints."""

from __future__ import annotations

from typing import Protocol


class Task(Protocol):
    def advance(self, n: int = 1) -> None: ...

    def close(self) -> None: ...


class Progress(Protocol):
    def task(self, description: str, total: int, done: int = 0) -> Task: ...

    def log(self, message: str) -> None: ...


class _NullTask:
    def advance(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class NullProgress:
    """Reports nothing (tests, library use)."""

    def task(self, description: str, total: int, done: int = 0) -> Task:
        return _NullTask()

    def log(self, message: str) -> None:
        pass
