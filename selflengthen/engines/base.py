"""The one engine protocol every backend implements.

Stage code builds `Request`s and awaits `engine.generate(request)` per item; the engine batches
whatever is in flight. Chat templates are rendered in one place (`render_prompt`) with the
model's own tokenizer, so every engine sees identical strings and training uses the same
template.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from selflengthen.text.prefix import AbortRule, PrefixMonitor

# The roles of Self-Lengthen, each a LoRA adapter on the shared base. None = the base model.
GENERATOR = "generator"
EXTENDER = "extender"


# llama.cpp's default DRY sequence breakers: a repeat never spans a newline, colon, quote or asterisk
# (a list item's "**Step:**" scaffolding or a paragraph break is not a loop).
DRY_BREAKERS = ("\n", ":", '"', "*")


@dataclass(frozen=True)
class Dry:
    """DRY ("don't repeat yourself") anti-loop decoding, as llama.cpp defines it: a token that would
    extend a sequence already seen in the last `penalty_last_n` tokens (prompt included) gets its
    logit lowered by multiplier x base^(repeat length - allowed_length), once the repeat is at least
    `allowed_length` tokens long. A repeat never reaches back across a sequence breaker."""

    multiplier: float
    base: float = 1.75
    allowed_length: int = 2
    penalty_last_n: int = 4096
    sequence_breakers: tuple[str, ...] = DRY_BREAKERS


@dataclass(frozen=True)
class SamplingParams:
    """Per-call sampling (OpenAI names). Defaults are the paper's (which has no DRY: `dry` None)."""

    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    repetition_penalty: float = 1.1
    max_tokens: int = 16384
    stop: tuple[str, ...] = ("\n---", "\n\n\n")
    seed: int | None = None
    dry: Dry | None = None

    def key(self) -> tuple:
        """Requests with equal keys can share one batch (seed aside)."""
        p = self
        return (p.temperature, p.top_p, p.top_k, p.repetition_penalty, p.max_tokens, p.stop, p.dry)

    @classmethod
    def from_config(
        cls,
        sampling: Any,
        *,
        max_tokens: int,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
        dry: bool = True,
    ) -> SamplingParams:
        """The run's `sampling` section as per-call params; `dry=False` leaves anti-loop decoding out."""
        d = sampling.dry
        return cls(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            repetition_penalty=sampling.repetition_penalty,
            max_tokens=max_tokens,
            stop=tuple(sampling.stop if stop is None else stop),
            seed=seed,
            dry=Dry(d.multiplier, d.base, d.allowed_length, d.penalty_last_n, tuple(d.sequence_breakers))
            if dry and d.multiplier > 0
            else None,
        )


@dataclass
class Request:
    """One generation. `messages` is rendered with the chat template; `prefill` is appended to the
    assistant turn and the model continues it (the returned text excludes the prefill).
    `adapter` is "generator", "extender" or None for the base model."""

    messages: list[dict[str, str]]
    params: SamplingParams = field(default_factory=SamplingParams)
    prefill: str = ""
    adapter: str | None = None
    tag: str = ""  # free text for logs and errors (e.g. the item id)
    # Early abort: end the generation at the first token where this rule already rejects the
    # text (a repeated n-gram); None = generate to the end. See `Request.monitor`.
    abort: AbortRule | None = None

    def monitor(self) -> PrefixMonitor | None:
        """A fresh monitor for one generation of this request, or None without an abort rule.

        How an engine honours the rule: after each new token, `reason = monitor.feed(text)` with
        the whole text generated so far (stop strings cut off, prefill excluded: the monitor
        holds it); once `reason` is not None, stop that sequence (close the stream, abort the
        request, mark the row done) and return `aborted_result(...)` with the text so far.
        `monitor.reason` is already set when the prefill alone fails: send nothing then.
        An engine that cannot stop early may ignore the rule: the stages' checks give the same
        verdict on the full text, only later."""
        return self.abort.monitor(self.prefill) if self.abort is not None else None


@dataclass
class Result:
    text: str
    # "stop" (eos or a stop string), "length" (hit max_tokens), or "aborted" (stopped early by the
    # request's abort rule; `abort_reason` says which check failed on the text so far)
    finish_reason: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = "base"  # what produced it: "base", or the adapter's name
    abort_reason: str | None = None
    tokens_saved: int = 0  # aborted: the token budget left unspent (max_tokens - completion_tokens)


def aborted_result(
    text: str,
    reason: str,
    *,
    max_tokens: int,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    model: str = "base",
) -> Result:
    """The Result of a generation its abort rule stopped after `completion_tokens` tokens."""
    return Result(
        text=text,
        finish_reason="aborted",
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        model=model,
        abort_reason=reason,
        tokens_saved=max(0, max_tokens - completion_tokens),
    )


@runtime_checkable
class Engine(Protocol):
    """What stages need from a backend."""

    name: str

    async def generate(self, request: Request) -> Result: ...

    def set_adapters(self, adapters: dict[str, str]) -> None:
        """Point role names ("generator", "extender") at adapter directories (PEFT format)."""

    def suspend(self) -> None:
        """Give the accelerators to training (a managed server stops); a no-op where the engine holds
        nothing training needs. Called before a round's training, from a worker thread."""

    def resume(self) -> None:
        """Undo `suspend` before generating again (a no-op where `suspend` is one)."""

    def close(self) -> None: ...


def render_prompt(tokenizer: Any, messages: list[dict[str, str]], prefill: str = "") -> str:
    """The exact prompt string for `messages`, with an open assistant turn that starts with `prefill`.

    We render with add_generation_prompt and append the prefill ourselves rather than using
    continue_final_message: templates strip or reformat a final assistant message, and the
    prefill must reach the model byte for byte (the Extender's stage 2 continues it).
    """
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return prompt + prefill


def cut_at_stop(text: str, stop: tuple[str, ...] | list[str]) -> tuple[str, bool]:
    """Cut `text` at the earliest stop string. Returns (text, whether a stop string was found)."""
    best = -1
    for s in stop:
        if not s:
            continue
        i = text.find(s)
        if i != -1 and (best == -1 or i < best):
            best = i
    if best == -1:
        return text, False
    return text[:best], True
