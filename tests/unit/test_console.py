"""The round table in a log file: whole, never cut to 80 columns."""

import json
import subprocess
import sys


def test_round_table_is_whole_when_stderr_is_a_file(tmp_path):
    run = tmp_path / "run"
    (run / "round-1").mkdir(parents=True)
    (run / "manifest.json").write_text('{"config": {}}', encoding="utf-8")
    long_reasons = {"no_final_punctuation": 12, "repeated_ngram": 9, "length_biased_sampling": 4}
    summary = {
        "round": 1,
        "instructions": {"made": 16, "kept": 10, "rejections": {"judge_said_no": 6}},
        "answers": {
            "made": 10,
            "kept": 8,
            "rejections": long_reasons,
            "mean_words": 425.3,
            "median_words": 410,
        },
        "extensions": {"made": 20, "kept": 5, "rejections": long_reasons, "mean_words": 562.0},
        "training": {"generator": {"examples": 5, "final_loss": 1.234, "steps": 10}},
        "minutes": {"instruct": 1.5, "generate": 4.0, "extend": 8.25, "train_generator": 1.0},
    }
    (run / "round-1" / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    log = tmp_path / "log.txt"
    with log.open("w") as f:
        subprocess.run(
            [sys.executable, "-c", "from selflengthen.cli import main; main()", "summary", str(run)],
            stdout=f,
            stderr=f,
            check=True,
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path), "TERM": "dumb"},
        )
    text = log.read_text(encoding="utf-8")
    assert "…" not in text
    for cell in (
        "instructions",
        "extensions",
        "no_final_punctuation 12, repeated_ngram 9, length_biased_sampling 4",
        "median words",
        "minutes",
        "loss 1.2; 10 steps",
        "8.2",
    ):
        assert cell in text, cell
    assert max(len(line) for line in text.splitlines()) > 80  # it really is wider than rich's default
