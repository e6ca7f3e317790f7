"""Checks that already fail on a prefix of a text: the rules behind early abort.

A looping text is usually looping long before its end, and the repeated n-gram check rejects it
whatever comes after. An engine that streams can therefore stop it at the first token where
the prefix fails and save the rest of the budget, with the same verdict the full text gets
(`check_text` reports a repeated n-gram before every check that depends on how the text ends).

    rule = AbortRule(ngram=10)                 # carried by a Request
    monitor = rule.monitor(prefill)            # one per generation
    reason = monitor.feed(text_so_far)         # after each token; "repeated_ngram" ends it

A monitor is incremental: `feed` gets the whole text generated so far each time and looks only
at what is new, so a 2,000-token generation costs O(tokens) in total, not O(tokens^2).

Two rules:
- the whole text (prefill + generated) may not repeat an n-gram: answers, and the Extender's
  stage 2 (its result is the prefill plus the continuation, checked as one text);
- `keep_fraction`: only the leading share of paragraphs counts, the share the Extender keeps of
  its stage-1 output and pre-fills into stage 2. A repeat inside paragraphs that will certainly be
  kept dooms the stage-2 result before stage 2 is sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from selflengthen.text.checks import _HAN_RANGES, _UNIT, REASON_REPEATED_NGRAM, _strip_punctuation
from selflengthen.text.paragraphs import keep_leading_fraction

_HAN = re.compile(rf"[{_HAN_RANGES}]")
# The separator split_paragraphs uses first: a line break, blank lines, a line break.
_BLANK_LINE = re.compile(r"\n\s*\n")


@dataclass(frozen=True)
class AbortRule:
    """What ends a generation early. `ngram`: a repeated run of this many units fails the text.

    Use the larger of the word and CJK lengths (`for_checks`): the full check picks its length by
    the finished text's language, unknown on a prefix, and a repeated run of the larger length
    contains repeated runs of every shorter one, so it fails the text in either language.
    `keep_fraction` (0 = off): only repeats in the leading share of paragraphs count, and only
    once enough paragraphs are finished that those paragraphs will certainly be kept."""

    ngram: int
    keep_fraction: float = 0.0

    @classmethod
    def for_checks(cls, ngram_words: int, ngram_cjk: int, keep_fraction: float = 0.0) -> AbortRule:
        return cls(ngram=max(ngram_words, ngram_cjk), keep_fraction=keep_fraction)

    def monitor(self, prefill: str = "") -> PrefixMonitor:
        return PrefixMonitor(self, prefill)


class PrefixMonitor:
    """Feeds on a growing text; returns the failing check's reason code once the prefix fails."""

    def __init__(self, rule: AbortRule, prefill: str = ""):
        self.rule = rule
        self.prefill = prefill
        self.reason: str | None = None
        self._pos = 0  # characters of (prefill + text) whose complete units are consumed
        self._units: list[str] = []
        self._seen: set[tuple[str, ...]] = set()
        self._repeat_at: int | None = None  # char offset where the first repeated n-gram ends
        if prefill:
            self.feed("")

    def feed(self, text: str) -> str | None:
        """`text`: everything generated so far (without the prefill). The reason once failed, else None."""
        if self.reason is not None:
            return self.reason
        full = self.prefill + text
        if self._repeat_at is None:
            self._consume(full)
        if self._repeat_at is not None and self._decided(full):
            self.reason = REASON_REPEATED_NGRAM
        return self.reason

    def _consume(self, full: str) -> None:
        n = self.rule.ngram
        for match in _UNIT.finditer(full, self._pos):
            # A run that touches the end may still grow ("hel" -> "hello"); a Han character is whole.
            if match.end() == len(full) and not _HAN.fullmatch(match.group()):
                break
            self._pos = match.end()
            unit = _strip_punctuation(match.group().lower())
            if not unit:
                continue
            self._units.append(unit)
            if len(self._units) >= n:
                gram = tuple(self._units[-n:])
                if gram in self._seen:
                    self._repeat_at = match.end()
                    return
                self._seen.add(gram)

    def _decided(self, full: str) -> bool:
        """Whether the repeat found lies where the finished text will still be checked."""
        if not self.rule.keep_fraction:
            return True
        assert self._repeat_at is not None
        # Paragraphs followed by a blank line are finished: in the final text they are its first
        # paragraphs, split the same way once there are 3 or more (split_paragraphs falls back to
        # single newlines for 2 or fewer).
        starts = []  # start offset of each finished, non-empty paragraph
        ends = []
        pos = 0
        for sep in _BLANK_LINE.finditer(full):
            if full[pos : sep.start()].strip():
                starts.append(pos)
                ends.append(sep.start())
            pos = sep.end()
        finished = len(ends)
        if finished < 3:
            return False
        paragraph = sum(1 for end in ends if end < self._repeat_at) + 1  # 1-based, holds the repeat's end
        kept_at_least = len(keep_leading_fraction([""] * finished, self.rule.keep_fraction))
        return paragraph <= kept_at_least


def first_failure(rule: AbortRule, text: str, prefill: str = "", step: int = 1) -> tuple[int, str] | None:
    """(characters of `text` generated when the monitor fails, reason) or None: `text` fed `step`
    characters at a time, as a stream would. For engines that get a whole text at once (tests)."""
    monitor = rule.monitor(prefill)
    if monitor.reason is not None:
        return 0, monitor.reason
    for end in range(step, len(text) + step, step):
        end = min(end, len(text))
        reason = monitor.feed(text[:end])
        if reason is not None:
            return end, reason
    return None
