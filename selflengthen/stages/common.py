"""What every stage of a round shares: the config, the engine, the round's directory, seeded
randomness per item, and the driver that keeps many items in flight.

Stage code is a per-item async function that reads like the algorithm. `run_items` starts
items until `max_in_flight` are running, writes each record the moment its item finishes
(so a crash loses at most the items in flight), and starts the next one; no stage waits for
its slowest item before sending more work to the engine.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selflengthen.config import Config, EngineConfig
from selflengthen.engines.base import EXTENDER, GENERATOR, Engine, Result, SamplingParams
from selflengthen.progress import NullProgress, Progress
from selflengthen.store import JsonlAppender, RoundDir, existing_ids
from selflengthen.text.checks import CheckConfig
from selflengthen.text.prefix import AbortRule


@dataclass
class RoundContext:
    config: Config
    engine: Engine
    round: int
    rd: RoundDir
    progress: Progress = field(default_factory=NullProgress)
    # Round 1 uses the base model for both roles; round k uses round k-1's adapters.
    generator: str | None = None
    extender: str | None = None

    @classmethod
    def for_round(
        cls,
        config: Config,
        engine: Engine,
        run_dir: Path,
        k: int,
        progress: Progress | None = None,
        trained_roles: set[str] | None = None,
    ) -> RoundContext:
        from selflengthen.store import round_dir

        roles = trained_roles or set()
        return cls(
            config=config,
            engine=engine,
            round=k,
            rd=round_dir(run_dir, k),
            progress=progress or NullProgress(),
            generator=GENERATOR if GENERATOR in roles else None,
            extender=EXTENDER if EXTENDER in roles else None,
        )

    @property
    def checks(self) -> CheckConfig:
        c = self.config.checks
        return CheckConfig(
            ngram_words=c.ngram_words,
            ngram_cjk=c.ngram_cjk,
            meta_words=tuple(c.meta_words),
            max_tail_drift=c.max_tail_drift,
            max_window_gzip=c.max_window_gzip,
            min_words=c.min_words,
        )

    def abort_rule(self, keep_fraction: float = 0.0) -> AbortRule | None:
        """Early abort for a generation the checks will judge (None when `checks.early_abort` is off).
        `keep_fraction`: only repeats in that leading share of paragraphs count (stage 1)."""
        c = self.config.checks
        if not c.early_abort:
            return None
        return AbortRule.for_checks(c.ngram_words, c.ngram_cjk, keep_fraction)

    def rng(self, *key: Any) -> random.Random:
        """A random generator for one item, stable across restarts (resume redoes the same draws)."""
        text = "|".join(str(k) for k in (self.config.seed, self.round, *key))
        return random.Random(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big"))

    def sampling(
        self, rng: random.Random, *, max_tokens: int | None = None, stop: list[str] | None = None
    ) -> SamplingParams:
        return sampling_params(
            self.config,
            max_tokens=max_tokens or self.config.max_tokens_for_round(self.round),
            stop=stop,
            seed=rng.randrange(2**31),
        )

    def extend_sampling(self, rng: random.Random) -> SamplingParams:
        """The Extender's sampling: the round's budget x extend.max_tokens_factor."""
        factor = self.config.extend.max_tokens_factor
        return self.sampling(rng, max_tokens=int(self.config.max_tokens_for_round(self.round) * factor))

    @property
    def max_in_flight(self) -> int:
        return max_in_flight(self.config.engine, self.engine.name)


def sampling_params(
    config: Config,
    *,
    max_tokens: int,
    stop: list[str] | None = None,
    seed: int | None = None,
    dry: bool = True,
) -> SamplingParams:
    """The run's `sampling` section as one call's parameters (`stop` None: the configured stop strings;
    `dry=False` leaves anti-loop decoding out)."""
    return SamplingParams.from_config(config.sampling, max_tokens=max_tokens, stop=stop, seed=seed, dry=dry)


def max_in_flight(engine_config: EngineConfig, engine_name: str) -> int:
    """Items a stage keeps running: enough to fill the engine's next batch, or all the slots of its
    servers. `engine_name` is the running engine's (`engine.kind: auto` resolves to one of them)."""
    if engine_config.max_in_flight:
        return engine_config.max_in_flight
    if engine_name == "openai":
        return max(1, len(engine_config.openai.base_urls)) * engine_config.openai.max_concurrency_per_url
    if engine_name == "ray":
        return engine_config.ray.job_size
    return 2 * engine_config.batch_size


def token_fields(*results: Result) -> dict[str, int]:
    """The record's token figures for one or more model calls: generated tokens, and the budget an
    early abort left unspent (only when one did)."""
    out = {"tokens": sum(r.completion_tokens for r in results)}
    saved = sum(r.tokens_saved for r in results)
    if saved:
        out["tokens_saved"] = saved
    return out


async def run_items(
    items: Iterable[tuple[str, Any]],
    work: Callable[[str, Any], Awaitable[dict]],
    out: Path,
    *,
    max_in_flight: int,
    progress: Progress,
    description: str,
    total: int,
) -> int:
    """Run `work(id, item)` for every item whose id is not yet in `out`; append each record as it
    finishes. Returns how many items ran now."""
    done = existing_ids(out)
    task = progress.task(description, total=total, done=len(done))
    ran = 0
    with JsonlAppender(out) as writer:
        running: set[asyncio.Task] = set()
        pending = ((i, it) for i, it in items if i not in done)

        def start_next() -> bool:
            for item_id, item in pending:
                running.add(asyncio.ensure_future(work(item_id, item)))
                return True
            return False

        for _ in range(max_in_flight):
            if not start_next():
                break
        try:
            while running:
                finished, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for t in finished:
                    running.discard(t)
                    writer.write(t.result())  # raises the item's exception, if any: fail loudly
                    ran += 1
                    task.advance()
                    start_next()
        finally:
            for t in running:
                t.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
            task.close()
    return ran
