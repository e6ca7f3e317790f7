"""Our error hierarchy. Library code raises these; only the CLI prints them and picks an exit code."""

from __future__ import annotations


class SelfLengthenError(Exception):
    """Base class: a failure the user can act on. The CLI prints `Error: <message>`."""

    exit_code = 1


class InputError(SelfLengthenError):
    """Bad input from the user (file, line, field named in the message): exit status 2."""

    exit_code = 2


class ConfigError(InputError):
    """A config value is wrong. Names the file, the field, the value and what is allowed."""

    def __init__(self, message: str, *, field: str | None = None, file: str | None = None):
        where = ", ".join(p for p in (file, f"field '{field}'" if field else None) if p)
        super().__init__(f"{where}: {message}" if where else message)
        self.field = field
        self.file = file


class DataError(InputError):
    """A data file (seeds, JSONL records, benchmark) is malformed: names file and line."""


class EmptyFinalSetError(SelfLengthenError):
    """The final stage has nothing to train on (e.g. no collected text within the word range)."""


class EngineError(SelfLengthenError):
    """The generation engine failed in a way retries did not fix."""


class ServerStartError(EngineError):
    """A managed server exited before it was ready (a crash, a signal, a bad binary)."""

    def __init__(self, message: str, *, cause: str = "", log_tail: str = ""):
        super().__init__(message)
        self.cause = cause  # one line: "killed by SIGILL (illegal instruction)", "exit status 1"
        self.log_tail = log_tail


class TrainingError(SelfLengthenError):
    """Training could not run (no usable examples, bad adapter, ...)."""


class RunLockedError(SelfLengthenError):
    """Another process is writing to the same run directory."""

    exit_code = 2
