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
    assert {"growth.png", "funnel.png", "loss.png"} <= set(pngs)
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
    assert {p.name for p in index.parent.glob("*.png")} | {"browse.html"} == set(refs)
    md = (index.parent / "report.md").read_text(encoding="utf-8")
    for ref in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (index.parent / ref).is_file()


def test_report_content(report):
    run, index = report
    md = (index.parent / "report.md").read_text(encoding="utf-8")
    assert "demo" in md
    assert "| 1 | 3 / 4 | 4 / 8 | 460 | 3 / 5 | 630 | 17 |" in md  # round 1: means from summary.json
    assert "| 2 | - | 4 / 4 | 715 | - | - | - |" in md  # round 2 counted from its jsonl
    assert "from 460 words (round 1) to 715 words (round 2)" in md
    assert "| type: below | 0 |" in md and "| overall | 0.5 |" in md
    # the funnel: items by final verdict, failed attempts apart (a0 kept after 1, 4 items failed 2 each)
    assert "| round 1 answers | 8 | 4 | truncated: 4 | truncated: 9 |" in md
    assert "| round 1 instructions | 4 | 3 | judge_no: 1 | - |" in md
    assert "| round 1 extensions | 5 | 3 | too_short: 2 | too_short: 2 |" in md
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
    md = (index.parent / "report.md").read_text()
    assert "| round 1 answers | 5 | 2 | not kept (reason not recorded): 3 | truncated: 1 |" in md


def test_missing_run_dir(tmp_path):
    with pytest.raises(DataError, match="run directory not found"):
        build_report(tmp_path / "nope")


def test_stage_counts_add_up_to_the_items_made(tmp_path):
    from selflengthen.evaluate.report_data import load_rounds, stage_counts

    run = make_run(tmp_path)
    rounds = load_rounds(run, [])
    for r in rounds:
        for stage in ("instructions", "answers", "extensions"):
            c = stage_counts(r, stage)
            if c:
                assert c.kept + sum(c.verdicts.values()) == c.made, (r.k, stage)
    answers = stage_counts(rounds[0], "answers")
    assert (answers.made, answers.kept, answers.verdicts, answers.attempts) == (
        8,
        4,
        {"truncated": 4},
        {"truncated": 9},
    )


def test_funnel_bars_are_the_items_made_with_attempts_apart(tmp_path):
    """The drawn bars: the verdict panel's bar widths sum to the items made, the legend sits
    outside the axes, and the count axis has integer ticks only."""
    from matplotlib.figure import Figure

    from selflengthen.evaluate import plots

    drawn = {}
    original = Figure.savefig

    def keep(fig, *args, **kwargs):
        drawn["fig"] = fig
        return original(fig, *args, **kwargs)

    Figure.savefig = keep
    try:
        plots.funnel(
            [
                ("answers", 10, {"truncated": 3}, {"truncated": 7, "repeated_ngram": 2}),
                ("instructions", 6, {"judge_no": 2}, {}),
            ],
            tmp_path / "f.png",
        )
    finally:
        Figure.savefig = original
    fig = drawn["fig"]
    verdict_ax, attempts_ax = fig.axes[:2]
    widths: dict[float, float] = {}
    for bar in verdict_ax.patches:
        widths[round(bar.get_y(), 2)] = widths.get(round(bar.get_y(), 2), 0) + bar.get_width()
    assert sorted(widths.values()) == [8, 13]  # 6 + 2 and 10 + 3: the items made, no attempts added
    assert sum(bar.get_width() for bar in attempts_ax.patches) == 9
    fig.canvas.draw()
    for ax in (verdict_ax, attempts_ax):
        assert all(float(t).is_integer() for t in ax.get_xticks())
        assert ax.get_legend() is None
    legend = fig.legends[0].get_window_extent()
    for ax in (verdict_ax, attempts_ax):
        assert legend.x0 >= ax.get_window_extent().x1  # beside the bars, not on them


def test_growth_heldout_scores_and_final(tmp_path):
    run = make_run(tmp_path, with_growth=True)
    index = build_report(run)
    names = {p.name for p in index.parent.glob("*.png")}
    assert {"growth.png", "final_lengths.png"} <= names
    for name in ("growth.png", "final_lengths.png"):
        assert_valid_png(index.parent / name)
    md = (index.parent / "report.md").read_text(encoding="utf-8")
    assert "| round 0 | held-out heldout | 5 | 302 | 302 | 304 |" in md
    assert "| round 2 | held-out heldout | 5 | 502 | 502 | 504 |" in md
    assert "| round 1 | kept answers | 4 |" in md and "| round 1 | kept extensions | 3 |" in md
    assert "| final | final SFT set | 6 | 650 |" in md
    # scores per round: a saved `eval score --json` output and a scored LonGen answers file
    assert "| longbench | - | 50 | 60 | - |" in md
    assert "| LonGen: longen (x100) | - | 50 | 100 | - |" in md  # 60 and 100 words for "around 100"
    assert "Collected 9 candidates, kept 6 of 200-1500 words (removed: too_short 3)." in md
    assert "| about | 2 | 500 | 650 | 650 |" in md
