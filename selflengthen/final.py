"""After the last round: collect -> length control -> one final SFT.

    config = load_run_config(Path("runs/demo"), ["final.min_words=300"])  # final_cli.py
    prepare_final_data(config, Path("runs/demo"))   # RUN/final/sft.jsonl
    train_final(config, Path("runs/demo"))          # RUN/final/model/

Files under RUN/final/ (each stage is done when its file exists; run again to resume):

    settings.json          what the data was built from; a change asks for --redo
    extra/                 optional extra Generator answers (instructions.jsonl, answers.jsonl)
    collected.jsonl        every candidate with its verdict; collect_stats.json: what each filter removed
    work/length.partial.jsonl   per-record progress of length control
    constrained.jsonl      every collected pair with type, constraint, original and final query, rewrite
    length_stats.json      constraint types, rewrites, rejection reasons
    sft.jsonl              the final SFT set: {"id", "prompt": [...], "completion": [...]}
    model/                 the final model: a LoRA adapter or a full model (final.method)

The caller holds the run lock (`selflengthen collect/train` and `run` do). The `a`-prefixed
functions await on the caller's event loop (a run's); the others start one of their own.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from selflengthen.config import Config
from selflengthen.engines.base import Engine
from selflengthen.errors import ConfigError, EmptyFinalSetError, InputError, TrainingError
from selflengthen.progress import NullProgress, Progress
from selflengthen.records import KEPT
from selflengthen.stages import collect as collect_stage
from selflengthen.stages.common import max_in_flight, run_items, sampling_params
from selflengthen.stages.length_control import constrain_record
from selflengthen.store import (
    adapter_complete,
    atomic_write_json,
    atomic_write_jsonl,
    existing_ids,
    read_jsonl,
)

# Fields of `final` that change only the training, not the data.
_TRAINING_ONLY = {"enabled", "method", "train"}


class FinalPaths:
    """Paths of RUN/final/ (layout in the module docstring)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.settings = self.root / "settings.json"
        self.extra = self.root / "extra"
        self.collected = self.root / "collected.jsonl"
        self.collect_stats = self.root / "collect_stats.json"
        self.partial = self.root / "work" / "length.partial.jsonl"
        self.constrained = self.root / "constrained.jsonl"
        self.length_stats = self.root / "length_stats.json"
        self.sft = self.root / "sft.jsonl"
        self.model = self.root / "model"
        self.train_work = self.root / "work" / "train"
        self.train_log = self.root / "work" / "train.log"


def final_paths(run_dir: Path) -> FinalPaths:
    return FinalPaths(Path(run_dir) / "final")


def data_settings(config: Config, run_dir: Path) -> dict[str, Any]:
    """Everything the final data depends on; stored in settings.json to detect a stale RUN/final."""
    final = {k: v for k, v in config.final.model_dump(mode="json").items() if k not in _TRAINING_ONLY}
    return {
        "final": final,
        "seed": config.seed,
        "model": config.model.base,
        "rounds": collect_stage.round_numbers(run_dir),
    }


def _flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _check_settings(paths: FinalPaths, settings: dict, redo: bool) -> None:
    if redo and paths.root.exists():
        shutil.rmtree(paths.root)
    if paths.settings.is_file():
        old, new = _flatten(json.loads(paths.settings.read_text(encoding="utf-8"))), _flatten(settings)
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if changed:
            raise ConfigError(
                f"{paths.root} was built with other settings ({', '.join(changed)} differ); "
                "rebuild it with `selflengthen collect RUN --redo` (the final model is retrained after that)",
                field=changed[0],
            )
    atomic_write_json(paths.settings, settings)


class _Engines:
    """The engine, created only when a stage needs one (a template-only collect needs none)."""

    def __init__(self, config: Config, engine: Engine | None):
        self.config, self.engine, self.own = config, engine, False

    def get(self) -> Engine:
        if self.engine is None:
            from selflengthen.engines import create_engine

            self.engine, self.own = create_engine(self.config.engine, self.config.model), True
        return self.engine

    def close(self) -> None:
        if self.own and self.engine is not None:
            self.engine.close()


