"""DRY anti-loop decoding: the penalty on exact token sequences (llama.cpp's definition), the logits
processor on tensors, and where the config accepts or refuses it."""

from __future__ import annotations

import random

import pytest
import torch

from selflengthen.config import Config, load_config
from selflengthen.engines.base import Dry, SamplingParams
from selflengthen.engines.dry import DryProcessor, dry_penalties, max_exponent, repeat_lengths
from selflengthen.errors import ConfigError

A, B, C, Y = 1, 2, 3, 4
BREAK = 9


def dry(**kw) -> Dry:
    return Dry(**{"multiplier": 0.8, "base": 1.75, "allowed_length": 2, "penalty_last_n": 4096, **kw})


def test_llama_cpp_worked_example():
    # llama.cpp's own example: "a b c c b c y a b c" -> c would extend "a b c" (3), b "c" (1), y "b c" (2)
    tokens = [A, B, C, C, B, C, Y, A, B, C]
    assert repeat_lengths(tokens, dry(allowed_length=1), set()) == {C: 3, B: 1, Y: 2}
    assert repeat_lengths(tokens, dry(allowed_length=2), set()) == {C: 3, Y: 2}
    assert dry_penalties(tokens, dry(), set()) == pytest.approx({C: 0.8 * 1.75, Y: 0.8})
    assert dry_penalties(tokens, dry(allowed_length=4), set()) == {}


def test_the_longest_repeat_a_token_would_extend_counts():
    # Y follows "a b" once and "c a b" once: the three-token repeat sets its penalty
    tokens = [A, B, Y, C, A, B, Y, 5, C, A, B]
    assert repeat_lengths(tokens, dry(), set()) == {Y: 3}
    assert dry_penalties(tokens, dry(multiplier=2.0, base=3.0), set()) == pytest.approx({Y: 2.0 * 3.0})


def test_a_repeat_is_matched_back_only_to_the_last_breaker():
    tokens = [7, A, B, C, 7, BREAK, A, B]
    assert repeat_lengths(tokens, dry(), set()) == {C: 2}  # "7" before "a b" is across the breaker
    assert repeat_lengths(tokens, dry(), {BREAK}) == {C: 2}
    assert repeat_lengths([7, A, B, C, BREAK, 7, A, B], dry(), set()) == {C: 3}
    assert repeat_lengths([7, A, B, C, BREAK, 7, A, B], dry(), {7}) == {C: 2}
    assert repeat_lengths([A, B, C, A, B, BREAK], dry(), {BREAK}) == {}  # the text just broke
    assert repeat_lengths([A, B, C, BREAK, B], dry(), {BREAK}) == {}  # 1 token since the break < 2


def test_a_breaker_token_is_never_penalised():
    tokens = [A, B, BREAK, A, B]
    assert repeat_lengths(tokens, dry(), set()) == {BREAK: 2}
    assert repeat_lengths(tokens, dry(), {BREAK}) == {}


def test_only_the_last_penalty_last_n_tokens_are_searched():
    tokens = [A, B, C] + [10 + i for i in range(20)] + [A, B]
    assert repeat_lengths(tokens, dry(penalty_last_n=len(tokens)), set()) == {C: 2}
    assert repeat_lengths(tokens, dry(penalty_last_n=len(tokens) - 1), set()) == {}


def test_the_exponent_is_clamped_as_llama_cpp_does():
    assert max_exponent(2.0) == 127 and max_exponent(1.0) == 0
    loop = [A, B] * 200
    ((token, length),) = repeat_lengths(loop, dry(base=2.0), set()).items()
    assert (token, length) == (A, 398)
    assert dry_penalties(loop, dry(base=2.0, multiplier=1.0), set()) == {
        A: 2.0**127
    }  # below float32 max, as in llama.cpp
    assert dry_penalties(loop, dry(base=1.0, multiplier=0.5), set()) == {A: 0.5}  # base 1: a flat penalty


