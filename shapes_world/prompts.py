"""Scene -> English prompt, prompt -> Spec, and the prompt vocabulary.

One fixed template per task keeps the grammar small enough to parse back exactly. ``single_object`` and
``colors`` (and ``two_object`` and ``color_attr``) would otherwise read alike, so the colour-tested tasks say
"colored": "a photo of a red colored circle", "a yellow colored square and a purple colored triangle".
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .scene import BACKGROUNDS, COLORS, COUNTS, SHAPES, TASKS, ObjectSpec, Scene, Spec

NUMBER_WORDS: dict[int, str] = {2: "two", 3: "three", 4: "four"}
RELATION_PHRASES: dict[str, str] = {
    "left_of": "to the left of",
    "right_of": "to the right of",
    "above": "above",
    "below": "below",
}
TEMPLATES: dict[str, str] = {
    "single_object": "a photo of a {c0} {s0}",
    "colors": "a photo of a {c0} colored {s0}",
    "two_object": "a {c0} {s0} and a {c1} {s1}",
    "color_attr": "a {c0} colored {s0} and a {c1} colored {s1}",
    "counting": "{n} {c0} {s0}s",
    "position": "a {c0} {s0} {rel} a {c1} {s1}",
}
BACKGROUND_SUFFIX = " on a {bg} background"


def prompt_for(item: Scene | Spec) -> str:
    """The English prompt of a scene (or of a bare Spec)."""
    spec = item.spec if isinstance(item, Scene) else item
    fields: dict[str, str] = {"bg": spec.background}
    for i, obj in enumerate(spec.objects):
        fields[f"c{i}"], fields[f"s{i}"] = obj.color, obj.shape
    if spec.task == "counting":
        fields["n"] = NUMBER_WORDS[spec.objects[0].count]
    if spec.task == "position":
        fields["rel"] = RELATION_PHRASES[str(spec.relation)]
    return (TEMPLATES[spec.task] + BACKGROUND_SUFFIX).format(**fields)


def _alternation(words: Iterable[str]) -> str:
    return "(" + "|".join(re.escape(w) for w in words) + ")"


def _pattern(task: str) -> re.Pattern[str]:
    """The template turned into an anchored regex with one group per field."""
    groups = {
        "c0": _alternation(COLORS),
        "c1": _alternation(COLORS),
        "s0": _alternation(SHAPES),
        "s1": _alternation(SHAPES),
        "n": _alternation(NUMBER_WORDS.values()),
        "rel": _alternation(RELATION_PHRASES.values()),
        "bg": _alternation(BACKGROUNDS),
    }
    text = TEMPLATES[task] + BACKGROUND_SUFFIX
    names = re.findall(r"{(\w+)}", text)
    regex = re.escape(text)
    for name in names:
        regex = regex.replace(re.escape("{" + name + "}"), groups[name].replace("(", f"(?P<{name}>", 1), 1)
    return re.compile("^" + regex + "$")


PATTERNS: dict[str, re.Pattern[str]] = {task: _pattern(task) for task in TASKS}


def spec_from_prompt(text: str) -> Spec:
    """Parse a prompt of the shapes-world grammar back into its Spec (case and extra spaces are ignored)."""
    normal = " ".join(str(text).lower().split()).rstrip(".")
    for task, pattern in PATTERNS.items():
        match = pattern.match(normal)
        if match is None:
            continue
        got = match.groupdict()
        relation = None
        if task == "counting":
            count = {word: n for n, word in NUMBER_WORDS.items()}[got["n"]]
            objects: tuple[ObjectSpec, ...] = (ObjectSpec(got["c0"], got["s0"], count),)
        else:
            objects = tuple(ObjectSpec(got[f"c{i}"], got[f"s{i}"]) for i in range(2) if f"c{i}" in got)
        if task == "position":
            relation = {phrase: key for key, phrase in RELATION_PHRASES.items()}[got["rel"]]
        return Spec(task, objects, got["bg"], relation)
    shown = normal if len(normal) <= 80 else normal[:77] + "..."
    raise ValueError(f"not a shapes-world prompt: {shown!r}")


def vocabulary() -> list[str]:
    """Every word that can appear in a prompt, lowercase and sorted."""
    words = set(COLORS) | set(SHAPES) | {s + "s" for s in SHAPES} | set(BACKGROUNDS)
    words |= {NUMBER_WORDS[n] for n in COUNTS}
    for text in list(TEMPLATES.values()) + list(RELATION_PHRASES.values()) + [BACKGROUND_SUFFIX]:
        words |= {w for w in re.sub(r"{\w+}s?", " ", text).split()}
    return sorted(words)
