"""DRY ("don't repeat yourself") anti-loop decoding for the transformers engine, with the penalty
llama.cpp's DRY sampler applies, so both engines decode alike under one `sampling.dry` section.

    breakers = breaker_token_ids(tokenizer, dry.sequence_breakers)
    model.generate(..., logits_processor=LogitsProcessorList([DryProcessor(dry, breakers)]))

At each step, over the last `penalty_last_n` tokens (prompt included): find every earlier place
where the text's current ending already occurred. The token that followed it there would extend
the repeat. If the repeat is already at least `allowed_length` tokens long, that token's logit is
lowered by multiplier x base^(length - allowed_length), the longest repeat it would extend
counting. The current ending is matched back only to the most recent breaker token (a token whose
text contains a sequence breaker: a newline, a colon, ...), and a breaker token is never itself
penalised: paragraph breaks and list markup repeat by nature, loops are what DRY is for.

Breakers are found per token, as llama.cpp does for a breaker that fits in one token (all of its
defaults are one character); a breaker string that spans tokens is not matched across them.
"""

from __future__ import annotations

import math
from collections.abc import Container, Iterable, Sequence
from typing import Any

from selflengthen.engines.base import Dry

# log of the largest float32: llama.cpp clamps the exponent below it so the penalty stays finite.
FLOAT_MAX_LOG = 88.7228391


def max_exponent(base: float) -> int:
    """The largest exponent used (0 = no clamp), as llama.cpp computes it."""
    return int(FLOAT_MAX_LOG / math.log(base)) if base > 1.000001 else 0


def repeat_lengths(tokens: Sequence[int], dry: Dry, breakers: Container[int]) -> dict[int, int]:
    """token -> length of the longest repeat that emitting it next would extend (only repeats of
    at least `allowed_length` tokens), over the last `penalty_last_n` of `tokens`."""
    window = list(tokens[-dry.penalty_last_n :])
    n = len(window)
    limit = 0  # the current ending may be matched back this far: to the most recent breaker
    for token in reversed(window):
        if token in breakers:
            break
        limit += 1
    if n < 2 or limit < dry.allowed_length:
        return {}
    last = window[-1]
    longest: dict[int, int] = {}
    for j in range(n - 2, -1, -1):  # each earlier end of the current ending
        if window[j] != last:
            continue
        m = 1
        while m < limit and j - m >= 0 and window[j - m] == window[n - 1 - m]:
            m += 1
        following = window[j + 1]
        if m >= dry.allowed_length and following not in breakers and m > longest.get(following, 0):
            longest[following] = m
    return longest


def dry_penalties(tokens: Sequence[int], dry: Dry, breakers: Container[int]) -> dict[int, float]:
    """token -> amount subtracted from its logit before the next token is sampled."""
    cap = max_exponent(dry.base)
    out = {}
    for token, length in repeat_lengths(tokens, dry, breakers).items():
        exponent = length - dry.allowed_length
        if cap > 0 and exponent > cap:
            exponent = cap
        out[token] = dry.multiplier * dry.base**exponent
    return out


def breaker_token_ids(tokenizer: Any, breakers: Iterable[str]) -> frozenset[int]:
    """Ids of the tokens whose text contains a sequence breaker (llama.cpp's single-token breakers)."""
    breakers = [b for b in breakers if b]
    size = len(tokenizer)
    texts = tokenizer.batch_decode([[i] for i in range(size)], skip_special_tokens=False)
    return frozenset(i for i, text in enumerate(texts) if any(b in text for b in breakers))


class DryProcessor:
    """A transformers logits processor: subtracts each row's DRY penalties from its scores.

    `breakers` should also hold the pad and end-of-sequence ids: a finished row, padded with them,
    then costs nothing (its tail is a breaker), and a left-padded prompt's pad run is never
    matched as text."""

    def __init__(self, dry: Dry, breakers: frozenset[int]):
        self.dry = dry
        self.breakers = breakers

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        rows = input_ids[:, -self.dry.penalty_last_n :].tolist()
        for i, tokens in enumerate(rows):
            penalties = dry_penalties(tokens, self.dry, self.breakers)
            if penalties:
                index = torch.tensor(list(penalties), dtype=torch.long, device=scores.device)
                amount = torch.tensor(list(penalties.values()), dtype=scores.dtype, device=scores.device)
                scores[i].index_add_(0, index, -amount)
        return scores
