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


def keep_rates_apart() -> list[dict]:
    """Four runs whose designs keep a try at clearly different rates: ours 10 of 24, the reference 3 of 40."""
    return [
        run("ours", 300, 20_000, 6, 12),
        run("reference", 600, 30_000, 1, 20),
        run("reference", 500, 30_000, 2, 20),
        run("ours", 400, 20_000, 4, 12),
    ]


def test_with_anti_loop_decoding_each_design_pools_its_own_tries():
    fig = {"runs": keep_rates_apart(), "decoding": "anti-loop"}
    lines = goodput.summarize(fig)
    # ours: 10 kept of 24 tries; the reference: 3 of 40. Pooled together they would read 13/64.
    assert fig["pooled_share_kept"] == {"ours": round(10 / 24, 3), "reference": 0.075}
    assert "each design's runs pooled: ours 0.417, reference 0.075" in lines[-2]
    # Per try: ours 25 and 33.3 s (median 29.17), reference 30 and 25 (27.5).
    assert "expected s/kept: ours 70.0, reference 366.7" in lines[-2]
    # s/kept: ours 50 and 100 (median 75), reference 600 and 250 (425).
    assert lines[-1] == "speedup = 5.67"


def test_failed_tries_are_counted_by_reason_per_design():
    runs = (
        dict(run("ours", 300, 20_000, 3, 10), failed_tries={"truncated": 4, "repeated_ngram": 3}),
        dict(run("reference", 600, 30_000, 1, 10), failed_tries={"repeated_ngram": 9}),
        dict(run("ours", 300, 20_000, 3, 10), failed_tries={"truncated": 2, "not_longer": 2}),
        dict(run("reference", 600, 30_000, 1, 10), failed_tries={"repeated_ngram": 8, "truncated": 1}),
    )
    fig = {"runs": list(runs)}
    lines = goodput.summarize(fig)
    assert fig["failed_tries"] == {
        "ours": {"truncated": 6, "repeated_ngram": 3, "not_longer": 2},
        "reference": {"repeated_ngram": 17, "truncated": 1},
    }
    assert (
        "failed Step-2 tries by reason: ours truncated 6, repeated_ngram 3, not_longer 2; "
        "reference repeated_ngram 17, truncated 1"
    ) in lines


def test_each_design_gets_the_decoding_asked_for_and_nothing_else_differs():
    from selflengthen.config import load_config

    demo = load_config(goodput.ROOT / "configs" / "demo.yaml", ["checks.ngram_words=10"])
    assert demo.sampling.dry.multiplier == 0  # the demo's config has no DRY of its own
    ours, reference, dry = goodput.decodings(demo, "anti-loop", "paper")
    assert dry.multiplier == 0.8 and ours.sampling.dry == dry
    assert reference.sampling.dry.multiplier == 0
    # Only the DRY multiplier tells the two apart.
    assert reference.sampling.dry.model_copy(update={"multiplier": 0.8}) == ours.sampling.dry
    assert ours.model_copy(update={"sampling": reference.sampling}) == reference
    ours, reference, _ = goodput.decodings(demo, "paper", "paper")
    assert ours == reference and ours.sampling.dry.multiplier == 0
    ours, reference, _ = goodput.decodings(demo, "anti-loop", "anti-loop")
    assert ours == reference and ours.sampling.dry.multiplier == 0.8
    # A config with DRY of its own keeps it as "anti-loop".
    own = load_config(goodput.ROOT / "configs" / "demo.yaml", ["sampling.dry.multiplier=0.5"])
    ours, reference, _ = goodput.decodings(own, "anti-loop", "paper")
    assert ours.sampling.dry.multiplier == 0.5 and reference.sampling.dry.multiplier == 0


def test_when_both_designs_decode_alike_their_tries_are_pooled_together():
    fig = {"runs": keep_rates_apart(), "decoding": "anti-loop", "reference_decoding": "anti-loop"}
    lines = goodput.summarize(fig)
    assert fig["pooled_share_kept"] == round(13 / 64, 3)
    assert f"both designs pooled: {13 / 64:.3f}" in lines[-2]


def test_anti_loop_decoding_on_an_engine_that_would_ignore_it_is_refused():
    import pytest

    from selflengthen.config import load_config

    config = load_config(
        goodput.ROOT / "configs" / "demo.yaml",
        ["engine.kind=openai", "engine.server.managed=true", "engine.server.preset=llamacpp"],
    )
    with pytest.raises(SystemExit, match="no DRY sampler"):
        goodput.decodings(config, "anti-loop", "paper")
    ours, reference, _ = goodput.decodings(config, "paper", "paper")  # nothing to ignore
    assert ours.sampling.dry.multiplier == reference.sampling.dry.multiplier == 0
