"""An engine for any OpenAI-compatible server: vLLM, SGLang, llama.cpp, hosted APIs.

Usage (config): `engine: {kind: openai, openai: {base_urls: [http://gpu1:8000/v1, http://gpu2:8000/v1]}}`;
add `server: {managed: true, preset: vllm}` to have the run start the server (server.py).

Completions mode (default) renders the chat template here, with the model's own tokenizer,
and POSTs the string to `/v1/completions`: a prefill reaches the model byte for byte on every
server. Chat mode sends messages, with `continue_final_message` for a prefill (vLLM).
Adapters are addressed by model name: each round's Generator and Extender are loaded at run
time under names unique to their files (or named in config if you loaded them yourself).
Dispatch over replicas, retries, backoff and the bounds on them live in dispatch.py. The API
key is read from the environment variable named in config and never stored or shown.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from selflengthen.engines.base import Dry, Request, Result, aborted_result, cut_at_stop, render_prompt
from selflengthen.engines.dispatch import Dispatcher
from selflengthen.engines.lora_loading import adapter_served_name, check_adapter_rank
from selflengthen.engines.server import describe_exit
from selflengthen.engines.streaming import AbortingStream
from selflengthen.engines.tokenizer import adds_special_tokens, load_tokenizer
from selflengthen.errors import ConfigError, EngineError

log = logging.getLogger(__name__)


def check_choice(data: Any) -> None:
    """Raise (KeyError, IndexError, TypeError) unless `data` is a completion with a text (an empty one
    is a valid answer: the stages record it; a missing or null one is a broken response, retried)."""
    choice = data["choices"][0]
    if not isinstance(choice, dict):
        raise TypeError("choice is not an object")
    if "text" in choice:
        text = choice["text"]
    elif isinstance(choice.get("message"), dict):
        text = choice["message"].get("content")
    else:
        raise KeyError("text")
    if not isinstance(text, str):
        raise TypeError(f"the completion text is {type(text).__name__}, not a string")


class OpenAIEngine:
    """The Engine protocol over HTTP. Build it with `from_config` (which may start a managed server)."""

    name = "openai"

    def __init__(
        self,
        config: Any,
        *,
        tokenizer: Any = None,
        base_urls: list[str] | None = None,
        model: str | None = None,
        lora_api: str | None = None,
        sampling_fields: str | None = None,
        context_length: int | None = None,
        server: Any = None,
    ):
        self.config = config
        urls = base_urls if base_urls is not None else config.base_urls
        if not urls:
            raise ConfigError("no server URL given", field="engine.openai.base_urls")
        self.tokenizer = tokenizer
        if config.mode == "completions" and tokenizer is None:
            raise ConfigError("completions mode needs the model's tokenizer", field="engine.openai.mode")
        self.model = model or config.model
        self.lora_api = lora_api or (config.lora_api if config.lora_api != "auto" else "vllm")
        self.fields = sampling_fields or (
            config.sampling_fields if config.sampling_fields != "auto" else "vllm"
        )
        self.context_length = context_length if context_length is not None else config.context_length
        self.server = server  # a ManagedServer we own and stop in close(), or None
        self._key = self._read_key(config.api_key_env)
        self.dispatch = Dispatcher(config, list(urls), headers=self._headers(), scrub=self.scrub)
        if server is not None:
            self.dispatch.revive = self._revive
        # Our prompt already holds the template's special tokens; a vLLM server would add a second
        # BOS for tokenizers that add one (Llama 3): tell it not to.
        self._no_special = (
            self.fields == "vllm" and config.mode == "completions" and adds_special_tokens(tokenizer)
        )
        self.routes: dict[str, str] = {}  # role -> served adapter name
        self.lora_ids: dict[str, int] = {}  # llama-server: role -> index of its --lora file
        self._adapter_paths: dict[str, str] = {}  # role -> adapter dir loaded at run time
        self._model_lock = asyncio.Lock()
        self._restart_lock = asyncio.Lock()
        self.restarts = 0  # times the managed server died and was started again
        self._starts = 0  # starts by _revive, so a request that waited on the lock sees it happened

    @property
    def stats(self):
        return self.dispatch.stats

    @property
    def endpoints(self):
        return self.dispatch.endpoints

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_config(
        cls, engine_config: Any, model_config: Any, *, run_dir: str | Path | None = None
    ) -> OpenAIEngine:
        """The engine for `engine_config.openai`, starting `engine_config.server` first when managed."""
        cfg = engine_config.openai
        server = None
        kwargs: dict[str, Any] = {}
        if engine_config.server.managed:
            from selflengthen.engines.server import ManagedServer

            server = ManagedServer(engine_config.server, model_config, run_dir=run_dir)
            server.start()
            preset = server.preset
            kwargs = dict(
                base_urls=[server.base_url],
                model=server.config.served_model_name,
                lora_api=cfg.lora_api if cfg.lora_api != "auto" else preset.lora_api,
                sampling_fields=cfg.sampling_fields
                if cfg.sampling_fields != "auto"
                else preset.sampling_fields,
                context_length=cfg.context_length or server.context_length,
            )
        try:
            tokenizer = load_tokenizer(cfg, model_config) if cfg.mode == "completions" else None
            return cls(cfg, tokenizer=tokenizer, server=server, **kwargs)
        except BaseException:
            if server is not None:
                server.stop()
            raise

    @staticmethod
    def _read_key(env_name: str | None) -> str | None:
        if not env_name:
            return None
        key = os.environ.get(env_name)
        if not key:
            raise ConfigError(
                f"the environment variable {env_name} (named in config) is not set",
                field="engine.openai.api_key_env",
            )
        return key

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key}"} if self._key else {}

    def scrub(self, text: str) -> str:
        """`text` with the API key masked: every message we raise or log goes through here."""
        return text.replace(self._key, "***") if self._key else text

    # ------------------------------------------------------------------ the request

    async def generate(self, request: Request) -> Result:
        if self.server is not None and not self.server.is_running():
            await self._revive()
        if request.adapter is not None and request.adapter not in self.routes:
            raise EngineError(f"no adapter loaded for role '{request.adapter}' (call set_adapters first)")
        model = await self._served_model(request.adapter)
        monitor = request.monitor()
        if monitor is not None and monitor.reason is not None:  # the prefill alone fails: send nothing
            return aborted_result("", monitor.reason, max_tokens=request.params.max_tokens, model=model)
        path, body, prompt_tokens = self._build(request, model)
        if self.lora_api == "llamacpp":
            # llama-server serves every adapter under the base's name; the request picks one by id
            # (the others stay at scale 0), and the record names the adapter's files.
            body["model"] = self.model
            body["lora"] = [
                {"id": i, "scale": 1.0 if role == request.adapter else 0.0}
                for role, i in self.lora_ids.items()
            ]
        stream = None
        if monitor is not None:
            # Early abort: stream the tokens and close the response at the first one where the
            # abort rule fails; vLLM, SGLang and llama-server stop a request whose client has gone.
            body["stream"] = True
            if self.fields == "vllm":
                body["stream_options"] = {"include_usage": True}
            chat = self.config.mode != "completions"
            stream = lambda: AbortingStream(request.monitor(), request.params.stop, chat)  # noqa: E731
        data = await self.dispatch.post(path, body, tag=request.tag, validate=check_choice, stream=stream)
        return self._parse_result(data, request, model, prompt_tokens, max_tokens=body.get("max_tokens"))

    def _build(self, request: Request, model: str) -> tuple[str, dict[str, Any], int]:
        """(endpoint path, JSON body, prompt tokens counted here or 0) for one request."""
        p = request.params
        max_tokens = p.max_tokens
        prompt_tokens = 0
        body: dict[str, Any] = {"model": model}
        if self.config.mode == "completions":
            prompt = render_prompt(self.tokenizer, request.messages, request.prefill)
            body["prompt"] = prompt
            path = "/v1/completions"
            if self.context_length:
                prompt_tokens = len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
                room = self.context_length - prompt_tokens
                if room < 1:
                    raise EngineError(
                        f"request {request.tag}: prompt of {prompt_tokens} tokens leaves no room in the "
                        f"{self.context_length}-token context (engine.openai.context_length)"
                    )
                max_tokens = min(max_tokens, room)
        else:
            messages = list(request.messages)
            path = "/v1/chat/completions"
            if request.prefill:
                messages.append({"role": "assistant", "content": request.prefill})
                if self.fields != "openai":
                    body.update(continue_final_message=True, add_generation_prompt=False)
            body["messages"] = messages
        body.update(max_tokens=max_tokens, temperature=p.temperature, top_p=p.top_p)
        if p.stop:
            body["stop"] = list(p.stop)
        if p.seed is not None:
            body["seed"] = p.seed
        if self.fields == "vllm":
            body.update(top_k=p.top_k if p.top_k > 0 else -1, repetition_penalty=p.repetition_penalty)
        elif self.fields in ("llamacpp", "llama-server"):
            body.update(top_k=p.top_k, repeat_penalty=p.repetition_penalty)
        if p.dry is not None:
            body.update(dry_fields(p.dry, self.fields))
        if self._no_special and "prompt" in body:
            body["add_special_tokens"] = False
        body.update(self.config.extra_body)
        return path, body, prompt_tokens

    def _parse_result(
        self, data: dict, request: Request, model: str, prompt_tokens: int, max_tokens: int | None = None
    ) -> Result:
        choice = data["choices"][0]
        if self.config.mode == "completions":
            text = choice.get("text")
        else:
            text = (choice.get("message") or {}).get("content")
        text = text or ""
        text, stopped = cut_at_stop(text, request.params.stop)
        finish = "length" if choice.get("finish_reason") == "length" and not stopped else "stop"
        usage = data.get("usage") or {}
        completion_tokens = int(usage.get("completion_tokens") or 0)
        if not completion_tokens and self.tokenizer is not None and text:
            completion_tokens = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        result = Result(
            text=text,
            finish_reason=finish,
            prompt_tokens=int(usage.get("prompt_tokens") or prompt_tokens),
            completion_tokens=completion_tokens,
            model=model,
        )
        if data.get("aborted"):
            # Tokens the server generated before it saw us go: at least the events we read.
            completion_tokens = max(completion_tokens, int(data.get("events") or 0))
            result = aborted_result(
                text,
                data["aborted"],
                max_tokens=max_tokens or request.params.max_tokens,
                prompt_tokens=result.prompt_tokens,
                completion_tokens=completion_tokens,
                model=model,
            )
        self.stats.prompt_tokens += result.prompt_tokens
        self.stats.completion_tokens += result.completion_tokens
        return result

    # ------------------------------------------------------------------ model names and adapters

    async def _served_model(self, adapter: str | None) -> str:
        if self.model is None and (adapter is None or self.lora_api == "sglang"):
            async with self._model_lock:
                if self.model is None:
                    self.model = await self._discover_model()
        if adapter is None:
            assert self.model is not None
            return self.model
        name = self.routes[adapter]
        # SGLang picks an adapter with "base:adapter" in the model field; vLLM serves it under its own name.
        return f"{self.model}:{name}" if self.lora_api == "sglang" and ":" not in name else name

    async def _discover_model(self) -> str:
        try:
            return str((await self.dispatch.get_json("/v1/models"))["data"][0]["id"])
        except (KeyError, IndexError, TypeError) as exc:
            raise EngineError(
                f"cannot read a model name from /v1/models ({exc}); set engine.openai.model"
            ) from None
        except EngineError as exc:
            raise EngineError(f"{exc}; set engine.openai.model") from None

    def set_adapters(self, adapters: dict[str, str]) -> None:
        """Serve each role's adapter: a name from `adapter_models`, or loaded at run time under a name
        unique to its files (a retrained adapter is a new name, so no server serves a stale cache)."""
        if self.lora_api == "llamacpp":
            self._serve_gguf_adapters(adapters)
            return
        self._ensure_server()
        for role, path in adapters.items():
            if role in self.config.adapter_models:
                self.routes[role] = self.config.adapter_models[role]
                continue
            if self.lora_api == "none":
                raise EngineError(
                    f"cannot serve the {role} adapter {path}: this server loads no adapters at run time "
                    "(engine.openai.lora_api = none). Use vLLM or SGLang, or load the adapters yourself "
                    "and name them in engine.openai.adapter_models"
                )
            check_adapter_rank(path, getattr(getattr(self.server, "config", None), "max_lora_rank", None))
            name = adapter_served_name(role, path)
            if self.routes.get(role) == name:
                continue
            self._load(name, path)
            old = self.routes.get(role)
            self.routes[role] = name
            self._adapter_paths[role] = str(Path(path).resolve())
            if old and old not in self.routes.values():
                from selflengthen.engines.lora_loading import unload_lora

                for e in self.endpoints:
                    unload_lora(e.url, old, api=self.lora_api, headers=self._headers())

    def _serve_gguf_adapters(self, adapters: dict[str, str]) -> None:
        """llama-server: convert each role's PEFT adapter to GGUF and restart the server with all of them."""
        from selflengthen.engines.gguf_lora import BaseInfo, convert_lora

        if self.server is None or self.server.preset.lora_api != "llamacpp":
            raise EngineError(
                "engine.openai.lora_api = llamacpp needs a managed llama-server "
                "(engine.server: {managed: true, preset: llama-server})"
            )
        paths = {**self._adapter_paths, **{role: str(Path(p).resolve()) for role, p in adapters.items()}}
        roles = sorted(paths)
        base = BaseInfo(self.server.gguf_path())
        files = [str(convert_lora(paths[role], base)) for role in roles]
        self.server.serve_lora_files(files)
        self._adapter_paths = paths
        self.lora_ids = {role: i for i, role in enumerate(roles)}
        self.routes = {role: adapter_served_name(role, paths[role]) for role in roles}

    def _load(self, name: str, path: str) -> None:
        from selflengthen.engines.lora_loading import load_lora

        for e in self.endpoints:
            load_lora(
                e.url,
                name,
                str(Path(path).resolve()),
                api=self.lora_api,
                headers=self._headers(),
                scrub=self.scrub,
                timeout=max(self.config.connect_timeout_s, 300.0),
            )

    # ------------------------------------------------------------------ sharing the GPUs with training

    def suspend(self) -> None:
        """Free the accelerators for training: stop a managed server (if `server.stop_for_training`).
        It starts again, with the current adapters, on `resume`, the next set_adapters or request.
        A server we do not manage is left alone."""
        if self.server is not None and self.server.config.stop_for_training and self.server.is_running():
            self.server.stop()

    def resume(self) -> None:
        """Start a suspended managed server again, with the adapters it served."""
        self._ensure_server()

    async def _revive(self) -> bool:
        """Start the managed server again if it is not running: after `suspend`, or after it died
        (a crash: counted against `engine.server.max_restarts`, warned about with its log's end).
        True when a server is running afterwards; False when there is none of ours to start."""
        if self.server is None:
            return False
        seen = self._starts
        # A dying server closes its socket a moment before it can be reaped: give it that moment
        # (outside the lock: requests failing against a live server must not queue up behind it).
        # One still up after that is alive and merely refused us: normal backoff applies.
        for _ in range(40):
            if self._starts != seen or not self.server.is_running():
                break
            await asyncio.sleep(0.05)
        else:
            return False
        async with self._restart_lock:  # one restart, whatever the number of waiting requests
            if self._starts != seen or self.server.is_running():
                return True  # another request restarted it meanwhile
            status = self.server.crashed()
            if status is not None:
                self.restarts += 1
                limit = self.server.config.max_restarts
                tail = self.server.log_tail(12)
                if self.restarts > limit:
                    self.dispatch.broken = (
                        f"the managed server exited by itself again ({describe_exit(status)}): "
                        f"{self.restarts} times, "
                        f"more than engine.server.max_restarts = {limit}; its log "
                        f"({self.server.log_path}) ends:\n{tail}"
                    )
                    return False
                log.warning(
                    "the managed server exited by itself (%s); starting it again (%d of at most %d). "
                    "Its log (%s) ends:\n%s",
                    describe_exit(status),
                    self.restarts,
                    limit,
                    self.server.log_path,
                    tail,
                )
            await asyncio.to_thread(self._ensure_server)
            self._starts += 1
            return True

    def _ensure_server(self) -> None:
        """Restart a suspended managed server and reload the adapters it served."""
        if self.server is None or self.server.is_running():
            return
        self.server.start()  # llama-server: with the GGUF adapters it had
        if self.lora_api == "llamacpp":
            return
        for role, path in self._adapter_paths.items():
            if self.routes.get(role) and role not in self.config.adapter_models:
                self._load(self.routes[role], path)

    def close(self) -> None:
        self.dispatch.close()
        if self.server is not None:
            self.server.stop()


def dry_fields(dry: Dry, dialect: str) -> dict[str, Any]:
    """llama-server's DRY fields (its /completion, /v1/completions and /v1/chat/completions all read
    them). Other servers have no DRY sampler and would drop the fields silently: refuse instead."""
    if dialect != "llama-server":
        raise ConfigError(
            f"DRY decoding needs llama.cpp's llama-server; this server's sampling dialect is '{dialect}' "
            "(set engine.openai.sampling_fields=llama-server if it is one, else sampling.dry.multiplier=0)",
            field="sampling.dry",
        )
    return {
        "dry_multiplier": dry.multiplier,
        "dry_base": dry.base,
        "dry_allowed_length": dry.allowed_length,
        "dry_penalty_last_n": dry.penalty_last_n,
        "dry_sequence_breakers": list(dry.sequence_breakers),
    }
