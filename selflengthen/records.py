"""The records that flow through a round, one JSONL line each, and the verdicts they end with.

    Instruction  Step 0: round-K/instructions.jsonl (every rejected attempt in `attempts`)
    Answer       Step 1: round-K/answers.jsonl (its instruction in `instruction_id`)
    Extension    Step 2: round-K/extensions.jsonl, with each micro-step as an ExtensionStep
    SftExample   round-K/sft/{generator,extender}.jsonl, TRL's prompt-completion rows

`to_json()` gives the line's object, key for key the format runs have always had; `from_json()`
reads one back, keeping keys it does not know in `extra` so nothing is lost on a round trip.
`verdict` is KEPT, or the reason the item was dropped (a stable code counted in summary.json).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

KEPT = "kept"
PASSED = "passed"  # in a stage's partial file: passed the checks, awaits length-biased sampling
SAMPLED_OUT = "length_biased_sampling"  # passed the checks, not drawn by length-biased sampling

R = TypeVar("R", bound="Record")


@dataclass
class Record:
    # Fields written only when set (a rejected instruction has no judge answer, for instance).
    OPTIONAL: ClassVar[frozenset[str]] = frozenset()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is None and f.name in self.OPTIONAL:
                continue
            if isinstance(value, list):
                value = [v.to_json() if isinstance(v, Record) else v for v in value]
            out[f.name] = value
        out.update(getattr(self, "extra", {}))
        return out

    @classmethod
    def from_json(cls: type[R], row: dict[str, Any]) -> R:
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in row.items() if k in names}
        record = cls(**known)
        if hasattr(record, "extra"):
            record.extra = {k: v for k, v in row.items() if k not in names}  # type: ignore[attr-defined]
        return record

    @property
    def kept(self) -> bool:
        return getattr(self, "verdict", None) == KEPT


@dataclass
class Instruction(Record):
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"examples", "judge"})

    id: str
    text: str
    language: str
    words: int
    verdict: str
    model: str  # "base", or "seed" for a seed instruction answered as is
    examples: list[str] | None = None  # ids of the two pool instructions shown to the model
    judge: str | None = None  # the yes/no judge's answer
    attempts: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Answer(Record):
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"tokens", "tokens_saved"})

    id: str
    instruction_id: str
    query: str
    text: str
    words: int
    finish_reason: str
    verdict: str
    model: str  # "base" or the Generator adapter's role name
    tokens: int | None = None  # tokens generated for the kept text (absent in runs of older versions)
    tokens_saved: int | None = None  # budget an early abort left unspent (only when one did)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExtensionStep(Record):
    """One micro-step: stage 1 on the first half (`former`), its kept paragraphs as the pre-fill of
    stage 2, whose continuation completes `result` = `stage1_kept` + `continuation`."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"tokens", "tokens_saved"})

    former: str
    stage1_output: str
    stage1_kept: str
    continuation: str
    result: str
    words: int
    finish_reason: str
    accepted: bool
    reason: str | None  # why it was not accepted; None when it was
    tokens: int | None = None  # both stages' generated tokens (absent in runs of older versions)
    tokens_saved: int | None = None  # budget an early abort left unspent (only when one did)


@dataclass
class Extension(Record):
    id: str
    answer_id: str
    instruction_id: str
    query: str
    text: str
    words: int
    answer_words: int
    ratio: float
    verdict: str
    model: str  # "base" or the Extender adapter's role name
    steps: list[ExtensionStep] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Extension:
        record = super().from_json(row)
        record.steps = [ExtensionStep.from_json(s) if isinstance(s, dict) else s for s in record.steps]
        return record


@dataclass
class SftExample(Record):
    id: str
    prompt: list[dict[str, str]]
    completion: list[dict[str, str]]
