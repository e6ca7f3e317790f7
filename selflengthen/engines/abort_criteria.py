"""Early abort inside transformers' generate(): a stopping criterion that ends each sequence of a
batch at the first token where its request's abort rule fails (a repeated n-gram).

generate() asks every stopping criterion after each step for a per-sequence "done" flag; a done
sequence gets padding from then on, and the whole batch ends when every sequence is done. So in
a static batch the compute is saved once the batch's last live sequence ends: an aborted row
no longer adds tokens, and a batch whose loops all abort ends early.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import StoppingCriteria

from selflengthen.engines.base import cut_at_stop


class AbortCriteria(StoppingCriteria):
    """`monitors[i]` watches row i (None = no rule). After generate(), `aborted[i]` = (tokens
    generated when the rule failed, reason) for each row it stopped."""

    def __init__(
        self, tokenizer: Any, monitors: list[Any], prompt_len: int, stop: tuple[str, ...], eos_ids: set[int]
    ):
        self.tokenizer = tokenizer
        self.monitors = monitors
        self.prompt_len = prompt_len
        self.stop = stop
        self.eos_ids = eos_ids
        self.aborted: dict[int, tuple[int, str]] = {}
        self._ended: set[int] = set()  # rows that ended by themselves (eos): nothing more to watch

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for i, monitor in enumerate(self.monitors):
            if i in self.aborted:
                done[i] = True
                continue
            if monitor is None or i in self._ended:
                continue
            row = input_ids[i, self.prompt_len :].tolist()
            if row and row[-1] in self.eos_ids:
                self._ended.add(i)
                continue
            text, stopped = cut_at_stop(self.tokenizer.decode(row, skip_special_tokens=True), self.stop)
            reason = monitor.feed(text)
            if reason is not None:
                self.aborted[i] = (len(row), reason)
                done[i] = True
            elif stopped:
                self._ended.add(i)
        return done  # type: ignore[return-value]  # transformers declares BoolTensor, takes any bool tensor
