"""The typed records read a run written before they existed (tests/fixtures/run-0.1.0, made by
the stages when they still wrote plain dicts) and write every line back key for key."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from selflengthen.records import KEPT, SAMPLED_OUT, Answer, Extension, ExtensionStep, Instruction, SftExample
from selflengthen.stages.extend import micro_step
from selflengthen.stages.generate import answer_instruction
from tests.unit.stages.conftest import make_ctx, run

OLD_RUN = Path(__file__).parents[1] / "fixtures" / "run-0.1.0" / "round-1"
FILES = {
    "instructions.jsonl": Instruction,
    "answers.jsonl": Answer,
    "extensions.jsonl": Extension,
    "sft/generator.jsonl": SftExample,
    "sft/extender.jsonl": SftExample,
}


def lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.parametrize("name", sorted(FILES))
def test_an_old_run_reads_into_records_and_writes_back_unchanged(name):
    for line in lines(OLD_RUN / name):
        row = json.loads(line)
        record = FILES[name].from_json(row)
        assert record.id == row["id"]
        # the same keys in the same order, the same values: the file would be written byte for byte
        assert json.dumps(record.to_json(), ensure_ascii=False) == json.dumps(row, ensure_ascii=False)


def test_the_old_run_holds_every_kind_of_record():
    instructions = [Instruction.from_json(json.loads(x)) for x in lines(OLD_RUN / "instructions.jsonl")]
    assert {i.model for i in instructions} == {"base", "seed"}
    assert any(i.kept and i.judge for i in instructions) and any(
        not i.kept and i.judge is None for i in instructions
    )
    extensions = [Extension.from_json(json.loads(x)) for x in lines(OLD_RUN / "extensions.jsonl")]
    assert {e.verdict for e in extensions} == {KEPT, SAMPLED_OUT}
    steps = [s for e in extensions for s in e.steps]
    assert all(isinstance(s, ExtensionStep) for s in steps)
    assert any(s.accepted and s.reason is None for s in steps) and any(not s.accepted for s in steps)
    assert all(s.result == s.stage1_kept + s.continuation for s in steps)


def test_unknown_keys_survive_a_round_trip():
    row = {**json.loads(lines(OLD_RUN / "answers.jsonl")[0]), "note": "added by a later version"}
    assert Answer.from_json(row).to_json() == row


def test_the_stages_write_the_records_keys(tmp_path):
    text = "One clean sentence ends here.\n\nAnother one follows it."
    ctx = make_ctx(tmp_path, lambda request: text)
    answer = run(answer_instruction(ctx, "i1-a0", {"id": "i1", "text": "Write."}))
    names = [f.name for f in dataclasses.fields(Answer) if f.name != "extra"]
    assert list(answer) == [n for n in names if n in answer] and set(names) - set(answer) <= Answer.OPTIONAL
    step = run(micro_step(ctx, "Write.", text, 1, ctx.rng("t")))
    names = [f.name for f in dataclasses.fields(ExtensionStep)]
    assert list(step) == [n for n in names if n in step] and set(names) - set(step) <= ExtensionStep.OPTIONAL
