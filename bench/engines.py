"""llama-server, vLLM and the transformers engine: one round's Steps 1-2 on the same instructions.

    python bench/engines.py                      # 16 instructions, up to 384 new tokens, all three
    python bench/engines.py --engines transformers,llama-server   # without vLLM (scripts/setup.sh --vllm)
    python bench/engines.py --instructions 32 --max-tokens 768 --json out.json

Each engine runs the project's real stage code (Generator answers, selection, the two-stage
Extender) from the same instructions and config, in its own run directory, in this one process,
one after the other. Prints generated tokens/s of each and the ratio. Sampling is random, so the
two runs' later requests differ in content; their sizes are alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from round_steps import engine_overrides, seed_instructions, steps_1_2  # noqa: E402

ROOT = Path(__file__).parents[1]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instructions", type=int, default=16, help="instructions answered and extended")
    ap.add_argument("--max-tokens", type=int, default=384, help="new tokens per request at most")
    ap.add_argument(
        "--slots", type=int, default=16, help="transformers batch size = llama-server parallel slots"
    )
    ap.add_argument(
        "--engines", default="transformers,llama-server,vllm", help="comma-separated, run in this order"
    )
    ap.add_argument(
        "--config", default=str(ROOT / "configs" / "demo.yaml"), help="base config (sizes of a round)"
    )
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)

    from selflengthen.config import load_config
    from selflengthen.engines import create_engine

    instructions = seed_instructions(args.instructions)
    figures: dict = {
        "instructions": args.instructions,
        "max_tokens": args.max_tokens,
        "slots": args.slots,
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "engines": {},
    }
    for kind in args.engines.split(","):
        config = load_config(
            args.config,
            [
                f"sampling.max_tokens={args.max_tokens}",
                "sampling.max_tokens_growth=1.0",
                *engine_overrides(kind, args.slots),
            ],
        )
        with tempfile.TemporaryDirectory() as tmp:
            engine = create_engine(config.engine, config.model, run_dir=tmp)
            try:
                seconds, tokens, counts = steps_1_2(config, engine, Path(tmp), instructions)
            finally:
                engine.close()
        figures["engines"][kind] = {
            "seconds": round(seconds, 1),
            "tokens": tokens,
            "tokens_per_s": round(tokens / seconds, 1),
            **counts,
        }
        print(
            f"{kind:>13}: {tokens} tokens in {seconds:.0f} s = {tokens / seconds:.1f} tokens/s  {counts}",
            flush=True,
        )
    engines = figures["engines"]
    if "transformers" in engines and "llama-server" in engines:
        ratio = engines["llama-server"]["tokens_per_s"] / engines["transformers"]["tokens_per_s"]
        figures["ratio"] = round(ratio, 2)
        print(f"llama-server / transformers = {ratio:.2f}x (goal >= 1.8x)")
    if "transformers" in engines and "vllm" in engines:
        figures["vllm_ratio"] = round(
            engines["vllm"]["tokens_per_s"] / engines["transformers"]["tokens_per_s"], 2
        )
        print(f"vllm / transformers = {figures['vllm_ratio']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return figures


if __name__ == "__main__":
    main()