def prepare_final_data(
    config: Config,
    run_dir: Path,
    *,
    engine: Engine | None = None,
    progress: Progress | None = None,
    redo: bool = False,
) -> dict[str, Any]:
    """Collect and add length constraints: writes RUN/final/sft.jsonl. Returns both stages' stats."""
    return asyncio.run(aprepare_final_data(config, run_dir, engine=engine, progress=progress, redo=redo))


async def aprepare_final_data(
    config: Config,
    run_dir: Path,
    *,
    engine: Engine | None = None,
    progress: Progress | None = None,
    redo: bool = False,
) -> dict[str, Any]:
    """`prepare_final_data` on the caller's event loop."""
    run_dir, progress = Path(run_dir), progress or NullProgress()
    paths = final_paths(run_dir)
    if not collect_stage.round_numbers(run_dir):
        raise InputError(f"{run_dir} has no rounds yet: run `selflengthen run` first")
    _check_settings(paths, data_settings(config, run_dir), redo)
    engines = _Engines(config, engine)
    try:
        if not paths.collected.is_file():
            extra = None
            if config.final.extra_answers:
                extra = collect_stage.extra_round_dir(run_dir, paths.extra).answers
                if not extra.is_file():  # the engine (a model load) only when there is work for it
                    progress.log(f"final · {config.final.extra_answers} extra Generator answers")
                    await collect_stage.generate_extra(config, engines.get(), run_dir, paths.extra, progress)
            progress.log("final · collecting")
            collect_stage.collect(
                run_dir, paths.collected, config.final, extra_answers=extra, stats_path=paths.collect_stats
            )
        collect_stats = json.loads(paths.collect_stats.read_text(encoding="utf-8"))
        if not collect_stats["kept"]:
            # Nothing to build a final set from: say why, and leave no settings behind, so the
            # same command with another word range runs without --redo (unless extra answers,
            # which depend on the settings, were generated: those need --redo to be remade).
            message = collect_stage.nothing_kept_message(collect_stats)
            paths.collected.unlink(missing_ok=True)
            paths.collect_stats.unlink(missing_ok=True)
            if paths.extra.exists():
                message += " and --redo"
            else:
                paths.settings.unlink(missing_ok=True)
            raise EmptyFinalSetError(message)
        if not (paths.constrained.is_file() and paths.sft.is_file()):
            kept = [row for row in read_jsonl(paths.collected) if row.get("verdict") == KEPT]
            left = {row["id"] for row in kept} - existing_ids(paths.partial)
            needs_llm = config.final.rewrite and bool(left)
            await _length_control(config, kept, paths, engines.get() if needs_llm else None, progress)
            _finish_length(paths, [row["id"] for row in kept])
        length_stats = json.loads(paths.length_stats.read_text(encoding="utf-8"))
    finally:
        engines.close()
    return {"collect": collect_stats, "length": length_stats, "sft": str(paths.sft)}


async def _length_control(
    config: Config, records: list[dict], paths: FinalPaths, engine: Engine | None, progress: Progress
) -> int:
    # No DRY here: a rewrite must copy most of the query, and DRY penalises copying the prompt.
    sampling = sampling_params(config, max_tokens=config.final.rewrite_max_tokens, dry=False)
    return await run_items(
        [(row["id"], row) for row in records],
        lambda _id, row: constrain_record(engine, row, config.final, sampling, config.seed),
        paths.partial,
        max_in_flight=max_in_flight(config.engine, engine.name if engine is not None else config.engine.kind),
        progress=progress,
        description="final · length constraints",
        total=len(records),
    )


def sft_row(record: dict) -> dict:
    return {
        "id": record["id"],
        "prompt": [{"role": "user", "content": record["query"]}],
        "completion": [{"role": "assistant", "content": record["response"]}],
    }


