"""Config loading: defaults are the paper's, errors name file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from selflengthen.config import Config, load_config
from selflengthen.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_paper_defaults():
    c = Config()
    assert (c.sampling.temperature, c.sampling.top_p, c.sampling.top_k, c.sampling.repetition_penalty) == (
        0.7,
        0.8,
        20,
        1.1,
    )
    assert c.generate.samples_per_instruction == 2 and c.generate.retries == 20
    assert (c.extend.jobs_per_answer, c.extend.micro_iterations, c.extend.retries, c.extend.min_ratio) == (
        2,
        3,
        20,
        1.2,
    )
    assert c.instruct.retries == 10 and c.instruct.min_words == 3 and c.instruct.max_words == 500
    assert c.sft.line_dropout == 0.2
    assert (
        c.train.learning_rate,
        c.train.epochs,
        c.train.lr_scheduler,
        c.train.warmup_ratio,
        c.train.batch_size,
    ) == (1e-4, 4.0, "cosine", 0.1, 1)


@pytest.mark.parametrize("name", ["smoke.yaml", "demo.yaml", "gpu.yaml", "reproduce-micro.yaml"])
def test_shipped_configs_load(name):
    path = ROOT / "configs" / name
    if not path.exists():
        pytest.skip(f"{name} not shipped")
    load_config(path)


def test_unknown_key_suggests_and_names_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: x\nextend:\n  micro_iterations: 2\n  min_ratoi: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "c.yaml" in msg and "line 4" in msg and "extend.min_ratoi" in msg and "extend.min_ratio" in msg


def test_wrong_type_and_range(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("sampling:\n  top_p: 7\ngenerate:\n  retries: many\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "line 2" in msg and "sampling.top_p" in msg and "less than or equal to 1" in msg
    assert "line 4" in msg and "generate.retries" in msg


def test_malformed_yaml_and_not_utf8(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: line \d+, column \d+: invalid YAML"):
        load_config(p)
    p.write_bytes(b"name: \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_overrides_and_round_growth():
    c = load_config(
        None, ["sampling.max_tokens=100", "sampling.max_tokens_growth=1.5", "sampling.max_tokens_cap=200"]
    )
    assert [c.max_tokens_for_round(k) for k in (1, 2, 3)] == [100, 150, 200]
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(None, ["nonsense"])


def test_a_bad_override_is_named_as_such_not_as_a_line_of_the_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: x\ngenerate:\n  retries: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, ["generate.retries=many", "generate.retires=2"])
    msg = str(e.value)
    assert "--set generate.retries: field 'generate.retries' = 'many'" in msg
    assert "--set generate.retires: unknown key" in msg and "did you mean 'generate.retries'" in msg
    assert "line " not in msg and "c.yaml" not in msg  # the file itself is fine
