"""The one engine protocol every backend implements.

Stage code builds `Request`s and awaits `engine.generate(request)` per item; the engine batches
whatever is in flight. Chat templates are rendered in one place (`render_prompt`) with the
model's own tokenizer, so every engine sees identical strings and training uses the same
template.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

# The roles of Self-Lengthen, each a LoRA adapter on the shared base. None = the base model.
GENERATOR = "generator"
EXTENDER = "extender"


@dataclass(frozen=True)
class SamplingParams:
    """Per-call sampling (OpenAI names). Defaults are the paper's."""

    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    repetition_penalty: float = 1.1
    max_tokens: int = 16384
    stop: tuple[str, ...] = ("\n---", "\n\n\n")
    seed: int | None = None

    def key(self) -> tuple:
        """Requests with equal keys can share one batch (seed aside)."""
        return (self.temperature, self.top_p, self.top_k, self.repetition_penalty, self.max_tokens, self.stop)


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


@dataclass
class Result:
    text: str
    finish_reason: str  # "stop" (eos or a stop string) or "length" (hit max_tokens)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = "base"  # what produced it: "base", or the adapter's name


@runtime_checkable
class Engine(Protocol):
    """What stages need from a backend."""

    name: str

    async def generate(self, request: Request) -> Result: ...

    def set_adapters(self, adapters: dict[str, str]) -> None:
        """Point role names ("generator", "extender") at adapter directories (PEFT format)."""

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
