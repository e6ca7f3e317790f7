"""Many kill -9 trials against real `selflengthen run` processes, and the tally.

    python bench/kill_trials.py --runs 3 --kills 4            # about 4-6 minutes on 2 CPU cores
    python bench/kill_trials.py --runs 10 --kills 6 --faults 0.1 --tear

Each run directory is killed `--kills` times, each time at a random moment: a named point of the
round seen from its files (self-instruct, generation, between generation and extension,
extension, after the SFT data, mid-training of either role once a checkpoint is on disk, between
the two trainings) or a random delay after the start. After each kill the directory is checked
(every JSON(L) file whole, a torn tail only in append-only files), optionally a torn half-line
is appended (`--tear`), and the checkpoints' first logged loss is marked, so the final adapter
shows whether its training resumed from a checkpoint. Then the run is finished and checked as
tests/reliability/test_kill_resume.py does: each id exactly once, parents kept, instruction ids
equal to a clean run's, summary.json equal to the records, adapters that PEFT loads.

The runs use tests/reliability/harness.py: the OpenAI engine against the fault server (canned
text, `--latency` per request, `--faults` = total rate of retryable faults) and real TRL
training of a tiny random Llama (SmolLM2's tokenizer), so a round costs seconds, not minutes.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.faults.fault_server import FaultServer  # noqa: E402
from tests.reliability.harness import (  # noqa: E402
    ROLES,
    check_complete,
    check_interrupted,
    kill_at,
    load_adapters,
    random_moment,
    run_config,
    start_run,
    tamper_checkpoint_losses,
    tear_last_line,
    tiny_model,
    write_config,
)

SENTINEL = 987.654


GROWING = {
    "instruct": "instructions.jsonl",
    "generate": "work/answers.partial.jsonl",
    "extend": "work/extensions.partial.jsonl",
}


def _tear_growing_file(run_dir: Path, stage: str) -> str | None:
    """Append a torn half-line to the append-only file the killed run was writing, if any."""
    path = run_dir / "round-1" / GROWING.get(stage, "-")
    if stage not in GROWING or not path.is_file():
        return None
    tear_last_line(path)
    return path.name


def one_run(
    index: int,
    args,
    base: Path,
    config: Path,
    cfg: dict,
    clean_ids: set[str],
    model: Path,
    rng: random.Random,
) -> dict:
    run_dir, log = base / f"run-{index}", base / f"run-{index}.log"
    kills, problems, tampered = [], [], set()
    for _ in range(args.kills):
        moment = random_moment(rng, run_dir, args.duration)
        trial = kill_at(start_run(config, run_dir, log), run_dir, moment, timeout=args.timeout)
        after = check_interrupted(run_dir)
        problems += [f"after a kill at {trial.stage}: {p}" for p in after]
        if trial.killed:
            for role in ROLES:
                done = (run_dir / "round-1" / "adapters" / role / "adapter_model.safetensors").is_file()
                if not done and tamper_checkpoint_losses(run_dir, role, SENTINEL):  # a training to resume
                    tampered.add(role)
            if args.tear and rng.random() < 0.5:
                torn = _tear_growing_file(run_dir, trial.stage)
                if torn:
                    trial.notes.append(f"torn {torn}")
        kills.append(trial)
        print(
            f"  run {index} kill {len(kills)}: {trial.moment:<16} -> {'killed' if trial.killed else 'ended'} "
            f"during {trial.stage} after {trial.seconds:.1f}s {' '.join(trial.notes)}",
            flush=True,
        )
        if not trial.killed and trial.returncode == 0:
            break  # the run finished before the moment came: nothing left to kill
    final = start_run(config, run_dir, log)
    rc = final.wait(timeout=args.timeout)
    if rc != 0:
        problems.append(f"final run exited {rc}; see {log}")
    else:
        problems += check_complete(run_dir, cfg, clean_ids)
        problems += load_adapters(run_dir, model)
    resumed = {}
    summary_path = run_dir / "round-1" / "summary.json"
    if rc == 0 and summary_path.is_file():
        training = json.loads(summary_path.read_text())["training"]
        for role in ROLES:
            history = training.get(role, {}).get("loss_history") or [[0, None]]
            got = history[0][1] == SENTINEL
            resumed[role] = "resumed" if got else "fresh"
            if role in tampered and not got:
                problems.append(
                    f"the {role} had a checkpoint when killed but its training did not resume from it"
                )
    return {"kills": kills, "rc": rc, "problems": problems, "resumed": resumed, "tampered": sorted(tampered)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="run directories, each killed --kills times")
    parser.add_argument("--kills", type=int, default=4, help="kills per run directory before it is finished")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--latency", type=float, default=0.2, help="seconds per completion (max; min is half)"
    )
    parser.add_argument("--faults", type=float, default=0.0, help="total rate of retryable server faults")
    parser.add_argument("--tear", action="store_true", help="after some kills, append a torn half-line")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one run may take")
    parser.add_argument("--out", type=Path, default=None, help="where the runs go (default: a temporary dir)")
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    base = args.out or Path(tempfile.mkdtemp(prefix="kill-trials-"))
    base.mkdir(parents=True, exist_ok=True)
    model = tiny_model(base / "cache")
    kinds = ("500", "429", "timeout", "reset", "garbage", "cutoff")
    rates = {k: args.faults / len(kinds) for k in kinds} if args.faults else {}
    started = time.monotonic()
    results = []
    with FaultServer(rates, latency=(args.latency / 2, args.latency), seed=args.seed) as server:
        config = write_config(base / "run.yaml", server.url, model)
        cfg = run_config(server.url, model)
        server.set_rates({})  # the clean reference runs without faults, uninterrupted
        t0 = time.monotonic()
        clean = start_run(config, base / "clean", base / "clean.log")
        if clean.wait(timeout=args.timeout) != 0 or check_complete(base / "clean", cfg):
            print(f"the clean run failed: see {base / 'clean.log'}", file=sys.stderr)
            return 2
        args.duration = time.monotonic() - t0
        clean_ids = {
            json.loads(line)["id"] for line in (base / "clean" / "round-1" / "instructions.jsonl").open()
        }
        server.set_rates(rates)
        print(
            f"kill trials in {base}: {args.runs} runs x {args.kills} kills, latency {args.latency}s, "
            f"faults {args.faults:.0%}, seed {args.seed}; a clean run took {args.duration:.0f}s",
            flush=True,
        )
        for i in range(args.runs):
            results.append(one_run(i, args, base, config, cfg, clean_ids, model, rng))
        stats = server.stats()

    kills = [k for r in results for k in r["kills"]]
    by_stage = Counter(k.stage for k in kills if k.killed)
    by_moment = Counter(
        k.moment if not k.moment.startswith("after_") or not k.moment.endswith("s") else "random delay"
        for k in kills
    )
    resumed = Counter(f"{role} {how}" for r in results for role, how in r["resumed"].items())
    ok = [r for r in results if r["rc"] == 0 and not r["problems"]]
    print()
    print(f"trials: {len(kills)} kill attempts over {len(results)} runs in {time.monotonic() - started:.0f}s")
    print(
        f"killed: {sum(k.killed for k in kills)}; "
        f"the run ended before its moment: {sum(not k.killed for k in kills)}"
    )
    print("kills by stage: " + ", ".join(f"{s} {n}" for s, n in sorted(by_stage.items())))
    print("moments drawn: " + ", ".join(f"{m} {n}" for m, n in sorted(by_moment.items())))
    print(f"torn lines appended: {sum(any(n.startswith('torn') for n in k.notes) for k in kills)}")
    print("training after kills: " + (", ".join(f"{k} {n}" for k, n in sorted(resumed.items())) or "-"))
    if rates:
        print(f"server: {stats['requests']} requests, faults {dict(sorted(stats['faults'].items()))}")
    print(
        f"outcomes: {len(ok)}/{len(results)} runs completed with every check passing "
        f"(ids once, torn tails dropped, ids = clean run, parents kept, summary = records, adapters load)"
    )
    for i, r in enumerate(results):
        for p in r["problems"]:
            print(f"  run {i}: {p}")
    return 0 if len(ok) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
