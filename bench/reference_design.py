"""Steps 1-2 driven the way the paper's reference code drives them, for a side-by-side figure.

A thread pool of `workers` threads; each thread sends one blocking request at a time; every
stage waits for its last item before the next stage starts: Step 1 (answers, with their
retries) -> selection -> for each extension try: stage 1 for every open job -> stage 2 for
every open job -> checks -> the failed jobs try again. Same prompts, sampling, checks and
selection as the project's stages (their helpers are reused), same engine: only the driving
differs. Our stages instead keep items in flight and chain each job's stage 2 right after its
own stage 1, so the engine never idles at a stage's tail.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from selflengthen.engines.base import Request
from selflengthen.stages.common import RoundContext
from selflengthen.stages.extend import extend_messages, stage2_prefill
from selflengthen.stages.select import length_biased_keep
from selflengthen.text.checks import check_text
from selflengthen.text.paragraphs import former_half, join_paragraphs, keep_leading_fraction, split_paragraphs
from selflengthen.text.words import count_words


class BlockingClient:
    """engine.generate(...) as a blocking call, from any thread (the engine lives on one event loop)."""

    def __init__(self, engine):
        self.engine = engine
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def __call__(self, request: Request):
        return asyncio.run_coroutine_threadsafe(self.engine.generate(request), self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()


def reference_steps_1_2(config, engine, run_dir: Path, instructions: list[str], workers: int) -> dict:
    """Returns counts like the pipeline's (answers kept, extensions kept)."""
    import random

    ctx = RoundContext.for_round(config, engine, run_dir, 1)
    call = BlockingClient(engine)
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        def answer(i_text):
            i, text = i_text
            rng = ctx.rng("generate", f"ref-{i}")
            for _ in range(config.generate.retries):
                r = call(Request([{"role": "user", "content": text}], ctx.sampling(rng), adapter=ctx.generator))
                reply = r.text.strip()
                if check_text(reply, r.finish_reason, ctx.checks) is None:
                    return {"query": text, "text": reply, "words": count_words(reply)}
            return None

        answers = [a for a in pool.map(answer, enumerate(instructions)) if a is not None]  # stage barrier
        keep = length_biased_keep([a["words"] for a in answers], random.Random(config.seed))
        jobs = [dict(a, id=f"{n}-{j}", rng=ctx.rng("extend", f"ref-{n}-{j}"), best=a["text"], best_words=a["words"])
                for n, a in enumerate(a for a, k in zip(answers, keep) if k) for j in range(config.extend.jobs_per_answer)]
        kept = 0
        for _ in range(config.extend.retries):
            if not jobs:
                break
            for job in jobs:
                job["best"], job["best_words"] = job["text"], job["words"]
            for _ in range(config.extend.micro_iterations):
                def stage1(job):
                    former = join_paragraphs(former_half(split_paragraphs(job["best"])))
                    out = call(Request(extend_messages(job["query"], former), ctx.extend_sampling(job["rng"]), adapter=ctx.extender))
                    kept_paras = keep_leading_fraction(split_paragraphs(out.text), config.extend.stage1_keep)
                    job["prefill"] = stage2_prefill(join_paragraphs(kept_paras))

                def stage2(job):
                    out = call(Request(extend_messages(job["query"], job["best"]), ctx.extend_sampling(job["rng"]),
                                       prefill=job["prefill"], adapter=ctx.extender))
                    result = job["prefill"] + out.text
                    words = count_words(result)
                    if check_text(result, out.finish_reason, ctx.checks) is None and words > job["best_words"]:
                        job["best"], job["best_words"] = result, words

                list(pool.map(stage1, jobs))  # stage barrier
                list(pool.map(stage2, jobs))  # stage barrier
            done = [j for j in jobs if j["best_words"] > config.extend.min_ratio * j["words"]]
            kept += len(done)
            jobs = [j for j in jobs if j not in done]
        return {"answers_kept": sum(keep), "extensions_passed": kept}
    finally:
        pool.shutdown()
        call.close()
