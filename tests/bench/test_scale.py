"""bench/scale.py at tiny counts: every record accounted for, resume runs nothing, figures sane."""

from __future__ import annotations

import io
import json

from tests.bench.conftest import load_bench


def test_scale_bench_tiny(tmp_path):
    scale = load_bench("scale")
    out = io.StringIO()
    report = scale.main(
        ["--counts", "20,60", "--json", str(tmp_path / "s.json"), "--workdir", str(tmp_path)], out=out
    )
    assert json.loads((tmp_path / "s.json").read_text())["results"] == report["results"]
    for r in report["results"]:
        n, st = r["count"], r["stages"]
        assert r["answers_partial"] == r["answers"] == 2 * n  # every answer slot written exactly once
        kept_answers = st["select-ans"]["verdicts"]["kept"]
        assert 0 < kept_answers < 2 * n
        assert r["extensions_partial"] == r["extensions"] == 2 * kept_answers
        kept_ext = st["select-ext"]["verdicts"]["kept"]
        assert 0 < kept_ext and r["sft_generator"] == r["sft_extender"] == kept_ext
        assert st["resume-scan"]["ran_again"] == 0
        assert r["seconds"] > 0 and r["us_per_instruction"] > 0
        assert r["peak_rss_mb"] >= r["rss_after_imports_mb"] > 0
        assert 0 < r["py_peak_bytes"] < 50 * 2**20
    assert list(tmp_path.glob("scale-*")) == []  # run directories removed
    text = out.getvalue()
    assert "time per item" in text and "peak RSS" in text and "instructions.jsonl written directly" in text
