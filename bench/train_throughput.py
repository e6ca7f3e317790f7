"""Tokens per second of one round's SFT, and how much of each batch is padding.

    python bench/train_throughput.py                          # embedded SmolLM2-135M, CPU, < 1 min
    python bench/train_throughput.py --batch-size 4           # + length-grouped and padding-free side by side
    python bench/train_throughput.py --sft runs/demo/round-1/sft/generator.jsonl --steps 8
    python bench/train_throughput.py --device cuda --bf16 --batch-size 8 --steps 20 --examples 256

Training is the project's own `selflengthen.train.sft.train_adapter` (TRL SFTTrainer, LoRA on all
linear layers), run a few optimizer steps (`--steps`) on a generator SFT file shaped like a
round's: prompt = a query, completion = an answer of 300-900 words (synthetic English, or a real
file with `--sft`). Batch size and the other training settings come from the config (`--config`,
default: the package defaults, batch 1), `--batch-size` overrides.

How the trainer pads (TRL 1.x SFTTrainer, what train_adapter uses): each example is the chat
template of prompt + completion, tokenized; batches are drawn in random order and padded on the
right to the longest example of the batch (`pad_to_multiple_of` unset). Nothing in our train code
groups by length or packs, so at batch size B every batch costs B x (its longest example)
positions. The modes measured side by side (`--modes`):
  padded        what train_adapter does (random order, pad to the longest of the batch);
  grouped       `train_sampling_strategy="group_by_length"` (transformers' LengthGroupedSampler:
                sorts within mega-batches of min(50, N // 4B) batches, so tiny data sets barely
                group);
  padding_free  TRL `padding_free=True`: a batch is one row of the examples laid end to end with
                position ids restarting at 0 (no padding at all). Without flash-attention kernels,
                attention gets a block-diagonal mask instead, so on CPU it saves the MLP work on
                pads but not necessarily attention time.
Each mode is a real training run through train_adapter (its `sft_args`); padding is read from
the collator's actual batches (a wrapper around TRL's DataCollatorForLanguageModeling records
each batch's example lengths and padded size), time from trainer callbacks (CUDA synchronised).

Printed per mode: steps, seconds (train begin to last step end), real tokens/s (prompt +
completion tokens, as the trainer sees them), padded positions/s (what the model computes on),
padding share, and the steady rate without the first step. Then, from the examples' token lengths
alone (no training), the padding share each mode would have at other batch sizes. At the shipped
configs' batch size of 1 nothing is padded; padding starts to cost at batch 2 and up.

On a CPU that other work keeps busy, pass `--threads 1`: torch's default of one thread per core
waits at every operation for the thread that lost its core (measured: 9 x slower on 2 shared cores).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

MODES = {
    "padded": {},
    "grouped": {"train_sampling_strategy": "group_by_length"},
    # TRL refuses padding_free without packing while max_length is set; train_adapter has already
    # dropped every example longer than max_length, so lifting it truncates nothing.
    "padding_free": {"padding_free": True, "max_length": None},
}

# Common English words: synthetic answers tokenize like real prose (about 1.3 tokens per word).
WORDS = """
the of and to in a is that for it as was with be by on not he this are or his from at which but have
an they you were her she there been one all we their has would when if more no out so said what up
its about into than them can only other new some time could these two may then do first any my now
such like our over man me even most made after also did many before must through back years where
much your way well down should because each just those people how too little state good very make
world still own see men work long get here between both life being under never day same another know
while last might us great old year off come since against go came right used take three states
himself few house use during without again place american around however home small found thought
went say part once general high upon school every until always away something fact though water less
public put think almost hand enough far took head yet government system better set told nothing
night end why called did eyes find going look asked later knew point next program city business give
group toward young days let room president side social given present several order national possible
rather second face per among form important often things looked early white case john become large
big need four within felt along children saw best church ever least power development light thing
seemed family interest want members mind country area others done turned although open god service
certain kind problem began different door thus help sense means whole matter perhaps itself york
times human law line above name example action company hands local show whether five history gave
today either act feet across taken past quite anything seen having death week experience body word
half really field am car words already themselves information tell together college shall money
period held keep sure free real probably seems political cannot behind miss question office brought
whose special heard major problems ago became federal moment study available known result street
economic boy position reason change south board individual job areas society west close turn love
community true court force full seem am policy wife future age voice center woman control common
necessary following front sometimes six girl clear further land run students provide feel party able
mother music education university child effect level stood military town short morning total outside
rate figure class art century washington north usually plan leave therefore evidence top million
sound black strong hard various says believe type value play surface soon mean near lines table
peace modern tax road red book personal process situation minutes increase idea english alone women
gone nor amount doing feeling private cold""".split()

# ---------------------------------------------------------------- data


def synthetic_sft(path: Path, examples: int, min_words: int, max_words: int, seed: int) -> None:
    """A generator SFT file as build_sft_data writes it: prompt = query, completion = the answer."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(examples):
            topic = " ".join(rng.choices(WORDS, k=4))
            query = f"Write a detailed essay about {topic}, with concrete examples and sub-sections."
            n, paragraphs = rng.randint(min_words, max_words), []
            while n > 0:
                sentences = []
                for _ in range(rng.randint(3, 6)):
                    k = min(rng.randint(8, 20), max(n, 1))
                    n -= k
                    words = rng.choices(WORDS, k=k)
                    sentences.append(" ".join(words).capitalize() + ".")
                    if n <= 0:
                        break
                paragraphs.append(" ".join(sentences))
            row = {
                "id": f"r1-ins-{i:05d}-a0-e0",
                "prompt": [{"role": "user", "content": query}],
                "completion": [{"role": "assistant", "content": "\n\n".join(paragraphs)}],
            }
            f.write(json.dumps(row) + "\n")


