"""The macro-iteration: Step 0 -> Step 1 -> Step 2 -> SFT data -> train both roles, K times.

Every stage writes its records as items finish and marks completion by its final file, so
running the same command again after a crash resumes at the first unfinished item. Round k
generates with round k-1's adapters and trains starting from them.
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
from selflengthen.errors import ConfigError, TrainingError
from selflengthen.progress import NullProgress, Progress
from selflengthen.prompts import load_seeds
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
        changed = sorted(k for k in set(old) | set(resolved) if old.get(k) != resolved.get(k) and k not in RESUMABLE_CHANGES)
        if changed:
            raise ConfigError(
                f"{run_dir} was started with a different config ({', '.join(changed)} differ); "
                "resume with the same config or use a new --run-dir",
                field=changed[0],
            )
    atomic_write_json(path, {"package": "selflengthen", "version": __version__, "config": resolved})


def _timed(minutes: dict, stage: str, fn, *args):
    started = time.perf_counter()
    out = fn(*args)
    minutes[stage] = round(minutes.get(stage, 0.0) + (time.perf_counter() - started) / 60, 2)
    return out


def run_round(ctx: RoundContext, seeds, previous_instructions: list[str], adapters: dict[str, Path], base: str) -> dict:
    """Run (or resume) one macro-iteration; returns its summary."""
    rd, config = ctx.rd, ctx.config
    minutes_file = rd.work / "minutes.json"
    minutes = json.loads(minutes_file.read_text()) if minutes_file.is_file() else {}

    def save_minutes():
        atomic_write_json(minutes_file, minutes)

    _timed(minutes, "instruct", asyncio.run, run_instruct(ctx, seeds, previous_instructions))
    save_minutes()
    if not rd.answers.is_file():
        _timed(minutes, "generate", asyncio.run, run_generate(ctx))
        finish_generate(ctx)
        save_minutes()
    if not rd.extensions.is_file():
        _timed(minutes, "extend", asyncio.run, run_extend(ctx))
        finish_extend(ctx)
        save_minutes()
    if not (rd.sft(GENERATOR).is_file() and rd.sft(EXTENDER).is_file()):
        build_sft_data(ctx)

    training = {}
    suspend = getattr(ctx.engine, "suspend", None)  # a managed server gives the GPU back to training
    if suspend is not None and not all(adapter_complete(rd.adapter(r)) for r in ROLES):
        suspend()
    for role in ROLES:
        out = rd.adapter(role)
        if adapter_complete(out):
            training[role] = json.loads((out / "training_stats.json").read_text()) if (out / "training_stats.json").is_file() else {}
            # A kill between writing the adapter and deleting its checkpoints leaves them: delete them now.
            shutil.rmtree(rd.work / f"train-{role}", ignore_errors=True)
            continue
        from selflengthen.train.launch import train_role

        ctx.progress.log(f"round {rd.k} · training the {role}")
        try:
            training[role] = _timed(minutes, f"train_{role}", train_role, config, base, rd, role, adapters.get(role))
        except TrainingError as exc:
            training[role] = {"skipped": str(exc), "examples": 0}
        save_minutes()
    summary = round_summary(rd, training, minutes)
    atomic_write_json(rd.summary, summary)
    return summary


def run_selflengthen(config: Config, run_dir: Path, *, progress: Progress | None = None, engine: Engine | None = None) -> list[dict]:
    """The whole loop. Returns the summaries of all rounds."""
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
                if adapters:
                    engine.set_adapters({role: str(path) for role, path in adapters.items()})
                summary = load_summary(rd)
                if summary is None:
                    ctx = RoundContext.for_round(config, engine, run_dir, k, progress, set(adapters))
                    summary = run_round(ctx, seeds, previous, adapters, base)
                    progress.log(f"round {k} done")
                summaries.append(summary)
                previous += [r["text"] for r in read_jsonl(rd.instructions) if r.get("verdict") == "kept"]
                for role in ROLES:
                    if adapter_complete(rd.adapter(role)):
                        adapters[role] = rd.adapter(role)
            if config.final.enabled:
                from selflengthen.final import run_final

                progress.log("final stage: collect -> length constraints -> final SFT")
                run_final(config, run_dir, engine=engine, progress=progress)
        finally:
            if own_engine:
                engine.close()
        return summaries
