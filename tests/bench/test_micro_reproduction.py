"""bench/micro_reproduction.py's figures and report, on scripted answers (FakeEngine) in a run
directory with stand-in adapters: exact figures per round, the goals, resumption, the files."""

from __future__ import annotations

import json
import random
import statistics
import string

import pytest

from selflengthen.config import load_config
from selflengthen.engines.base import Result
from selflengthen.engines.fake import FakeEngine
from selflengthen.text.drift import tail_head_ratio
from tests.bench.conftest import BENCH, load_bench

bench = load_bench("micro_reproduction")
figs = load_bench("micro_figures")

VARIED = [f"word{i}" for i in range(2000)]  # no phrase repeats, compresses poorly


def varied(n: int, start: int = 0) -> str:
    return " ".join(VARIED[start : start + n]) + "."


def prose(n: int) -> str:
    """Words drawn at random from a fixed vocabulary: no phrase repeats, but words recur as in
    natural text, so a longer text compresses better as a whole."""
    rng = random.Random(0)
    letters = string.ascii_lowercase
    vocab = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(400)]
    return " ".join(rng.choice(vocab) for _ in range(n)) + "."


def looping(n: int) -> str:
    """A text whose last half is one sentence over and over."""
    loop = "and the light goes on and on again "
    head = varied(n // 2)
    return head + " " + " ".join((loop * n).split()[: n - n // 2]) + "."


def test_text_figures():
    assert figs.gzip_ratio("") == 0.0
    assert figs.gzip_ratio("ab " * 300) > 10 > figs.gzip_ratio(varied(300)) > 1
    # Windows: a short text is its own window; a long one without repeats scores like its parts,
    # while its whole-text ratio rises with length alone; a loop raises both.
    assert figs.gzip_window_ratio(varied(150)) == figs.gzip_ratio(varied(150))
    assert figs.gzip_window_ratio(varied(1200)) < figs.gzip_window_ratio(looping(1200))
    short, long = prose(200), prose(1000)
    assert figs.gzip_ratio(long) > 1.2 * figs.gzip_ratio(short)
    assert abs(figs.gzip_window_ratio(long) - figs.gzip_ratio(short)) < 0.05 * figs.gzip_ratio(short)
    assert figs.tail_head_ratio(varied(29)) is None  # too short for thirds
    assert figs.tail_head_ratio(looping(300)) > 2
    assert 0.8 < figs.tail_head_ratio(varied(300)) < 1.25
    f = figs.text_figures({"response": looping(120), "finish_reason": "length"})
    assert f["words"] == 120 and f["repeated_phrase"] and f["cut"]
    f = figs.text_figures({"response": varied(120), "finish_reason": "stop"})
    assert not f["repeated_phrase"] and not f["cut"]


def test_longest_sentence_and_run_on_share():
    assert figs.longest_sentence("") == 0
    assert figs.longest_sentence("One two three. Four five! Six?") == 3
    # A line break ends a sentence (list items, headings); a dot inside a word does not.
    assert figs.longest_sentence("- item one\n- item two three four\nSee www.example.com now.") == 5
    run_on = "It was good. " + varied(90)  # a closing sentence of 90 words
    assert figs.longest_sentence(run_on) == 90
    rows = [{"response": run_on}, {"response": "Short. Text here."}, {"response": "A b c. " * 40}]
    f = figs.round_figures(rows)
    assert f["run_on"] == 0.333 and f["longest_sentence"] == 3


def test_round_figures_and_ratios():
    base = figs.round_figures([{"response": varied(100)}, {"response": varied(300)}])
    assert (base["n"], base["mean_words"], base["median_words"], base["repeated_phrase"]) == (2, 200, 200, 0)
    assert "mean_ratio" not in base
    grown = figs.round_figures(
        [
            {"response": varied(300)},
            {"response": looping(500), "finish_reason": "length"},
            {"response": varied(400)},
        ],
        base,
    )
    assert (grown["mean_words"], grown["median_words"], grown["mean_ratio"], grown["median_ratio"]) == (
        400,
        400,
        2.0,
        2.0,
    )
    assert (grown["repeated_phrase"], grown["cut"]) == (0.333, 0.333)
    assert grown["words_all"] == [300, 500, 400]


def fake_run(tmp_path):
    """A run directory as the loop leaves it: 3 rounds' Generator adapters and the final model."""
    run = tmp_path / "run"
    for where in ["round-1", "round-2", "round-3"]:
        adapter = run / where / "adapters" / "generator"
        adapter.mkdir(parents=True)
        (adapter / "adapter_config.json").write_text("{}")
        (adapter / "adapter_model.safetensors").write_bytes(b"")
        sft = run / where / "sft"
        sft.mkdir()
        rows = [
            {"prompt": [], "completion": [{"role": "assistant", "content": varied(n)}]} for n in (200, 400)
        ]
        (sft / "generator.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (adapter / "training_stats.json").write_text(
            json.dumps({"learning_rate": 1e-3 * 0.4 ** (int(where[-1]) - 1)})
        )
    final = run / "final" / "model"
    final.mkdir(parents=True)
    (final / "adapter_config.json").write_text("{}")
    (final / "adapter_model.safetensors").write_bytes(b"")
    return run


def scripted(label: str):
    """Round k writes 100 x (k + 1) words; round 3 loops at its end and one answer is cut; the final
    model meets each constraint, the base writes 50 words whatever is asked."""
    k = 4 if label == "final" else int(label.split("-")[1])

    def script(request):
        query = request.messages[0]["content"]
        if label == "final":
            number = max(int(w) for w in query.replace(",", "").split() if w.isdigit())
            return varied(
                number + 10 if "least" in query else number - 10 if "more than" in query else number
            )
        if label == "round-0" and "words" in query:
            return varied(50)
        if k == 3:
            return Result(looping(400), "length" if "story" in query else "stop", model="generator")
        return varied(100 * (k + 1))

    return script


def test_report_end_to_end_with_scripted_answers(tmp_path):
    run = fake_run(tmp_path)
    (run / "round-1" / "instructions.jsonl").write_text(
        json.dumps({"text": bench.read_rows(bench.HELDOUT[0])[0]["query"]}) + "\n"
    )
    config = load_config(bench.CONFIG)
    heldout = [r for p in bench.HELDOUT for r in bench.read_rows(p)][:6]
    constrained = bench.read_rows(bench.CONSTRAINED)
    made = []

    def factory(label, adapter):
        made.append((label, adapter is not None))
        return FakeEngine(scripted(label))

    figures = bench.report(config, run, heldout, constrained, factory, plot_to=tmp_path / "plot.png")
    # the models the goals compare come first, so a report stopped midway still has them
    assert made == [
        ("round-0", False),
        ("round-3", True),
        ("final", True),
        ("round-1", True),
        ("round-2", True),
    ]
    rounds = figures["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2, 3]
    assert [r["mean_words"] for r in rounds] == [100, 200, 300, 400]
    assert [r.get("mean_ratio") for r in rounds] == [None, 2.0, 3.0, 4.0]
    assert rounds[3]["repeated_phrase"] == 1.0 and rounds[0]["repeated_phrase"] == 0
    assert rounds[3]["cut"] == pytest.approx(1 / 6, abs=1e-3)  # the one "story" query
    assert rounds[3]["tail_head"] > 2 * rounds[0]["tail_head"]
    assert rounds[1]["train_n"] == 2 and rounds[1]["train_mean_words"] == 300
    assert rounds[2]["train_lr"] == pytest.approx(4e-4) and rounds[1]["train_tail_head"] == pytest.approx(
        statistics.mean(tail_head_ratio(varied(n)) for n in (200, 400)), abs=1e-3
    )
    assert figures["length_scores"]["final"] == 1.0 and figures["length_scores"]["round-0"] < 0.3
    # the constrained set is answered under each decoding seed, in the same engine; the score is the mean
    by_seed = figures["length_scores_by_seed"]
    assert list(by_seed["final"]) == list(bench.SEEDS) and set(by_seed) == {"round-0", "final"}
    base = by_seed["round-0"]
    assert figures["length_scores"]["round-0"] == pytest.approx(sum(base.values()) / 3, abs=1e-3)
    for label in ("round-0", "final"):
        for name in ("constrained", "constrained-seed777", "constrained-seed4242"):
            assert len(bench.read_rows(run / "heldout" / f"{label}-{name}.jsonl")) == len(constrained)
    assert figures["heldout_in_training"] == 1
    met = dict(figures["goals"])
    assert met["round 3 mean words >= 2.0x base"] and met["round 3 median words >= 1.5x base"]
    assert met["round 3 repeated 10-word phrase share no worse than base"] is False
    assert met["final length score >= 0.7 and >= base + 0.25"]
    out = run / "heldout"
    assert (out / "lengths.png").stat().st_size > 0 and (tmp_path / "plot.png").is_file()
    table = (out / "table.md").read_text()
    assert "| 3 | 6 | 400 |" in table and "| final | 1.0 |" in table
    excerpts = (out / "excerpts.md").read_text()
    assert excerpts.count("**base**") == 3 and excerpts.count("**round-3**") == 3 and "[...]" in excerpts
    assert json.loads((out / "figures.json").read_text())["rounds"][2]["mean_words"] == 300

    made.clear()  # everything is answered: a second report builds no engine and gives the same figures
    again = bench.report(config, run, heldout, constrained, factory)
    assert made == [] and again["rounds"] == rounds


def report_without(tmp_path, missing: str, **kwargs) -> tuple[list[str], dict]:
    """The report on a fake run lacking `missing` (a round or the final model), 2 queries a set:
    the models it built engines for, in order, and its figures."""
    import shutil

    run = fake_run(tmp_path)
    shutil.rmtree(run / missing)
    made = []

    def factory(label, adapter):
        made.append(label)
        return FakeEngine(scripted(label))

    heldout = [r for p in bench.HELDOUT for r in bench.read_rows(p)][:2]
    constrained = bench.read_rows(bench.CONSTRAINED)[:2]
    return made, bench.report(load_config(bench.CONFIG), run, heldout, constrained, factory, **kwargs)


def test_report_answers_the_last_finished_round_first_when_a_round_is_missing(tmp_path):
    """A run stopped before round 3 but given its final stage: round 2 is what the goals compare."""
    made, figures = report_without(tmp_path, "round-3")
    assert made == ["round-0", "round-2", "final", "round-1"]
    assert [r["round"] for r in figures["rounds"]] == [0, 1, 2]


def test_report_of_chosen_models_without_a_final_model_answers_no_constrained_set(tmp_path):
    """`--models round-2` on a run without a final model: the base and round 2 answer the held-out
    set; the constrained set, which compares the base with the final model, is not answered."""
    made, figures = report_without(tmp_path, "final", only={"round-2"})
    assert made == ["round-0", "round-2"]
    assert [r["round"] for r in figures["rounds"]] == [0, 2] and figures["length_scores"] == {}
    assert not list((tmp_path / "run" / "heldout").glob("*constrained*"))


def test_decoding_is_the_configs_with_the_last_rounds_budget():
    params = bench.decoding(load_config(bench.CONFIG))
    assert params.max_tokens == 2304 and params.dry is not None and params.dry.multiplier == 0.8
    assert params.seed == 1234 and bench.decoding(load_config(bench.CONFIG), 777).seed == 777


def test_heldout_seed_decodes_the_heldout_answers(tmp_path):
    """`--heldout-seed`: every held-out request carries that seed (a second draw of the comparison)."""
    seeds = []

    def factory(label, adapter):
        def script(request):
            seeds.append(request.params.seed)
            return varied(100)

        return FakeEngine(script)

    run = fake_run(tmp_path)
    heldout = [r for p in bench.HELDOUT for r in bench.read_rows(p)][:2]
    config = load_config(bench.CONFIG)
    bench.report(config, run, heldout, [], factory, only={"round-3"}, heldout_seed=777)
    assert seeds == [777] * 4  # the base and round 3, 2 queries each


def test_seeds_option_rejects_non_integers(capsys):
    for bad in ("1,x", "7,7"):
        with pytest.raises(SystemExit) as exc:
            bench.main(["--report-only", "--seeds", bad])
        assert exc.value.code == 2 and "--seeds" in capsys.readouterr().err
    assert (BENCH / "micro_reproduction.py").is_file()


def test_heldout_sets_never_overlap_the_seed_instructions():
    from selflengthen.prompts import load_seeds

    seeds = {s.instruction.strip() for s in load_seeds(None)}
    queries = [r["query"] for p in (*bench.HELDOUT, bench.CONSTRAINED) for r in bench.read_rows(p)]
    assert len(set(queries)) == len(queries) == 48
    assert not seeds & set(queries)
