"""Tests for the packaged prompts and seeds, the seed loader's errors, and the answer parsers."""

from __future__ import annotations

import json
import re
import string

import pytest

from selflengthen.errors import DataError
from selflengthen.prompts import (
    KINDS,
    LANGUAGES,
    Seed,
    load_seeds,
    load_templates,
    parse_self_instruct,
    parse_yes_no,
    template,
    template_table,
)
from selflengthen.text.words import detect_language

# ------------------------------------------------------------------------ packaged seeds


def test_packaged_seeds_cover_both_languages_and_all_kinds():
    seeds = load_seeds()
    assert len(seeds) >= 40
    assert all(isinstance(s, Seed) for s in seeds)
    assert {s.language for s in seeds} == set(LANGUAGES)
    for lang in LANGUAGES:
        per_kind = {k: sum(1 for s in seeds if s.language == lang and s.kind == k) for k in KINDS}
        assert all(n >= 3 for n in per_kind.values()), (lang, per_kind)
    assert {s.kind for s in seeds} == set(KINDS)


def test_packaged_seed_ids_unique_and_languages_match_text():
    seeds = load_seeds()
    assert len({s.id for s in seeds}) == len(seeds)
    for s in seeds:
        assert detect_language(s.instruction) == s.language, s.id


def test_packaged_seeds_have_no_explicit_length_and_sane_size():
    for s in load_seeds():
        assert not re.search(r"\d[\d,]*\s*(words?|字)", s.instruction, re.IGNORECASE), s.id
        size = len(s.instruction.split()) if s.language == "en" else len(s.instruction)
        lo, hi = (15, 80) if s.language == "en" else (20, 120)
        assert lo <= size <= hi, (s.id, size)


# ----------------------------------------------------------------------------- templates

# Every template and the fields it must accept.
FIELDS = {
    "self_instruct_user": set(),
    "self_instruct_prefill": {"first", "second"},
    "self_instruct_stop": set(),
    "judge_user": {"instruction"},
    "extend_user": {"query", "outline"},
    "length_rewrite_user": {"query", "constraint"},
}
CONSTRAINT_FIELDS = {"about": {"n"}, "range": {"lo", "hi"}, "above": {"n"}, "below": {"n"}}


