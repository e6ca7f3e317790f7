"""Does a LoRA adapter mean the same thing in llama-server (GGUF) as in transformers + PEFT?

Usage:
    selflengthen check-adapter RUN/round-1/adapters/generator
    report = check_agreement(adapter_dir, base="embedded")

For each prompt, llama-server decodes greedily with the converted adapter (gguf_lora.py). Then
transformers + PEFT reads the same prompt and llama-server's tokens in one forward pass and
takes its own argmax at every step (teacher forcing), which is greedy decoding for as long as
the two agree and keeps comparing after a flip. The base is the same weights (the GGUF
dequantized), but llama.cpp multiplies with 4-bit weights and 8-bit activations, so a step
whose two best tokens are nearly tied may flip: such a step passes when transformers' logit gap
between its choice and llama-server's is within `tolerance`, and is reported. Two more checks:
the adapter at scale 0 gives exactly the tokens of a server started without it, and the adapter
at scale 1 changes the output (else the check would prove nothing).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

PROMPTS = (
    "Write a long essay about the history of lighthouses and the people who kept them.",
    "Write a detailed guide to starting a vegetable garden in a small backyard.",
    "Write a short story about a violinist who loses her hearing.",
    "Explain how a city water system works, from the reservoir to the tap.",
)


@dataclass
class PromptCheck:
    prompt: str
    tokens: int  # tokens llama-server generated with the adapter
    agree_prefix: int  # steps before the first disagreement (= tokens when none)
    flips: list[dict] = field(default_factory=list)  # {step, llama, transformers, gap}
    max_gap: float = 0.0
    scale0_equals_base: bool = True
    adapter_changes_output: bool = True

    def passed(self, tolerance: float) -> bool:
        return self.max_gap <= tolerance and self.scale0_equals_base


@dataclass
class AgreementReport:
    adapter: str
    gguf: str
    tolerance: float
    prompts: list[PromptCheck]

    @property
    def passed(self) -> bool:
        return all(p.passed(self.tolerance) for p in self.prompts) and any(
            p.adapter_changes_output for p in self.prompts
        )

    def as_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def llama_greedy(url: str, ids: list[int], n: int, lora: list[dict] | None) -> list[int]:
    """n greedy tokens from llama-server for prompt token ids (the same ids transformers sees)."""
    body: dict[str, Any] = {
        "prompt": ids,
        "n_predict": n,
        "temperature": 0.0,
        "top_k": 1,
        "repeat_penalty": 1.0,
        "ignore_eos": True,  # both sides compare exactly n steps
        "cache_prompt": False,
        "return_tokens": True,
        "lora": lora or [],
    }
    r = httpx.post(url + "/completion", json=body, timeout=300.0, trust_env=False)
    r.raise_for_status()
    return [int(t) for t in r.json()["tokens"]]


def forced_argmax(model: Any, ids: list[int], continuation: list[int]) -> tuple[list[int], list[Any]]:
    """transformers' argmax and logits at every step of `continuation`, given the tokens before it."""
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([ids + continuation])).logits[0]
    steps = logits[len(ids) - 1 : len(ids) - 1 + len(continuation)]
    return steps.argmax(dim=-1).tolist(), list(steps)


def check_agreement(
    adapter_dir: str | Path,
    *,
    base: str = "embedded",
    gguf: str | None = None,
    prompts: tuple[str, ...] | list[str] = PROMPTS,
    n_tokens: int = 32,
    tolerance: float = 1.0,
    log_dir: str | Path | None = None,
) -> AgreementReport:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selflengthen.config import ServerConfig
    from selflengthen.engines.base import render_prompt
    from selflengthen.engines.gguf_lora import convert_lora
    from selflengthen.engines.server import ManagedServer
    from selflengthen.model import embedded_gguf, resolve_base

    base_dir = resolve_base(base)
    gguf_file = str(gguf or embedded_gguf())
    lora_file = convert_lora(adapter_dir, gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    tuned = PeftModel.from_pretrained(model, str(adapter_dir)).eval()
    inputs = [
        tokenizer(render_prompt(tokenizer, [{"role": "user", "content": p}]), add_special_tokens=False)[
            "input_ids"
        ]
        for p in prompts
    ]
    log_dir = Path(log_dir) if log_dir else Path(adapter_dir).parent
    cfg = dict(managed=True, preset="llama-server", gguf=gguf_file, parallel=1, n_ctx=2048, stop_timeout_s=10)
    with_lora = ManagedServer(ServerConfig(**cfg, log_file=str(log_dir / "agreement-server.log")))
    plain = ManagedServer(ServerConfig(**cfg, log_file=str(log_dir / "agreement-server-base.log")))
    with_lora.lora_files = [str(lora_file)]
    checks: list[PromptCheck] = []
    try:
        with_lora.start()
        plain.start()
        for prompt, ids in zip(prompts, inputs, strict=True):
            adapted = llama_greedy(with_lora.base_url, ids, n_tokens, [{"id": 0, "scale": 1.0}])
            scale0 = llama_greedy(with_lora.base_url, ids, n_tokens, [{"id": 0, "scale": 0.0}])
            base_tokens = llama_greedy(plain.base_url, ids, n_tokens, None)
            choice, logits = forced_argmax(tuned, ids, adapted)
            check = PromptCheck(
                prompt=prompt,
                tokens=len(adapted),
                agree_prefix=len(adapted),
                scale0_equals_base=scale0 == base_tokens,
                adapter_changes_output=adapted != base_tokens,
            )
            for step, (ours, theirs, row) in enumerate(zip(choice, adapted, logits, strict=False)):
                if ours == theirs:
                    continue
                gap = float(row[ours] - row[theirs])
                check.agree_prefix = min(check.agree_prefix, step)
                check.flips.append(
                    {
                        "step": step,
                        "llama": tokenizer.decode([theirs]),
                        "transformers": tokenizer.decode([ours]),
                        "gap": round(gap, 4),
                    }
                )
                check.max_gap = max(check.max_gap, gap)
            checks.append(check)
    finally:
        with_lora.stop()
        plain.stop()
    return AgreementReport(adapter=str(adapter_dir), gguf=str(lora_file), tolerance=tolerance, prompts=checks)
