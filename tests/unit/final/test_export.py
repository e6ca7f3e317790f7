"""Each export format read back by its consumer: datasets, TRL-style JSON loading, LLaMA-Factory's
dataset_info.json schema, OpenAI chat JSONL; push to hub only with a token."""

import json
from pathlib import Path

import pytest
from datasets import Dataset, load_dataset, load_from_disk

from selflengthen.errors import DataError, InputError, SelfLengthenError
from selflengthen.export import available_datasets, export_datasets
from selflengthen.final import prepare_final_data

from .runfixture import make_run, small_config, write_jsonl


@pytest.fixture
def run(tmp_path):
    config = small_config(rewrite=False)
    run = make_run(tmp_path, config)
    prepare_final_data(config, run)
    return run


def test_available_datasets(run):
    assert list(available_datasets(run)) == [
        "round-1-extender",
        "round-1-generator",
        "round-2-extender",
        "round-2-generator",
        "final",
    ]


def test_trl_prompt_completion(run, tmp_path):
    written = export_datasets(run, "trl", tmp_path / "out")
    assert written["final"]["rows"] == 20 and written["round-1-generator"]["rows"] == 6
    ds = load_dataset("json", data_files=str(tmp_path / "out" / "final.jsonl"), split="train")
    assert ds.column_names == ["prompt", "completion"]
    # TRL's conversational prompt-completion format: lists of {"role", "content"} messages.
    assert ds[0]["prompt"][0]["role"] == "user" and ds[0]["completion"][0]["role"] == "assistant"
    constrained = [
        json.loads(line) for line in (run / "final" / "constrained.jsonl").read_text().splitlines()
    ]
    assert ds[0]["prompt"][0]["content"] == constrained[0]["query"]