def token_lengths(base: str, data: Path) -> list[int]:
    """Each example's length in tokens as the trainer sees it (chat template of prompt + completion)."""
    from transformers import AutoTokenizer

    from selflengthen.store import read_jsonl
    from selflengthen.train.sft import _token_length

    tokenizer = AutoTokenizer.from_pretrained(base)
    return [_token_length(tokenizer, row) for row in read_jsonl(data)]


# ---------------------------------------------------------------- padding from lengths alone


def padding_share(batches: list[list[int]], padding_free: bool = False) -> float:
    """Share of the computed positions that are padding, for batches of example lengths."""
    real = sum(sum(b) for b in batches)
    positions = real if padding_free else sum(len(b) * max(b) for b in batches)
    return 1 - real / positions if positions else 0.0


def predicted_padding(
    lengths: list[int], batch_size: int, trials: int = 200, seed: int = 0
) -> dict[str, float]:
    """Expected padding share over one epoch per mode: random order (averaged over `trials`
    shuffles), transformers' own length grouping (same), padding-free (none), and globally sorted
    batches (a bound for any length grouping)."""
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)

    def batches(order: list[int]) -> list[list[int]]:
        return [[lengths[i] for i in order[j : j + batch_size]] for j in range(0, len(order), batch_size)]

    shuffled, grouped = [], []
    for _ in range(trials):
        order = list(range(len(lengths)))
        rng.shuffle(order)
        shuffled.append(padding_share(batches(order)))
        grouped.append(padding_share(batches(get_length_grouped_indices(lengths, batch_size, generator=gen))))
    by_length = sorted(range(len(lengths)), key=lengths.__getitem__)
    return {
        "padded": statistics.fmean(shuffled),
        "grouped": statistics.fmean(grouped),
        "padding_free": 0.0,
        "sorted": padding_share(batches(by_length)),  # the best any length grouping can do
    }


# ---------------------------------------------------------------- one measured training


