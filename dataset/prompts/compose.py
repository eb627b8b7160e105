"""The offline prompt writer: seeded templates that need no model, no network and no GPU.

The paper has an LLM write each prompt from fixed rules (§3.2); this composer follows the same rules with
word lists instead, so a full 10k bank builds in seconds anywhere and is reproducible from (category, seed).
"""

from __future__ import annotations

import random

from .checks import malformed_reason
from .rules import MAX_CHARS, MIN_CHARS, derive_seed
from .taxonomy import Category
from .vocab import (
    ART_FINISH,
    ART_QUALITY,
    COMPOSITIONS,
    DEPTHS,
    LIGHT_VERBS,
    MOODS,
    PALETTES,
    PHOTO_STYLES,
    QUALITY,
    RENDER_STYLES,
    SHADOWS,
    Profile,
    profile_for,
)

MAX_ATTEMPTS = 64
PHOTO_SHARE = 0.7  # the rest are rendered as paintings, illustrations or 3D renders

_DETAIL_TEMPLATES = ("Details include {0} and {1}.", "The image shows {0} and {1}.", "{0}, with {1}.",
                     "Notice {0} and {1}.")
_COMPOSITION_TEMPLATES = ("Composed as {0} with {1}.", "{0}, {1}.", "The shot uses {0} and {1}.",
                          "Framed with {0} and {1}.")
_LIGHT_TEMPLATES = ("{0} {1}.", "Lit by {0}, with {2}.", "The scene is lit by {0}, creating {2}.")
_MOOD_TEMPLATES = ("The mood is {0}, with a palette of {1}.", "A palette of {1} gives it {2} {0} feel.",
                   "An overall {0} atmosphere in {1}.")


def article(word: str) -> str:
    """'a' or 'an' for the word that follows (by sound for the few common exceptions)."""
    w = word.lower()
    if w.startswith(("hour", "honest", "heir")):
        return "an"
    if w.startswith(("uni", "use", "usu", "eu", "one", "once")):
        return "a"
    return "an" if w[:1] in "aeiou" else "a"


def _sentence(text: str) -> str:
    text = " ".join(text.split()).replace(" ,", ",")
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _words(text: str) -> set[str]:
    return set(text.lower().replace("-", " ").split())


def _attribute(rng: random.Random, attributes: tuple[str, ...], taken: str) -> str:
    """An attribute sharing no word with the rest of the sentence (no 'a golden golden eagle')."""
    fitting = [a for a in attributes if not _words(a) & _words(taken)]
    return rng.choice(fitting or list(attributes))


def _opening(name: str, profile: Profile, rng: random.Random) -> str:
    action, setting, person = rng.choice(profile.actions), rng.choice(profile.settings), rng.choice(profile.people)
    attr = _attribute(rng, profile.attributes, " ".join((name, action, setting, person)))
    a_attr = f"{article(attr)} {attr}"
    fields = {"name": name, "attr": attr, "a_attr": a_attr, "subject": f"{a_attr} {name}", "action": action,
              "setting": setting, "person": person}
    return _sentence(rng.choice(profile.frames).format(**fields))


def _middle(profile: Profile, rng: random.Random) -> tuple[str, list[str]]:
    """The lighting sentence (always used) and the optional detail, composition and mood sentences."""
    light = _sentence(rng.choice(_LIGHT_TEMPLATES).format(rng.choice(profile.light), rng.choice(LIGHT_VERBS),
                                                          rng.choice(SHADOWS)))
    details = _sentence(rng.choice(_DETAIL_TEMPLATES).format(*rng.sample(profile.details, 2)))
    composition = _sentence(rng.choice(_COMPOSITION_TEMPLATES).format(rng.choice(COMPOSITIONS), rng.choice(DEPTHS)))
    mood_word = rng.choice(MOODS)
    mood = _sentence(rng.choice(_MOOD_TEMPLATES).format(mood_word, rng.choice(PALETTES), article(mood_word)))
    optional = [details, composition, mood]
    rng.shuffle(optional)
    return light, optional


def _style_head(profile: Profile, rng: random.Random) -> str:
    if profile.art:
        return rng.choice(ART_FINISH)
    return rng.choice(PHOTO_STYLES if rng.random() < PHOTO_SHARE else RENDER_STYLES)


def _compose(name: str, profile: Profile, rng: random.Random) -> str:
    """One attempt: grow toward a random target length, then pad the style tail up to the minimum."""
    opening = _opening(name, profile, rng)
    light, optional = _middle(profile, rng)
    head, qualities = _style_head(profile, rng), rng.sample(ART_QUALITY if profile.art else QUALITY, 4)
    target = rng.randint(MIN_CHARS + 15, MAX_CHARS - 15)

    def total(body: list[str], n_quality: int) -> int:
        style = _sentence(", ".join([head, *qualities[:n_quality]]))
        return len(" ".join([*body, style]))

    body = [light]
    for extra in optional:
        if total([opening, *body], 1) >= target:
            break
        if total([opening, *body, extra], 1) <= MAX_CHARS:
            body.append(extra)
    rng.shuffle(body)
    body.insert(0, opening)
    n_quality = 1
    while total(body, n_quality) < MIN_CHARS and n_quality < len(qualities):
        n_quality += 1
    return " ".join([*body, _sentence(", ".join([head, *qualities[:n_quality]]))])


def generate_prompt(category: Category, seed: int) -> str:
    """A 200-350 character English image prompt for the category; the same (category, seed) gives the same text."""
    rng = random.Random(derive_seed("prompt", category.path, seed))
    profile = profile_for(category.sub)
    for _ in range(MAX_ATTEMPTS):
        text = _compose(category.name, profile, rng)
        if MIN_CHARS <= len(text) <= MAX_CHARS and malformed_reason(text) is None:
            return text
    raise ValueError(f"cannot fit a {MIN_CHARS}-{MAX_CHARS} character prompt around {category.path!r}: "
                     "shorten the category name")


def prompt_hint(category: Category, seed: int) -> str:
    """A seeded angle (setting and light) that steers an LLM writer toward a different prompt per seed."""
    rng = random.Random(derive_seed("hint", category.path, seed))
    profile = profile_for(category.sub)
    return f"{rng.choice(profile.settings)}; {rng.choice(profile.light)}; {rng.choice(COMPOSITIONS)}"
