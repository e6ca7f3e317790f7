"""Run directories as the loop writes them, with synthetic texts of chosen lengths, for the final stage."""

from __future__ import annotations

import json
import random
from pathlib import Path

from selflengthen.config import Config
from selflengthen.engines.base import Request, Result

VOCAB = (
    "river mountain city garden market history science music winter harbor village teacher "
    "engine library forest signal morning bridge window letter island theory planet culture "
    "station paper circle story memory season journey voice field market lantern valley"
).split()
HAN = "春夏秋冬山水风云花草树木日月星辰江河湖海城市乡村书画诗词歌舞人民时代历史文化科学技术"


def text_of(words: int, seed: int, language: str = "en") -> str:
    """A text of exactly `words` LonGen words, ending with sentence punctuation, no repeated 10-gram."""
    rng = random.Random(seed)
    if language == "zh":
        body = "".join(rng.choice(HAN) for _ in range(words - 1))
        return body + "。"
    tokens = [rng.choice(VOCAB) + str(rng.randrange(1000)) for _ in range(words)]
    return " ".join(tokens) + "."


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def make_run(root: Path, config: Config | None = None, *, rounds: int = 2) -> Path:
    """A run with `rounds` finished rounds. Round k has answers of 300+ words and extensions
    (1.5x) in English and Chinese, a few dropped records, and SFT sets.

    Designed cases (min_words 200, max_words 2000): r1 answer a3 is too short (150 words),
    r2 extension e9 is too long (2500), r2 answer a4 is an exact copy of r1 answer a0,
    r2 answer a3 is a near copy of r1 extension e0 (one word changed).
    """
    run = root / "run"
    config = config or Config()
    run.mkdir(parents=True)
    (run / "manifest.json").write_text(
        json.dumps({"package": "selflengthen", "version": "0.1.0", "config": config.model_dump(mode="json")}),
        encoding="utf-8",
    )
    texts: dict[str, str] = {}
    for k in range(1, rounds + 1):
        answers, extensions, gen_sft, ext_sft = [], [], [], []
        for i in range(6):
            language = "zh" if i % 3 == 2 else "en"
            query = (
                f"请写一篇关于主题{k}{i}的详细文章，介绍它的历史与现状。"
                if language == "zh"
                else f"Write a detailed article about topic {k}{i} and explain its history and present state."
            )
            words = 150 if (k, i) == (1, 3) else 300 + 37 * i + 11 * k
            text = text_of(words, seed=1000 * k + i, language=language)
            if (k, i) == (2, 4):
                text = texts["r1-a0"]
            if (k, i) == (2, 3):
                tokens = texts["r1-e0"].split(" ")
                tokens[5] = "changed"
                text = " ".join(tokens)
            texts[f"r{k}-a{i}"] = text
            answers.append(
                {
                    "id": f"r{k}-a{i}",
                    "instruction_id": f"r{k}-i{i}",
                    "query": query,
                    "text": text,
                    "words": len(text.split()),
                    "verdict": "kept",
                    "model": "base",
                }
            )
            ext_words = 2500 if (k, i) == (2, 0) else int(words * 1.5)
            ext_text = text_of(ext_words, seed=5000 * k + i, language=language)
            texts[f"r{k}-e{i}"] = ext_text
            extensions.append(
                {
                    "id": f"r{k}-a{i}-e0",
                    "answer_id": f"r{k}-a{i}",
                    "instruction_id": f"r{k}-i{i}",
                    "query": query,
                    "text": ext_text,
                    "words": ext_words,
                    "verdict": "kept",
                    "model": "base",
                }
            )
            completion = [{"role": "assistant", "content": ext_text}]
            gen_sft.append(
                {
                    "id": f"r{k}-a{i}-e0",
                    "prompt": [{"role": "user", "content": query}],
                    "completion": completion,
                }
            )
            ext_sft.append(
                {
                    "id": f"r{k}-a{i}-e0",
                    "prompt": [{"role": "user", "content": f"Extend: {text[:50]}"}],
                    "completion": completion,
                }
            )
        # Records the loop dropped: never collected.
        answers.append(
            {
                "id": f"r{k}-a9",
                "instruction_id": "x",
                "query": "Write.",
                "text": text_of(400, 99 + k),
                "words": 400,
                "verdict": "truncated",
                "model": "base",
            }
        )
        answers.append(
            {
                "id": f"r{k}-a8",
                "instruction_id": "x",
                "query": "Write a story about a lighthouse keeper.",
                "text": text_of(420, 77 + k),
                "words": 420,
                "verdict": "length_biased_sampling",
                "model": "base",
            }
        )
        rd = run / f"round-{k}"
        write_jsonl(
            rd / "instructions.jsonl",
            [
                {"id": f"r{k}-i{i}", "text": f"Write about topic {k}{i} in depth.", "verdict": "kept"}
                for i in range(6)
            ],
        )
        write_jsonl(rd / "answers.jsonl", answers)
        write_jsonl(rd / "extensions.jsonl", extensions)
        write_jsonl(rd / "sft" / "generator.jsonl", gen_sft)
        write_jsonl(rd / "sft" / "extender.jsonl", ext_sft)
        (rd / "summary.json").write_text(json.dumps({"round": k}), encoding="utf-8")
    return run


def small_config(**final: object) -> Config:
    """A config whose final word range fits the fixture's few-hundred-word texts."""
    return Config(
        engine={"kind": "fake", "batch_size": 4}, final={"min_words": 200, "max_words": 2000, **final}
    )


class RewriteEngine:
    """A scripted engine for the rewrite: `respond(request)` gives the text; history of requests."""

    name = "rewrite-fake"

    def __init__(self, respond):
        self.respond = respond
        self.history: list[Request] = []
        self.adapters: dict[str, str] = {}
        self.closed = False

    async def generate(self, request: Request) -> Result:
        self.history.append(request)
        out = self.respond(request)
        return out if isinstance(out, Result) else Result(text=out, finish_reason="stop")

    def set_adapters(self, adapters: dict[str, str]) -> None:
        self.adapters.update(adapters)

    def close(self) -> None:
        self.closed = True


def prompt_parts(request: Request) -> tuple[str, str]:
    """(query, constraint) from a `length_rewrite_user` prompt, in either language."""
    content = request.messages[-1]["content"]
    if "篇幅要求：" in content:
        query = content.split("下面是一条写作要求：\n", 1)[1].split("\n\n篇幅要求：", 1)[0]
        constraint = content.split("篇幅要求：", 1)[1].split("\n", 1)[0]
    else:
        query = content.split("Here is a writing request:\n", 1)[1].split("\n\nLength requirement: ", 1)[0]
        constraint = content.split("Length requirement: ", 1)[1].split("\n", 1)[0]
    return query, constraint


def good_rewrite(request: Request) -> str:
    query, constraint = prompt_parts(request)
    if "写" in query:
        return f"{query.rstrip('。')}，篇幅{constraint}。"
    return f"{query.rstrip('.')}, in {constraint}."
