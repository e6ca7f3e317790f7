"""Prompt templates, seed instructions and the parsers for the model's short answers.

The texts live as package data next to this module: `templates.yaml` (every prompt, in
English and Chinese) and `seeds.jsonl` (the seed instructions Step 0 starts from: long
writing tasks over the seven LonGen kinds, with no explicit length, since length
constraints are added by a later stage). Keeping them out of the code lets users read and
override them without touching Python.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from selflengthen.errors import DataError
from selflengthen.text.words import detect_language

__all__ = [
    "KINDS",
    "LANGUAGES",
    "Seed",
    "load_seeds",
    "load_templates",
    "parse_self_instruct",
    "parse_yes_no",
    "template",
]

KINDS = (
    "creative_writing",
    "academic_research",
    "business_communication",
    "journalism_media",
    "professional_writing",
    "personal_expression",
    "technical_documentation",
)
LANGUAGES = ("en", "zh")

_TEMPLATES_FILE = "templates.yaml"
_SEEDS_FILE = "seeds.jsonl"


@dataclass(frozen=True)
class Seed:
    """One seed instruction: where Step 0's self-instruct pool starts."""

    id: str
    language: str
    kind: str
    instruction: str


# --------------------------------------------------------------------------- templates


@functools.lru_cache(maxsize=1)
def load_templates() -> dict:
    """All templates as {name: {language: text | list | dict}}, read once from package data.

    The returned dict is shared (cached): read it, do not modify it. `template()` hands
    out copies.
    """
    text = resources.files(__package__).joinpath(_TEMPLATES_FILE).read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    # A broken packaged file is our bug, but say clearly which entry is wrong rather than
    # failing later with a bare KeyError deep inside a stage.
    if not isinstance(data, dict):
        raise DataError(f"{_TEMPLATES_FILE} (packaged): expected a mapping of template names")
    for name, by_lang in data.items():
        if not isinstance(by_lang, dict) or "en" not in by_lang:
            raise DataError(
                f"{_TEMPLATES_FILE} (packaged): template {name!r} must map languages to texts "
                "and have an 'en' entry"
            )
    return data


def _lookup(name: str, language: str) -> Any:
    templates = load_templates()
    if name not in templates:
        known = ", ".join(sorted(templates))
        raise KeyError(f"no prompt template named {name!r}; known templates: {known}")
    by_lang = templates[name]
    return by_lang.get(language, by_lang["en"])


def template(name: str, language: str) -> str:
    """The text template `name` in `language`; English when that language has no version.

    Raises KeyError naming the known templates when `name` does not exist, TypeError when it is a
    table (a list or a mapping of phrasings: `template_table`).
    """
    value = _lookup(name, language)
    if not isinstance(value, str):
        raise TypeError(f"prompt template {name!r} is a {type(value).__name__}: read it with template_table")
    return value


def template_table(name: str, language: str) -> Any:
    """The table template `name` (a list of phrasings, or a mapping of them) in `language`.

    A copy, so a caller that shuffles or edits it cannot change what the next caller gets from the
    cache."""
    value = _lookup(name, language)
    if not isinstance(value, (list, dict)):
        raise TypeError(f"prompt template {name!r} is text: read it with template")
    return copy.deepcopy(value)


# ------------------------------------------------------------------------------- seeds


def load_seeds(path: str | Path | None = None) -> list[Seed]:
    """Seed instructions from `path` (JSONL, or .txt with one instruction per line).

    None loads the packaged seeds. JSONL lines need at least "instruction"; "language"
    defaults to the detected language, "kind" to "unknown", "id" to "seed-<line>".
    Every problem raises DataError naming the file and the 1-based line.
    """
    if path is None:
        name = f"{_SEEDS_FILE} (packaged)"
        raw = resources.files(__package__).joinpath(_SEEDS_FILE).read_bytes()
        plain = False
    else:
        p = Path(path)
        name = str(p)
        if not p.exists():
            raise DataError(f"{name}: seed file not found")
        if not p.is_file():
            raise DataError(f"{name}: not a file")
        raw = p.read_bytes()
        plain = p.suffix.lower() == ".txt"

    text = _decode(raw, name)
    seeds = _parse_plain(text) if plain else _parse_jsonl(text, name)
    if not seeds:
        raise DataError(f"no seed instructions in {name}")
    return seeds


def _decode(raw: bytes, name: str) -> str:
    try:
        # utf-8-sig: files saved by Windows editors often start with a BOM, which would
        # otherwise make line 1 invalid JSON.
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{name}, line {line}: not valid UTF-8 (byte offset {exc.start}); save the file as UTF-8"
        ) from None


def _lines(text: str) -> list[tuple[int, str]]:
    # Split on "\n" only: str.splitlines() also breaks on U+2028 and friends, which JSON
    # strings may legally contain, and that would shift the line numbers we report.
    return [(no, line.rstrip("\r")) for no, line in enumerate(text.split("\n"), start=1)]


