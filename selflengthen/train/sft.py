"""LoRA SFT of one role with TRL: read a prompt-completion JSONL, write a PEFT adapter directory.

The same function runs in-process on a laptop and as a module entry point
(`python -m selflengthen.train`) under `accelerate launch`. Round k continues from round k-1's
adapter of the same role. Examples longer than `max_length` tokens are dropped and counted,
never truncated (a truncated long answer teaches the model to stop mid-sentence).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from selflengthen.errors import TrainingError
from selflengthen.store import adapter_complete, atomic_write_json, read_jsonl


def _token_ids(tokenizer: Any, messages: list[dict], **kwargs: Any) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, tokenize=True, **kwargs)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return list(ids)


def _token_length(tokenizer: Any, row: dict) -> int:
    return len(_token_ids(tokenizer, row["prompt"] + row["completion"]))


def turn_end_id(tokenizer: Any, row: dict) -> int:
    """The token that ends the assistant's turn in this model's chat template: the first special
    token after the answer's text (<|im_end|> in SmolLM2 and Qwen, <end_of_turn> in Gemma, <|eot_id|>
    in Llama 3). Not always the tokenizer's EOS (Gemma's is <eos>), and the model learns to stop at
    the turn's end."""
    prompt = _token_ids(tokenizer, row["prompt"], add_generation_prompt=True)
    full = _token_ids(tokenizer, row["prompt"] + row["completion"])
    special = set(tokenizer.all_special_ids)
    for token in full[len(prompt) :]:
        if token in special:
            return token
    raise TrainingError(
        "train.end_weight: no special token ends the assistant's turn in this model's chat template"
    )


def last_checkpoint(work_dir: Path) -> str | None:
    """The newest complete checkpoint to resume from. The trainer writes trainer_state.json last (and
    not atomically): a checkpoint without it, or with half of it (a kill mid-write), is skipped."""
    if not work_dir.is_dir():
        return None
    ckpts = [p for p in work_dir.glob("checkpoint-*") if p.name[11:].isdigit() and _state_readable(p)]
    return str(max(ckpts, key=lambda p: int(p.name.split("-")[1]))) if ckpts else None


def _state_readable(checkpoint: Path) -> bool:
    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
        return True
    except (OSError, ValueError):
        return False


class TrainingStopped(Exception):
    """Training ended early because its caller asked (Ctrl-C in a run); its checkpoints remain."""


def train_adapter(
    *,
    base: str,
    data: Path,
    out_dir: Path,
    train_config: Any,
    init_adapter: Path | None = None,
    work_dir: Path | None = None,
    device: str = "cpu",
    dtype: str = "auto",
    gradient_checkpointing: bool = False,
    full: bool = False,
    sft_args: dict[str, Any] | None = None,
    callbacks: list[Any] | None = None,
    stop: threading.Event | None = None,
) -> dict:
    """Train one adapter; returns stats (examples, dropped_too_long, final_loss, loss_history, ...).

    `base` is a resolved model directory or hub id. The adapter is written to a temporary
    sibling and renamed, so `out_dir` is either absent or complete. With `full=True` every
    weight is trained and `out_dir` gets a whole model (with its tokenizer) instead.
    `sft_args` overrides or adds SFTConfig fields and `callbacks` go to the trainer: for
    experiments and benchmarks (bench/train_throughput.py), e.g. {"padding_free": True,
    "max_length": None} (safe: over-long examples are already dropped above). Setting `stop`
    from another thread raises TrainingStopped after the current step.
    """
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTTrainer

    from selflengthen.model import pick_dtype

    started = time.perf_counter()
    out_dir, work_dir = Path(out_dir), Path(work_dir or Path(out_dir).with_name(Path(out_dir).name + ".work"))
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    max_length = train_config.max_length or int(
        getattr(_config_of(base), "max_position_embeddings", 0) or 8192
    )
    rows, dropped = _examples(tokenizer, data, max_length)
    stats: dict[str, Any] = {
        "examples": len(rows),
        "dropped_too_long": dropped,
        "max_length": max_length,
        "learning_rate": train_config.learning_rate,
    }
    if not rows:
        raise TrainingError(
            f"no training examples left in {data} ({dropped} longer than {max_length} tokens)"
        )

    torch_dtype = pick_dtype(dtype, device)
    # The training arguments come before the model: under `accelerate launch` they set up the
    # distributed state, which DeepSpeed ZeRO-3 needs to shard the model while it loads.
    args = _sft_config(
        train_config, work_dir, max_length, device, torch_dtype, gradient_checkpointing, sft_args
    )
    model, peft_config = _model(base, torch_dtype, train_config, init_adapter, full)
    if stop is not None:
        callbacks = [*(callbacks or []), _stop_callback(stop)]
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    end_weight = train_config.end_weight
    if end_weight != 1.0:
        if args.label_smoothing_factor > 0 or args.loss_type != "nll":
            # Those losses are not the sum of the label log-probabilities the weight scales.
            raise TrainingError(
                "train.end_weight works with the plain loss only, not with label smoothing or "
                f"loss_type={args.loss_type!r}"
            )
        weight_end_token(trainer.model, turn_end_id(tokenizer, rows[0]), end_weight)
        stats["end_weight"] = end_weight
    trainer.train(resume_from_checkpoint=last_checkpoint(work_dir))
    history = [[h["step"], round(h["loss"], 4)] for h in trainer.state.log_history if "loss" in h]

    # Under `accelerate launch` every process gets here. Gathering the weights is collective
    # (ZeRO-3, FSDP); only the main process writes, after the others have stopped training.
    accelerator = trainer.accelerator
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(trainer.model_wrapped)
    stats.update(
        final_loss=history[-1][1] if history else None,
        loss_history=history,
        steps=trainer.state.global_step,
        processes=accelerator.num_processes,
        train_tokens=trained_tokens(trainer.state),
        seconds=round(time.perf_counter() - started, 1),
        continued_from=str(init_adapter) if init_adapter else None,
    )
    if accelerator.is_main_process:
        _save(trainer.model, tokenizer if full else None, state_dict, stats, out_dir, work_dir)
    accelerator.wait_for_everyone()
    return stats