def _fields(text: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_string_template_exists_and_uses_exactly_its_fields(language):
    for name, fields in FIELDS.items():
        text = template(name, language)
        assert isinstance(text, str) and text.strip(), name
        assert _fields(text) == fields, name
        text.format(**{f: "X" for f in fields})  # must not raise
    assert set(load_templates()) == set(FIELDS) | {"length_constraint", "length_template"}


@pytest.mark.parametrize("language", LANGUAGES)
def test_extend_template_carries_query_and_outline(language):
    out = template("extend_user", language).format(query="QQQ-request", outline="OOO-draft")
    assert "QQQ-request" in out and "OOO-draft" in out
    assert out.index("QQQ-request") < out.index("OOO-draft")


def test_prefill_and_stop_markers():
    en = template("self_instruct_prefill", "en").format(first="A", second="B")
    assert en == "Instruction 1: A\nInstruction 2: B\nInstruction 3:"
    zh = template("self_instruct_prefill", "zh").format(first="甲", second="乙")
    assert zh == "指令1：甲\n指令2：乙\n指令3："
    assert template("self_instruct_stop", "en") == "Instruction 4"
    assert template("self_instruct_stop", "zh") == "指令4"


@pytest.mark.parametrize("language", LANGUAGES)
def test_length_constraints_format(language):
    table = template_table("length_constraint", language)
    assert set(table) == set(CONSTRAINT_FIELDS)
    for kind, fields in CONSTRAINT_FIELDS.items():
        phrasings = table[kind]
        assert isinstance(phrasings, list) and len(phrasings) >= 3, kind
        for p in phrasings:
            assert _fields(p) == fields, (kind, p)
            out = p.format(n=3000, lo=2000, hi=4000)
            assert ("3000" in out) if kind != "range" else ("2000" in out and "4000" in out)
    templates = template_table("length_template", language)
    assert isinstance(templates, list) and len(templates) >= 3
    for t in templates:
        assert _fields(t) == {"query", "constraint"}
        assert t.format(query="Q", constraint="C").startswith("Q")


def _zh_direction(phrase: str) -> str:
    # Negated forms first: "不少于" contains "少于" and "不超过" contains "超过".
    for words, direction in (
        (("不少于", "以上", "至少"), "more"),
        (("不超过", "以内", "以下"), "less"),
        (("超过",), "more"),
        (("少于",), "less"),
    ):
        if any(w in phrase for w in words):
            return direction
    return "unknown"


def test_chinese_above_means_more_and_below_means_less():
    # The reference code swapped these for Chinese; pin the direction of every phrasing.
    table = template_table("length_constraint", "zh")
    assert [_zh_direction(p) for p in table["above"]] == ["more"] * len(table["above"])
    assert [_zh_direction(p) for p in table["below"]] == ["less"] * len(table["below"])
    assert all(any(w in p for w in ("大约", "左右", "约")) for p in table["about"])
    en = template_table("length_constraint", "en")
    assert all(any(w in p for w in ("more than", "at least", "over")) for p in en["above"])
    assert all(any(w in p for w in ("less than", "fewer than", "no more than", "under")) for p in en["below"])


def test_unknown_language_falls_back_to_english_and_unknown_name_raises():
    assert template("judge_user", "fr") == template("judge_user", "en")
    with pytest.raises(KeyError, match="no_such_template"):
        template("no_such_template", "en")


def test_template_returns_copies_of_lists():
    first = template_table("length_template", "en")
    first.clear()
    assert template_table("length_template", "en")


# ------------------------------------------------------------------------- seed loading


def _write(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_jsonl_seeds_defaults(tmp_path):
    path = _write(
        tmp_path,
        "my.jsonl",
        "\n".join(
            [
                json.dumps({"instruction": "Write a long guide to composting at home."}),
                "",
                json.dumps(
                    {
                        "id": "x",
                        "instruction": " 写一篇关于城市夜生活的长篇报道。 ",
                        "kind": "journalism_media",
                    }
                ),
            ]
        )
        + "\n",
    )
    seeds = load_seeds(path)
    assert seeds == [
        Seed("seed-1", "en", "unknown", "Write a long guide to composting at home."),
        Seed("x", "zh", "journalism_media", "写一篇关于城市夜生活的长篇报道。"),
    ]


def test_txt_seeds(tmp_path):
    path = _write(tmp_path, "seeds.txt", "Write a long history of tea.\n\n  写一篇关于故乡的长篇散文。  \n")
    seeds = load_seeds(str(path))
    assert [s.instruction for s in seeds] == ["Write a long history of tea.", "写一篇关于故乡的长篇散文。"]
    assert [s.language for s in seeds] == ["en", "zh"]
    assert [s.id for s in seeds] == ["seed-1", "seed-3"]
    assert all(s.kind == "unknown" for s in seeds)


def _error(path) -> str:
    with pytest.raises(DataError) as info:
        load_seeds(path)
    return str(info.value)


GOOD = json.dumps({"instruction": "Write a long report on urban beekeeping."})


def test_invalid_json_names_file_and_line(tmp_path):
    path = _write(tmp_path, "bad.jsonl", f"{GOOD}\n\n{{not json\n{GOOD}\n")
    msg = _error(path)
    assert "bad.jsonl" in msg and "line 3" in msg and "JSON" in msg


def test_missing_instruction_names_line_and_field(tmp_path):
    path = _write(tmp_path, "missing.jsonl", GOOD + "\n" + json.dumps({"id": "a", "kind": "x"}) + "\n")
    msg = _error(path)
    assert "missing.jsonl" in msg and "line 2" in msg and "instruction" in msg


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ('["a list"]', "object"),
        ('{"instruction": 5}', "string"),
        ('{"instruction": "   "}', "empty"),
        ('{"instruction": "ok", "id": 7}', "'id'"),
    ],
)
def test_other_bad_lines(tmp_path, line, needle):
    path = _write(tmp_path, "s.jsonl", GOOD + "\n" + line + "\n")
    msg = _error(path)
    assert "s.jsonl" in msg and "line 2" in msg and needle in msg


