"""What a kill -9 leaves behind, and what the next run makes of it (cases a random kill rarely hits).

- Temporaries of atomic writes and adapter saves (`.NAME.tmpPID`): removed when the next run starts.
- Checkpoints: training resumes from the newest COMPLETE one. The trainer writes
  trainer_state.json last and not atomically; a kill while it is written leaves a checkpoint that
  would crash every resume.
"""

from __future__ import annotations

import json

from selflengthen.store import remove_stale_temporaries
from selflengthen.train.sft import last_checkpoint


def _checkpoint(work, step, state: str | None):
    d = work / f"checkpoint-{step}"
    d.mkdir(parents=True)
    (d / "adapter_model.safetensors").write_bytes(b"weights")
    if state is not None:
        (d / "trainer_state.json").write_text(state)
    return d


def test_newest_complete_checkpoint_is_chosen(tmp_path):
    work = tmp_path / "train-generator"
    assert last_checkpoint(work) is None  # nothing yet: the role restarts cleanly
    _checkpoint(work, 2, json.dumps({"global_step": 2, "log_history": []}))
    _checkpoint(work, 10, json.dumps({"global_step": 10, "log_history": []}))
    assert last_checkpoint(work) == str(work / "checkpoint-10")  # numerically newest, not "checkpoint-2"


def test_a_checkpoint_torn_while_its_state_was_written_is_skipped(tmp_path):
    work = tmp_path / "train-extender"
    _checkpoint(work, 1, json.dumps({"global_step": 1, "log_history": [{"loss": 2.0, "step": 1}]}))
    _checkpoint(work, 2, '{"global_step": 2, "log_hist')  # killed mid-write
    _checkpoint(work, 3, None)  # killed before the state was written
    (work / "checkpoint-tmp").mkdir()  # not ours
    assert last_checkpoint(work) == str(work / "checkpoint-1")


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path):
    r = tmp_path / "round-1"
    (r / "adapters" / ".generator.tmp4242").mkdir(parents=True)
    (r / "adapters" / ".generator.tmp4242" / "adapter_model.safetensors").write_bytes(b"half")
    (r / ".answers.jsonl.tmp917").write_text('{"id": "r1-ins-00000-a0"}\n{"id": "r1-ins')
    (tmp_path / ".manifest.json.tmp33").write_text("{")
    keep = [r / "answers.jsonl", r / ".notes", r / "data.tmp12", r / "sft" / ".generator.jsonl.tmpx"]
    for path in keep:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}\n")
    assert remove_stale_temporaries(tmp_path) == 3
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == sorted(keep)
