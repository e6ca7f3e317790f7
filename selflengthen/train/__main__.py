"""Train one LoRA adapter from a prompt-completion JSONL: the entry point the launchers run.

    python -m selflengthen.train --base DIR --data FILE --out DIR --config-json FILE_or_JSON
    accelerate launch --config_file zero3.yaml ... -m selflengthen.train --base DIR ...

`--config-json` holds a `train:` section of the run config (TrainConfig) as JSON, inline or in
a file. Under `accelerate launch` every process trains and only the main one writes the adapter
and its training_stats.json. Our errors end the process with `Error: ...` on stderr and a
non-zero status, which the launcher turns back into a TrainingError.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from selflengthen.errors import ConfigError, SelfLengthenError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m selflengthen.train", description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="resolved base model directory or hub id")
    p.add_argument("--data", required=True, type=Path, help="prompt-completion JSONL")
    p.add_argument("--out", required=True, type=Path, help="adapter directory to write (atomically)")
    p.add_argument("--config-json", required=True, help="TrainConfig as JSON, or a path to a JSON file")
    p.add_argument("--init-adapter", type=Path, default=None, help="continue this adapter (round k-1's)")
    p.add_argument("--work-dir", type=Path, default=None, help="checkpoints (default: OUT.work)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    return p.parse_args(argv)


def load_train_config(value: str):
    """A TrainConfig from inline JSON or a JSON file."""
    from pydantic import ValidationError

    from selflengthen.config import TrainConfig, explain_validation_error

    text, source = (value, None) if value.lstrip().startswith("{") else (None, value)
    if text is None:
        path = Path(value)
        if not path.is_file():
            raise ConfigError(f"--config-json: no such file {value}")
        text = path.read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--config-json is not JSON: {exc}", file=source) from exc
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise explain_validation_error(exc, TrainConfig, source) from exc


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from selflengthen.model import pick_device
        from selflengthen.train.sft import train_adapter

        config = load_train_config(args.config_json)
        stats = train_adapter(
            base=args.base,
            data=args.data,
            out_dir=args.out,
            train_config=config,
            init_adapter=args.init_adapter,
            work_dir=args.work_dir,
            device=pick_device(args.device),
            dtype=args.dtype,
            gradient_checkpointing=config.gradient_checkpointing,
        )
    except SelfLengthenError as exc:
        print(f"Error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    if _is_main_process():
        print(json.dumps(stats), flush=True)
    return 0


def _is_main_process() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


if __name__ == "__main__":
    sys.exit(main())