class _Recorder:
    """Wraps TRL's collator to record every batch it builds (example lengths, padded size), and
    gives a trainer callback that stamps the training's begin and each optimizer step's end."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.batches: list[dict] = []
        self.begin: float | None = None
        self.step_ends: list[float] = []

    def __enter__(self) -> _Recorder:
        from trl.trainer import sft_trainer

        self._cls = sft_trainer.DataCollatorForLanguageModeling
        self._orig = self._cls.torch_call
        recorder, orig = self, self._orig

        def torch_call(collator, examples):
            out = orig(collator, examples)
            recorder.batches.append(
                {
                    "lengths": [len(e["input_ids"]) for e in examples],
                    "positions": int(out["input_ids"].numel()),
                }
            )
            return out

        self._cls.torch_call = torch_call
        return self

    def __exit__(self, *exc) -> None:
        self._cls.torch_call = self._orig

    def _now(self) -> float:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()

    def callback(self):
        from transformers import TrainerCallback

        recorder = self

        class Stamps(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):
                recorder.begin = recorder._now()

            def on_step_end(self, args, state, control, **kw):
                recorder.step_ends.append(recorder._now())

        return Stamps()


def measure_mode(mode: str, base: str, data: Path, train_config, opts: argparse.Namespace) -> dict:
    """Train `opts.steps` steps with train_adapter in `mode`; figures from the recorded batches."""
    from selflengthen.train.sft import train_adapter

    work = Path(tempfile.mkdtemp(prefix=f"throughput-{mode}-"))
    cuda = opts.device.startswith("cuda")
    try:
        with _Recorder(cuda) as rec:
            stats = train_adapter(
                base=base,
                data=data,
                out_dir=work / "adapter",
                work_dir=work / "work",
                train_config=train_config,
                device=opts.device,
                dtype="bfloat16" if opts.bf16 else "float32",
                gradient_checkpointing=train_config.gradient_checkpointing,
                sft_args=MODES[mode],
                callbacks=[rec.callback()],
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    steps = len(rec.step_ends)
    per_step = train_config.gradient_accumulation
    # The data loader may collate a batch ahead of the last step: count the steps' batches only.
    used = rec.batches[: steps * per_step]
    real = sum(sum(b["lengths"]) for b in used)
    positions = sum(b["positions"] for b in used)
    seconds = rec.step_ends[-1] - rec.begin if steps else 0.0
    figures = {
        "mode": mode,
        "steps": steps,
        "batch_size": train_config.batch_size,
        "gradient_accumulation": per_step,
        "examples_seen": sum(len(b["lengths"]) for b in used),
        "seconds": round(seconds, 3),
        "real_tokens": real,
        "padded_positions": positions,
        "padding_share": round(1 - real / positions, 4) if positions else 0.0,
        "real_tokens_per_s": round(real / seconds, 1) if seconds else None,
        "positions_per_s": round(positions / seconds, 1) if seconds else None,
        "final_loss": stats.get("final_loss"),
        "examples_trained_on": stats.get("examples"),
        "dropped_too_long": stats.get("dropped_too_long"),
        "max_length": stats.get("max_length"),
        "train_adapter_seconds": stats.get("seconds"),
    }
    if steps >= 3:  # without the first step (lazy initialisation, first allocations)
        later = used[per_step:]
        span = rec.step_ends[-1] - rec.step_ends[0]
        figures["steady_real_tokens_per_s"] = round(sum(sum(b["lengths"]) for b in later) / span, 1)
    return figures


# ---------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python bench/train_throughput.py",
        description="Real tokens/s, padded positions/s and padding share of one round's SFT (the project's "
        "train_adapter on the embedded SmolLM2-135M by default), with padding-reducing modes side by side.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps per mode")
    ap.add_argument("--batch-size", type=int, default=None, help="per-device batch size (None: the config's)")
    ap.add_argument(
        "--modes",
        default="auto",
        help="comma-separated from padded, grouped, padding_free; auto = padded alone at batch size 1 "
        "(nothing to pad), all three above it",
    )
    ap.add_argument(
        "--sft",
        type=Path,
        default=None,
        help="an SFT JSONL (e.g. RUN/round-1/sft/generator.jsonl) instead of the synthetic one",
    )
    ap.add_argument("--examples", type=int, default=16, help="synthetic examples")
    ap.add_argument("--min-words", type=int, default=300, help="shortest synthetic answer, words")
    ap.add_argument("--max-words", type=int, default=900, help="longest synthetic answer, words")
    ap.add_argument(
        "--base", default="embedded", help="base model: 'embedded' (SmolLM2-135M) or a model dir / hub id"
    )
    ap.add_argument("--config", default=None, help="a run config YAML whose `train` section is used")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    ap.add_argument("--bf16", action="store_true", help="train in bfloat16 (GPU)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (None: torch's default)")
    ap.add_argument("--seed", type=int, default=0, help="synthetic data seed")
    ap.add_argument("--json", default=None, metavar="PATH", help="also write the figures to this JSON file")
    return ap


def print_report(report: dict, out=sys.stdout) -> None:
    p = lambda *a: print(*a, file=out)  # noqa: E731
    d = report["data"]
    device = report["device"] + (" bf16" if report["bf16"] else "")
    p(
        f"SFT throughput: {report['base_name']} on {device}, batch {report['batch_size']} x accumulation "
        f"{report['gradient_accumulation']}, {report['steps']} steps per mode"
    )
    p(
        f"data: {d['source']}, {d['examples']} examples, tokens per example min {d['min_tokens']} / "
        f"median {d['median_tokens']} / max {d['max_tokens']}"
    )
    p(
        f"{'mode':<13} {'steps':>5} {'seconds':>8} {'real tok/s':>11} {'positions/s':>12} {'padding':>8} "
        f"{'steady tok/s':>13} {'vs padded':>10}"
    )
    base_rate = next((m["real_tokens_per_s"] for m in report["modes"] if m["mode"] == "padded"), None)
    for m in report["modes"]:
        steady = m.get("steady_real_tokens_per_s")
        ratio = f"{m['real_tokens_per_s'] / base_rate:.2f}x" if base_rate and m["real_tokens_per_s"] else "-"
        p(
            f"{m['mode']:<13} {m['steps']:>5} {m['seconds']:>8.2f} {m['real_tokens_per_s'] or 0:>11.1f} "
            f"{m['positions_per_s'] or 0:>12.1f} {m['padding_share']:>8.1%} "
            f"{(f'{steady:.1f}' if steady else '-'):>13} {ratio:>10}"
        )
    p("  real = prompt + completion tokens after the chat template; positions = what the batches hold,")
    p("  padding included; padding = 1 - real / positions; steady = without the first step")
    p("")
    p("padding share over one epoch of these examples, from their lengths (no training):")
    columns = [*MODES, "sorted"]
    p(f"{'batch':>6} " + " ".join(f"{m:>13}" for m in columns))
    for b, shares in report["predicted_padding"].items():
        p(f"{b:>6} " + " ".join(f"{shares[m]:>13.1%}" for m in columns))
    p("  padded and grouped: mean over 200 shuffles, as the trainer's samplers draw them; sorted: batches")
    p("  of globally sorted lengths, the least padding any length grouping can reach")


def _quiet_libraries() -> None:
    """As `selflengthen run` does: no per-load progress bars or advisory warnings in the figures."""
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    from datasets.utils.logging import disable_progress_bar
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    disable_progress_bar()


def main(argv: list[str] | None = None, out=sys.stdout) -> dict:
    opts = build_parser().parse_args(argv)
    _quiet_libraries()
    import torch

    from selflengthen.config import load_config
    from selflengthen.model import resolve_base

    if opts.threads:
        torch.set_num_threads(opts.threads)
    if opts.bf16 and not opts.device.startswith("cuda"):
        print("note: --bf16 on CPU is slow on most CPUs; it is meant for GPUs", file=sys.stderr)
    base = resolve_base(opts.base)
    overrides = [f"train.max_steps={opts.steps}", "train.save_steps=1000000", "train.logging_steps=1"]
    if opts.batch_size:
        overrides.append(f"train.batch_size={opts.batch_size}")
    train_config = load_config(opts.config, overrides).train
    batch = train_config.batch_size
    if opts.modes == "auto":
        modes = ["padded"] if batch == 1 else list(MODES)
    else:
        modes = [m.strip() for m in opts.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise SystemExit(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")

    tmp = Path(tempfile.mkdtemp(prefix="throughput-data-"))
    try:
        if opts.sft:
            data, source = opts.sft, str(opts.sft)
        else:
            data = tmp / "generator.jsonl"
            synthetic_sft(data, opts.examples, opts.min_words, opts.max_words, opts.seed)
            source = f"synthetic, {opts.min_words}-{opts.max_words} words per answer"
        lengths = token_lengths(base, data)
        results = [measure_mode(m, base, data, train_config, opts) for m in modes]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # train_adapter drops examples over max_length (and says how many): so do the figures here.
    lengths = [n for n in lengths if n <= results[0]["max_length"]]
    sizes = sorted({b for b in (1, 2, 4, 8, 16) if b <= len(lengths)} | {batch})
    report = {
        "bench": "train_throughput",
        "base": base,
        "base_name": opts.base if opts.base != "embedded" else "SmolLM2-135M-Instruct (embedded)",
        "device": opts.device,
        "bf16": opts.bf16,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "batch_size": batch,
        "gradient_accumulation": train_config.gradient_accumulation,
        "steps": opts.steps,
        "data": {
            "source": source,
            "examples": len(lengths),
            "min_tokens": min(lengths),
            "median_tokens": int(statistics.median(lengths)),
            "max_tokens": max(lengths),
        },
        "modes": results,
        "predicted_padding": {b: predicted_padding(lengths, b) for b in sizes},
    }
    print_report(report, out)
    if opts.json:
        Path(opts.json).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
