"""The category taxonomy prompts are drawn from: major class -> sub-class -> fine-grained category.

L2P's data recipe (paper §3.2) covers the source model's world with a top-down taxonomy of 4 major classes,
17 sub-classes and 1000+ fine-grained categories, so a small prompt bank still spans every domain. The shipped
``taxonomy.json`` follows that shape; any file of the same structure can replace it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

DEFAULT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "taxonomy.json")
MAX_NAME_CHARS = 60  # a longer name cannot fit the prompt length window with its framing around it


@dataclass(frozen=True)
class Category:
    """One fine-grained category (a leaf) with the two levels above it."""

    major: str
    sub: str
    name: str

    @property
    def path(self) -> str:
        """``major/sub/name``: the id stored in prompt records."""
        return f"{self.major}/{self.sub}/{self.name}"


@dataclass(frozen=True)
class Taxonomy:
    """A validated taxonomy; ``tree`` maps major -> sub -> leaf names, in file order."""

    tree: dict[str, dict[str, tuple[str, ...]]]

    def majors(self) -> list[str]:
        return list(self.tree)

    def subs(self) -> list[tuple[str, str]]:
        """(major, sub) pairs."""
        return [(major, sub) for major, subs in self.tree.items() for sub in subs]

    def leaves(self) -> list[Category]:
        """Every fine-grained category, in file order."""
        return [Category(major, sub, name) for major, subs in self.tree.items() for sub, names in subs.items()
                for name in names]


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """json object hook: a repeated key would silently drop a whole class or sub-class."""
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} appears twice in one object")
        out[key] = value
    return out


def _check_name(name: object, where: str, path: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{path}: empty or non-text name at {where}: give every class and category a name")
    if name != name.strip() or "/" in name or any(not ch.isprintable() for ch in name):
        raise ValueError(f"{path}: bad name {name!r} at {where}: no '/', control characters or outer spaces")
    if len(name) > MAX_NAME_CHARS:
        raise ValueError(f"{path}: name {name[:30]!r}... at {where} is over {MAX_NAME_CHARS} characters: shorten it")
    return name


def parse_taxonomy(data: object, path: str = "<taxonomy>") -> Taxonomy:
    """Validate decoded JSON ``{major: {sub: [name, ...]}}``; errors are one line naming the file and place."""
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected a non-empty JSON object {{major: {{sub: [category, ...]}}}}")
    tree: dict[str, dict[str, tuple[str, ...]]] = {}
    seen: dict[str, str] = {}
    for major, subs in data.items():
        _check_name(major, "top level", path)
        if not isinstance(subs, dict) or not subs:
            raise ValueError(f"{path}: class {major!r} must map to a non-empty object of sub-classes")
        tree[major] = {}
        for sub, names in subs.items():
            _check_name(sub, major, path)
            where = f"{major}/{sub}"
            if not isinstance(names, list) or not names:
                raise ValueError(f"{path}: sub-class {where!r} must map to a non-empty list of category names")
            for name in names:
                _check_name(name, where, path)
                key = name.casefold()
                if key in seen:
                    raise ValueError(f"{path}: category {name!r} is listed twice ({seen[key]} and {where}): "
                                     "keep one, leaf names must be unique")
                seen[key] = where
            tree[major][sub] = tuple(names)
    return Taxonomy(tree)


def load_taxonomy(path: str | None = None) -> Taxonomy:
    """Read and validate a taxonomy file (default: the shipped ``taxonomy.json``)."""
    path = path or DEFAULT_PATH
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON (line {e.lineno}: {e.msg}): fix the file or pass another") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text: save the taxonomy as UTF-8 JSON") from None
    except ValueError as e:  # from the duplicate-key hook
        raise ValueError(f"{path}: {e}: merge the two entries") from None
    return parse_taxonomy(data, path)
