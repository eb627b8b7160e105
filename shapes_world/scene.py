"""The shapes world's data model and its seeded scene sampler.

A scene is everything needed to render one ground-truth image and to know what its prompt asks for. Only the
prompted content (task, colours, shapes, count, relation, background kind) is controlled by the prompt; sizes,
positions and the background's fine parameters vary freely, so a model has to learn them as "style".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# Five saturated colours, far apart in hue (about 0, 50, 125, 225 and 285 degrees): the scorer names colours by hue.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "yellow": (240, 205, 20),
    "green": (40, 170, 50),
    "blue": (30, 80, 230),
    "purple": (170, 40, 210),
}
COLORS: tuple[str, ...] = tuple(PALETTE)
BACKGROUNDS: tuple[str, ...] = ("plain", "striped", "dotted")
# GenEval's category names (its single_object/colors prompts differ only in what is tested).
TASKS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
RELATIONS: tuple[str, ...] = ("left_of", "right_of", "above", "below")
COUNTS: tuple[int, ...] = (2, 3, 4)

# Geometry at the reference size of 64 px; everything scales linearly with the image size.
REF_SIZE = 64
MIN_OBJECT, MAX_OBJECT = 12.0, 22.0
OBJECT_GAP = 3.0  # free space between two objects' bounding boxes
BORDER_GAP = 2.0  # free space between a bounding box and the image border
MAX_TRIES = 2000


@dataclass(frozen=True)
class ObjectSpec:
    """One kind of object a prompt asks for, ``count`` times."""

    color: str
    shape: str
    count: int = 1


@dataclass(frozen=True)
class Spec:
    """What a prompt asks for: the scorer's whole input besides the image.

    For ``position`` the relation reads ``objects[0] <relation> objects[1]``.
    """

    task: str
    objects: tuple[ObjectSpec, ...]
    background: str
    relation: str | None = None


@dataclass(frozen=True)
class SceneObject:
    """A placed object: centre (x, y) in pixels and ``size`` = side of its square bounding box in pixels."""

    shape: str
    color: str
    x: float
    y: float
    size: float


@dataclass(frozen=True)
class Background:
    """The background's kind plus the unprompted parameters that make each rendering differ.

    ``base`` is the light unsaturated base colour, ``ink`` the grey of stripes or dots, ``period`` the stripe
    spacing in pixels, ``vertical`` the stripe orientation and ``seed`` the dot jitter's seed.
    """

    kind: str
    base: tuple[int, int, int]
    ink: int
    period: int = 0
    vertical: bool = False
    seed: int = 0


@dataclass(frozen=True)
class Scene:
    """One ground-truth scene: its objects, background, task, what its prompt asks for and its image size."""

    task: str
    objects: tuple[SceneObject, ...]
    background: Background
    spec: Spec
    size: int = REF_SIZE


def _boxes_apart(a: SceneObject, b: SceneObject, gap: float) -> bool:
    """True when the two bounding boxes are separated by at least ``gap`` along x or along y."""
    reach = (a.size + b.size) / 2 + gap
    return abs(a.x - b.x) >= reach or abs(a.y - b.y) >= reach


def relation_holds(a: SceneObject, b: SceneObject, relation: str, gap: float) -> bool:
    """Whether ``a <relation> b`` holds clearly: boxes apart along the relation's axis, which also dominates."""
    dx, dy = b.x - a.x, b.y - a.y  # image y grows downwards
    along = {"left_of": dx, "right_of": -dx, "above": dy, "below": -dy}[relation]
    across = abs(dy) if relation in ("left_of", "right_of") else abs(dx)
    return along >= (a.size + b.size) / 2 + gap and along >= across + gap


def _sample_background(rng: np.random.Generator, kind: str) -> Background:
    """A light, nearly grey base (warm off-white or neutral light grey) and a dark grey ink."""
    if rng.random() < 0.5:
        level = int(rng.integers(238, 249))
        base = (level, level - int(rng.integers(1, 5)), level - int(rng.integers(6, 12)))
    else:
        level = int(rng.integers(208, 236))
        base = (level, level, level)
    if kind == "striped":
        return Background(kind, base, int(rng.integers(70, 111)), int(rng.integers(2, 4)), bool(rng.random() < 0.5))
    if kind == "dotted":
        return Background(kind, base, int(rng.integers(90, 141)), seed=int(rng.integers(0, 2**31)))
    return Background(kind, base, 0)


