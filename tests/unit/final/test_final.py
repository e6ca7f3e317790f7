"""The final stage end to end on a fixture run: collect -> length control -> SFT set -> training call."""

import json
from pathlib import Path

import pytest

from selflengthen.config import Config, FinalConfig
from selflengthen.errors import ConfigError, InputError
from selflengthen.evaluate.scoring import score_longen
from selflengthen.final import prepare_final_data, run_final, train_final
from selflengthen.final_cli import load_run_config

from .runfixture import RewriteEngine, good_rewrite, make_run, prompt_parts, read_jsonl, small_config


def half_good(request):
    """Every other query gets a faithful rewrite; the rest a rewrite that changes the number."""
    if int(request.tag.split("-")[1][1]) % 2:
        return good_rewrite(request)
    query, _ = prompt_parts(request)
    return f"{query} Write about 12345 words."


def test_prepare_final_data(tmp_path):
    config = small_config()
    run = make_run(tmp_path, config)
    engine = RewriteEngine(half_good)
    stats = prepare_final_data(config, run, engine=engine)
    final = run / "final"
    assert stats["collect"]["kept"] == 20
    assert json.loads((final / "collect_stats.json").read_text())["removed"]["near_duplicate"] == 1
    records = read_jsonl(final / "constrained.jsonl")
    sft = read_jsonl(final / "sft.jsonl")
    assert len(records) == len(sft) == 20 == len(engine.history)
    assert not engine.closed  # a passed-in engine belongs to the caller
    for rec in records:
        assert set(rec) >= {
            "type",
            "constraint",
            "original_query",
            "query",
            "response",
            "words",
            "rewrite",
            "rewrite_reason",
        }
        assert rec["constraint"] in rec["query"] or rec["rewrite"] == "llm"
    by = {r["rewrite"] for r in records}
    assert by == {"llm", "template"}
    assert all(r["rewrite_reason"] == "number_changed" for r in records if r["rewrite"] == "template")
    # Every response meets its own constraint under LonGen scoring.
    assert score_longen(records)["overall"] == 1.0
    assert [s["id"] for s in sft] == [r["id"] for r in records]
    assert sft[0]["prompt"] == [{"role": "user", "content": records[0]["query"]}]
    assert sft[0]["completion"] == [{"role": "assistant", "content": records[0]["response"]}]
    length = json.loads((final / "length_stats.json").read_text())
    assert length["kept"] == 20 and sum(length["types"].values()) == 20 and length["mean_score"] == 1.0
    assert length["rejections"] == {"number_changed": length["rewrite"]["template"]}


def test_resume_does_not_redo_finished_work(tmp_path):
    config = small_config()
    run = make_run(tmp_path, config)
    engine = RewriteEngine(good_rewrite)
    prepare_final_data(config, run, engine=engine)
    before = (run / "final" / "sft.jsonl").read_text()
    again = RewriteEngine(good_rewrite)
    prepare_final_data(config, run, engine=again)
    assert again.history == [] and (run / "final" / "sft.jsonl").read_text() == before


def test_an_interrupted_length_stage_resumes_where_it_stopped(tmp_path):
    config = small_config()
    run = make_run(tmp_path, config)
    calls = []

    def flaky(request):
        calls.append(request.tag)
        if len(calls) > 12:  # after the first 8 in flight have finished
            raise RuntimeError("engine died")
        return good_rewrite(request)

    with pytest.raises(RuntimeError):
        prepare_final_data(config, run, engine=RewriteEngine(flaky))
    partial = read_jsonl(run / "final" / "work" / "length.partial.jsonl")
    assert 0 < len(partial) < 20 and not (run / "final" / "sft.jsonl").exists()
    engine = RewriteEngine(good_rewrite)
    prepare_final_data(config, run, engine=engine)
    assert len(engine.history) == 20 - len(partial)
    assert len(read_jsonl(run / "final" / "sft.jsonl")) == 20


def test_changed_settings_need_redo(tmp_path):
    config = small_config(rewrite=False)
    run = make_run(tmp_path, config)
    prepare_final_data(config, run)
    changed = small_config(rewrite=False, min_words=400)
    with pytest.raises(ConfigError, match="final.min_words"):
        prepare_final_data(changed, run)
    stats = prepare_final_data(changed, run, redo=True)
    assert stats["collect"]["kept"] < 20
    # Training settings do not touch the data.
    prepare_final_data(small_config(rewrite=False, min_words=400, method="full"), run)


def test_template_only_needs_no_engine(tmp_path):
    config = small_config(rewrite=False)
    run = make_run(tmp_path, config)
    stats = prepare_final_data(config, run)  # engine.kind would be "fake"; none is even created
    assert stats["length"]["rewrite"] == {"template": 20}


def test_no_rounds_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no rounds"):
        prepare_final_data(small_config(), tmp_path / "empty")


def test_load_run_config_applies_overrides(tmp_path):
    run = make_run(tmp_path, small_config())
    config = load_run_config(run, ["final.min_words=300", "final.rewrite=false"])
    assert config.final.min_words == 300 and config.final.rewrite is False and config.engine.kind == "fake"
    with pytest.raises(ConfigError, match="did you mean"):
        load_run_config(run, ["final.min_word=3"])
    with pytest.raises(InputError, match="manifest"):
        load_run_config(tmp_path)


def test_final_config_validation():
    with pytest.raises(ValueError, match="type"):
        FinalConfig(type_weights={"around": 1})
    with pytest.raises(ValueError, match="min_words"):
        FinalConfig(min_words=9000)
    with pytest.raises(ValueError, match="did you mean 'epochs'"):
        FinalConfig(train={"epoch": 2})
    with pytest.raises(ValueError):
        FinalConfig(train={"learning_rate": -1})
    config = Config(train={"epochs": 4, "lora": {"r": 16}}, final={"train": {"epochs": 2, "lora": {"r": 8}}})
    merged = config.final.train_config(config.train)
    assert merged.epochs == 2 and merged.lora.r == 8 and merged.lora.alpha == config.train.lora.alpha