def test_openai_messages(run, tmp_path):
    export_datasets(run, "messages", tmp_path / "out", names=["round-2-extender"])
    rows = [
        json.loads(line) for line in (tmp_path / "out" / "round-2-extender.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 6
    assert all(
        list(r) == ["messages"] and [m["role"] for m in r["messages"]] == ["user", "assistant"] for r in rows
    )
    assert not (tmp_path / "out" / "final.jsonl").exists()


def test_hf_save_to_disk_keeps_the_final_metadata(run, tmp_path):
    export_datasets(run, "hf", tmp_path / "out", names=["final", "round-1-generator"])
    final = load_from_disk(str(tmp_path / "out" / "final"))
    assert len(final) == 20
    assert {"prompt", "completion", "type", "constraint", "original_query", "words", "rewrite"} <= set(
        final.column_names
    )
    assert set(final["type"]) <= {"about", "range", "above", "below"}
    assert load_from_disk(str(tmp_path / "out" / "round-1-generator")).column_names == [
        "id",
        "prompt",
        "completion",
    ]


# LLaMA-Factory's reading of dataset_info.json (data/README.md and data/parser.py): file_name,
# formatting alpaca|sharegpt, columns (missing ones become None), tags for sharegpt.
LF_COLUMNS = {
    "alpaca": {"prompt", "query", "response", "history", "system", "tools", "images"},
    "sharegpt": {"messages", "system", "tools", "images"},
}
LF_TAGS = {
    "role_tag",
    "content_tag",
    "user_tag",
    "assistant_tag",
    "observation_tag",
    "function_tag",
    "system_tag",
}


def load_like_llamafactory(data_dir: Path, name: str) -> list[dict]:
    info = json.loads((data_dir / "dataset_info.json").read_text())
    entry = info[name]
    assert set(entry) <= {
        "file_name",
        "formatting",
        "columns",
        "tags",
        "ranking",
        "subset",
        "split",
        "folder",
    }
    formatting = entry.get("formatting", "alpaca")
    assert formatting in ("alpaca", "sharegpt")
    columns = entry.get("columns", {})
    assert set(columns) <= LF_COLUMNS[formatting]
    ds = load_dataset("json", data_files=str(data_dir / entry["file_name"]), split="train")
    assert set(columns.values()) <= set(ds.column_names)
    rows = ds.to_list()
    if formatting == "alpaca":
        for row in rows:
            assert row[columns["prompt"]] and row[columns["response"]]
            assert isinstance(row[columns["history"]], list)
    else:
        tags = {
            "role_tag": "from",
            "content_tag": "value",
            "user_tag": "human",
            "assistant_tag": "gpt",
            **entry.get("tags", {}),
        }
        assert set(entry.get("tags", {})) <= LF_TAGS
        for row in rows:
            turns = row[columns.get("messages", "conversations")]
            # Users on odd positions, the assistant on even ones (1-based), as LLaMA-Factory checks.
            assert [t[tags["role_tag"]] for t in turns] == [tags["user_tag"], tags["assistant_tag"]] * (
                len(turns) // 2
            )
            assert all(t[tags["content_tag"]] for t in turns)
    return rows


@pytest.mark.parametrize("style", ["alpaca", "sharegpt"])
def test_llamafactory(run, tmp_path, style):
    out = tmp_path / "data"
    out.mkdir()
    (out / "dataset_info.json").write_text(
        json.dumps({"alpaca_en_demo": {"file_name": "alpaca_en_demo.json"}})
    )
    export_datasets(run, "llamafactory", out, style=style)
    info = json.loads((out / "dataset_info.json").read_text())
    assert "alpaca_en_demo" in info  # entries already there are kept
    rows = load_like_llamafactory(out, "final")
    assert len(rows) == 20
    assert len(load_like_llamafactory(out, "round-1-extender")) == 6


def test_llamafactory_system_prompt_and_history(tmp_path):
    run = tmp_path / "run"
    write_jsonl(
        run / "round-1" / "sft" / "generator.jsonl",
        [
            {
                "id": "x",
                "prompt": [
                    {"role": "system", "content": "Be thorough."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello."},
                    {"role": "user", "content": "Write an essay."},
                ],
                "completion": [{"role": "assistant", "content": "An essay."}],
            }
        ],
    )
    export_datasets(run, "llamafactory", tmp_path / "a")
    row = load_like_llamafactory(tmp_path / "a", "round-1-generator")[0]
    assert row == {
        "instruction": "Write an essay.",
        "input": "",
        "output": "An essay.",
        "system": "Be thorough.",
        "history": [["Hi", "Hello."]],
    }
    export_datasets(run, "llamafactory", tmp_path / "s", style="sharegpt")
    row = load_like_llamafactory(tmp_path / "s", "round-1-generator")[0]
    assert row["system"] == "Be thorough." and len(row["conversations"]) == 4


def test_bad_inputs(run, tmp_path):
    with pytest.raises(InputError, match="format"):
        export_datasets(run, "csv", tmp_path / "o")
    with pytest.raises(InputError, match="available"):
        export_datasets(run, "trl", tmp_path / "o", names=["round-9-generator"])
    with pytest.raises(InputError, match="no SFT sets"):
        export_datasets(tmp_path / "nothing", "trl", tmp_path / "o")
    (tmp_path / "o").mkdir(exist_ok=True)
    (tmp_path / "o" / "dataset_info.json").write_text("{not json")
    with pytest.raises(DataError, match="dataset_info.json"):
        export_datasets(run, "llamafactory", tmp_path / "o")


def test_push_needs_a_token(run, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(InputError, match="HF_TOKEN"):
        export_datasets(run, "trl", tmp_path / "o", push_to_hub="me/data")
    assert not (tmp_path / "o").exists()  # failed before writing anything


def test_push_uses_the_token_and_never_shows_it(run, tmp_path, monkeypatch):
    secret = "hf_secret_token_123"
    monkeypatch.setenv("HF_TOKEN", secret)
    pushed = []

    def fake_push(self, repo, **kwargs):
        pushed.append((repo, kwargs, len(self)))

    monkeypatch.setattr(Dataset, "push_to_hub", fake_push)
    written = export_datasets(
        run, "messages", tmp_path / "o", names=["final"], push_to_hub="me/data", private=True
    )
    assert pushed == [
        ("me/data", {"config_name": "final", "split": "train", "token": secret, "private": True}, 20)
    ]
    assert secret not in json.dumps(written)

    def failing_push(self, repo, **kwargs):
        raise RuntimeError(f"401 for token {kwargs['token']}")

    monkeypatch.setattr(Dataset, "push_to_hub", failing_push)
    with pytest.raises(SelfLengthenError) as err:
        export_datasets(run, "trl", tmp_path / "o", names=["final"], push_to_hub="me/data")
    assert secret not in str(err.value) and "***" in str(err.value)