def trained_tokens(state: Any) -> int:
    """Tokens the trainer consumed. TRL logs its running count as `num_tokens` in the log history;
    transformers' own `num_input_tokens_seen` stays 0 unless `include_num_input_tokens_seen` is set."""
    logged = [h["num_tokens"] for h in state.log_history if isinstance(h.get("num_tokens"), (int, float))]
    return int(max(logged, default=0) or getattr(state, "num_input_tokens_seen", 0) or 0)


def weight_end_token(model: Any, end_id: int, weight: float) -> None:
    """Count the loss on the end-of-turn token `end_id` `weight` times.

    TRL's SFTTrainer asks the model for per-token log-probabilities of the labels (its fused LM head:
    `model(..., labels=..., fused_lm_head=True)`) and sums them over the batch. Scaling the ones whose
    label is the end token before that sum weights them, with the normaliser (the token count) and
    TRL's metrics unchanged. The wrapper sits on the module the trainer calls, so DDP, DeepSpeed
    and FSDP reach it through that module's own call."""
    original = model.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        outputs = original(*args, **kwargs)
        log_probs = getattr(outputs, "log_probs", None)
        if not kwargs.get("fused_lm_head") or log_probs is None:
            return outputs
        # The fused head scores position t against label t + 1, unless the labels come pre-shifted.
        shifted = kwargs.get("shift_labels")
        if shifted is None:
            shifted = kwargs["labels"][:, 1:]
        outputs.log_probs = log_probs * (1.0 + (weight - 1.0) * (shifted == end_id).to(log_probs.dtype))
        return outputs

    model.forward = forward


def _examples(tokenizer: Any, data: Path, max_length: int) -> tuple[list[dict], int]:
    """The prompt-completion rows that fit in `max_length` tokens, and how many did not."""
    rows, dropped = [], 0
    for row in read_jsonl(data):
        if _token_length(tokenizer, row) > max_length:
            dropped += 1
            continue
        rows.append({"prompt": row["prompt"], "completion": row["completion"]})
    return rows, dropped


def _sft_config(
    train_config: Any,
    work_dir: Path,
    max_length: int,
    device: str,
    torch_dtype: Any,
    gradient_checkpointing: bool,
    sft_args: dict[str, Any] | None,
) -> Any:
    import torch
    from trl import SFTConfig

    settings: dict[str, Any] = dict(
        output_dir=str(work_dir),
        num_train_epochs=train_config.epochs,
        max_steps=train_config.max_steps,
        learning_rate=train_config.learning_rate,
        lr_scheduler_type=train_config.lr_scheduler,
        warmup_steps=train_config.warmup_ratio,  # a float in [0, 1) is a ratio in transformers 5
        per_device_train_batch_size=train_config.batch_size,
        gradient_accumulation_steps=train_config.gradient_accumulation,
        logging_steps=train_config.logging_steps,
        save_strategy="steps",
        save_steps=max(1, train_config.save_steps),
        save_total_limit=1,
        max_length=max_length,
        seed=train_config.seed,
        report_to="none",
        use_cpu=not device.startswith("cuda"),
        bf16=torch_dtype == torch.bfloat16,
        gradient_checkpointing=gradient_checkpointing,
        disable_tqdm=True,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,  # every LoRA weight is used; DDP skips the graph walk
    )
    return SFTConfig(**{**settings, **(sft_args or {})})


def _model(
    base: str, torch_dtype: Any, train_config: Any, init_adapter: Path | None, full: bool
) -> tuple[Any, Any]:
    """(model, peft_config): the base for full training; round k-1's adapter, trainable, to continue
    it; or the base and a new LoRA config."""
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch_dtype)
    if full:
        return model, None
    if init_adapter is not None:
        return PeftModel.from_pretrained(model, str(init_adapter), is_trainable=True), None
    lora = train_config.lora
    return model, LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )


def _stop_callback(stop: threading.Event) -> Any:
    from transformers import TrainerCallback

    class StopWhenAsked(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if stop.is_set():
                raise TrainingStopped(f"training stopped at step {state.global_step}")

    return StopWhenAsked()


def _save(model: Any, tokenizer: Any, state_dict: Any, stats: dict, out_dir: Path, work_dir: Path) -> None:
    """Write the adapter (or, with a tokenizer, the full model) and its stats to a temporary sibling,
    then rename it to `out_dir`: a kill leaves either nothing or the whole thing."""
    full = tokenizer is not None
    tmp = out_dir.with_name(f".{out_dir.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), state_dict=state_dict)
    if full:
        tokenizer.save_pretrained(str(tmp))
    if not (full_model_complete(tmp) if full else adapter_complete(tmp)):
        raise TrainingError(f"training finished but nothing complete was written to {tmp}")
    # The stats go in before the rename: a kill can never leave an adapter without them.
    atomic_write_json(tmp / "training_stats.json", stats)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    shutil.rmtree(work_dir, ignore_errors=True)  # checkpoints are only for resuming this training


def full_model_complete(path: Path) -> bool:
    return (Path(path) / "config.json").is_file() and any(Path(path).glob("*.safetensors"))


def _config_of(base: str) -> Any:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(base)


def load_stats(adapter_dir: Path) -> dict:
    path = Path(adapter_dir) / "training_stats.json"
    return json.loads(path.read_text()) if path.is_file() else {}
