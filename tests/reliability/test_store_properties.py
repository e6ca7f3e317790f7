"""Property: a kill at ANY byte of an append-only JSONL file loses only the line being written.

tests/unit/test_store.py checks one torn tail by example; here hypothesis cuts files of records
with arbitrary Unicode (U+2028, CR, quotes, astral characters ...) at every kind of offset, as a
kill -9 in the middle of a write would, and checks that reading returns exactly the complete
lines, never a fragment; that the repair cuts the file back to its last complete line; and that
appending afterwards starts on a clean line.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from selflengthen.store import JsonlAppender, existing_ids, read_jsonl

RECORDS = st.lists(
    st.fixed_dictionaries({"text": st.text(max_size=60), "words": st.integers(-(2**40), 2**40)}), max_size=6
)


@settings(max_examples=150, deadline=None)
@given(RECORDS, st.data())
def test_a_cut_at_any_byte_keeps_exactly_the_complete_lines(records, data):
    rows = [{"id": f"r1-ins-{i:05d}", **r} for i, r in enumerate(records)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stage.partial.jsonl"
        with JsonlAppender(path) as writer:
            for row in rows:
                writer.write(row)
        raw = path.read_bytes()
        cut = data.draw(st.integers(0, len(raw)), label="cut")
        path.write_bytes(raw[:cut])
        complete = raw[:cut].count(b"\n")

        assert list(read_jsonl(path)) == rows[:complete]  # a fragment is never data
        assert existing_ids(path) == {r["id"] for r in rows[:complete]}  # what a resume skips
        assert path.read_bytes() == raw[: raw[:cut].rfind(b"\n") + 1]  # the torn tail is cut off
        with JsonlAppender(path) as writer:
            writer.write({"id": "next"})
        assert [r["id"] for r in read_jsonl(path)] == [r["id"] for r in rows[:complete]] + ["next"]
