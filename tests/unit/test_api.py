"""The Python API with a scripted engine: `run` in a script, `await arun` inside a running event
loop, two rounds that hand round 1's adapters to round 2, the engine given the accelerators back
around training, and training off the event loop. Training itself is replaced by a stand-in that
writes an adapter directory (the real one is covered by the integration tests)."""

from __future__ import annotations

import asyncio
import json
import re
import threading

import pytest

import selflengthen
import selflengthen.train.launch
from selflengthen import Request, arun, load_config, run
from selflengthen.engines.fake import FakeEngine
from selflengthen.errors import SelfLengthenError
from selflengthen.store import read_jsonl


def words(prefix: str, n: int) -> str:
    return " ".join(f"{prefix}{i}" for i in range(n))


def paragraphs(prefix: str, count: int, per: int = 8) -> str:
    return "\n\n".join(words(f"{prefix}p{j}w", per) + "." for j in range(count))


def script(request: Request) -> str:
    if re.fullmatch(r"r\d+-ins-\d+", request.tag):  # a Step 0 slot
        if request.prefill:  # self-instruct: the model writes "Instruction 3"
            return f" Write a long essay on {words(request.tag.replace('-', ''), 6)}."
        return "Yes."  # the judge
    if request.tag == "stage1":
        return paragraphs("s", 4)
    if request.tag == "stage2":
        return " " + paragraphs("c", 5)
    return paragraphs("a", 4)  # an answer


class CountingEngine(FakeEngine):
    def __init__(self):
        super().__init__(script)
        self.calls: list[str] = []

    def suspend(self) -> None:
        self.calls.append("suspend")

    def resume(self) -> None:
        self.calls.append("resume")


@pytest.fixture
def config(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")  # a model directory; nothing loads it here
    return load_config(
        None,
        [
            "seed_languages=[en]",
            "macro_iterations=2",
            f"model.base={base}",
            "engine.kind=fake",
            "instruct.count=2",
            "instruct.retries=1",
            "generate.samples_per_instruction=1",
            "generate.retries=1",
            "extend.jobs_per_answer=1",
            "extend.micro_iterations=1",
            "extend.retries=1",
            "select.length_biased=false",
        ],
    )


@pytest.fixture
def trainings(monkeypatch):
    """Replace training by a stand-in that writes an adapter; records where and how it ran."""
    seen: list[dict] = []

    def train_adapter(**kwargs):
        out = kwargs["out_dir"]
        out.mkdir(parents=True)
        (out / "adapter_config.json").write_text("{}")
        (out / "adapter_model.safetensors").write_bytes(b"x")
        stats = {"examples": len(list(read_jsonl(kwargs["data"]))), "steps": 1}
        (out / "training_stats.json").write_text(json.dumps(stats))
        seen.append({**kwargs, "thread": threading.current_thread()})
        return stats

    monkeypatch.setattr(selflengthen.train.launch, "train_adapter", train_adapter)
    return seen


def test_the_api_names_import_from_the_package():
    for name in ("load_config", "run", "arun", "create_engine", "SamplingParams", "Request"):
        assert callable(getattr(selflengthen, name)), name
    with pytest.raises(AttributeError):
        selflengthen.no_such_name  # noqa: B018


def test_run_with_a_scripted_engine_hands_round_1_adapters_to_round_2(tmp_path, config, trainings):
    engine = CountingEngine()
    summaries = run(config, tmp_path / "run", engine)
    assert len(summaries) == 2
    for k in (1, 2):
        assert summaries[k - 1]["extensions"]["kept"] >= 1
        assert summaries[k - 1]["training"]["generator"] == {
            "examples": summaries[k - 1]["extensions"]["kept"],
            "steps": 1,
        }
    round1 = tmp_path / "run" / "round-1" / "adapters"
    assert engine.adapters == {"generator": str(round1 / "generator"), "extender": str(round1 / "extender")}
    # round 2 generated with round 1's adapters; Step 0 always with the base model
    round2 = [r for r in engine.history if r.tag.startswith("r2-")]
    assert {r.adapter for r in round2 if re.fullmatch(r"r2-ins-\d+", r.tag)} == {None}
    assert {r.adapter for r in round2 if r.tag.endswith("-a0")} == {"generator"}
    assert {r.adapter for r in engine.history[-2:]} == {"extender"}  # round 2's last requests: Step 2
    # the accelerators go to training and come back for the next round
    assert engine.calls == ["resume", "suspend", "resume", "suspend"]
    # four trainings (two roles, two rounds), each in a worker thread with a way to stop it
    assert len(trainings) == 4
    assert all(t["thread"] is not threading.main_thread() and t["stop"] is not None for t in trainings)
    assert trainings[2]["init_adapter"] == round1 / "generator"  # round 2 continues round 1's adapter


def test_arun_inside_a_running_event_loop(tmp_path, config, trainings):
    engine = CountingEngine()

    async def notebook_cell():
        ticks = 0

        async def heartbeat():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        beat = asyncio.create_task(heartbeat())
        with pytest.raises(SelfLengthenError, match="await selflengthen.arun"):
            run(config, tmp_path / "run", engine)  # cannot start a second loop in this one
        summaries = await arun(config, tmp_path / "run", engine=engine)
        beat.cancel()
        return summaries, ticks

    summaries, ticks = asyncio.run(notebook_cell())
    assert [s["round"] for s in summaries] == [1, 2] and ticks > 0
    again = asyncio.run(arun(config, tmp_path / "run", engine=engine))  # finished: read back, not redone
    assert again == summaries and len(trainings) == 4