def test_duplicate_id(tmp_path):
    rows = [
        {"id": "a", "instruction": "one"},
        {"id": "b", "instruction": "two"},
        {"id": "a", "instruction": "three"},
    ]
    path = _write(tmp_path, "dup.jsonl", "\n".join(json.dumps(r) for r in rows))
    msg = _error(path)
    assert "dup.jsonl" in msg and "line 3" in msg and "duplicate" in msg and "line 1" in msg


def test_non_utf8(tmp_path):
    raw = (GOOD + "\n").encode() + b'{"instruction": "caf\xe9 culture"}\n'
    path = _write(tmp_path, "latin1.jsonl", raw)
    msg = _error(path)
    assert "latin1.jsonl" in msg and "line 2" in msg and "UTF-8" in msg
    offset = raw.index(b"\xe9")
    assert f"byte offset {offset}" in msg


def test_empty_file(tmp_path):
    path = _write(tmp_path, "empty.jsonl", "\n  \n")
    msg = _error(path)
    assert "no seed instructions" in msg and "empty.jsonl" in msg
    assert "no seed instructions" in _error(_write(tmp_path, "empty.txt", ""))


def test_missing_file(tmp_path):
    msg = _error(tmp_path / "nowhere.jsonl")
    assert "nowhere.jsonl" in msg and "not found" in msg


def test_bom_is_accepted(tmp_path):
    path = _write(tmp_path, "bom.jsonl", b"\xef\xbb\xbf" + GOOD.encode() + b"\n")
    assert load_seeds(path)[0].instruction == "Write a long report on urban beekeeping."


# ------------------------------------------------------------------------------ parsers


def test_parse_self_instruct_cuts_at_stop_marker():
    out = (
        " Write a detailed travel guide to Hokkaido in winter for families with young children.\n"
        "Instruction 4: Write a history of the bicycle.\nInstruction 5: Something else."
    )
    assert parse_self_instruct(out, "en") == (
        "Write a detailed travel guide to Hokkaido in winter for families with young children."
    )


def test_parse_self_instruct_trailing_newlines_and_wrapped_lines():
    out = ": Write a long essay on the ethics of\nzoos, with examples.\n\n\n"
    assert parse_self_instruct(out, "en") == "Write a long essay on the ethics of zoos, with examples."


def test_parse_self_instruct_other_numbering_and_markdown():
    out = " Write a report on tidal energy.\n**Instruction 7:** Another one."
    assert parse_self_instruct(out, "en") == "Write a report on tidal energy."
    # An echoed "Instruction 3:" is not mistaken for the next item.
    assert parse_self_instruct("Instruction 3: Write a saga.\nInstruction 4: x", "en") == "Write a saga."


def test_parse_self_instruct_chinese():
    out = "写一篇关于长江流域茶文化变迁的深度报道，\n包括历史、产业和人物故事。\n指令4：写一篇科幻小说。"
    assert (
        parse_self_instruct(out, "zh")
        == "写一篇关于长江流域茶文化变迁的深度报道， 包括历史、产业和人物故事。"
    )
    assert parse_self_instruct("：写一篇游记。\n指令 5：另一条", "zh") == "写一篇游记。"


def test_parse_self_instruct_stop_marker_mid_line_and_empty():
    assert parse_self_instruct(" Write a memoir. Instruction 4: next", "en") == "Write a memoir."
    assert parse_self_instruct("\nInstruction 4: only the next one", "en") == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("yes", True),
        ("Yes.", True),
        ("  **YES**, it is suitable.", True),
        ("Answer: yes", True),
        ("是", True),
        ("是的，这条指令适合。", True),
        ("“是”", True),
        ("对，适合", True),
        ("可以。", True),
        ("no", False),
        ("No, it is too short.", False),
        ("**No**", False),
        ("否", False),
        ("不是", False),
        ("不适合。", False),
        ("答：否", False),
        ("", None),
        ("Maybe", None),
        ("nothing to say", None),
        ("yesterday", None),
        ("The instruction is fine.", None),
    ],
)
def test_parse_yes_no(text, expected):
    assert parse_yes_no(text) is expected
