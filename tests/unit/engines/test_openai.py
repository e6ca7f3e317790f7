"""The OpenAI-compatible engine against a scriptable loopback server: request bodies, retries,
Retry-After, timeouts, garbage, fail-fast, least-loaded dispatch, concurrency limits, API keys,
runtime adapters."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from selflengthen.config import OpenAIEngineConfig
from selflengthen.engines.base import Request, SamplingParams
from selflengthen.engines.dispatch import api_root, is_loopback, parse_retry_after
from selflengthen.engines.openai import OpenAIEngine, adapter_served_name
from selflengthen.errors import ConfigError, EngineError
from tests.unit.engines.httpfake import (
    FakeServer,
    FakeTokenizer,
    Reply,
    chat_completion,
    closed_port,
    completion,
)

FAST = dict(backoff_initial_s=0.01, backoff_max_s=0.05, timeout_s=5.0, connect_timeout_s=1.0, max_retries=4)


def make_engine(urls, tokenizer=None, **overrides) -> OpenAIEngine:
    fields = {**FAST, "model": "served-base", **overrides}
    config = OpenAIEngineConfig(base_urls=list(urls), **fields)
    if config.mode == "completions" and tokenizer is None:
        tokenizer = FakeTokenizer()
    return OpenAIEngine(config, tokenizer=tokenizer)


def req(text="Write about tea.", prefill="", adapter=None, **params) -> Request:
    return Request(
        messages=[{"role": "user", "content": text}],
        params=SamplingParams(**{"seed": 7, "max_tokens": 64, **params}),
        prefill=prefill,
        adapter=adapter,
        tag="item-1",
    )


# One event loop for the module, as a run has one: an engine's connections belong to the loop
# that opened them.
LOOP = asyncio.new_event_loop()


def run(engine, *requests):
    async def go():
        return await asyncio.gather(*(engine.generate(r) for r in requests))

    out = LOOP.run_until_complete(go())
    return out[0] if len(requests) == 1 else out


# ---------------------------------------------------------------------- request and response


def test_completions_body_renders_the_template_and_sends_every_sampling_field():
    with FakeServer() as server:
        engine = make_engine([server.url])
        result = run(engine, req(prefill="Instruction 1: a\n", temperature=0.5, top_k=20, stop=("\n---",)))
    body = server.posts()[0].json
    assert body["prompt"] == "<|user|>Write about tea.<|end|>\n<|assistant|>Instruction 1: a\n"
    assert body["prompt"].endswith("Instruction 1: a\n")  # the prefill ends the prompt, byte for byte
    assert body["model"] == "served-base"
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["top_k"]) == (64, 0.5, 0.8, 20)
    assert (body["repetition_penalty"], body["stop"], body["seed"]) == (1.1, ["\n---"], 7)
    assert result.text == "Hello there." and result.finish_reason == "stop"
    assert (result.prompt_tokens, result.completion_tokens, result.model) == (5, 3, "served-base")


def test_sampling_dialects_llamacpp_and_openai():
    with FakeServer() as server:
        run(make_engine([server.url], sampling_fields="llamacpp"), req(top_k=0))
        run(make_engine([server.url], sampling_fields="openai"), req(stop=()))
        run(make_engine([server.url]), req(top_k=0))
    llama, plain, vllm = (r.json for r in server.posts())
    assert llama["repeat_penalty"] == 1.1 and llama["top_k"] == 0 and "repetition_penalty" not in llama
    assert "top_k" not in plain and "repetition_penalty" not in plain and "stop" not in plain
    assert vllm["top_k"] == -1  # vLLM/SGLang spell "no top-k" as -1


def test_finish_reason_length_and_client_side_stop():
    replies = iter(
        [completion("cut mid-sente", finish="length"), completion("Done.\n---\nNotes", finish="length")]
    )
    with FakeServer(lambda seen: Reply(json=next(replies))) as server:
        engine = make_engine([server.url])
        first = run(engine, req())
        second = run(engine, req())
    assert first.finish_reason == "length" and first.text == "cut mid-sente"
    assert second.finish_reason == "stop" and second.text == "Done."  # a stop string we saw ends it


def test_chat_mode_sends_the_prefill_as_a_final_assistant_message():
    with FakeServer(lambda seen: Reply(json=chat_completion("more text."))) as server:
        engine = make_engine([server.url], mode="chat")
        result = run(engine, req(prefill="Kept paragraph.\n\n"))
        run(engine, req())
    with_prefill, without = (r.json for r in server.posts("/v1/chat/completions"))
    assert with_prefill["messages"][-1] == {"role": "assistant", "content": "Kept paragraph.\n\n"}
    assert with_prefill["continue_final_message"] is True and with_prefill["add_generation_prompt"] is False
    assert "continue_final_message" not in without and without["messages"][-1]["role"] == "user"
    assert result.text == "more text."


def test_context_length_clamps_max_tokens_and_rejects_prompts_that_do_not_fit():
    with FakeServer() as server:
        engine = make_engine([server.url], context_length=20)
        run(engine, req(max_tokens=1000))
        assert server.posts()[0].json["max_tokens"] == 20 - 4  # FakeTokenizer: 4 whitespace-separated tokens
        with pytest.raises(EngineError, match="no room"):
            run(engine, req(text=" ".join(["word"] * 30)))


def test_model_name_is_discovered_from_v1_models():
    with FakeServer() as server:
        engine = make_engine([server.url], model=None)
        result = run(engine, req())
    assert result.model == "served-base" and server.posts()[0].json["model"] == "served-base"


def test_one_engine_serves_successive_event_loops():
    with FakeServer() as server:
        engine = make_engine([server.url])
        assert run(engine, req()).text == run(engine, req()).text == "Hello there."
        engine.close()


def test_api_root_and_retry_after_parsing():
    assert api_root("http://h:8000/v1/") == api_root("http://h:8000") == "http://h:8000"
    assert parse_retry_after("2") == 2.0 and parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    date = "Wed, 21 Oct 2015 07:28:10 GMT"
    assert parse_retry_after(date, now=1445412480.0) == pytest.approx(10.0)
    assert parse_retry_after(date) == 0.0  # in the past
    assert (
        is_loopback("http://127.0.0.1:8000/v1")
        and is_loopback("http://localhost:1")
        and is_loopback("http://[::1]:2")
    )
    assert not is_loopback("http://10.0.0.7:8000/v1")


# ---------------------------------------------------------------------- faults and retries


def scripted(*replies: Reply | None):
    """A handler that answers completions with `replies` in order, then normally."""
    queue = list(replies)
    lock = threading.Lock()

    def handler(seen):
        if seen.path != "/v1/completions":
            return None
        with lock:
            return queue.pop(0) if queue else None

    return handler


@pytest.mark.parametrize(
    "fault",
    [
        Reply(status=500, json={"error": "boom"}),
        Reply(status=502, body=b"<html>bad gateway</html>"),
        Reply(status=503, json={"error": "overloaded"}),
        Reply(action="reset"),
        Reply(action="cutoff", json=completion()),
        Reply(body=b"{not json"),
        Reply(json={"choices": []}),
        Reply(json={"choices": [{"text": 42}]}),
        Reply(json={"error": "no choices"}),
        Reply(json={"choices": [{"text": None, "finish_reason": "stop"}]}),
        Reply(body=b""),
    ],
    ids=[
        "500",
        "502-html",
        "503",
        "reset",
        "cutoff",
        "garbage",
        "no-choices",
        "bad-text",
        "error-body",
        "null",
        "empty",
    ],
)
def test_transient_faults_are_retried(fault):
    with FakeServer(scripted(fault, fault)) as server:
        engine = make_engine([server.url])
        result = run(engine, req())
    assert result.text == "Hello there."
    assert len(server.posts()) == 3 and engine.stats.retries == 2


def test_429_honours_retry_after():
    fault = Reply(status=429, json={"error": "slow down"}, headers={"Retry-After": "1"})
    with FakeServer(scripted(fault)) as server:
        engine = make_engine([server.url])
        started = time.monotonic()
        result = run(engine, req())
        elapsed = time.monotonic() - started
    assert result.text == "Hello there." and engine.stats.failures == {"http_429": 1}
    assert 1.0 <= elapsed < 3.0


def test_timeouts_are_retried_and_bounded():
    with FakeServer(scripted(Reply(delay=1.5))) as server:
        engine = make_engine([server.url], timeout_s=0.3)
        started = time.monotonic()
        result = run(engine, req())
        assert result.text == "Hello there." and engine.stats.failures == {"timeout": 1}
        assert time.monotonic() - started < 1.2  # did not wait for the slow answer


def test_client_errors_fail_at_once():
    with FakeServer(lambda seen: Reply(status=400, json={"error": "max_tokens too large"})) as server:
        engine = make_engine([server.url])
        with pytest.raises(EngineError, match=r"HTTP 400: .*max_tokens too large"):
            run(engine, req())
    assert len(server.posts()) == 1


def test_retries_are_bounded_with_a_clear_error():
    with FakeServer(lambda seen: Reply(status=500, json={"error": "down"})) as server:
        engine = make_engine([server.url], max_retries=3, fail_fast_failures=1000)
        with pytest.raises(EngineError) as err:
            run(engine, req())
    assert len(server.posts()) == 4
    message = str(err.value)
    assert "gave up after 4 attempt(s)" in message and "max_retries=3" in message and "HTTP 500" in message


def test_request_budget_bounds_the_waits():
    fault = Reply(status=429, headers={"Retry-After": "30"}, json={})
    with FakeServer(lambda seen: fault) as server:
        engine = make_engine([server.url], request_budget_s=0.5)
        started = time.monotonic()
        with pytest.raises(EngineError, match="gave up after 1 attempt"):
            run(engine, req())
        assert time.monotonic() - started < 0.5 and len(server.posts()) == 1


def test_total_failure_stops_every_request_instead_of_spinning():
    with FakeServer(lambda seen: Reply(status=500, json={})) as server:
        engine = make_engine([server.url], max_retries=50, fail_fast_failures=5, fail_fast_after_s=0.0)
        started = time.monotonic()

        async def go():
            return await asyncio.gather(*(engine.generate(req()) for _ in range(8)), return_exceptions=True)

        results = LOOP.run_until_complete(go())
        assert time.monotonic() - started < 5
    assert all(isinstance(r, EngineError) for r in results)
    assert "stopping instead of retrying forever" in str(results[0])
    assert len(server.posts()) < 8 * 3  # far fewer than 8 x 51 attempts
    with pytest.raises(EngineError, match="stopping instead"):  # the engine stays stopped
        run(engine, req())


# ---------------------------------------------------------------------- several servers


def test_least_loaded_dispatch_and_per_url_concurrency_limit():
    with (
        FakeServer(lambda s: Reply(json=completion(), delay=0.3)) as slow,
        FakeServer(lambda s: Reply(json=completion(), delay=0.02)) as fast,
    ):
        engine = make_engine([slow.url, fast.url], max_concurrency_per_url=3)
        results = run(engine, *[req() for _ in range(24)])
    assert len(results) == 24
    assert slow.max_concurrent <= 3 and fast.max_concurrent <= 3
    assert len(fast.posts()) > 2 * len(slow.posts()) > 0  # the free, fast server gets most of the work


def test_a_dead_replica_is_shunned():
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    with FakeServer() as alive:
        engine = make_engine([dead, alive.url], backoff_initial_s=1.5, backoff_max_s=1.5)
        assert run(engine, req()).text == "Hello there."  # tried the dead one first, then the live one
        results = run(engine, *[req() for _ in range(20)])  # while the dead one cools down
    assert all(r.text == "Hello there." for r in results)
    assert engine.stats.per_url[dead.removesuffix("/v1")] == 1
    assert len(alive.posts()) == 21 and engine.stats.failures == {"connection": 1}


# ---------------------------------------------------------------------- API key


def test_api_key_comes_from_the_named_env_var_and_never_shows(monkeypatch):
    secret = "sk-test-5ecret-value"
    monkeypatch.setenv("SL_TEST_KEY", secret)

    def echo(seen):  # a server that echoes the credentials into its error (it happens)
        return Reply(status=401, json={"error": f"bad key {seen.headers.get('authorization')}"})

    with FakeServer(echo) as server:
        engine = make_engine([server.url], api_key_env="SL_TEST_KEY")
        with pytest.raises(EngineError) as err:
            run(engine, req())
    assert server.posts()[0].headers["authorization"] == f"Bearer {secret}"
    assert secret not in str(err.value) and "***" in str(err.value)
    assert secret not in repr(engine.config.model_dump())


def test_api_key_env_var_missing_is_a_config_error(monkeypatch):
    monkeypatch.delenv("SL_MISSING_KEY", raising=False)
    with pytest.raises(ConfigError, match="SL_MISSING_KEY"):
        make_engine(["http://127.0.0.1:1/v1"], api_key_env="SL_MISSING_KEY")


# ---------------------------------------------------------------------- adapters


def write_adapter(path, r=16, content=b"weights"):
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text(f'{{"r": {r}}}')
    (path / "adapter_model.safetensors").write_bytes(content)
    return path


def test_runtime_lora_loading_under_new_names(tmp_path):
    round1 = write_adapter(tmp_path / "round-1" / "adapters" / "generator")
    round2 = write_adapter(tmp_path / "round-2" / "adapters" / "generator", content=b"new weights")
    with FakeServer() as server:
        engine = make_engine([server.url])
        with pytest.raises(EngineError, match="no adapter loaded"):
            run(engine, req(adapter="generator"))
        engine.set_adapters({"generator": str(round1)})
        first = run(engine, req(adapter="generator"))
        engine.set_adapters({"generator": str(round1)})  # same files: nothing reloaded
        engine.set_adapters({"generator": str(round2)})
        second = run(engine, req(adapter="generator"))
    loads = server.posts("/v1/load_lora_adapter")
    assert [r.json["lora_path"] for r in loads] == [str(round1.resolve()), str(round2.resolve())]
    assert first.model == loads[0].json["lora_name"] == adapter_served_name("generator", round1)
    assert second.model == loads[1].json["lora_name"] != first.model
    assert [r.json["lora_name"] for r in server.posts("/v1/unload_lora_adapter")] == [first.model]
    assert [r.json["model"] for r in server.posts()] == [first.model, second.model]


def test_static_adapter_names_sglang_names_and_servers_without_runtime_lora(tmp_path):
    adapter = write_adapter(tmp_path / "extender")
    with FakeServer() as server:
        static = make_engine([server.url], adapter_models={"extender": "my-extender"})
        static.set_adapters({"extender": str(adapter)})
        assert run(static, req(adapter="extender")).model == "my-extender"
        sglang = make_engine([server.url], lora_api="sglang")
        sglang.set_adapters({"extender": str(adapter)})
        name = adapter_served_name("extender", adapter)
        assert run(sglang, req(adapter="extender")).model == f"served-base:{name}"
        assert server.posts("/load_lora_adapter")[0].json == {
            "lora_name": name,
            "lora_path": str(adapter.resolve()),
        }
        with pytest.raises(EngineError, match="loads no adapters at run time"):
            make_engine([server.url], lora_api="none").set_adapters({"extender": str(adapter)})


def test_cancelled_requests_free_their_slots():
    with FakeServer(lambda seen: Reply(json=completion(), delay=0.3)) as server:
        engine = make_engine([server.url], max_concurrency_per_url=1)

        async def go():
            tasks = [asyncio.ensure_future(engine.generate(req())) for _ in range(3)]
            await asyncio.sleep(0.1)  # one is on the wire, two wait for the slot
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            assert engine.endpoints[0].in_flight == 0 and not engine.dispatch._waiters
            return await engine.generate(req())  # the slot is free again

        assert LOOP.run_until_complete(go()).text == "Hello there."


class BosTokenizer(FakeTokenizer):
    def __call__(self, text, add_special_tokens=False):
        ids = super().__call__(text)["input_ids"]
        return {"input_ids": ([-1] if add_special_tokens else []) + ids}


def test_no_second_bos_for_tokenizers_that_add_one():
    with FakeServer() as server:
        run(make_engine([server.url], tokenizer=BosTokenizer()), req())
        run(make_engine([server.url], tokenizer=BosTokenizer(), sampling_fields="llamacpp"), req())
        run(make_engine([server.url]), req())
    bos_vllm, bos_llama, plain = (r.json for r in server.posts())
    assert bos_vllm["add_special_tokens"] is False
    assert "add_special_tokens" not in bos_llama and "add_special_tokens" not in plain


def test_an_empty_completion_is_an_answer_not_a_fault():
    with FakeServer(lambda seen: Reply(json=completion(text="", tokens=0))) as server:
        engine = make_engine([server.url])
        result = run(engine, req())
    assert result.text == "" and result.finish_reason == "stop" and engine.stats.retries == 0


def test_dry_fields_go_to_llama_server_and_are_refused_elsewhere():
    from selflengthen.engines.base import Dry

    dry = Dry(0.8, 1.75, 2, 4096)
    with FakeServer() as server:
        run(make_engine([server.url], sampling_fields="llama-server"), req(dry=dry))
        run(make_engine([server.url], sampling_fields="llama-server"), req())
        for dialect in ("vllm", "llamacpp", "openai"):
            with pytest.raises(ConfigError, match=f"dialect is '{dialect}'"):
                run(make_engine([server.url], sampling_fields=dialect), req(dry=dry))
    with_dry, without = (r.json for r in server.posts())
    assert (with_dry["dry_multiplier"], with_dry["dry_base"], with_dry["dry_allowed_length"]) == (
        0.8,
        1.75,
        2,
    )
    assert with_dry["dry_penalty_last_n"] == 4096 and with_dry["dry_sequence_breakers"] == [
        "\n",
        ":",
        '"',
        "*",
    ]
    assert with_dry["repeat_penalty"] == 1.1 and with_dry["top_k"] == 20  # llama.cpp's names, as for llamacpp
    assert not any(k.startswith("dry_") for k in without)
    assert len(server.posts()) == 2  # a refused request never reached the server


def test_one_engine_serves_one_event_loop_until_closed():
    """A run awaits all its requests on one loop; on another, the engine says so instead of failing
    deep in the HTTP client. Closed, it opens new connections on whatever loop uses it next."""
    with FakeServer() as server:
        engine = make_engine([server.url])
        assert run(engine, req()).text == "Hello there."
        with pytest.raises(EngineError, match="another event loop"):
            asyncio.run(engine.generate(req()))
        engine.close()  # its loop is idle: the connections are closed on it
        assert asyncio.run(engine.generate(req())).text == "Hello there."
        engine.close()  # that loop is closed by now: its connections are simply dropped

        async def close_inside():  # a run closing its engine on its own running loop
            await engine.generate(req())
            engine.close()
            await asyncio.sleep(0.05)
            return engine.dispatch._closing

        closing = asyncio.run(close_inside())
        assert closing is not None and closing.done() and not closing.cancelled()