def _place(
    rng: np.random.Generator, kinds: list[tuple[str, str]], size: int, relation: str | None
) -> tuple[SceneObject, ...] | None:
    """Rejection-sample non-overlapping placements for ``kinds``; None when this attempt got stuck."""
    scale = size / REF_SIZE
    gap, border = OBJECT_GAP * scale, BORDER_GAP * scale
    placed: list[SceneObject] = []
    for color, shape in kinds:
        side = float(rng.uniform(MIN_OBJECT, MAX_OBJECT) * scale)
        lo, hi = border + side / 2, size - border - side / 2
        for _ in range(200):
            obj = SceneObject(shape, color, float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)), side)
            if not all(_boxes_apart(obj, other, gap) for other in placed):
                continue
            if relation is not None and placed and not relation_holds(placed[0], obj, relation, gap):
                continue
            placed.append(obj)
            break
        else:
            return None
    return tuple(placed)


def _distinct_pair(rng: np.random.Generator, same_color_ok: bool) -> list[tuple[str, str]]:
    """Two (colour, shape) kinds with different shapes; colours differ too unless ``same_color_ok``."""
    shape_a, shape_b = (str(s) for s in rng.choice(SHAPES, size=2, replace=False))
    if same_color_ok:
        colors = [str(c) for c in rng.choice(COLORS, size=2, replace=True)]
    else:
        colors = [str(c) for c in rng.choice(COLORS, size=2, replace=False)]
    return [(colors[0], shape_a), (colors[1], shape_b)]


def _kinds_for(rng: np.random.Generator, task: str) -> tuple[list[tuple[str, str]], str | None]:
    """The objects to place (with repeats for counting) and the relation, for one task."""
    if task in ("single_object", "colors"):
        return [(str(rng.choice(COLORS)), str(rng.choice(SHAPES)))], None
    if task == "counting":
        kind = (str(rng.choice(COLORS)), str(rng.choice(SHAPES)))
        return [kind] * int(rng.choice(COUNTS)), None
    if task == "two_object":
        return _distinct_pair(rng, same_color_ok=True), None
    if task == "color_attr":
        return _distinct_pair(rng, same_color_ok=False), None
    if task == "position":
        kinds = [(str(rng.choice(COLORS)), str(rng.choice(SHAPES))) for _ in range(2)]
        while kinds[1] == kinds[0]:  # the two must be told apart by the scorer
            kinds[1] = (str(rng.choice(COLORS)), str(rng.choice(SHAPES)))
        return kinds, str(rng.choice(RELATIONS))
    raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")


def sample_scene(rng: np.random.Generator, task: str | None = None, size: int = REF_SIZE) -> Scene:
    """Sample one scene for ``task`` (uniform over TASKS when None) at ``size`` x ``size`` pixels."""
    task = str(rng.choice(TASKS)) if task is None else task
    kinds, relation = _kinds_for(rng, task)
    background = _sample_background(rng, str(rng.choice(BACKGROUNDS)))
    for _ in range(MAX_TRIES):
        objects = _place(rng, kinds, size, relation)
        if objects is not None:
            break
    else:  # pragma: no cover - the geometry leaves ample room even for four 22 px objects
        raise RuntimeError(f"could not place {len(kinds)} objects in a {size} px image")
    if task == "counting":
        spec_objects: tuple[ObjectSpec, ...] = (ObjectSpec(kinds[0][0], kinds[0][1], len(kinds)),)
    else:
        spec_objects = tuple(ObjectSpec(color, shape) for color, shape in kinds)
    return Scene(task, objects, background, Spec(task, spec_objects, background.kind, relation), size)


def make_scenes(n: int, seed: int, size: int = REF_SIZE) -> list[Scene]:
    """``n`` scenes, deterministic in ``seed``; scene i depends only on (seed, i), so prefixes agree."""
    return [sample_scene(np.random.default_rng([seed, i]), size=size) for i in range(n)]
