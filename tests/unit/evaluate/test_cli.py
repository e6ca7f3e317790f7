"""`selflengthen eval ...` and `selflengthen report` through typer's CliRunner."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from selflengthen.errors import ConfigError, DataError
from selflengthen.evaluate import cli
from selflengthen.evaluate.cli import eval_app

from .fakes import ScriptedEngine
from .runfixture import make_run

runner = CliRunner()


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


LONGEN = [
    {
        "language": "en",
        "range": "2-4k",
        "type": "about",
        "constraint": "around 10 words",
        "query": "q1",
        "response": "one two three four five six seven eight nine ten.",
        "finish_reason": "stop",
    },
    {
        "language": "zh",
        "range": "4-6k",
        "type": "range",
        "constraint": "十字至二十字",
        "query": "问题",
        "response": "一二三四五",
        "finish_reason": "length",
    },  # 5 of [10, 20]: 2*5/10 - 1 = 0
]


@pytest.mark.parametrize("command", ["generate", "score", "judge"])
def test_help(command):
    result = runner.invoke(eval_app, [command, "--help"])
    assert result.exit_code == 0
    assert "--benchmark" in result.output


def test_help_does_not_import_heavy_modules():
    code = (
        "import sys; import selflengthen.evaluate.cli; "
        "print(sorted(m for m in ('torch', 'transformers', 'matplotlib', 'datasets') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_score_json_shape_longen(tmp_path):
    path = write_rows(tmp_path / "answers.jsonl", LONGEN)
    result = runner.invoke(eval_app, ["score", "--benchmark", "longen", "--input", str(path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # exactly one JSON object on stdout
    assert set(data) == {"n", "overall", "by_type", "by_range", "by_language", "diagnostics"}
    assert data["n"] == 2
    assert data["overall"] == pytest.approx(0.5)
    assert data["by_type"] == {"about": 1.0, "range": 0.0}
    assert data["by_range"] == {"2-4k": 1.0, "4-6k": 0.0}
    assert data["by_language"] == {"en": 1.0, "zh": 0.0}
    assert data["diagnostics"]["truncated"] == pytest.approx(0.5)
    assert all(
        0.0 <= v <= 1.0 for group in ("by_type", "by_range", "by_language") for v in data[group].values()
    )


def test_score_json_shape_longbench(tmp_path):
    rows = [
        {"prompt": "Write 100 words", "type": "News", "length": 100, "response": "word " * 50},
        {"prompt": "Write 3000 words", "type": "Essay", "length": 3000, "response": "word " * 3000},
    ]
    path = write_rows(tmp_path / "lb.jsonl", rows)
    result = runner.invoke(
        eval_app, ["score", "--benchmark", "longbench-write", "--input", str(path), "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"n", "overall", "by_type", "by_bucket", "by_language", "diagnostics"}
    assert data["by_bucket"] == {"[0,500)": 50.0, "[2000,4000)": 100.0}
    assert data["overall"] == pytest.approx(75.0)


def test_score_table_and_detection(tmp_path):
    path = write_rows(tmp_path / "answers.jsonl", LONGEN)
    result = runner.invoke(eval_app, ["score", "--input", str(path)])
    assert result.exit_code == 0, result.output
    assert (
        "overall" in result.output and "type: about" in result.output and "repeated 13-gram" in result.output
    )
    ruler = write_rows(tmp_path / "r.jsonl", [{"prompt": "p", "length": 1000, "response": "word " * 30}])
    result = runner.invoke(eval_app, ["score", "--benchmark", "ruler", "--input", str(ruler)])
    assert result.exit_code == 0 and "1000" in result.output


def test_score_bad_file_raises_data_error(tmp_path):
    path = write_rows(tmp_path / "bad.jsonl", [{"constraint": "around 10 words", "type": "about"}])
    result = runner.invoke(eval_app, ["score", "--benchmark", "longen", "--input", str(path), "--json"])
    assert isinstance(result.exception, DataError)
    assert "line 1, field 'response'" in str(result.exception)


def test_generate_with_a_scripted_engine(tmp_path, monkeypatch):
    data = write_rows(
        tmp_path / "LonGen.jsonl", [{k: v for k, v in r.items() if k != "response"} for r in LONGEN]
    )
    engines = []

    def fake_engine(kind, model, batch_size, adapter=None):
        engine = ScriptedEngine(lambda request, n: "A short answer.")
        engine.set_adapters({"generator": str(adapter)} if adapter else {})
        engines.append(engine)
        return engine

    monkeypatch.setattr(cli, "_engine", fake_engine)
    adapter = tmp_path / "round-2" / "adapters" / "generator"
    adapter.mkdir(parents=True)
    out = tmp_path / "eval" / "longen.jsonl"
    args = [
        "generate",
        "--benchmark",
        "longen",
        "--data",
        str(data),
        "--out",
        str(out),
        "--adapter",
        str(adapter),
        "--max-tokens",
        "32",
        "--limit",
        "1",
    ]
    result = runner.invoke(eval_app, args)
    assert result.exit_code == 0, result.output
    assert "1 answers written" in result.output
    request = engines[0].history[0]
    assert request.adapter == "generator" and request.params.max_tokens == 32
    assert engines[0].closed
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0]["response"] == "A short answer." and rows[0]["words"] == 3
    # Resume: the full run answers only the missing row.
    result = runner.invoke(eval_app, [a for a in args if a not in ("--limit", "1")])
    assert "1 answers written, 1 already there, 2 rows" in result.output


def test_generate_rejects_bad_options(tmp_path):
    data = write_rows(tmp_path / "LonGen.jsonl", [{"query": "q"}])
    base = ["generate", "--benchmark", "longen", "--data", str(data), "--out", str(tmp_path / "o.jsonl")]
    result = runner.invoke(eval_app, [*base, "--adapter", str(tmp_path / "missing")])
    assert isinstance(result.exception, ConfigError) and "--adapter" in str(result.exception)
    result = runner.invoke(eval_app, [*base, "--engine", "warp-drive"])
    assert isinstance(result.exception, ConfigError) and "kind" in str(result.exception)
    result = runner.invoke(eval_app, [*base, "--max-tokens", "0"])
    assert isinstance(result.exception, ConfigError)
    result = runner.invoke(eval_app, ["generate", "--benchmark", "nope", "--data", "x", "--out", "y"])
    assert result.exit_code == 2  # click's usage error names the allowed choices


def test_judge_command(tmp_path, monkeypatch):
    answers = write_rows(tmp_path / "answers.jsonl", LONGEN)
    scores = {
        "Relevance": 8,
        "Coherence": 7,
        "Accuracy": 9,
        "Consistency": 8,
        "Clarity": 8,
        "Creativity": 6,
        "Engagement": 7,
    }
    monkeypatch.setattr(cli, "_engine", lambda *a, **k: ScriptedEngine(lambda r, n: json.dumps(scores)))
    out = tmp_path / "judged.jsonl"
    args = ["judge", "--benchmark", "longen", "--input", str(answers), "--out", str(out)]
    result = runner.invoke(eval_app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["parsed"] == 2 and summary["unparsable"] == 0
    assert summary["dimensions"]["Accuracy"] == 9.0
    result = runner.invoke(eval_app, args)
    assert "Engagement" in result.output and "unparsable after 2 retries: 0" in result.output


def test_report_command_through_the_main_app(tmp_path):
    from selflengthen.cli import app

    run = make_run(tmp_path, with_eval=False)
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(run / "report" / "index.html")
    result = runner.invoke(app, ["eval", "--help"])
    assert result.exit_code == 0 and "score" in result.output
