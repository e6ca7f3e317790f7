"""The model's own tokenizer, for engines that render the chat template themselves (so the prompt
string equals what training and the other engines see)."""

from __future__ import annotations

from typing import Any

from selflengthen.errors import ConfigError


def adds_special_tokens(tokenizer: Any) -> bool:
    """Whether encoding text with this tokenizer adds tokens of its own (a BOS)."""
    if tokenizer is None:
        return False
    try:
        plain = tokenizer("x", add_special_tokens=False)["input_ids"]
        return tokenizer("x", add_special_tokens=True)["input_ids"] != plain
    except Exception:  # a tokenizer-like object without the option
        return False


def load_tokenizer(cfg: Any, model_config: Any) -> Any:
    """The model's own tokenizer, so the prompt string equals what training and the other engines see."""
    from transformers import AutoTokenizer

    from selflengthen.model import resolve_base

    source = cfg.tokenizer or resolve_base(model_config.base)
    try:
        return AutoTokenizer.from_pretrained(source)
    except OSError as exc:
        raise ConfigError(
            f"cannot load the tokenizer '{source}': {exc}", field="engine.openai.tokenizer"
        ) from None
