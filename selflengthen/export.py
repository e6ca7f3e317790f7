"""Export a run's SFT sets for other trainers: TRL, OpenAI chat, LLaMA-Factory, `datasets`.

    export_datasets(Path("runs/demo"), "llamafactory", Path("out"), style="sharegpt")

Datasets: "final" (RUN/final/sft.jsonl) and "round-K-generator" / "round-K-extender"
(RUN/round-K/sft/{generator,extender}.jsonl); by default every one that exists.
Formats, one file or directory per dataset under OUT:

    trl           NAME.jsonl   {"prompt": [messages], "completion": [messages]} (TRL prompt-completion)
    messages      NAME.jsonl   {"messages": [...]} (OpenAI chat fine-tuning)
    llamafactory  NAME.json    alpaca {"instruction", "input", "output", "system", "history"} or
                               sharegpt {"conversations": [{"from", "value"}], "system"};
                               plus dataset_info.json (entries merged into an existing one)
    hf            NAME/        `datasets` save_to_disk (the final set keeps type, constraint, ...)

Which tokens a trainer learns from (the loss mask) differs by format:

    trl, hf       prompt-completion: TRL's SFTTrainer masks the prompt by default
                  (`completion_only_loss`), so only the answer is learned, as in our own training.
    messages      TRL trains on EVERY token of a "messages" row, the prompt included, unless
                  `assistant_only_loss=True`, which needs a chat template with generation markers
                  (SmolLM2's and many others have none). OpenAI fine-tuning learns assistant
                  turns only. For TRL, prefer `trl`.
    llamafactory  LLaMA-Factory masks the prompt by default (`train_on_prompt: false`).

`push_to_hub` uploads each dataset as a config of one hub repository; it reads the token from
HF_TOKEN and never writes it anywhere.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from selflengthen.errors import DataError, InputError, SelfLengthenError
from selflengthen.records import KEPT
from selflengthen.store import atomic_write_json, atomic_write_jsonl, atomic_write_text, read_jsonl

FORMATS = ("trl", "messages", "llamafactory", "hf")
STYLES = ("alpaca", "sharegpt")
TOKEN_ENV = "HF_TOKEN"
# Columns of the final set's records that the hf export keeps beside prompt and completion.
FINAL_COLUMNS = ("type", "constraint", "original_query", "query", "response", "words", "language", "rewrite")
_ROUND_SFT = re.compile(r"^round-(\d+)$")


def available_datasets(run_dir: Path) -> dict[str, Path]:
    """name -> SFT file, for every SFT set the run has, rounds first."""
    run_dir = Path(run_dir)
    found: list[tuple[int, str, Path]] = []
    for path in run_dir.glob("round-*"):
        match = _ROUND_SFT.match(path.name)
        if not match:
            continue
        for role in ("generator", "extender"):
            sft = path / "sft" / f"{role}.jsonl"
            if sft.is_file():
                found.append((int(match.group(1)), f"round-{match.group(1)}-{role}", sft))
    out = {name: path for _, name, path in sorted(found)}
    final = run_dir / "final" / "sft.jsonl"
    if final.is_file():
        out["final"] = final
    return out


def _messages(row: dict, where: str) -> list[dict[str, str]]:
    prompt, completion = row.get("prompt"), row.get("completion")
    if not isinstance(prompt, list) or not isinstance(completion, list) or not completion:
        raise DataError(f"{where}: expected 'prompt' and 'completion' lists of chat messages")
    return [{"role": m["role"], "content": m["content"]} for m in prompt + completion]


def _alpaca(messages: list[dict[str, str]]) -> dict[str, Any]:
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    turns = [m for m in messages if m["role"] != "system"]
    pairs = [(turns[i]["content"], turns[i + 1]["content"]) for i in range(0, len(turns) - 1, 2)]
    instruction, output = pairs[-1]
    return {
        "instruction": instruction,
        "input": "",
        "output": output,
        "system": system,
        "history": [list(p) for p in pairs[:-1]],
    }


def _sharegpt(messages: list[dict[str, str]]) -> dict[str, Any]:
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    tags = {"user": "human", "assistant": "gpt"}
    conversations = [
        {"from": tags[m["role"]], "value": m["content"]} for m in messages if m["role"] != "system"
    ]
    return {"conversations": conversations, "system": system}


def _check_turns(messages: list[dict[str, str]], where: str) -> None:
    """LLaMA-Factory wants user and assistant turns alternating, user first, assistant last."""
    turns = [m["role"] for m in messages if m["role"] != "system"]
    expected = ["user", "assistant"] * (len(turns) // 2)
    if turns != expected or not turns:
        raise DataError(f"{where}: turns {turns} do not alternate user/assistant ending with the assistant")


def dataset_info_entry(file_name: str, style: str) -> dict[str, Any]:
    """A dataset_info.json entry as LLaMA-Factory documents it (data/README.md). Every column is
    named: LLaMA-Factory resets the columns a "columns" mapping leaves out to None."""
    if style == "alpaca":
        return {
            "file_name": file_name,
            "formatting": "alpaca",
            "columns": {
                "prompt": "instruction",
                "query": "input",
                "response": "output",
                "system": "system",
                "history": "history",
            },
        }
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "system": "system"},
        "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"},
    }


def build_rows(name: str, path: Path, fmt: str, style: str = "alpaca") -> list[dict[str, Any]]:
    """The rows of one dataset in `fmt`."""
    extra: dict[str, dict] = {}
    if name == "final" and fmt == "hf":
        constrained = path.parent / "constrained.jsonl"
        extra = {r["id"]: r for r in read_jsonl(constrained) if r.get("verdict") == KEPT}
    rows = []
    for line, row in enumerate(read_jsonl(path), start=1):
        where = f"{path}:{line}"
        messages = _messages(row, where)
        if fmt == "trl":
            rows.append({"prompt": row["prompt"], "completion": row["completion"]})
        elif fmt == "messages":
            rows.append({"messages": messages})
        elif fmt == "llamafactory":
            _check_turns(messages, where)
            rows.append(_alpaca(messages) if style == "alpaca" else _sharegpt(messages))
        else:
            out = {"id": row.get("id", str(line)), "prompt": row["prompt"], "completion": row["completion"]}
            if extra:
                record = extra.get(str(row.get("id")), {})
                out.update({col: record.get(col) for col in FINAL_COLUMNS})
            rows.append(out)
    return rows


def export_datasets(
    run_dir: Path,
    fmt: str,
    out: Path,
    *,
    names: list[str] | None = None,
    style: str = "alpaca",
    push_to_hub: str | None = None,
    private: bool = False,
) -> dict[str, dict[str, Any]]:
    """Write the chosen datasets of `run_dir` to `out` in `fmt`; returns {name: {"rows", "path"}}."""
    if fmt not in FORMATS:
        raise InputError(f"unknown export format '{fmt}'; choose one of {', '.join(FORMATS)}")
    if style not in STYLES:
        raise InputError(f"unknown LLaMA-Factory style '{style}'; choose alpaca or sharegpt")
    token = None
    if push_to_hub:
        token = os.environ.get(TOKEN_ENV)  # checked before any work, so a missing token fails fast
        if not token:
            raise InputError(
                f"--push-to-hub needs a Hugging Face token: set the {TOKEN_ENV} environment variable"
            )
    available = available_datasets(run_dir)
    if not available:
        raise InputError(f"{run_dir} has no SFT sets yet (round-K/sft/*.jsonl or final/sft.jsonl)")
    chosen = names or list(available)
    unknown = [n for n in chosen if n not in available]
    if unknown:
        raise InputError(f"no dataset '{unknown[0]}' in {run_dir}; available: {', '.join(available)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, dict[str, Any]] = {}
    for name in chosen:
        rows = build_rows(name, available[name], fmt, style)
        written[name] = {"rows": len(rows), "path": str(_write(name, rows, fmt, out))}
        if fmt == "llamafactory":
            _write_dataset_info(out, {name: dataset_info_entry(f"{name}.json", style)})
        if push_to_hub:
            _push(rows, push_to_hub, name, token, private)
            written[name]["hub"] = f"{push_to_hub} (config {name})"
    return written


def _write(name: str, rows: list[dict], fmt: str, out: Path) -> Path:
    if fmt in ("trl", "messages"):
        path = out / f"{name}.jsonl"
        atomic_write_jsonl(path, rows)
    elif fmt == "llamafactory":
        path = out / f"{name}.json"
        atomic_write_text(path, json.dumps(rows, ensure_ascii=False, indent=1) + "\n")
    else:
        from datasets import Dataset

        path = out / name
        Dataset.from_list(rows).save_to_disk(str(path))
    return path


def _write_dataset_info(out: Path, entries: dict[str, dict]) -> None:
    """Merge our entries into OUT/dataset_info.json, so exporting into LLaMA-Factory's data
    directory keeps the datasets already registered there."""
    path = out / "dataset_info.json"
    info: dict[str, Any] = {}
    if path.is_file():
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path}: invalid JSON ({exc.msg} at line {exc.lineno}); fix or remove it"
            ) from None
        if not isinstance(info, dict):
            raise DataError(f"{path}: expected a JSON object of dataset entries")
    info.update(entries)
    atomic_write_json(path, info)


def _push(rows: list[dict], repo: str, name: str, token: str | None, private: bool) -> None:
    from datasets import Dataset

    try:
        Dataset.from_list(rows).push_to_hub(
            repo, config_name=name, split="train", token=token, private=private
        )
    except Exception as exc:  # the hub's errors vary by version; say which push failed, never the token
        message = str(exc).replace(token, "***") if token else str(exc)
        raise SelfLengthenError(f"pushing '{name}' to {repo} failed: {message}") from None
