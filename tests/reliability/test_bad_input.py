"""Bad input through the real CLI: exit status 2, one `Error:` line naming the file, line and field,
no traceback (unless `--debug`, which shows it). A run that fails on its input leaves no manifest
behind, so fixing the input and running the same command again works.

The library-level messages are unit-tested in tests/unit/test_config.py and tests/unit/prompts;
this checks what a user sees. All commands start at once (each is a fresh Python process).
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.reliability.harness import ROOT, cli, cli_env, error_line

SMOKE = ROOT / "configs" / "smoke.yaml"

CONFIGS = {  # name -> (file bytes, substrings the error line must hold)
    "malformed_yaml": (b"name: x\nextend:\n  micro_iterations: [2\n", ["c.yaml", "line 4", "invalid YAML"]),
    "unknown_key": (
        b"name: x\ninstruct:\n  count: 2\n  retires: 3\n",
        ["c.yaml", "line 4", "unknown key 'instruct.retires'", "did you mean 'instruct.retries'"],
    ),
    "wrong_type": (
        b"generate:\n  samples_per_instruction: two\n",
        ["c.yaml", "line 2", "generate.samples_per_instruction", "'two'", "integer"],
    ),
    "out_of_range": (
        b"sampling:\n  temperature: 0.7\n  top_p: 1.5\n",
        ["c.yaml", "line 3", "sampling.top_p", "1.5", "less than or equal to 1"],
    ),
    "not_a_mapping": (b"- name: x\n", ["c.yaml", "top level must be a mapping"]),
    "not_utf8": (b"name: caf\xe9\n", ["c.yaml", "not UTF-8"]),
}
SEEDS = {  # name -> (file name, bytes, substrings)
    "seeds_empty": ("s.jsonl", b"\n\n", ["s.jsonl", "no seed instructions"]),
    "seeds_broken_line": (
        "s.jsonl",
        b'{"instruction": "Write a long essay about tides."}\n'
        b'{"instruction": "Write a guide to knots."}\n{"instruction": "Write a rep\n',
        ["s.jsonl", "line 3", "not valid JSON"],
    ),
    "seeds_not_utf8": (
        "s.jsonl",
        b'{"instruction": "Write a long essay."}\n{"instruction": "Caf\xe9 history."}\n',
        ["s.jsonl", "line 2", "not valid UTF-8"],
    ),
    "seeds_missing_field": (
        "s.jsonl",
        b'{"instruction": "Write a long essay."}\n{"text": "Write a guide."}\n',
        ["s.jsonl", "line 2", "field 'instruction' is missing"],
    ),
}
SCORES = {
    "score_broken_line": (
        b'{"query": "Write.", "constraint": "about 100 words", "response": "Done."}\n{"query": \n'
        b'{"query": "Write.", "constraint": "about 100 words", "response": "Done."}\n',
        ["a.jsonl", "line 2", "invalid JSON"],
    ),
    "score_not_utf8": (b'{"query": "Write.", "response": "\xff"}\n', ["a.jsonl", "not UTF-8"]),
}


def _cases(tmp: Path) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (CLI arguments, substrings the error line must hold)."""
    cases = {}
    for name, (data, want) in CONFIGS.items():
        d = tmp / name
        d.mkdir()
        (d / "c.yaml").write_bytes(data)
        cases[name] = (["run", "--config", str(d / "c.yaml"), "--run-dir", str(d / "run")], want)
    run = ["run", "--config", str(SMOKE)]
    for name, (file, data, want) in SEEDS.items():
        d = tmp / name
        d.mkdir()
        (d / file).write_bytes(data)
        cases[name] = (run + ["--run-dir", str(d / "run"), "--set", f"seeds_file={d / file}"], want)
    cases["seeds_missing"] = (
        run + ["--run-dir", str(tmp / "sm" / "run"), "--set", f"seeds_file={tmp}/nope.jsonl"],
        ["nope.jsonl", "seed file not found"],
    )
    cases["model_missing"] = (
        run + ["--run-dir", str(tmp / "mm" / "run"), "--set", "model.base=/nonexistent/model-dir"],
        ["model.base", "/nonexistent/model-dir", "does not exist"],
    )
    cases["config_missing"] = (
        ["run", "--config", str(tmp / "none.yaml"), "--run-dir", str(tmp / "cm")],
        ["none.yaml", "not found"],
    )
    cases["override_unknown"] = (
        ["run", "--config", str(SMOKE), "--run-dir", str(tmp / "ou"), "--set", "extend.micro_iteration=2"],
        [
            "--set extend.micro_iteration:",
            "unknown key 'extend.micro_iteration'",
            "did you mean 'extend.micro_iterations'",
        ],
    )
    # smoke.yaml sets generate.retries itself: the bad value came from --set, so no line of the file is blamed
    cases["override_wrong_type"] = (
        ["run", "--config", str(SMOKE), "--run-dir", str(tmp / "ow"), "--set", "generate.retries=many"],
        ["--set generate.retries:", "'many'", "integer"],
    )
    for name, (data, want) in SCORES.items():
        (tmp / name).mkdir()
        (tmp / name / "a.jsonl").write_bytes(data)
        cases[name] = (
            ["eval", "score", "--benchmark", "longen", "--input", str(tmp / name / "a.jsonl")],
            want,
        )
    return cases


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    cases = _cases(tmp)
    extra = {
        "debug": ["--debug", *cases["unknown_key"][0]],
        "usage": ["run", "--config", str(SMOKE), "--no-such-option"],
    }

    def call(args):
        return subprocess.run(cli(*args), capture_output=True, text=True, timeout=300, env=cli_env(), cwd=tmp)

    names = list(cases) + list(extra)
    with ThreadPoolExecutor(4) as pool:
        done = list(pool.map(call, [cases[n][0] if n in cases else extra[n] for n in names]))
    return {"cases": cases, "done": dict(zip(names, done, strict=True)), "tmp": tmp}


NAMES = [
    *CONFIGS,
    *SEEDS,
    "seeds_missing",
    "model_missing",
    "config_missing",
    "override_unknown",
    "override_wrong_type",
    *SCORES,
]


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_is_one_clear_line_and_exit_2(results, name):
    done = results["done"][name]
    assert done.returncode == 2, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    line = error_line(done.stderr)  # exactly one Error: line, last, and no traceback
    for want in results["cases"][name][1]:
        assert want in line, (want, line)
    if name.startswith("override"):
        assert "smoke.yaml" not in line and "line " not in line, line


def test_a_failed_start_does_not_pin_the_run_directory(results):
    """The seeds and the model are checked before manifest.json records the config: after fixing
    them, the same --run-dir starts instead of refusing a 'different config'."""
    for name in ("seeds_missing", "model_missing", *SEEDS):
        args = results["cases"][name][0]
        run_dir = Path(args[args.index("--run-dir") + 1])
        assert not (run_dir / "manifest.json").exists(), name


def test_debug_shows_the_traceback(results):
    done = results["done"]["debug"]
    assert done.returncode != 0 and "Traceback" in done.stderr and "ConfigError" in done.stderr


def test_usage_errors_have_no_traceback(results):
    done = results["done"]["usage"]
    assert done.returncode == 2 and "No such option" in done.stderr and "Traceback" not in done.stderr