def test_train_final_calls_the_trainer_with_the_final_set(tmp_path, monkeypatch):
    config = small_config(rewrite=False, train={"max_steps": 3})
    run = make_run(tmp_path, config)
    with pytest.raises(InputError, match="collect"):
        train_final(config, run)
    prepare_final_data(config, run)
    seen = {}

    def fake_train_adapter(**kwargs):
        seen.update(kwargs)
        out = kwargs["out_dir"]
        out.mkdir(parents=True, exist_ok=True)
        (out / "adapter_config.json").write_text("{}")
        (out / "adapter_model.safetensors").write_bytes(b"x")
        return {"examples": 20, "steps": 3}

    import selflengthen.model
    import selflengthen.train.launch

    monkeypatch.setattr(selflengthen.train.launch, "train_adapter", fake_train_adapter)
    monkeypatch.setattr(selflengthen.model, "resolve_base", lambda base: "/models/base")
    monkeypatch.setattr(selflengthen.model, "pick_device", lambda device: "cpu")
    stats = train_final(config, run)
    assert seen["data"] == run / "final" / "sft.jsonl" and seen["out_dir"] == run / "final" / "model"
    assert (
        seen["base"] == "/models/base"
        and seen["train_config"].max_steps == 3
        and seen.get("init_adapter") is None
        and seen["full"] is False
    )
    assert stats["method"] == "lora"
    assert json.loads((run / "final" / "model" / "training_stats.json").read_text())["steps"] == 3
    seen.clear()
    train_final(config, run)  # complete: not trained again
    assert seen == {}

    full = small_config(rewrite=False, method="full")
    seen.clear()
    assert train_final(full, run, force=True)["method"] == "full"
    assert seen["full"] is True and seen["out_dir"] == run / "final" / "model"


def test_run_final_without_data_fails_with_the_counts(tmp_path):
    from selflengthen.errors import EmptyFinalSetError

    config = small_config(rewrite=False, min_words=1900)
    run = make_run(tmp_path, config)
    with pytest.raises(EmptyFinalSetError, match="23 below 1,900 words, 1 above 2,000"):
        run_final(config, run)


def test_train_final_uses_the_rounds_launchers(tmp_path, monkeypatch):
    config = small_config(rewrite=False, train={"launcher": "subprocess", "max_steps": 2})
    run = make_run(tmp_path, config)
    prepare_final_data(config, run)
    import selflengthen.model
    import selflengthen.train.launch as launch

    monkeypatch.setattr(selflengthen.model, "resolve_base", lambda base: "/models/base")
    monkeypatch.setattr(selflengthen.model, "pick_device", lambda device: "cpu")
    seen = {}

    def fake_launch(tc, module_args, out_dir, log_path, device, *, what, stop=None):
        seen.update(tc=tc, args=module_args, out=out_dir, log=log_path)
        out_dir.mkdir(parents=True)
        (out_dir / "adapter_config.json").write_text("{}")
        (out_dir / "adapter_model.safetensors").write_bytes(b"x")
        return {"examples": 20}

    monkeypatch.setattr(launch, "launch_training", fake_launch)
    assert train_final(config, run)["method"] == "lora"
    args = seen["args"]
    assert args[args.index("--data") + 1] == str(run / "final" / "sft.jsonl")
    assert args[args.index("--out") + 1] == str(run / "final" / "model")
    written = json.loads(Path(args[args.index("--config-json") + 1]).read_text())
    assert written["max_steps"] == 2 and written["launcher"] == "subprocess"
    full = small_config(rewrite=False, method="full", train={"launcher": "accelerate"})
    with pytest.raises(ConfigError, match="in_process"):
        train_final(full, run, force=True)


def test_extra_answers_join_the_collection_and_no_model_loads_on_resume(tmp_path, monkeypatch):
    from selflengthen.engines.fake import FakeEngine

    from .test_collect import scripted

    config = small_config(rewrite=False, extra_answers=2)
    run = make_run(tmp_path, config)
    stats = prepare_final_data(config, run, engine=FakeEngine(scripted))
    assert stats["collect"]["by_source"]["final/extra/answers"] == {"candidates": 2, "kept": 2}
    assert len(read_jsonl(run / "final" / "sft.jsonl")) == 22

    import selflengthen.engines

    def no_engine(*args, **kwargs):
        raise AssertionError("a finished stage must not load a model")

    monkeypatch.setattr(selflengthen.engines, "create_engine", no_engine)
    assert prepare_final_data(config, run)["length"]["kept"] == 22


def test_nothing_in_range_says_why_and_leaves_no_settings(tmp_path):
    from selflengthen.errors import EmptyFinalSetError

    run = make_run(tmp_path, small_config(rewrite=False))
    config = small_config(rewrite=False, min_words=5000, max_words=8000)
    with pytest.raises(EmptyFinalSetError) as err:
        prepare_final_data(config, run)
    message = str(err.value)
    assert "\n" not in message
    # 24 candidates (2 rounds x 6 answers + 6 extensions); all below 5,000 words, none above
    assert "kept 0 of 24 candidates: 24 below 5,000 words, 0 above 8,000" in message
    assert "lengths seen 150-2,500 words" in message and "--min-words" in message
    assert not (run / "final" / "sft.jsonl").exists() and not (run / "final" / "settings.json").exists()
    # the same command with a range the texts reach needs no --redo
    stats = prepare_final_data(small_config(rewrite=False), run)
    assert stats["collect"]["kept"] == 20
