"""Multi-node batch inference with Ray Data's vLLM processor (`ray.data.llm.build_processor`).

Usage (config): `engine: {kind: ray, max_in_flight: 4096, ray: {concurrency: 8, tensor_parallel_size: 2}}`,
on a Ray cluster (`ray start --head` / `ray start --address=HEAD:6379`, run directory on storage
every node sees). Install: `pip install "ray[data,llm]>=2.60" vllm`.

Stages await one request per item, as with every engine; this engine gathers the requests in
flight (up to `job_size`, waiting `job_wait_s` for more) into one Ray Data job: a dataset of
rows {prompt, sampling_params, model} through a vLLM processor with `concurrency` replicas.
Prompts are rendered here with the model's own tokenizer (the chat template stage is off), so a
prefill reaches vLLM byte for byte. A row's `model` is the adapter directory (vLLM LoRA,
loaded by each replica from the shared file system); base-model rows carry no `model`.

The functions that build the processor config and rows are pure and unit-tested without Ray;
`ray` is imported only when a job runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selflengthen.engines.base import Request, Result, SamplingParams, cut_at_stop, render_prompt
from selflengthen.engines.batching import BatchingQueue, Pending
from selflengthen.errors import ConfigError, EngineError

INDEX = "selflengthen_index"  # a column that carries each row's place in the job


def processor_config_kwargs(ray_config: Any, model_source: str) -> dict[str, Any]:
    """Keyword arguments for `ray.data.llm.vLLMEngineProcessorConfig`."""
    engine_kwargs: dict[str, Any] = {
        "enable_lora": True,
        "max_loras": ray_config.max_loras,
        "max_lora_rank": ray_config.max_lora_rank,
        "tensor_parallel_size": ray_config.tensor_parallel_size,
        "pipeline_parallel_size": ray_config.pipeline_parallel_size,
    }
    if ray_config.max_model_len:
        engine_kwargs["max_model_len"] = ray_config.max_model_len
    engine_kwargs.update(ray_config.engine_kwargs)
    kwargs: dict[str, Any] = {
        "model_source": model_source,
        "engine_kwargs": engine_kwargs,
        "concurrency": ray_config.concurrency,
        "batch_size": ray_config.batch_size,
        # Prompts arrive rendered (our tokenizer, our prefill): no chat template stage in Ray.
        "chat_template_stage": False,
        "tokenize_stage": True,
        "detokenize_stage": True,
    }
    if ray_config.accelerator_type:
        kwargs["accelerator_type"] = ray_config.accelerator_type
    if ray_config.placement_group:
        # Without it Ray Data asks one GPU per replica (vllm_engine_stage.py: num_gpus = TP x PP), and a
        # CPU-only cluster never schedules the replica.
        kwargs["placement_group_config"] = ray_config.placement_group
    return kwargs


def sampling_params_dict(params: SamplingParams) -> dict[str, Any]:
    """vLLM SamplingParams fields for one row (vLLM's max_tokens defaults to 16: always set it)."""
    if params.dry is not None:  # the config check refuses this first; a direct caller gets the same answer
        raise ConfigError(
            "DRY decoding is not available on the Ray Data engine (vLLM has no DRY sampler)",
            field="sampling.dry",
        )
    out: dict[str, Any] = {
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k if params.top_k > 0 else -1,
        "repetition_penalty": params.repetition_penalty,
        "max_tokens": params.max_tokens,
    }
    if params.stop:
        out["stop"] = list(params.stop)
    if params.seed is not None:
        out["seed"] = params.seed
    return out


def request_row(index: int, prompt: str, params: SamplingParams, adapter_path: str | None) -> dict[str, Any]:
    """One dataset row. `model` names the LoRA (an absolute adapter directory); absent = base model."""
    row: dict[str, Any] = {INDEX: index, "prompt": prompt, "sampling_params": sampling_params_dict(params)}
    if adapter_path:
        row["model"] = adapter_path
    return row


def result_from_row(row: dict[str, Any], params: SamplingParams, label: str) -> Result:
    """A Result from the processor's output row. Ray's rows carry no finish reason: a text that used
    all max_tokens and ended on no stop string was cut."""
    text = row.get("generated_text") or ""
    generated = int(row.get("num_generated_tokens") or 0)
    text, stopped = cut_at_stop(text, params.stop)
    finish = "length" if generated >= params.max_tokens and not stopped else "stop"
    return Result(
        text=text,
        finish_reason=finish,
        prompt_tokens=int(row.get("num_input_tokens") or 0),
        completion_tokens=generated,
        model=label,
    )


def build_processor(ray_config: Any, model_source: str) -> Any:
    """The Ray Data processor (imports ray lazily)."""
    try:
        from ray.data.llm import build_processor as ray_build_processor
        from ray.data.llm import vLLMEngineProcessorConfig
    except ImportError as exc:
        raise ConfigError(
            f"engine.kind 'ray' needs Ray Data LLM and vLLM: pip install 'ray[data,llm]>=2.60' vllm ({exc})",
            field="engine.kind",
        ) from None
    config = vLLMEngineProcessorConfig(**processor_config_kwargs(ray_config, model_source))
    return ray_build_processor(config)


class RayDataEngine:
    """The Engine protocol over Ray Data jobs (one job per gathered set of requests)."""

    name = "ray"

    def __init__(
        self, model_config: Any, engine_config: Any, *, tokenizer: Any = None, processor: Any = None
    ):
        from selflengthen.model import resolve_base

        self.config = engine_config.ray
        self.model_source = resolve_base(model_config.base)
        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self.model_source)
        self.tokenizer = tokenizer
        self._processor = processor
        self._ray_ready = processor is not None
        self._adapters: dict[str, str] = {}
        # A job is the first `job_size` requests waiting, in arrival order (vLLM groups them itself).
        self.queue = BatchingQueue(
            lambda pending, size: pending[:size],
            self._run_job,
            size=self.config.job_size,
            wait_s=self.config.job_wait_s,
            failure="Ray Data job failed",
        )
        self.jobs = 0

    def set_adapters(self, adapters: dict[str, str]) -> None:
        for role, path in adapters.items():
            p = Path(path).resolve()
            if not (p / "adapter_config.json").is_file():
                raise ConfigError(f"'{path}' is no PEFT adapter (no adapter_config.json)", field="adapter")
            self._adapters[role] = str(p)

    async def generate(self, request: Request) -> Result:
        if request.adapter is not None and request.adapter not in self._adapters:
            raise EngineError(f"no adapter loaded for role '{request.adapter}'")
        return await self.queue.submit(
            request, render_prompt(self.tokenizer, request.messages, request.prefill)
        )

    def rows(self, job: list[Pending]) -> list[dict[str, Any]]:
        return [
            request_row(i, p.prompt, p.request.params, self._adapters.get(p.request.adapter or ""))
            for i, p in enumerate(job)
        ]

    def _run_job(self, job: list[Pending]) -> list[Result]:
        processor = self._get_processor()
        import ray

        dataset = ray.data.from_items(self.rows(job))
        out = processor(dataset).take_all()
        self.jobs += 1
        by_index = {int(row[INDEX]): row for row in out}
        missing = [i for i in range(len(job)) if i not in by_index]
        if missing:
            raise EngineError(f"{len(missing)} of {len(job)} rows came back missing from the Ray job")
        return [
            result_from_row(by_index[i], p.request.params, p.request.adapter or "base")
            for i, p in enumerate(job)
        ]

    def _get_processor(self) -> Any:
        if self._processor is None:
            import ray

            if not ray.is_initialized():
                ray.init(address=self.config.address)  # None: RAY_ADDRESS, else a local cluster
            self._processor = build_processor(self.config, self.model_source)
        return self._processor

    def suspend(self) -> None:
        """Nothing to give back: the Ray cluster's workers hold their own accelerators."""

    def resume(self) -> None:
        pass

    def close(self) -> None:
        self.queue.close()
