"""The prompt check before image synthesis (paper §3.2, "Automated Prompt Filtering").

Rules run in this order and a prompt is counted under the first rule that drops it:

1. ``malformed``: empty, non-printable or control characters, broken encoding, unbalanced brackets or
   quotes, a doubled word ("the the") or a looping phrase, mostly non-letters (``checks.py``);
2. ``length``: outside the character window (200-350 by default, the paper's range);
3. ``blocklist``: contains an unsafe term (whole word or phrase, case-insensitive; ``blocklist.txt``);
4. ``near_duplicate``: MinHash Jaccard estimate >= threshold with an earlier kept prompt (the later one goes).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from .checks import malformed_reason
from .minhash import NearDuplicateIndex
from .records import PromptRecord
from .rules import MAX_CHARS, MIN_CHARS

RULE_ORDER = ("malformed", "length", "blocklist", "near_duplicate")
BLOCKLIST_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "blocklist.txt")


@dataclass
class FilterReport:
    """What the filter did: drops per rule (in rule order), kept count, and (index, rule, reason) per drop."""

    total: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RULE_ORDER, 0))
    drops: list[tuple[int, str, str]] = field(default_factory=list)

    @property
    def kept(self) -> int:
        return self.total - len(self.drops)

    @property
    def duplicate_rate(self) -> float:
        """Share of all prompts dropped as near duplicates."""
        return self.dropped["near_duplicate"] / self.total if self.total else 0.0

    def drop(self, index: int, rule: str, reason: str) -> None:
        self.dropped[rule] += 1
        self.drops.append((index, rule, reason))

    def __str__(self) -> str:
        width = max(map(len, RULE_ORDER))
        lines = [f"{'rule':<{width}}  {'dropped':>7}  {'share':>6}"]
        for rule in RULE_ORDER:
            share = self.dropped[rule] / self.total if self.total else 0.0
            lines.append(f"{rule:<{width}}  {self.dropped[rule]:>7}  {share:>6.2%}")
        lines.append(f"{'kept':<{width}}  {self.kept:>7}  of {self.total}")
        return "\n".join(lines)


def load_blocklist(path: str | None = None) -> tuple[str, ...]:
    """Terms from a blocklist file (default: the shipped one): one per line, '#' comments and blanks skipped."""
    with open(path or BLOCKLIST_PATH, encoding="utf-8") as f:
        return tuple(line.strip() for line in f if line.strip() and not line.lstrip().startswith("#"))


def blocklist_pattern(terms: Iterable[str]) -> re.Pattern[str] | None:
    """One case-insensitive regex matching any term as a whole word or phrase; ``None`` for no terms."""
    if isinstance(terms, str):
        raise TypeError("blocklist must be a list of terms, not one string: use load_blocklist(path) for a file")
    words = sorted({t.strip() for t in terms if t.strip()}, key=len, reverse=True)
    if not words:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(w) for w in words) + r")(?!\w)", re.IGNORECASE)


def filter_prompts(records: Iterable[PromptRecord], min_chars: int = MIN_CHARS, max_chars: int = MAX_CHARS,
                   near_duplicate: float | None = 0.8,
                   blocklist: Iterable[str] | None = None) -> tuple[list[PromptRecord], FilterReport]:
    """Apply the rules in ``RULE_ORDER``; returns the kept records (in input order) and the report.

    ``blocklist`` None uses the shipped list (pass ``[]`` for none); ``near_duplicate`` None skips that rule.
    """
    if not 0 <= min_chars <= max_chars:
        raise ValueError(f"need 0 <= min_chars <= max_chars, got {min_chars} and {max_chars}")
    pattern = blocklist_pattern(load_blocklist() if blocklist is None else blocklist)
    index = NearDuplicateIndex(near_duplicate) if near_duplicate is not None else None
    report, kept = FilterReport(), []
    for position, record in enumerate(records):
        report.total += 1
        text = record.prompt
        if reason := malformed_reason(text):
            report.drop(record.index, "malformed", reason)
        elif not min_chars <= len(text) <= max_chars:
            report.drop(record.index, "length", f"{len(text)} characters, outside {min_chars}-{max_chars}")
        elif pattern and (m := pattern.search(text)):
            report.drop(record.index, "blocklist", f"contains {m.group(0)!r}")
        elif index is not None and (match := index.add((position, record.index), text)):
            (_, earlier), estimate = match
            report.drop(record.index, "near_duplicate", f"Jaccard ~{estimate:.2f} with prompt {earlier}")
        else:
            kept.append(record)
    return kept, report