def _naive(tokens, d, breakers):
    """The definition, spelled out: t's length is the longest L (within the window, not reaching back
    past the last breaker) such that the last L tokens followed by t occur earlier in the window."""
    w = tokens[-d.penalty_last_n :]
    limit = next((k for k, t in enumerate(reversed(w)) if t in breakers), len(w))
    out = {}
    for t in set(w) - set(breakers):
        best = 0
        for length in range(1, limit + 1):
            pattern = w[len(w) - length :] + [t]
            if any(w[s : s + length + 1] == pattern for s in range(0, len(w) - length)):
                best = length
        if best >= d.allowed_length:
            out[t] = best
    return out


@pytest.mark.parametrize("seed", range(40))
def test_matches_the_definition_on_random_sequences(seed):
    rng = random.Random(seed)
    tokens = [rng.randrange(4) for _ in range(rng.randrange(2, 40))]
    breakers = {3} if seed % 2 else set()
    d = dry(allowed_length=rng.randrange(1, 4), penalty_last_n=rng.randrange(2, 45))
    assert repeat_lengths(tokens, d, breakers) == _naive(tokens, d, breakers)


def test_processor_subtracts_each_rows_penalties_and_skips_finished_rows():
    pad = 0
    ids = torch.tensor([[A, B, C, C, B, C, Y, A, B, C], [pad, pad, A, B, Y, A, B, pad, pad, pad]])
    scores = torch.zeros(2, 12)
    out = DryProcessor(dry(), frozenset({pad}))(ids, scores.clone())
    expected = torch.zeros(2, 12)
    expected[0, C], expected[0, Y] = -0.8 * 1.75, -0.8
    assert torch.allclose(out, expected)  # row 1 ended (pad): untouched


def test_sampling_params_from_config_carry_dry_only_when_on():
    config = Config()
    assert SamplingParams.from_config(config.sampling, max_tokens=64).dry is None  # the paper: off
    on = load_config(None, ["sampling.dry.multiplier=0.8", "sampling.dry.penalty_last_n=1024"])
    params = SamplingParams.from_config(on.sampling, max_tokens=64, seed=3)
    assert params.dry == Dry(0.8, 1.75, 2, 1024, ("\n", ":", '"', "*"))
    assert SamplingParams.from_config(on.sampling, max_tokens=64, dry=False).dry is None
    assert params.key() != SamplingParams.from_config(config.sampling, max_tokens=64).key()  # never one batch


@pytest.mark.parametrize(
    "overrides",
    [
        ["engine.kind=transformers"],
        ["engine.kind=auto"],
        ["engine.kind=openai", "engine.server.managed=true", "engine.server.preset=llama-server"],
        ["engine.kind=openai", "engine.openai.sampling_fields=llama-server"],
    ],
)
def test_engines_with_a_dry_sampler_accept_it(overrides):
    config = load_config(None, ["sampling.dry.multiplier=0.8", *overrides])
    assert config.sampling.dry.multiplier == 0.8


@pytest.mark.parametrize(
    "overrides, says",
    [
        (["engine.kind=ray"], "engine.kind 'ray' has no DRY sampler"),
        (["engine.kind=openai"], "dialect is 'vllm'"),
        (
            ["engine.kind=openai", "engine.server.managed=true", "engine.server.preset=vllm"],
            "dialect is 'vllm'",
        ),
        (
            ["engine.kind=openai", "engine.server.managed=true", "engine.server.preset=llamacpp"],
            "llama-cpp-python",
        ),
        (["engine.kind=openai", "engine.openai.sampling_fields=llamacpp"], "sampling_fields=llama-server"),
    ],
)
def test_engines_without_one_are_refused_with_the_reason(overrides, says):
    with pytest.raises(ConfigError, match="sampling.dry is on") as err:
        load_config(None, ["sampling.dry.multiplier=0.8", *overrides])
    assert says in str(err.value)
    load_config(None, overrides)  # the same engine without DRY is fine


def test_bad_dry_values_name_the_field(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("sampling:\n  dry:\n    multiplier: 0.8\n    penalty_last_n: -1\n")
    with pytest.raises(ConfigError, match="line 4: field 'sampling.dry.penalty_last_n' = -1"):
        load_config(path)
    with pytest.raises(ConfigError, match="sequence_breakers"):
        load_config(None, ["sampling.dry.sequence_breakers=[]"])
