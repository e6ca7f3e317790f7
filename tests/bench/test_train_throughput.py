"""bench/train_throughput.py on a tiny random Llama (SmolLM2's tokenizer): real training through
train_adapter in every mode, figures read from the trainer's actual batches."""

from __future__ import annotations

import io
import json

import pytest

from tests.bench.conftest import load_bench
from tests.reliability.harness import tiny_model

pytestmark = pytest.mark.slow


def test_train_throughput_bench_tiny(tmp_path):
    from selflengthen.model import cache_dir

    bench = load_bench("train_throughput")
    out = io.StringIO()
    args = [
        "--base",
        str(tiny_model(cache_dir())),
        "--examples",
        "6",
        "--min-words",
        "30",
        "--max-words",
        "200",
    ]
    args += ["--steps", "3", "--batch-size", "2", "--modes", "padded,grouped,padding_free", "--threads", "1"]
    report = bench.main([*args, "--json", str(tmp_path / "t.json")], out=out)
    assert json.loads((tmp_path / "t.json").read_text())["modes"] == report["modes"]
    modes = {m["mode"]: m for m in report["modes"]}
    assert list(modes) == ["padded", "grouped", "padding_free"]
    for m in modes.values():
        assert m["steps"] == 3 and m["examples_seen"] == 6  # 3 steps of 2: the whole synthetic set
        assert 0 < m["real_tokens"] <= m["padded_positions"]
        assert 0 <= m["padding_share"] < 1
        assert m["real_tokens_per_s"] > 0 and m["positions_per_s"] >= m["real_tokens_per_s"]
        assert m["steady_real_tokens_per_s"] > 0
    # every example seen once in each mode: the same real tokens, whatever the order
    assert (
        modes["padded"]["real_tokens"]
        == modes["grouped"]["real_tokens"]
        == modes["padding_free"]["real_tokens"]
    )
    assert modes["padding_free"]["padding_share"] == 0
    assert modes["padded"]["padding_share"] > 0  # 30-200 word answers never all pair up evenly
    for shares in report["predicted_padding"].values():
        assert all(0 <= s < 1 for s in shares.values()) and shares["padding_free"] == 0
    assert report["predicted_padding"][1]["padded"] == 0
    assert "padding share" in out.getvalue()
