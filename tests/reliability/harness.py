"""The kill-and-resume harness shared by the reliability tests and `bench/kill_trials.py`.

A run here is the real CLI (`python -m selflengthen.cli run`) over the OpenAI-compatible engine,
served by the fault server (tests/faults/fault_server.py: canned text, no model, optional
latency and faults), with real LoRA training by TRL on a tiny random Llama that uses SmolLM2's
tokenizer: every file the run writes is real, and a round costs seconds of compute instead of
minutes, so many kills fit in a test run.

    model = tiny_model(cache_dir)
    write_config(path, url=server.url, model=model)
    trial = kill_at(cli_run(path, run_dir), run_dir, MOMENTS["generate"])   # kill -9 when it happens
    problems = check_interrupted(run_dir)      # what a kill may leave: torn tails only
    problems = check_complete(run_dir, cfg)    # after the last run: ids, parents, summary, adapters
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SEEDS = ROOT / "configs" / "smoke-seeds.jsonl"
ROLES = ("generator", "extender")
TINY = "tiny-llama-smollm2-tokenizer"


# ---------------------------------------------------------------- the model and the config


def tiny_model(cache: Path) -> Path:
    """A 0.8M-parameter random Llama with SmolLM2's tokenizer and chat template, in `cache` (made once).

    The tokenizer comes from the embedded model's converted directory when that exists in
    SELFLENGTHEN_CACHE, else straight from the GGUF (no model weights are dequantized)."""
    target = Path(cache) / TINY
    if (target / "model.safetensors").is_file() and (target / "tokenizer_config.json").is_file():
        return target
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from selflengthen.model import EMBEDDED_NAME, cache_dir, embedded_gguf

    converted = cache_dir() / EMBEDDED_NAME
    if (converted / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(converted)
    else:
        gguf = embedded_gguf()
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    LlamaForCausalLM(config).save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if not target.exists():
        os.replace(tmp, target)
    return target


def run_config(url: str, model: str | Path, **overrides: Any) -> dict:
    """A small round: 2 seed instructions answered + `instruct.count` new ones, every step of the method,
    3 training steps per role with a checkpoint after each (so a kill mid-training has one to resume)."""
    cfg: dict[str, Any] = {
        "name": "reliability",
        "seed": 1,
        "macro_iterations": 1,
        "seed_languages": ["en"],
        "seeds_file": str(SEEDS),
        "model": {"base": str(model)},
        "engine": {
            "kind": "openai",
            "batch_size": 2,
            "openai": {
                "base_urls": [url],
                "connect_timeout_s": 2.0,
                "timeout_s": 1.0,
                "max_retries": 10,
                "backoff_initial_s": 0.05,
                "backoff_max_s": 0.5,
                "retry_after_max_s": 2.0,
                "request_budget_s": 60.0,
                "fail_fast_failures": 10,
                "fail_fast_after_s": 3.0,
            },
        },
        "sampling": {"max_tokens": 320},
        "instruct": {"count": 3, "retries": 3, "max_tokens": 96, "answer_seeds": 2},
        "generate": {"samples_per_instruction": 2, "retries": 3},
        "extend": {"jobs_per_answer": 1, "micro_iterations": 1, "retries": 2},
        "checks": {"meta_words": []},
        "train": {"max_steps": 3, "save_steps": 1, "learning_rate": 1.0e-3, "max_length": 1024},
    }
    for dotted, value in overrides.items():
        node = cfg
        *parents, last = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return cfg


def write_config(path: Path, url: str, model: str | Path, **overrides: Any) -> Path:
    path = Path(path)
    path.write_text(yaml.safe_dump(run_config(url, model, **overrides), sort_keys=False))
    return path


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "selflengthen.cli", *args]


def cli_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false", **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def start_run(config: Path, run_dir: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`selflengthen run` in a child, its output appended to `log`."""
    out = open(log, "ab")
    try:
        return subprocess.Popen(
            cli("run", "--config", str(config), "--run-dir", str(run_dir)),
            stdout=out, stderr=subprocess.STDOUT, env=env or cli_env(), cwd=str(ROOT),
        )  # fmt: skip
    finally:
        out.close()


# ---------------------------------------------------------------- moments to kill at


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except OSError:
        return 0


def _r(run_dir: Path) -> Path:
    return Path(run_dir) / "round-1"


def _checkpoint(run_dir: Path, role: str) -> bool:
    return any((_r(run_dir) / "work" / f"train-{role}").glob("checkpoint-*/trainer_state.json"))


def _adapter(run_dir: Path, role: str) -> bool:
    return (_r(run_dir) / "adapters" / role / "adapter_model.safetensors").is_file()


