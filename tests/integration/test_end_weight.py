"""`train.end_weight`: the end-of-turn token's loss counts `end_weight` times, on the real embedded
model, through TRL's fused LM head and through a real SFTTrainer step."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from selflengthen.config import Config
from selflengthen.errors import TrainingError
from selflengthen.model import resolve_base
from selflengthen.store import read_jsonl, round_dir
from selflengthen.train.launch import train_role
from selflengthen.train.sft import train_adapter, turn_end_id, weight_end_token

pytestmark = pytest.mark.slow

FIXTURE = Path(__file__).parent.parent / "unit" / "train" / "prompt_completion.jsonl"


@pytest.fixture(scope="module")
def base() -> str:
    return resolve_base("embedded")


def test_end_token_log_prob_scaled_and_nothing_else(base):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.trainer.utils import add_fused_lm_head

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    add_fused_lm_head(model)
    prompt = [{"role": "user", "content": "Write one sentence about rain."}]
    answer = [{"role": "assistant", "content": "Rain taps on the roof all night."}]
    ids = tokenizer.apply_chat_template(prompt + answer, tokenize=True, return_dict=True)["input_ids"]
    n_prompt = len(
        tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=True)[
            "input_ids"
        ]
    )
    input_ids = torch.tensor([ids])
    labels = input_ids.clone()
    labels[:, :n_prompt] = -100
    end = labels[:, 1:] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert int(end.sum()) == 1  # the answer's <|im_end|>

    with torch.no_grad():
        plain = model(input_ids=input_ids, labels=labels, fused_lm_head=True).log_probs.clone()
        plain_logits = model(input_ids=input_ids).logits
        weight_end_token(model, tokenizer.convert_tokens_to_ids("<|im_end|>"), 5.0)
        weighted = model(input_ids=input_ids, labels=labels, fused_lm_head=True).log_probs
        # Without the fused head (generation), the output is the model's own, untouched.
        logits = model(input_ids=input_ids).logits
    assert torch.allclose(weighted[end], 5.0 * plain[end])
    assert torch.equal(weighted[~end], plain[~end])
    assert float(plain[end]) < 0.0  # a real log-probability, so the weight changes the loss
    assert torch.equal(logits, plain_logits)


def _first_loss(base: str, tmp_path: Path, name: str, end_weight: float) -> tuple[float, dict]:
    rd = round_dir(tmp_path / name, 1)
    rd.sft_dir.mkdir(parents=True)
    shutil.copy(FIXTURE, rd.sft("generator"))
    config = Config(
        model={"device": "cpu"},
        train={"max_steps": 1, "max_length": 256, "warmup_ratio": 0.0, "end_weight": end_weight},
    )
    stats = train_role(config, base, rd, "generator", None)
    return stats["loss_history"][0][1], stats


def test_trainer_step_uses_the_weight(base, tmp_path):
    # The first step's loss is taken before any update, on the same first batch (same seed): the
    # weighted loss adds (w - 1) x the end token's NLL over the batch's tokens.
    plain, plain_stats = _first_loss(base, tmp_path, "plain", 1.0)
    weighted, stats = _first_loss(base, tmp_path, "weighted", 8.0)
    assert weighted > plain
    assert stats["end_weight"] == 8.0 and "end_weight" not in plain_stats


def test_the_turn_end_token_comes_from_the_chat_template(base):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    row = next(iter(read_jsonl(FIXTURE)))
    assert turn_end_id(tokenizer, row) == tokenizer.convert_tokens_to_ids("<|im_end|>")
    # A template whose turns end in plain text has no token to weight: said, not ignored.
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    with pytest.raises(TrainingError, match="end_weight"):
        turn_end_id(tokenizer, row)


def test_end_weight_with_another_loss_is_refused(base, tmp_path):
    config = Config(train={"max_steps": 1, "max_length": 256, "end_weight": 2.0}).train
    with pytest.raises(TrainingError, match="loss_type='dft'"):
        train_adapter(
            base=base,
            data=FIXTURE,
            out_dir=tmp_path / "a",
            train_config=config,
            sft_args={"loss_type": "dft"},
        )
    assert not (tmp_path / "a").exists()


def test_end_weight_below_one_is_refused():
    with pytest.raises(ValueError, match="end_weight"):
        Config(train={"end_weight": 0.5})