def _parse_plain(text: str) -> list[Seed]:
    seeds = []
    for no, line in _lines(text):
        instruction = line.strip()
        if instruction:
            seeds.append(Seed(f"seed-{no}", detect_language(instruction), "unknown", instruction))
    return seeds


def _parse_jsonl(text: str, name: str) -> list[Seed]:
    seeds: list[Seed] = []
    first_seen: dict[str, int] = {}
    for no, line in _lines(text):
        if not line.strip():
            continue
        where = f"{name}, line {no}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not valid JSON (column {exc.colno}: {exc.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")

        instruction = _field(obj, "instruction", where, required=True)
        assert instruction is not None
        seed_id = _field(obj, "id", where) or f"seed-{no}"
        language = _field(obj, "language", where) or detect_language(instruction)
        kind = _field(obj, "kind", where) or "unknown"

        if seed_id in first_seen:
            raise DataError(
                f"{where}: field 'id': duplicate id {seed_id!r} (first used on line {first_seen[seed_id]})"
            )
        first_seen[seed_id] = no
        seeds.append(Seed(seed_id, language, kind, instruction))
    return seeds


def _field(obj: dict[str, Any], key: str, where: str, *, required: bool = False) -> str | None:
    """A stripped string field; None when optional and absent; DataError otherwise."""
    if key not in obj or obj[key] is None:
        if required:
            raise DataError(f"{where}: field {key!r} is missing")
        return None
    value = obj[key]
    if not isinstance(value, str):
        raise DataError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    value = value.strip()
    if not value:
        raise DataError(f"{where}: field {key!r} is empty")
    return value


# ----------------------------------------------------------------------------- parsers

# A new numbered item at the start of a line, in either language and any numbering,
# allowing markdown decoration ("**Instruction 5:**", "- 指令 4："). Models sometimes skip
# or renumber items, so the stop marker alone is not enough.
_NEXT_ITEM = re.compile(r"^[ \t>*#_\-]*(?:instructions?|指令)[ \t]*\d+", re.IGNORECASE | re.MULTILINE)
# Small models also run the next item on in the same line: "... project. Instructions 4: Write ...".
# Only numbers from 4 up count there, so a "3" inside the instruction itself is never cut.
_INLINE_NEXT = re.compile(r"(?:instructions?|指令)[ \t]*(?:[4-9]|\d{2,})[ \t]*[:：.]", re.IGNORECASE)


_ECHO_THIRD = re.compile(r"^\s*(?:instruction|指令)[ \t]*3(?!\d)", re.IGNORECASE)


def parse_self_instruct(text: str, language: str) -> str:
    """Instruction 3 from the model's continuation of the self-instruct prefill.

    Cuts at the stop marker (wherever it appears) and at any following numbered
    "Instruction N" / "指令N" line; strips whitespace and a leading colon; joins the lines
    with spaces. Returns "" when nothing is left (the caller retries).
    """
    stop = template("self_instruct_stop", language)
    assert isinstance(stop, str)
    # Some models echo the prefill's last marker before answering; drop that echo so the
    # next-item rule below does not cut the whole answer away.
    text = _ECHO_THIRD.sub("", text, count=1)
    cut = len(text)
    idx = text.lower().find(stop.lower())
    if idx >= 0:
        cut = idx
    for pattern in (_NEXT_ITEM, _INLINE_NEXT):
        match = pattern.search(text)
        if match and match.start() < cut:
            cut = match.start()
    result = text[:cut].strip()
    # The prefill ends in "Instruction 3:", but a model may repeat the colon.
    result = result.lstrip(":： \t\n").strip()
    return re.sub(r"\s*\n\s*", " ", result)


# Leading decoration a judge puts before its verdict: markdown, quotes, brackets,
# punctuation, and an "Answer:" / "答：" label.
_DECORATION = re.compile(r"^[\s*_#>`~\-\"'“”‘’「」『』【】\[\]()（）.,:;!?。，：；！？]+")
_LABEL = re.compile(r"^(?:answer|final answer|回答|答案|答)\s*[:：]", re.IGNORECASE)
_YES_EN = re.compile(r"^yes\b", re.IGNORECASE)
_NO_EN = re.compile(r"^no\b", re.IGNORECASE)


def parse_yes_no(text: str) -> bool | None:
    """True for yes/是/对/可以, False for no/否/不, None when the answer is neither."""
    s = _DECORATION.sub("", text)
    labelled = _LABEL.sub("", s, count=1)
    if labelled != s:
        s = _DECORATION.sub("", labelled)
    if _YES_EN.match(s) or s.startswith(("是", "对", "可以")):
        return True
    if _NO_EN.match(s) or s.startswith(("否", "不")):
        return False
    return None