@dataclass(frozen=True)
class Moment:
    """When to kill: `ready(run_dir)` turns true at that point of the run, seen from its files, which
    `stage_of` then calls `during`."""

    name: str
    during: str
    ready: Callable[[Path], bool]


STAGES = (
    "startup",
    "instruct",
    "generate",
    "extend",
    "sft_data",
    "train_generator",
    "train_extender",
    "done",
)
MOMENTS: dict[str, Moment] = {
    m.name: m
    for m in (
        Moment("instruct", "instruct", lambda d: _lines(_r(d) / "instructions.jsonl") >= 3),
        Moment("generate", "generate", lambda d: _lines(_r(d) / "work" / "answers.partial.jsonl") >= 1),
        Moment("after_generate", "extend", lambda d: (_r(d) / "answers.jsonl").is_file()),
        Moment("extend", "extend", lambda d: _lines(_r(d) / "work" / "extensions.partial.jsonl") >= 1),
        Moment("after_extend", "sft_data", lambda d: (_r(d) / "extensions.jsonl").is_file()),
        Moment("after_sft_data", "train_generator", lambda d: (_r(d) / "sft" / "extender.jsonl").is_file()),
        Moment("train_generator", "train_generator", lambda d: _checkpoint(d, "generator")),
        Moment("after_generator", "train_extender", lambda d: _adapter(d, "generator")),
        Moment("train_extender", "train_extender", lambda d: _checkpoint(d, "extender")),
    )
}


def _holder(run_dir: Path) -> int | None:
    """The pid in run.lock: the process that holds (or last held) the run directory."""
    try:
        return int((Path(run_dir) / "run.lock").read_text().strip())
    except (OSError, ValueError):
        return None


def stage_of(run_dir: Path) -> str:
    """Where a run stands, judged from its files (for the tally of where kills landed)."""
    r = _r(run_dir)
    if (r / "summary.json").is_file():
        return "done"
    if _adapter(run_dir, "generator"):
        return "train_extender"
    if (r / "sft" / "extender.jsonl").is_file():
        return "train_generator"
    if (r / "extensions.jsonl").is_file():
        return "sft_data"
    if (r / "answers.jsonl").is_file():
        return "extend"
    if (r / "work" / "answers.partial.jsonl").is_file():
        return "generate"
    if (r / "instructions.jsonl").is_file():
        return "instruct"
    return "startup"


@dataclass
class Trial:
    moment: str
    killed: bool  # False: the run ended before the moment came
    stage: str  # where the kill landed (stage_of just after it)
    seconds: float
    returncode: int | None = None
    notes: list[str] = field(default_factory=list)


def kill_at(
    proc: subprocess.Popen,
    run_dir: Path,
    moment: Moment | float,
    *,
    timeout: float = 600.0,
    poll: float = 0.01,
) -> Trial:
    """SIGKILL `proc` when `moment` comes (a Moment, or a number of seconds after the start)."""
    started = time.monotonic()
    name = moment.name if isinstance(moment, Moment) else f"after_{moment:.1f}s"
    while proc.poll() is None and time.monotonic() - started < timeout:
        due = moment.ready(run_dir) if isinstance(moment, Moment) else time.monotonic() - started >= moment
        if due:
            stage = stage_of(run_dir) if _holder(run_dir) == proc.pid else "startup"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return Trial(name, True, stage, time.monotonic() - started, proc.returncode)
        time.sleep(poll)
    if proc.poll() is None:  # the moment never came in time: stop it anyway, and say so
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return Trial(name, True, stage_of(run_dir), time.monotonic() - started, proc.returncode, ["timeout"])
    return Trial(name, False, stage_of(run_dir), time.monotonic() - started, proc.returncode)


def tamper_checkpoint_losses(run_dir: Path, role: str, sentinel: float) -> list[str]:
    """Write `sentinel` as the first logged loss of every checkpoint of `role`: if training resumes
    from a checkpoint, that value shows up in the adapter's loss history; a restart from scratch
    would log a real loss instead. Returns the checkpoints changed."""
    changed = []
    for state in sorted((_r(run_dir) / "work" / f"train-{role}").glob("checkpoint-*/trainer_state.json")):
        data = json.loads(state.read_text())
        for entry in data.get("log_history", []):
            if "loss" in entry:
                entry["loss"] = sentinel
                break
        else:
            continue
        state.write_text(json.dumps(data))
        changed.append(state.parent.name)
    return changed


def tear_last_line(path: Path) -> None:
    """Append what a crash in the middle of a write leaves: half a JSON object, no newline."""
    with open(path, "ab") as f:
        f.write(b'{"id": "r1-torn", "text": "half a rec')


