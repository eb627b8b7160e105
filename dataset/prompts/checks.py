"""Is a prompt well-formed prose? The first filter rule, also used by the offline composer on its own output.

A prompt with control characters, broken encoding, unbalanced brackets or quotes, or an LLM-style loop
("the the", "a red fox a red fox a red fox") is noise for the text encoder; the composer re-draws rather
than emit one, so the filter and the generator can never disagree.
"""

from __future__ import annotations

import re

MIN_LETTER_SHARE = 0.6
_PAIRS = {")": "(", "]": "[", "}": "{"}
_DOUBLED_WORD = re.compile(r"\b([^\W\d_]+)\s+\1\b", re.IGNORECASE)
_WORD = re.compile(r"\w+")


def _bracket_problem(text: str) -> str | None:
    if not any(ch in text for ch in "()[]{}"):
        return None
    stack = []
    for ch in text:
        if ch in "([{":
            stack.append(ch)
        elif ch in _PAIRS and (not stack or stack.pop() != _PAIRS[ch]):
            return f"unbalanced bracket {ch!r}"
    return f"unbalanced bracket {stack[-1]!r}" if stack else None


def _looping_phrase(text: str) -> str | None:
    """A 2-4 word phrase said three times in a row (punctuation ignored)."""
    words = _WORD.findall(text.lower())
    for n in (2, 3, 4):
        for i in range(len(words) - 3 * n + 1):
            if (words[i] == words[i + n] == words[i + 2 * n]
                    and words[i:i + n] == words[i + n:i + 2 * n] == words[i + 2 * n:i + 3 * n]):
                return " ".join(words[i:i + n])
    return None


def malformed_reason(text: object) -> str | None:
    """Why the text is not well-formed prose, or ``None``: the checks run cheapest first."""
    if not isinstance(text, str) or not text.strip():
        return "empty"
    if not text.isprintable():
        bad = next(ch for ch in text if not ch.isprintable())
        return f"non-printable character U+{ord(bad):04X}"
    if "\ufffd" in text:
        return "replacement character (broken encoding)"
    if problem := _bracket_problem(text):
        return problem
    if text.count('"') % 2 or text.count("\u201c") != text.count("\u201d"):
        return "unbalanced quotes"
    if m := _DOUBLED_WORD.search(text):
        return f"repeated word {m.group(1)!r}"
    if phrase := _looping_phrase(text):
        return f"looping phrase {phrase!r}"
    visible = len(text) - sum(map(str.isspace, text))
    if sum(map(str.isalpha, text)) < MIN_LETTER_SHARE * visible:
        return "mostly non-letters"
    return None
