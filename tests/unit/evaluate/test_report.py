"""The run report: renders from a partial run, valid PNGs, and only links to files that exist."""

import json
import re

import pytest

from selflengthen.errors import DataError
from selflengthen.evaluate.report import build_report

from .runfixture import make_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_valid_png(path):
    from matplotlib import image as mpimg
    from PIL import Image

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as im:
        im.verify()
    assert mpimg.imread(path).shape[0] > 50


def referenced_files(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("run"))
    index = build_report(run)
    return run, index


def test_report_files_and_plots(report):
    run, index = report
    assert index == run / "report" / "index.html"
    assert (run / "report" / "report.md").is_file()
    pngs = sorted(p.name for p in (run / "report").glob("*.png"))
    assert {"lengths.png", "funnel.png", "loss.png"} <= set(pngs)
    assert len([p for p in pngs if p.startswith("eval_")]) == 3  # longen, longbench-write, ruler
    for name in pngs:
        assert_valid_png(run / "report" / name)


def test_html_references_only_existing_local_files(report):
    run, index = report
    html = index.read_text(encoding="utf-8")
    refs = referenced_files(html)
    assert refs, "the report shows its plots"
    for ref in refs:
        assert not re.match(r"[a-z]+://", ref), f"network reference {ref}"
        assert (index.parent / ref).is_file(), ref
    # every PNG written is shown
    assert {p.name for p in index.parent.glob("*.png")} == set(refs)
    md = (index.parent / "report.md").read_text(encoding="utf-8")
    for ref in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (index.parent / ref).is_file()


def test_report_content(report):
    run, index = report
    md = (index.parent / "report.md").read_text(encoding="utf-8")
    assert "demo" in md
    assert "| 1 | 3 / 4 | 4 / 8 | 460 | 3 / 6 | 630 | 17 |" in md  # round 1 from summary.json
    assert "| 2 | - | 4 / 4 | 715 | - | - | - |" in md  # round 2 counted from its jsonl
    assert "from 460 words (round 1) to 715 words (round 2)" in md
    assert "| type: below | 0 |" in md and "| overall | 0.5 |" in md
    assert "truncated: 4" in md and "judge_no: 1" in md
    assert "LonGen" in md and "LongBench-Write" in md and "LongWrite-Ruler" in md
    assert "Engagement" in md  # the judge table
    assert "1 unreadable line(s) ignored" in md  # the torn line of round 2
    assert "notes.jsonl" in md  # a file it could not place is named, not fatal


def test_report_on_a_run_that_just_started(tmp_path):
    run = tmp_path / "fresh"
    (run / "round-1").mkdir(parents=True)
    (run / "round-1" / "summary.json").write_text('{"round": 1, "instr', encoding="utf-8")  # being written
    index = build_report(run)
    assert index.is_file()
    assert not list(index.parent.glob("*.png"))
    assert referenced_files(index.read_text(encoding="utf-8")) == []


def test_report_reruns_and_drops_stale_plots(tmp_path):
    run = make_run(tmp_path, with_eval=True)
    build_report(run)
    for path in (run / "eval").iterdir():
        path.unlink()
    index = build_report(run)
    assert not list(index.parent.glob("eval_*.png"))
    for ref in referenced_files(index.read_text(encoding="utf-8")):
        assert (index.parent / ref).is_file()


def test_report_summary_without_jsonl_still_draws_funnel_and_loss(tmp_path):
    run = tmp_path / "r"
    (run / "round-1").mkdir(parents=True)
    summary = {
        "answers": {"made": 5, "kept": 2, "rejections": {"truncated": 1}},
        "training": {"generator": {"loss_history": [[1, 2.0], [2, 1.5]]}},
    }
    (run / "round-1" / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    index = build_report(run)
    names = {p.name for p in index.parent.glob("*.png")}
    assert names == {"funnel.png", "loss.png"}
    assert "| round 1 answers | 5 | 2 | truncated: 1 |" in (index.parent / "report.md").read_text()


def test_missing_run_dir(tmp_path):
    with pytest.raises(DataError, match="run directory not found"):
        build_report(tmp_path / "nope")