# ---------------------------------------------------------------- checks


APPEND_ONLY = ("instructions.jsonl", "answers.partial.jsonl", "extensions.partial.jsonl")


def jsonl_report(path: Path) -> tuple[list[dict], list[str], bool]:
    """(rows, problems, torn): every complete line must be a JSON object with a unique id; a last line
    without its newline is `torn` (allowed in append-only files after a crash, never read as data)."""
    data = path.read_bytes()
    body, _, tail = data.rpartition(b"\n")
    if not body and not data.endswith(b"\n"):
        body, tail = b"", data
    rows, problems = [], []
    for no, raw in enumerate(body.split(b"\n") if body else [], start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            problems.append(f"{path}:{no}: not JSON ({exc})")
            continue
        if not isinstance(obj, dict):
            problems.append(f"{path}:{no}: not an object")
            continue
        rows.append(obj)
    ids = Counter(r.get("id") for r in rows)
    problems += [f"{path}: id {i!r} appears {n} times" for i, n in ids.items() if n > 1]
    return rows, problems, bool(tail)


def check_interrupted(run_dir: Path) -> list[str]:
    """Problems in a run directory just after a kill (or any failure). A torn last line is allowed
    in the append-only files; every other JSON(L) file must be whole."""
    problems = []
    for path in sorted(Path(run_dir).rglob("*")):
        if not path.is_file() or _TMP(path) or "checkpoint-" in str(path):
            continue
        if path.suffix == ".jsonl":
            _, bad, torn = jsonl_report(path)
            problems += bad
            if torn and path.name not in APPEND_ONLY:
                problems.append(f"{path}: torn last line in a file written atomically")
        elif path.suffix == ".json":
            try:
                json.loads(path.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                problems.append(f"{path}: not JSON ({exc})")
    return problems


def _TMP(path: Path) -> bool:
    return any(part.startswith(".") and ".tmp" in part for part in path.parts[-3:])


def leftover_temporaries(run_dir: Path) -> list[Path]:
    return [p for p in Path(run_dir).rglob(".*.tmp*")]


def _child_problems(
    children: list[dict],
    kept_parents: set[str],
    parent_field: str,
    letter: str,
    n: int,
    child: str,
    parent: str,
) -> list[str]:
    """Children (answers, extensions) must be exactly n per kept parent, ids PARENT-<letter>J, each
    naming its parent."""
    problems = []
    want = {f"{p}-{letter}{j}" for p in kept_parents for j in range(n)}
    if {c["id"] for c in children} != want:
        problems.append(
            f"{child} ids {sorted(c['id'] for c in children)} are not kept {parent}s x {n}: {sorted(want)}"
        )
    problems += [
        f"{child} {c['id']}: parent {c.get(parent_field)} is not a kept {parent}"
        for c in children
        if c.get(parent_field) not in kept_parents or not c["id"].startswith(c[parent_field])
    ]
    return problems


def check_complete(run_dir: Path, cfg: dict, expected_instruction_ids: set[str] | None = None) -> list[str]:
    """Problems in a finished round-1: ids, parents, summary against the records, adapters, no leftovers."""
    r = _r(run_dir)
    problems = check_interrupted(run_dir)
    files = {}
    for name in (
        "instructions.jsonl",
        "answers.jsonl",
        "extensions.jsonl",
        "sft/generator.jsonl",
        "sft/extender.jsonl",
    ):
        path = r / name
        if not path.is_file():
            problems.append(f"{path}: missing")
            files[name] = []
            continue
        rows, _, torn = jsonl_report(path)
        if torn:
            problems.append(f"{path}: torn last line at the end of the run")
        files[name] = rows
    ins, ans, ext = files["instructions.jsonl"], files["answers.jsonl"], files["extensions.jsonl"]
    if expected_instruction_ids is not None and {x["id"] for x in ins} != expected_instruction_ids:
        problems.append(
            f"instruction ids {sorted(x['id'] for x in ins)} != "
            f"clean run's {sorted(expected_instruction_ids)}"
        )
    kept_ins = {x["id"] for x in ins if x.get("verdict") == "kept"}
    problems += _child_problems(
        ans,
        kept_ins,
        "instruction_id",
        "a",
        cfg["generate"]["samples_per_instruction"],
        "answer",
        "instruction",
    )
    kept_ans = {a["id"] for a in ans if a.get("verdict") == "kept"}
    problems += _child_problems(
        ext, kept_ans, "answer_id", "e", cfg["extend"]["jobs_per_answer"], "extension", "answer"
    )
    kept_ext = {e["id"] for e in ext if e.get("verdict") == "kept"}
    for role in ROLES:
        if {row["id"] for row in files[f"sft/{role}.jsonl"]} != kept_ext:
            problems.append(f"sft/{role}.jsonl ids differ from the kept extensions")
    summary_path = r / "summary.json"
    if not summary_path.is_file():
        return problems + [f"{summary_path}: missing"]
    summary = json.loads(summary_path.read_text())
    for key, rows in (("instructions", ins), ("answers", ans), ("extensions", ext)):
        made, kept = len(rows), sum(x.get("verdict") == "kept" for x in rows)
        if (summary[key]["made"], summary[key]["kept"]) != (made, kept):
            problems.append(
                f"summary {key}: made/kept {summary[key]['made']}/{summary[key]['kept']} "
                f"!= records {made}/{kept}"
            )
    for role in ROLES:
        t = summary["training"].get(role, {})
        adapter = r / "adapters" / role
        if not (
            (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
        ):
            problems.append(f"{adapter}: incomplete adapter")
        on_disk = (
            json.loads((adapter / "training_stats.json").read_text())
            if (adapter / "training_stats.json").is_file()
            else None
        )
        if on_disk is None:
            problems.append(f"{adapter}: no training_stats.json")
        elif on_disk != t:
            problems.append(f"summary training.{role} differs from {adapter}/training_stats.json")
        if t.get("examples", -1) + t.get("dropped_too_long", 0) != len(kept_ext):
            problems.append(
                f"summary training.{role}: {t.get('examples')} examples for {len(kept_ext)} kept extensions"
            )
        if t.get("steps") != cfg["train"]["max_steps"]:
            problems.append(
                f"summary training.{role}: {t.get('steps')} steps, configured {cfg['train']['max_steps']}"
            )
        if (r / "work" / f"train-{role}").exists():
            problems.append(f"checkpoints of the {role} left after its adapter was written")
    problems += [f"leftover temporary {p}" for p in leftover_temporaries(run_dir)]
    return problems


def load_adapters(run_dir: Path, model: str | Path) -> list[str]:
    """Load each adapter with PEFT on the base; returns the problems (empty when both load)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    problems = []
    for role in ROLES:
        try:
            base = AutoModelForCausalLM.from_pretrained(str(model))
            PeftModel.from_pretrained(base, str(_r(run_dir) / "adapters" / role))
        except Exception as exc:  # noqa: BLE001 - reported, not raised: the tally counts it
            problems.append(f"{role} adapter does not load: {type(exc).__name__}: {exc}")
    return problems


def random_moment(rng: random.Random, run_dir: Path, duration: float) -> Moment | float:
    """A named moment still ahead of the run, or a random delay after the start (up to 60% of
    `duration`, about what an uninterrupted run takes), for the bench."""
    now = STAGES.index(stage_of(run_dir))
    ahead = [m for _, m in sorted(MOMENTS.items()) if STAGES.index(m.during) >= now and not m.ready(run_dir)]
    if ahead and rng.random() < 0.8:
        return rng.choice(ahead)
    return round(rng.uniform(0.5, max(0.6 * duration, 1.0)), 1)


def clean_steps(config_path: Path, run_dir: Path) -> dict[str, set[str]]:
    """Steps 0-2 of round 1, uninterrupted, in this process (the reference a killed run must equal);
    returns the ids of each file."""
    import asyncio

    from selflengthen.config import load_config
    from selflengthen.engines import create_engine
    from selflengthen.prompts import load_seeds
    from selflengthen.stages.common import RoundContext
    from selflengthen.stages.extend import finish_extend, run_extend
    from selflengthen.stages.generate import finish_generate, run_generate
    from selflengthen.stages.instruct import run_instruct

    config = load_config(config_path)
    engine = create_engine(config.engine, config.model)
    try:
        ctx = RoundContext.for_round(config, engine, Path(run_dir), 1)

        async def steps() -> None:  # on one event loop, as a run awaits them
            await run_instruct(ctx, load_seeds(config.seeds_file), [])
            await run_generate(ctx)
            finish_generate(ctx)
            await run_extend(ctx)
            finish_extend(ctx)

        asyncio.run(steps())
    finally:
        engine.close()
    r = _r(run_dir)
    return {
        name: {row["id"] for row in jsonl_report(r / name)[0]}
        for name in ("instructions.jsonl", "answers.jsonl", "extensions.jsonl")
    }


def error_line(stderr: str) -> str:
    """The one `Error: ...` line a failed command prints last (the run's banner may come before it);
    AssertionError if there is none, several, or a traceback."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1 and lines and lines[-1] == errors[0], stderr[-3000:]
    return errors[0]