def _finish_length(paths: FinalPaths, order: list[str]) -> dict:
    """constrained.jsonl in collected order, sft.jsonl of the kept records, length_stats.json."""
    done: dict[str, dict] = {}
    for row in read_jsonl(paths.partial, repair_tail=True):
        done.setdefault(row["id"], row)
    missing = [i for i in order if i not in done]
    if missing:
        raise TrainingError(
            f"length control left {len(missing)} records unfinished (first: {missing[0]}); run again"
        )
    records = [done[i] for i in order]
    kept = [r for r in records if r["verdict"] == KEPT]
    atomic_write_jsonl(paths.constrained, records)
    atomic_write_jsonl(paths.sft, (sft_row(r) for r in kept))
    types = Counter(r["type"] for r in kept)
    stats = {
        "records": len(records),
        "kept": len(kept),
        "dropped": dict(Counter(r["verdict"] for r in records if r["verdict"] != KEPT)),
        "types": {t: types.get(t, 0) for t in ("about", "range", "above", "below")},
        "rewrite": dict(Counter(r["rewrite"] for r in kept)),
        "rejections": dict(Counter(a["reason"] for r in records for a in r["attempts"]).most_common()),
        "numerals": dict(Counter(r["numeral"] for r in kept)),
        "units": dict(Counter(str(r["unit"]) for r in kept)),
        "mean_score": round(sum(r["score"] for r in kept) / len(kept), 6) if kept else None,
    }
    atomic_write_json(paths.length_stats, stats)
    return stats


# ------------------------------------------------------------------------- the final SFT


def model_complete(path: Path, method: str) -> bool:
    from selflengthen.train.sft import full_model_complete

    return adapter_complete(path) if method == "lora" else full_model_complete(path)


def train_final(
    config: Config, run_dir: Path, *, force: bool = False, stop: threading.Event | None = None
) -> dict:
    """One SFT on RUN/final/sft.jsonl into RUN/final/model/ (LoRA adapter or full model)."""
    from selflengthen.model import pick_device, resolve_base
    from selflengthen.train.launch import run_training

    paths = final_paths(run_dir)
    if not paths.sft.is_file():
        raise InputError(f"no final SFT set at {paths.sft}: run `selflengthen collect {run_dir}` first")
    method = config.final.method
    if model_complete(paths.model, method) and not force:
        stats_file = paths.model / "training_stats.json"
        return json.loads(stats_file.read_text()) if stats_file.is_file() else {}
    stats = run_training(
        config.final.train_config(config.train),
        base=resolve_base(config.model.base),
        data=paths.sft,
        out_dir=paths.model,
        work_dir=paths.train_work,
        log_path=paths.train_log,
        config_json=paths.root / "work" / "train.config.json",
        device=pick_device(config.model.device),
        dtype=config.model.dtype,
        full=method == "full",
        what="training the final model",
        stop=stop,
    )
    stats["method"] = method
    if model_complete(paths.model, method):  # not on the other nodes of a multi-node training
        atomic_write_json(paths.model / "training_stats.json", stats)
    return stats


async def arun_final(
    config: Config, run_dir: Path, *, engine: Engine | None = None, progress: Progress | None = None
) -> dict[str, Any]:
    """Everything after the last round (what `run` does when `final.enabled`), on the caller's loop."""
    from selflengthen.train.launch import train_off_loop

    progress = progress or NullProgress()
    stats = await aprepare_final_data(config, run_dir, engine=engine, progress=progress)
    if stats["length"].get("kept", 0) == 0:
        stats["training"] = {
            "skipped": "no records in the final SFT set (lower final.min_words?)",
            "examples": 0,
        }
        return stats
    progress.log("final · training the final model")
    stats["training"] = await train_off_loop(train_final, config, run_dir)
    return stats


def run_final(
    config: Config, run_dir: Path, *, engine: Engine | None = None, progress: Progress | None = None
) -> dict[str, Any]:
    """`arun_final` in an event loop of its own."""
    return asyncio.run(arun_final(config, run_dir, engine=engine, progress=progress))
