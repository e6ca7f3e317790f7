"""The macro-iteration: Step 0 -> Step 1 -> Step 2 -> SFT data -> train both roles, K times.

    from selflengthen import load_config, run, arun
    summaries = run(load_config("configs/smoke.yaml"), "runs/smoke")        # a script
    summaries = await arun(load_config("configs/smoke.yaml"), "runs/smoke")  # a notebook

Every stage writes its records as items finish and marks completion by its final file, so
running the same command again after a crash resumes at the first unfinished item. Round k
generates with round k-1's adapters and trains starting from them. A run awaits all its stages
on one event loop (the caller's, with `arun`); training runs in a worker thread or a child
process, so the loop stays free while a model trains.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

from selflengthen import __version__
from selflengthen.config import Config, dump_config
from selflengthen.engines.base import EXTENDER, GENERATOR, Engine
from selflengthen.errors import ConfigError, SelfLengthenError, TrainingError
from selflengthen.progress import NullProgress, Progress
from selflengthen.prompts import load_seeds
from selflengthen.records import KEPT
from selflengthen.stages.common import RoundContext
from selflengthen.stages.extend import finish_extend, run_extend
from selflengthen.stages.generate import finish_generate, run_generate
from selflengthen.stages.instruct import run_instruct
from selflengthen.stages.sft_data import build_sft_data
from selflengthen.store import (
    RunLock,
    adapter_complete,
    atomic_write_json,
    read_jsonl,
    remove_stale_temporaries,
    round_dir,
)
from selflengthen.summary import load_summary, round_summary

ROLES = (GENERATOR, EXTENDER)
# Fields that may change between a run and its resumption without invalidating finished work.
RESUMABLE_CHANGES = {"macro_iterations", "name", "engine", "final"}


def write_manifest(run_dir: Path, config: Config) -> None:
    """manifest.json: the resolved config (configs name API keys by env var, never hold them)."""
    path = run_dir / "manifest.json"
    resolved = dump_config(config)
    if path.is_file():
        old = json.loads(path.read_text()).get("config", {})
        changed = sorted(
            k
            for k in set(old) | set(resolved)
            if old.get(k) != resolved.get(k) and k not in RESUMABLE_CHANGES
        )
        if changed:
            raise ConfigError(
                f"{run_dir} was started with a different config ({', '.join(changed)} differ); "
                "resume with the same config or use a new --run-dir",
                field=changed[0],
            )
    atomic_write_json(path, {"package": "selflengthen", "version": __version__, "config": resolved})


class _Minutes:
    """Minutes per stage of a round, in RUN/round-K/work/minutes.json (a resumed stage adds up)."""

    def __init__(self, path: Path):
        self.path = path
        self.minutes: dict[str, float] = json.loads(path.read_text()) if path.is_file() else {}

    def add(self, stage: str, started: float) -> None:
        spent = (time.perf_counter() - started) / 60
        self.minutes[stage] = round(self.minutes.get(stage, 0.0) + spent, 2)
        atomic_write_json(self.path, self.minutes)


async def run_round(
    ctx: RoundContext, seeds, previous_instructions: list[str], adapters: dict[str, Path], base: str
) -> dict:
    """Run (or resume) one macro-iteration; returns its summary."""
    from selflengthen.train.launch import train_off_loop, train_role

    rd, config = ctx.rd, ctx.config
    minutes = _Minutes(rd.work / "minutes.json")
    started = time.perf_counter()
    await run_instruct(ctx, seeds, previous_instructions)
    minutes.add("instruct", started)
    if not rd.answers.is_file():
        started = time.perf_counter()
        await run_generate(ctx)
        finish_generate(ctx)
        minutes.add("generate", started)
    if not rd.extensions.is_file():
        started = time.perf_counter()
        await run_extend(ctx)
        finish_extend(ctx)
        minutes.add("extend", started)
    if not (rd.sft(GENERATOR).is_file() and rd.sft(EXTENDER).is_file()):
        build_sft_data(ctx)

    training = {}
    if not all(adapter_complete(rd.adapter(r)) for r in ROLES):
        ctx.engine.suspend()  # a managed server gives the accelerators to training
    for role in ROLES:
        out = rd.adapter(role)
        if adapter_complete(out):
            stats_file = out / "training_stats.json"
            training[role] = json.loads(stats_file.read_text()) if stats_file.is_file() else {}
            # A kill between writing the adapter and deleting its checkpoints leaves them: delete them now.
            shutil.rmtree(rd.work / f"train-{role}", ignore_errors=True)
            continue
        ctx.progress.log(f"round {rd.k} · training the {role}")
        started = time.perf_counter()
        try:
            training[role] = await train_off_loop(train_role, config, base, rd, role, adapters.get(role))
        except TrainingError as exc:
            training[role] = {"skipped": str(exc), "examples": 0}
        minutes.add(f"train_{role}", started)
    summary = round_summary(rd, training, minutes.minutes)
    atomic_write_json(rd.summary, summary)
    return summary


async def arun(
    config: Config, run_dir: str | Path, *, engine: Engine | None = None, progress: Progress | None = None
) -> list[dict]:
    """The whole loop, awaited on the caller's event loop (a notebook's). Returns every round's summary.

    Without `engine` the run builds the one its config names and closes it at the end; an engine
    passed in (a scripted one in tests, one shared with other work) is used and left open."""
    progress = progress or NullProgress()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir):
        # Check the inputs before the manifest records the config: a typo in the seeds file or the
        # model path must not pin the run directory to the bad config ("started with a different config").
        from selflengthen.model import resolve_base

        seeds = load_seeds(config.seeds_file)
        base = resolve_base(config.model.base)
        remove_stale_temporaries(run_dir)  # what a killed predecessor was writing
        write_manifest(run_dir, config)
        own_engine = engine is None
        if engine is None:
            from selflengthen.engines import create_engine

            engine = create_engine(config.engine, config.model, run_dir=run_dir)
        summaries: list[dict] = []
        adapters: dict[str, Path] = {}  # role -> latest trained adapter
        previous: list[str] = []
        try:
            for k in range(1, config.macro_iterations + 1):
                rd = round_dir(run_dir, k)
                summary = load_summary(rd)
                if summary is None:
                    if adapters:  # before resume: llama-server starts once, with the new adapters
                        engine.set_adapters({role: str(path) for role, path in adapters.items()})
                    engine.resume()
                    ctx = RoundContext.for_round(config, engine, run_dir, k, progress, set(adapters))
                    summary = await run_round(ctx, seeds, previous, adapters, base)
                    progress.log(f"round {k} done")
                summaries.append(summary)
                previous += [r["text"] for r in read_jsonl(rd.instructions) if r.get("verdict") == KEPT]
                for role in ROLES:
                    if adapter_complete(rd.adapter(role)):
                        adapters[role] = rd.adapter(role)
            if config.final.enabled:
                from selflengthen.final import arun_final

                # No resume: a managed server starts again only if a final stage sends it requests.
                progress.log("final stage: collect -> length constraints -> final SFT")
                await arun_final(config, run_dir, engine=engine, progress=progress)
        finally:
            if own_engine:
                engine.close()
        return summaries


def run(
    config: Config, run_dir: str | Path, engine: Engine | None = None, *, progress: Progress | None = None
) -> list[dict]:
    """`arun` for scripts and the CLI: starts an event loop for the run and closes it at the end.
    Inside a running loop (a notebook), `await arun(...)` instead."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(arun(config, run_dir, engine=engine, progress=progress))
    raise SelfLengthenError(
        "selflengthen.run() cannot start an event loop inside a running one (a notebook): "
        "use `await selflengthen.arun(config, run_dir)`"
    )


run_selflengthen = run  # the name the CLI and older scripts use
