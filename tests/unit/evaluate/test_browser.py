"""The sample browser: every record reaches the page's data files intact, chunks stay small,
and the page's own script (run in node against the files, when node is installed) lists,
filters, sorts and opens records with their micro-steps."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from selflengthen.evaluate import browser
from selflengthen.evaluate.report import build_report

from .runfixture import make_run

DRIVER = Path(__file__).with_name("browser_driver.js")
CALL = re.compile(r"^SL\.(manifest|index|chunk)\((.*)\);\s*$", re.S)


def load_call(path: Path):
    """(function, arguments) of a data script: it must be exactly one SL.* call with JSON arguments."""
    match = CALL.match(path.read_text(encoding="utf-8"))
    assert match, f"{path} is not one SL.* call"
    return match.group(1), json.loads("[" + match.group(2) + "]")


def records(run: Path, k: int, stage: str) -> list[dict]:
    path = run / f"round-{k}" / f"{stage}.jsonl"
    out = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # the torn last line
    return out


@pytest.fixture
def report(tmp_path):
    run = make_run(tmp_path)
    build_report(run)
    return run, run / "report"


def test_every_record_is_in_the_index_and_its_chunk(report):
    run, out = report
    kind, (manifest,) = load_call(out / "browse" / "manifest.js")
    assert kind == "manifest" and [r["k"] for r in manifest["rounds"]] == [1, 2]
    assert manifest["records"] == 4 + 8 + 5 + 4
    for entry in manifest["rounds"]:
        k = entry["k"]
        kind, (k_arg, index) = load_call(out / "browse" / entry["index"])
        assert kind == "index" and k_arg == k
        rows = index["rows"]
        assert len(rows["id"]) == entry["records"] and len({len(c) for c in rows.values()}) == 1
        for stage, code in browser.KINDS.items():
            expected = records(run, k, stage) if (run / f"round-{k}" / f"{stage}.jsonl").is_file() else []
            ids = [rows["id"][i] for i in range(len(rows["id"])) if rows["kind"][i] == code]
            assert ids == [r["id"] for r in expected]
            for rec in expected:
                i = rows["id"].index(rec["id"])
                assert (
                    index["verdicts"][rows["verdict"][i]] == rec["verdict"]
                    and rows["words"][i] == rec["words"]
                )
                _, (key, chunk) = load_call(out / "browse" / f"round-{k}" / f"{stage}-{rows['chunk'][i]}.js")
                assert key == f"{k}/{stage}/{rows['chunk'][i]}"
                (shown,) = [c for c in chunk if c["id"] == rec["id"]]
                assert shown["text"] == rec["text"]
    # round 2 has answers whose instruction record is missing: a placeholder names it
    _, (_, index2) = load_call(out / "browse" / "round-2-index.js")
    assert index2["instructions"] == [["i1", "", None]]


def test_micro_steps_mark_the_kept_stage1_paragraphs(report):
    _, out = report
    _, (_, chunk) = load_call(out / "browse" / "round-1" / "extensions-0.js")
    (step,) = next(c for c in chunk if c["id"] == "e0")["steps"]
    assert step["stage1_paragraphs"] == [
        "The river rises in the green hills above the town.",
        "Spring rain feeds it.",
        "In short, a river.",
    ]
    assert step["stage1_kept_n"] == 2 and step["continuation"].startswith("It runs past")


def test_chunks_stay_under_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(browser, "CHUNK_BYTES", 400)
    run = make_run(tmp_path)
    build_report(run)
    files = sorted((run / "report" / "browse" / "round-1").glob("answers-*.js"))
    assert len(files) > 2
    seen = []
    for n, path in enumerate(sorted(files, key=lambda p: int(p.stem.split("-")[1]))):
        _, (key, chunk) = load_call(path)
        assert key == f"1/answers/{n}"
        assert (
            len(chunk) == 1
            or sum(len(json.dumps(c, ensure_ascii=False, separators=(",", ":"))) for c in chunk) <= 400
        )
        seen += [c["id"] for c in chunk]
    assert seen == [f"a{i}" for i in range(8)]


def test_page_is_offline_and_rerun_drops_stale_data(report):
    run, out = report
    page = (out / "browse.html").read_text(encoding="utf-8")
    assert not re.search(r"(src|href)=\"?[a-z]+://", page) and "fetch(" not in page
    assert '"browse/manifest.js"' in page
    assert 'href="browse.html"' in (out / "index.html").read_text(encoding="utf-8")
    for k in (1, 2):
        shutil.rmtree(run / f"round-{k}")
    build_report(run)
    assert not (out / "browse").exists() and not (out / "browse.html").exists()


def drive(out: Path, k: int, record: str, **filters: str) -> dict:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    result = subprocess.run(
        [node, str(DRIVER), str(out), str(k), record, json.dumps(filters)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_page_script_lists_filters_and_opens_a_record(report):
    _, out = report
    page = drive(out, 1, "e0")
    assert page["status"].startswith("17 of 17 records match")
    assert page["loaded"][:2] == ["browse/manifest.js", "browse/round-1-index.js"]  # no chunk before a click
    assert "browse/round-2-index.js" not in page["loaded"]  # other rounds load when chosen
    detail = page["detail"]
    assert 'class="card target" id="rec-e0"' in detail
    assert "2 of 3 paragraphs kept" in detail
    assert '<p class="para kept1">Spring rain feeds it.</p>' in detail
    assert '<p class="para dropped1">In short, a river.</p>' in detail
    # added text is marked against the answer it extends; copied text is not
    assert "<mark>where gulls circle the harbour.</mark>" in detail
    assert "<mark>It runs past" not in detail
    assert "failed attempts (1)" in detail and "answer a0" in detail and "instruction i0" in detail


def test_page_script_filters_by_verdict_and_sorts_by_length(report):
    _, out = report
    page = drive(out, 1, "e3", **{"f-kind": "2", "f-verdict": "too_short", "f-sort": "words-"})
    assert page["status"].startswith("2 of 17 records match")
    assert page["rows"].index(">e4<") < page["rows"].index(">e3<")  # 720 words before 690
    page = drive(out, 1, "a0", **{"f-kind": "1", "f-min": "430", "f-max": "500"})
    assert page["status"].startswith("4 of 17")  # a2-a5 (440-500 words), not a1 (420) or a6 (520)
    page = drive(out, 2, "b0", **{"f-round": "all", "f-sort": "ratio-"})
    assert page["status"].startswith("21 of 21")
    assert "instruction i1" in page["detail"] and "answer b0" in page["detail"]
