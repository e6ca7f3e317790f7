"""A PEFT LoRA adapter (safetensors) as a llama.cpp GGUF LoRA adapter, for `llama-server --lora`.

Usage:
    from selflengthen.engines.gguf_lora import convert_lora
    gguf_path = convert_lora("RUN/round-1/adapters/generator", base_gguf="model.gguf")

The base model stays the GGUF file the engine serves; training saw the same weights after
dequantization. What the conversion must get right (llama.cpp's adapter loader checks the
first three and silently misbehaves on the fourth):
- metadata: general.type = "adapter", adapter.type = "lora", adapter.lora.alpha, and the base
  GGUF's general.architecture (llama.cpp refuses an adapter of another architecture);
- tensor names: the base GGUF's names plus ".lora_a" / ".lora_b"
  (model.layers.3.self_attn.q_proj -> blk.3.attn_q.weight.lora_a);
- shapes: PEFT's lora_A (rank x in) and lora_B (out x rank) are written as they are: GGUF lists
  dimensions innermost first, which gives the ne[] llama.cpp expects (ne0 = in for A, = rank for B);
- the Q and K projections: llama.cpp's converter reorders the rows of q_proj/k_proj of Llama
  models (rotary halves interleaved per head) and transformers undoes it when it loads a GGUF.
  A LoRA delta B @ A adds to those rows, so B's rows get the same reordering; A is untouched.
llama.cpp scales a delta by alpha / rank (rank read from the tensors), as PEFT does without
rsLoRA; with rsLoRA (alpha / sqrt(rank)) we store alpha * sqrt(rank) so the product is the same.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

from selflengthen.errors import ConfigError

# transformers module path (after "model.layers.N.") -> llama.cpp tensor name (after "blk.N.")
MODULE_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
# Architectures whose Q/K rows llama.cpp's converter reorders (its Llama family).
REORDERED_QK = {"llama"}

_KEY = re.compile(r"^(?:base_model\.model\.)?model\.layers\.(\d+)\.(.+)\.lora_([AB])\.weight$")
FILE_NAME = "adapter.gguf"


class BaseInfo:
    """What the converter needs from the base GGUF: architecture, head counts, tensor shapes."""

    def __init__(self, path: str | Path):
        import gguf

        try:
            reader = gguf.GGUFReader(str(path))
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot read the base GGUF '{path}': {exc}", field="engine.server.gguf"
            ) from None
        self.path = Path(path)
        self.arch = _field(reader, "general.architecture")
        self.n_head = int(_field(reader, f"{self.arch}.attention.head_count"))
        kv = _field(reader, f"{self.arch}.attention.head_count_kv", default=None)
        self.n_head_kv = int(kv) if kv is not None else self.n_head
        # GGUF lists dimensions innermost first: (in, out) for a weight matrix
        self.shapes = {t.name: tuple(int(d) for d in t.shape) for t in reader.tensors}


def _field(reader: Any, key: str, default: Any = ...) -> Any:
    f = reader.fields.get(key)
    if f is None:
        if default is ...:
            raise ConfigError(f"the base GGUF has no '{key}' field", field="engine.server.gguf")
        return default
    return f.contents()


def reorder_rows(b: Any, n_head: int) -> Any:
    """B's rows in llama.cpp's order: within each head, the two rotary halves interleaved."""
    out = b.shape[0]
    return b.reshape(n_head, 2, out // n_head // 2, *b.shape[1:]).swapaxes(1, 2).reshape(b.shape)


def read_adapter_config(adapter_dir: Path) -> tuple[float, dict]:
    """(alpha to store, the PEFT config); refuses what llama.cpp cannot express."""
    path = adapter_dir / "adapter_config.json"
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", field="adapter") from None
    if cfg.get("peft_type", "LORA") != "LORA":
        raise ConfigError(f"{path}: peft_type {cfg.get('peft_type')} is not a LoRA", field="adapter")
    for key, why in (
        ("use_dora", "DoRA"),
        ("alpha_pattern", "per-module alpha (alpha_pattern)"),
        ("modules_to_save", "fully trained modules (modules_to_save)"),
        ("fan_in_fan_out", "fan_in_fan_out weights"),
    ):
        if cfg.get(key):
            raise ConfigError(f"{path}: llama.cpp adapters cannot express {why}", field="adapter")
    alpha = float(cfg.get("lora_alpha") or cfg.get("r") or 1)
    if cfg.get("use_rslora"):
        alpha *= math.sqrt(float(cfg["r"]))
    return alpha, cfg


def convert_lora(
    adapter_dir: str | Path, base_gguf: str | Path | BaseInfo, out: str | Path | None = None
) -> Path:
    """Write ADAPTER_DIR/adapter.gguf (or `out`) and return its path; reuse it when newer than the adapter.
    `base_gguf` is the GGUF the server serves (or its BaseInfo, read once for both roles)."""
    import numpy as np
    from safetensors.numpy import load_file

    adapter_dir = Path(adapter_dir)
    weights_file = adapter_dir / "adapter_model.safetensors"
    if not weights_file.is_file():
        raise ConfigError(f"no adapter_model.safetensors in {adapter_dir}", field="adapter")
    target = Path(out) if out is not None else adapter_dir / FILE_NAME
    if target.is_file() and target.stat().st_mtime_ns >= weights_file.stat().st_mtime_ns:
        return target
    alpha, _ = read_adapter_config(adapter_dir)
    base = base_gguf if isinstance(base_gguf, BaseInfo) else BaseInfo(base_gguf)
    pairs: dict[str, dict[str, Any]] = {}
    for key, array in load_file(str(weights_file)).items():
        m = _KEY.match(key)
        if m is None:
            raise ConfigError(
                f"{weights_file}: tensor '{key}' is not a LoRA A/B weight of a decoder layer", field="adapter"
            )
        layer, module, ab = m.groups()
        if module not in MODULE_NAMES:
            raise ConfigError(f"{weights_file}: no llama.cpp tensor for module '{module}'", field="adapter")
        name = f"blk.{layer}.{MODULE_NAMES[module]}.weight"
        pairs.setdefault(name, {})[ab] = (module, array)
    tensors: list[tuple[str, Any]] = []
    for name in sorted(pairs, key=_natural):
        pair = pairs[name]
        if set(pair) != {"A", "B"}:
            raise ConfigError(f"{weights_file}: {name} has only lora_{''.join(pair)}", field="adapter")
        (module, a), (_, b) = pair["A"], pair["B"]
        a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
        shape = base.shapes.get(name)
        if shape is None:
            raise ConfigError(
                f"the base GGUF {base.path} has no tensor {name}: wrong base model?", field="adapter"
            )
        if shape[:2] != (a.shape[1], b.shape[0]) or a.shape[0] != b.shape[1]:
            raise ConfigError(
                f"{name}: adapter A {a.shape} / B {b.shape} does not fit "
                f"the base tensor (in, out) = {shape[:2]}",
                field="adapter",
            )
        if base.arch in REORDERED_QK and module == "self_attn.q_proj":
            b = reorder_rows(b, base.n_head)
        elif base.arch in REORDERED_QK and module == "self_attn.k_proj":
            b = reorder_rows(b, base.n_head_kv)
        tensors += [(name + ".lora_a", np.ascontiguousarray(a)), (name + ".lora_b", np.ascontiguousarray(b))]
    _write(target, base.arch, alpha, tensors)
    return target


def _natural(name: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def _write(target: Path, arch: str, alpha: float, tensors: list[tuple[str, Any]]) -> None:
    """Write through a temporary file and rename, so a crash never leaves half an adapter."""
    import gguf

    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    writer = gguf.GGUFWriter(str(tmp), arch)
    try:
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        for name, array in tensors:
            writer.add_tensor(name, array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    os.replace(tmp, target)
