"""bench/goodput.py's summary: medians, the pooled per-try estimate, and the last line."""

from __future__ import annotations

from tests.bench.conftest import load_bench

goodput = load_bench("goodput")


def run(design: str, seconds: float, tokens: int, kept: int, tries: int) -> dict:
    return goodput.per_kept(
        {"design": design, "seconds": seconds, "tokens": tokens, "kept": kept, "tries": tries}
    )


def summarized(*runs: dict) -> tuple[dict, list[str]]:
    fig = {"runs": list(runs)}
    return fig, goodput.summarize(fig)


def test_speedup_is_the_ratio_of_median_seconds_per_kept_extension():
    fig, lines = summarized(
        run("ours", 300, 20_000, 3, 30),
        run("reference", 600, 30_000, 2, 20),
        run("reference", 500, 30_000, 2, 20),
        run("ours", 400, 20_000, 1, 30),
    )
    # ours: s/kept 100 and 400, median 250; reference: 300 and 250, median 275.
    assert fig["medians"]["ours"]["s_per_kept"] == 250 and fig["medians"]["reference"]["s_per_kept"] == 275
    assert lines[-1] == "speedup = 1.10" and fig["speedup"] == 1.1
    # Per try: ours 10 and 13.3 s (median 11.67), reference 30 and 25 (27.5); 8 kept of 100 tries.
    assert fig["pooled_share_kept"] == 0.08 and fig["speedup_per_try"] == round(27.5 / (35 / 3), 2)
    assert (
        "speedup per try = 2.36" in lines[-2] and "expected s/kept: ours 145.8, reference 343.8" in lines[-2]
    )


def test_a_design_that_kept_nothing_gets_no_speedup_figure():
    fig, lines = summarized(
        run("ours", 374, 25_302, 3, 27),
        run("reference", 511, 33_604, 0, 24),
        run("reference", 480, 30_000, 1, 22),
        run("ours", 380, 25_000, 2, 26),
    )
    assert fig["speedup"] is None
    assert lines[-1].startswith("speedup = n/a (reference kept no extension in half its runs or more")
    assert "inf" not in lines[-1]
    assert "tokens per kept extension: reference / ours = n/a" in lines[-3]
    # The pooled estimate still has a figure: 6 kept of 99 tries.
    assert fig["pooled_share_kept"] == round(6 / 99, 3) and fig["speedup_per_try"] > 1
