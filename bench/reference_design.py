"""Steps 1-2 driven the way the paper's reference code drives them, for a side-by-side figure.

What the reference scripts do (QwenLM/Self-Lengthen, qwen/step1_gen_initial_responses.py and
qwen/step2_ext_responses.py; facts read from them, no code taken):
  Step 1  a pool of 32 threads; each thread takes one (instruction, sample) item and sends blocking
          requests until an answer passes the checks or its retries run out; the script waits for
          the items (it stops at 95% of them; here every item finishes, so both runs do the same work).
  between a separate script: selection starts only when Step 1 has ended (a stage barrier).
  Step 2  a pool of 16 threads; each thread takes one extension job and runs it alone, start to end:
          per try, the micro-iterations one after the other, each a blocking stage-1 call then a
          blocking stage-2 call, then the 1.2 x rule; a failed job tries again from the answer.
So at most 32, then 16, requests are in flight, however many the server could take, and Step 2
waits for Step 1's slowest item. Same prompts, checks and selection as the project's stages
(their helpers are reused), same engine, and the sampling of the config it is given (bench/goodput.py
gives it the paper's by default, and ours DRY): only the driving differs. Every text is generated
to its end (no early abort), as the reference scripts do. Each item draws its seeds from the same
id as in the pipeline (bench/round_steps.py writes instruction i as "r1-bench-000i"), so both see
the same sampling seeds and differ only where the designs do.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from pathlib import Path

from round_steps import LOOP

from selflengthen.engines.base import Request
from selflengthen.stages.common import RoundContext
from selflengthen.stages.extend import NOT_LONGER, TOO_SHORT, extend_messages, stage2_prefill
from selflengthen.stages.select import length_biased_keep
from selflengthen.text.checks import check_text
from selflengthen.text.paragraphs import former_half, join_paragraphs, keep_leading_fraction, split_paragraphs
from selflengthen.text.words import count_words


class BlockingClient:
    """engine.generate(...) as a blocking call, from any thread. The engine's requests run on the
    benches' one event loop (an engine's connections belong to one), here run by a thread of ours."""

    def __init__(self, engine):
        self.engine = engine
        self.loop = LOOP
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.lock = threading.Lock()
        self.in_flight: set[Future] = set()
        self.cancelled = False

    def __call__(self, request: Request):
        with self.lock:
            if self.cancelled:
                raise CancelledError("the bench is stopping")
            future = asyncio.run_coroutine_threadsafe(self.engine.generate(request), self.loop)
            self.in_flight.add(future)
        try:
            return future.result()
        finally:
            with self.lock:
                self.in_flight.discard(future)

    def cancel(self) -> None:
        """Cancel every request in flight and refuse new ones, so that the threads blocked on them
        return at once (a signal or an error while the pools still hold work)."""
        with self.lock:
            self.cancelled = True
            for future in self.in_flight:
                future.cancel()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()


def reference_steps_1_2(
    config, engine, run_dir: Path, instructions: list[str], workers: tuple[int, int] = (32, 16)
) -> dict:
    """`workers` = (Step 1 threads, Step 2 threads): the reference scripts' defaults. Returns counts
    like the pipeline's (answers kept, extensions passed)."""
    import random

    ctx = RoundContext.for_round(config, engine, run_dir, 1)
    call = BlockingClient(engine)
    tries, tries_lock = [0], threading.Lock()  # extension job tries (the 1.2 x rule's attempts)
    failed: Counter[str] = Counter()  # a failed try's reason, named as the pipeline names it
    answer_pool = ThreadPoolExecutor(max_workers=workers[0])
    extend_pool = ThreadPoolExecutor(max_workers=workers[1])
    try:

        def answer(item):
            i, sample, text = item
            answer_id = f"r1-bench-{i:04d}-a{sample}"
            rng = ctx.rng("generate", answer_id)
            for _ in range(config.generate.retries):
                r = call(
                    Request(
                        [{"role": "user", "content": text}],
                        ctx.sampling(rng),
                        adapter=ctx.generator,
                        tag=answer_id,
                    )
                )
                reply = r.text.strip()
                if check_text(reply, r.finish_reason, ctx.checks) is None:
                    return {"id": answer_id, "query": text, "text": reply, "words": count_words(reply)}
            return None

        items = [
            (i, s, text)
            for i, text in enumerate(instructions)
            for s in range(config.generate.samples_per_instruction)
        ]
        answers = [a for a in answer_pool.map(answer, items) if a is not None]  # Step 1 ends: a barrier
        # Selection between the steps, as configured (the same work as the pipeline's run).
        lengths = [a["words"] for a in answers]
        keep = (
            length_biased_keep(lengths, random.Random(config.seed))
            if config.select.length_biased
            else [True] * len(lengths)
        )

        def extend_job(job):
            """One job, alone on its thread: every try, every micro-iteration, both stages, in turn."""
            rng = ctx.rng("extend", f"{job['id']}-e{job['j']}")
            for _ in range(config.extend.retries):
                with tries_lock:
                    tries[0] += 1
                best, best_words, accepted_any, reason = job["text"], job["words"], False, None
                for _ in range(config.extend.micro_iterations):
                    former = join_paragraphs(former_half(split_paragraphs(best)))
                    out = call(
                        Request(
                            extend_messages(job["query"], former),
                            ctx.extend_sampling(rng),
                            adapter=ctx.extender,
                            tag="stage1",
                        )
                    )
                    prefill = stage2_prefill(
                        join_paragraphs(
                            keep_leading_fraction(split_paragraphs(out.text), config.extend.stage1_keep)
                        )
                    )
                    out = call(
                        Request(
                            extend_messages(job["query"], best),
                            ctx.extend_sampling(rng),
                            prefill=prefill,
                            adapter=ctx.extender,
                            tag="stage2",
                        )
                    )
                    result = prefill + out.text
                    words = count_words(result)
                    reason = check_text(result, out.finish_reason, ctx.checks)
                    if reason is None and words <= best_words:
                        reason = NOT_LONGER
                    if reason is None:
                        best, best_words, accepted_any = result, words, True
                if best_words > config.extend.min_ratio * job["words"]:
                    return True
                with tries_lock:
                    failed[TOO_SHORT if accepted_any else str(reason)] += 1
            return False

        kept_answers = [a for a, k in zip(answers, keep, strict=True) if k]
        jobs = [
            dict(a, n=n, j=j)
            for n, a in enumerate(kept_answers)
            for j in range(config.extend.jobs_per_answer)
        ]
        passed = sum(extend_pool.map(extend_job, jobs))
        return {
            "answers_kept": len(kept_answers),
            "extensions_passed": passed,
            "extension_tries": tries[0],
            "failed_tries": dict(failed),
        }
    except BaseException:
        # Stopped (Ctrl-C) or failed: without this, shutdown() would wait for every queued
        # item and each blocked thread would wait for its request, i.e. for the rest of the run.
        call.cancel()
        answer_pool.shutdown(cancel_futures=True)
        extend_pool.shutdown(cancel_futures=True)
        raise
    finally:
        answer_pool.shutdown()
        extend_pool.shutdown()
        call.close()
