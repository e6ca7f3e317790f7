"""Length-biased sampling statistics, selection files, SFT rows and line dropout."""

from __future__ import annotations

import json
import random

from selflengthen.stages.select import finalize_with_selection, length_biased_keep
from selflengthen.stages.sft_data import build_sft_data, drop_lines
from selflengthen.store import read_jsonl


def test_length_biased_sampling_statistics():
    n, trials = 1000, 40
    kept_total = 0
    shortest_kept = 0
    position_kept = [0] * n
    for t in range(trials):
        lengths = list(range(n))
        random.Random(t).shuffle(lengths)
        keep = length_biased_keep(lengths, random.Random(100 + t))
        kept_total += sum(keep)
        for i, k in enumerate(keep):
            if k:
                position_kept[lengths[i]] += 1
        shortest_kept += sum(k for i, k in enumerate(keep) if lengths[i] < 0.2 * n)
    share = kept_total / (n * trials)
    assert 0.58 < share < 0.61  # expected 0.5^(1/3) - 0.5^(4/3)/2 = 0.5953
    assert shortest_kept == 0  # the shortest 20% are never kept
    # and the longest are almost always kept
    assert sum(position_kept[-100:]) / (100 * trials) > 0.97


def test_length_biased_sampling_is_seeded_and_stable():
    lengths = [5, 3, 9, 3, 7, 1, 8]
    assert length_biased_keep(lengths, random.Random(1)) == length_biased_keep(lengths, random.Random(1))


def test_finalize_sets_verdicts_and_never_duplicates(tmp_path):
    partial, final = tmp_path / "p.jsonl", tmp_path / "f.jsonl"
    rows = [{"id": f"x{i}", "words": i * 10, "verdict": "passed"} for i in range(50)]
    rows.append({"id": "bad", "words": 3, "verdict": "truncated"})
    rows.append(rows[0])  # a duplicated line must not produce a duplicated record
    partial.write_text("".join(json.dumps(r) + "\n" for r in rows))
    counts = finalize_with_selection(partial, final, enabled=True, seed=7)
    out = list(read_jsonl(final))
    assert len(out) == 51 and len({r["id"] for r in out}) == 51
    assert counts["truncated"] == 1
    assert counts["kept"] + counts["length_biased_sampling"] == 50
    assert {r["verdict"] for r in out} == {"kept", "length_biased_sampling", "truncated"}
    by_id = {r["id"]: r for r in out}
    assert all(by_id[f"x{i}"]["verdict"] == "length_biased_sampling" for i in range(10))  # shortest 20%
    finalize_with_selection(partial, final, enabled=False, seed=7)
    assert sum(r["verdict"] == "kept" for r in read_jsonl(final)) == 50


def test_line_dropout_rate_and_order():
    text = "\n".join(f"line {i}" for i in range(20000))
    out = drop_lines(text, 0.2, random.Random(3)).split("\n")
    assert 0.79 < len(out) / 20000 < 0.81
    numbers = [int(x.split()[1]) for x in out]
    assert numbers == sorted(numbers)  # surviving lines keep their order
    assert drop_lines(text, 0.0, random.Random(3)) == text


def test_sft_rows_for_both_roles(ctx_factory):
    ctx = ctx_factory(lambda r: "x", ["sft.line_dropout=0.5"])
    ctx.rd.path.mkdir(parents=True)
    answer = "\n".join(f"Answer line {i}." for i in range(40))
    ctx.rd.answers.write_text(json.dumps({"id": "a1", "text": answer, "verdict": "kept"}) + "\n")
    ext = [
        {"id": "a1-e0", "answer_id": "a1", "query": "Write it.", "text": "Long text.", "verdict": "kept"},
        {"id": "a1-e1", "answer_id": "a1", "query": "Write it.", "text": "Other.", "verdict": "too_short"},
    ]
    ctx.rd.extensions.write_text("".join(json.dumps(e) + "\n" for e in ext))
    counts = build_sft_data(ctx)
    assert counts == {"generator": 1, "extender": 1}
    (gen,) = read_jsonl(ctx.rd.sft("generator"))
    (extd,) = read_jsonl(ctx.rd.sft("extender"))
    assert gen["prompt"] == [{"role": "user", "content": "Write it."}]
    assert gen["completion"] == [{"role": "assistant", "content": "Long text."}]
    assert extd["completion"] == gen["completion"]
    prompt = extd["prompt"][0]["content"]
    assert "Write it." in prompt
    kept_lines = sum(f"Answer line {i}." in prompt for i in range(40))
    assert 5 < kept_lines < 35  # about half of the answer's lines survive dropout at p = 0.5


def test_selection_does_not_depend_on_the_order_items_finished(tmp_path):
    """Items finish in any order; the same records in another order get the same verdicts."""
    import json

    rows = [{"id": f"a{i}", "words": 100 + (i % 5), "verdict": "passed"} for i in range(40)]
    verdicts = []
    for name, order in (("fwd", rows), ("rev", rows[::-1])):
        partial = tmp_path / f"{name}.partial.jsonl"
        partial.write_text("".join(json.dumps(r) + "\n" for r in order))
        finalize_with_selection(partial, tmp_path / f"{name}.jsonl", enabled=True, seed=7)
        out = [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
        verdicts.append({r["id"]: r["verdict"] for r in out})
    assert verdicts[0] == verdicts[1]
    assert set(verdicts[0].values()) == {"kept", "length_biased_sampling"}


def test_selection_from_the_file_follows_the_rule_exactly(tmp_path):
    """The compact file path ranks by (length, id hash) and draws like length_biased_keep."""
    import json

    from selflengthen.stages.select import id_hash

    rows = [{"id": f"r1-ins-{i:05d}-a0", "words": (i * 37) % 23, "verdict": "passed"} for i in range(300)]
    rows[5]["verdict"] = "truncated"
    partial, final = tmp_path / "p.jsonl", tmp_path / "f.jsonl"
    partial.write_text("".join(json.dumps(r) + "\n" for r in rows))
    finalize_with_selection(partial, final, enabled=True, seed=11)
    got = {r["id"]: r["verdict"] for r in read_jsonl(final)}
    passed = [r for r in rows if r["verdict"] == "passed"]
    want = length_biased_keep(
        [r["words"] for r in passed], random.Random(11), ties=[id_hash(r["id"]) for r in passed]
    )
    assert [got[r["id"]] == "kept" for r in passed] == want
    assert got[rows[5]["id"]] == "truncated"


def test_hash_collisions_never_drop_a_record(tmp_path, monkeypatch):
    """Every id hashing alike: duplicates are still found by their ids, and distinct ids all stay."""
    import json

    from selflengthen.stages import select

    monkeypatch.setattr(select, "id_hash", lambda item_id: 42)
    rows = [{"id": f"x{i}", "words": i, "verdict": "passed"} for i in range(20)]
    rows += [rows[3], rows[7]]  # two lines appended twice
    partial, final = tmp_path / "p.jsonl", tmp_path / "f.jsonl"
    partial.write_text("".join(json.dumps(r) + "\n" for r in rows))
    counts = finalize_with_selection(partial, final, enabled=True, seed=3)
    out = [r["id"] for r in read_jsonl(final)]
    assert out == [f"x{i}" for i in range(20)]
    assert counts["kept"] + counts["length_biased_sampling"] == 20
