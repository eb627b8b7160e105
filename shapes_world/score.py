"""The procedural GenEval scorer: find coloured shapes in an image and check them against a Spec.

GenEval runs an object detector and checks presence, counts, colours and relative positions; in the shapes
world a hand-written detector is exact enough. Colours are named by hue (so shading, blur and washed-out
generations keep their name), objects are connected components of clearly coloured pixels (the unsaturated
background, its stripes and dots are never candidates), and shape comes from simple box geometry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from .render import render
from .scene import COLORS, PALETTE, REF_SIZE, SHAPES, TASKS, ObjectSpec, Spec, make_scenes

MIN_CHROMA = 40.0  # max(RGB) - min(RGB) in 0..255: the greys stay far below, every palette colour far above
MIN_AREA = 30.0  # pixels at 64 px; the smallest object (a 12 px triangle) covers about 72
PURITY = 0.7  # share of a region's pixels that must agree on one colour for it to count as one object
POSITION_MARGIN = 2.0  # pixels at 64 px by which centroids must differ for a relation to hold


def _hue_chroma(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel HSV hue in degrees and chroma (max - min) in 0..255."""
    rgb = image.astype(np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    top, low = rgb.max(axis=-1), rgb.min(axis=-1)
    chroma = top - low
    safe = np.where(chroma > 0, chroma, 1.0)
    hue = np.where(top == r, ((g - b) / safe) % 6, np.where(top == g, (b - r) / safe + 2, (r - g) / safe + 4))
    return hue * 60.0, chroma


PALETTE_HUES = _hue_chroma(np.asarray([list(PALETTE.values())], np.uint8))[0][0]


def _nearest_color(hue: np.ndarray) -> np.ndarray:
    """Index into COLORS of the palette hue nearest to each hue (circular distance)."""
    diff = np.abs(hue[..., None] - PALETTE_HUES)
    return np.argmin(np.minimum(diff, 360.0 - diff), axis=-1)


def label_components(mask: np.ndarray) -> np.ndarray:
    """8-connected component labels of a boolean mask (-1 off the mask), by min-label propagation.

    Plain numpy so the package needs no scipy; pointer jumping makes it converge in a handful of sweeps.
    """
    h, w = mask.shape
    none = h * w
    labels = np.where(mask, np.arange(h * w).reshape(h, w), none)
    while True:
        padded = np.pad(labels, 1, constant_values=none)
        new = labels.copy()
        for dy in range(3):
            for dx in range(3):
                np.minimum(new, padded[dy : dy + h, dx : dx + w], out=new)
        new = np.where(mask, new, none)
        flat = new.reshape(-1)
        on = flat < none
        flat[on] = flat[flat[on]]  # jump to the label's own label: labels only ever decrease
        if np.array_equal(new, labels):
            return np.where(mask, labels, -1)
        labels = new


@dataclass(frozen=True)
class Detection:
    """One found object: colour, shape (None when no shape fits), centroid (x, y) in pixels and geometry."""

    color: str
    shape: str | None
    x: float
    y: float
    area: int
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 inclusive
    fill: float  # area / bounding-box area: square ~1.0, circle ~0.785, triangle ~0.5
    top_share: float  # area in the box's top half / area in its bottom half: ~1 symmetric, ~1/3 triangle


def classify(fill: float, top_share: float, aspect: float) -> str | None:
    """Shape from box geometry; None for blobs that look like no shape (noise, stripes, smears).

    Measured on 1500 renders: circles fill 0.76-0.82, squares 0.98-1.0 (0.90 after blur and noise), triangles
    0.52-0.62 with a top share of 0.31-0.51 against 0.83-1.22 for the symmetric shapes.
    """
    if not 0.6 <= aspect <= 1.67 or fill < 0.35:
        return None
    if top_share < 0.68:  # bottom-heavy: only the apex-up triangle (1/3 exactly); blur pushes it towards 1/2
        return "triangle" if fill < 0.85 else None
    if not 0.74 <= top_share <= 1.35:
        return None
    return "square" if fill >= 0.86 else "circle" if fill >= 0.62 else None


def _describe(ys: np.ndarray, xs: np.ndarray, cover: np.ndarray, color: str) -> Detection:
    """Geometry of one component from its pixels and their soft coverage (chroma over the component's peak).

    Soft area, width and height (sums of coverage, of column maxima, of row maxima) stay exact under blur and
    sub-pixel placement, where a thresholded bounding box would flicker by a pixel and blur square vs circle.
    """
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
    window = np.zeros((y1 - y0 + 1, x1 - x0 + 1))
    window[ys - y0, xs - x0] = cover
    area = float(cover.sum())
    width, height = float(window.max(axis=0).sum()), float(window.max(axis=1).sum())
    mid = (y0 + y1) / 2
    top = float(cover[ys < mid].sum() + 0.5 * cover[ys == mid].sum())
    top_share = top / (area - top) if area > top else float("inf")
    fill = area / (width * height)
    shape = classify(fill, top_share, width / height)
    cx, cy = float(np.average(xs, weights=cover) + 0.5), float(np.average(ys, weights=cover) + 0.5)
    return Detection(color, shape, cx, cy, int(round(area)), (x0, y0, x1, y1), fill, top_share)


def _regions(mask: np.ndarray, colour: np.ndarray, min_area: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """(ys, xs) of each large enough connected region of ``mask``.

    A region whose pixels disagree on their colour (touching objects, or noise) is split into its per-colour
    connected parts, so random colourful clutter never passes as one big object.
    """
    regions = []
    labels = label_components(mask)
    ids, counts = np.unique(labels[mask], return_counts=True)
    for label, count in zip(ids, counts, strict=True):
        if count < min_area:
            continue
        inside = labels == label
        votes = np.bincount(colour[inside], minlength=len(COLORS))
        if votes.max() >= PURITY * count:
            regions.append(np.nonzero(inside))
            continue
        for k in np.nonzero(votes >= min_area)[0]:
            part = label_components(inside & (colour == k))
            part_ids, part_counts = np.unique(part[part >= 0], return_counts=True)
            regions.extend(np.nonzero(part == i) for i in part_ids[part_counts >= min_area])
    return regions


def detect(image: np.ndarray) -> list[Detection]:
    """All coloured objects in an (H, W, 3) uint8 RGB image, largest first."""
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {tuple(image.shape)}")
    hue, chroma = _hue_chroma(image)
    colour = _nearest_color(hue)
    min_area = MIN_AREA * image.shape[0] * image.shape[1] / REF_SIZE**2
    found: list[Detection] = []
    for ys, xs in _regions(chroma >= MIN_CHROMA, colour, min_area):
        c = chroma[ys, xs]
        votes = np.bincount(colour[ys, xs], weights=c, minlength=len(COLORS))
        # Coverage relative to the typical chroma of the region's core, so noise inside it averages out.
        peak = float(np.median(c[c >= 0.5 * np.percentile(c, 90)]))
        cover = np.clip(c / peak, 0.0, 1.0)
        if cover.sum() >= min_area:
            found.append(_describe(ys, xs, cover, COLORS[int(np.argmax(votes))]))
    return sorted(found, key=lambda d: -d.area)


@dataclass(frozen=True)
class Result:
    """The verdict on one image: ``correct`` plus one reason per check, prefixed "ok:" or "fail:"."""

    correct: bool
    reasons: tuple[str, ...]
    detections: tuple[Detection, ...]


def _of_kind(detections: Sequence[Detection], obj: ObjectSpec) -> list[Detection]:
    return [d for d in detections if d.color == obj.color and d.shape == obj.shape]


def _name(obj: ObjectSpec) -> str:
    return f"{obj.color} {obj.shape}"


def _presence(detections: Sequence[Detection], objects: Sequence[ObjectSpec], what: str) -> list[tuple[bool, str]]:
    """One check per distinct kind: at least as many found as asked for (extra objects of other kinds are fine)."""
    checks = []
    for obj in dict.fromkeys(objects):
        need, got = objects.count(obj), len(_of_kind(detections, obj))
        note = ""
        if got < need:  # say what came instead, which makes a swapped colour binding obvious
            other = sorted({d.color for d in detections if d.shape == obj.shape and d.color != obj.color})
            note = f" (the {obj.shape} found is {'/'.join(other)})" if other else ""
        checks.append((got >= need, f"{what} {_name(obj)}: need {need}, found {got}{note}"))
    return checks


def _relation(a: Detection, b: Detection, relation: str, margin: float) -> bool:
    """``a <relation> b`` by centroids (image y grows downwards)."""
    along = {"left_of": b.x - a.x, "right_of": a.x - b.x, "above": b.y - a.y, "below": a.y - b.y}[relation]
    return along > margin


def judge(detections: Sequence[Detection], spec: Spec, size: int = REF_SIZE, match_shape: bool = True) -> Result:
    """Check already-found objects against a Spec (``check`` without re-detecting).

    ``match_shape=False`` is the colour-level variant: an object of the asked colour counts whatever its
    outline, so colour, count, binding and position are still checked on models that draw blobs.
    """
    objects = spec.objects
    if not match_shape:
        objects = tuple(replace(o, shape="object") for o in objects)
        detections = [replace(d, shape="object") for d in detections]
    if spec.task in ("single_object", "colors", "two_object"):
        checks = _presence(detections, objects, "present:")
    elif spec.task == "color_attr":
        checks = _presence(detections, objects, "bound colour:")
    elif spec.task == "counting":
        obj = objects[0]
        got = len(_of_kind(detections, obj))
        checks = [(got == obj.count, f"count {_name(obj)}: need exactly {obj.count}, found {got}")]
    elif spec.task == "position":
        checks = _presence(detections, objects, "present:")
        if all(ok for ok, _ in checks):
            firsts, seconds = (_of_kind(detections, obj) for obj in objects[:2])
            margin = POSITION_MARGIN * size / REF_SIZE
            if objects[0] == objects[1]:  # one kind twice (colour level): any two of them in that relation
                pairs = [(a, b) for a in firsts[:2] for b in firsts[:2] if a is not b]
                a, b = next((p for p in pairs if _relation(*p, str(spec.relation), margin)), pairs[0])
            else:
                a, b = firsts[0], seconds[0]  # the largest of each, like top-1
            ok = _relation(a, b, str(spec.relation), margin)
            where = f"({a.x:.1f}, {a.y:.1f}) vs ({b.x:.1f}, {b.y:.1f})"
            checks.append((ok, f"relation {_name(objects[0])} {spec.relation} {_name(objects[1])}: {where}"))
    else:
        raise ValueError(f"unknown task {spec.task!r}; expected one of {', '.join(TASKS)}")
    reasons = tuple(("ok: " if ok else "fail: ") + text for ok, text in checks)
    return Result(all(ok for ok, _ in checks), reasons, tuple(detections))


def check(image: np.ndarray, spec: Spec, match_shape: bool = True) -> Result:
    """Whether ``image`` shows what ``spec`` asks for, GenEval style, with the reasons."""
    return judge(detect(image), spec, image.shape[0], match_shape)


def summarize(correct: Sequence[bool], tasks: Sequence[str]) -> dict:
    """GenEval's numbers: overall = mean over tasks of per-task accuracy, plus per-task accuracy and count."""
    per_task = {}
    for task in TASKS:
        hits = [bool(c) for c, t in zip(correct, tasks, strict=True) if t == task]
        if hits:
            per_task[task] = {"accuracy": float(np.mean(hits)), "n": len(hits)}
    overall = float(np.mean([v["accuracy"] for v in per_task.values()])) if per_task else 0.0
    return {"overall": overall, "per_task": per_task, "n": len(correct)}


def evaluate(images: Sequence[np.ndarray] | np.ndarray, specs: Sequence[Spec], match_shape: bool = True) -> dict:
    """Score a batch of images against their specs (``judge`` for ``match_shape``); see ``summarize``."""
    if len(images) != len(specs):
        raise ValueError(f"{len(images)} images but {len(specs)} specs")
    correct = [check(np.asarray(image), spec, match_shape).correct
               for image, spec in zip(images, specs, strict=True)]
    return summarize(correct, [spec.task for spec in specs])


def perturb_spec(spec: Spec, rng: np.random.Generator) -> Spec:
    """A deliberately wrong version of ``spec``: another colour, shape or count, the opposite relation, or
    swapped colours, always naming a kind the ground-truth scene does not contain."""
    objects = list(spec.objects)
    relation = spec.relation
    if spec.task == "counting":
        obj = objects[0]
        count = obj.count + int(rng.choice([-1, 1]))
        objects[0] = ObjectSpec(obj.color, obj.shape, count)
    elif spec.task == "position":
        relation = {"left_of": "right_of", "right_of": "left_of", "above": "below", "below": "above"}[str(relation)]
    elif spec.task == "color_attr":
        a, b = objects
        objects = [ObjectSpec(b.color, a.shape), ObjectSpec(a.color, b.shape)]
    else:
        i = int(rng.integers(len(objects)))
        field = "color" if spec.task == "colors" else str(rng.choice(["color", "shape"]))
        kinds = {(o.color, o.shape) for o in objects}
        while True:
            color = str(rng.choice(COLORS)) if field == "color" else objects[i].color
            shape = str(rng.choice(SHAPES)) if field == "shape" else objects[i].shape
            if (color, shape) not in kinds:
                break
        objects[i] = ObjectSpec(color, shape)
    return Spec(spec.task, tuple(objects), spec.background, relation)


def degrade(image: np.ndarray, rng: np.random.Generator, noise: float = 4.0) -> np.ndarray:
    """A 2x2 box blur plus Gaussian noise (std ``noise`` grey levels): a stand-in for an imperfect generation."""
    x = np.pad(image.astype(np.float32), ((0, 1), (0, 1), (0, 0)), mode="edge")
    blurred = (x[:-1, :-1] + x[1:, :-1] + x[:-1, 1:] + x[1:, 1:]) / 4
    noisy = blurred + rng.normal(0.0, noise, blurred.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def validate(n: int = 600, seed: int = 20240601, size: int = REF_SIZE, noise: float = 4.0) -> dict:
    """How far the scorer can be trusted, on ``n`` ground-truth renders:

    ``gt``: accuracy on the true specs; ``wrong_spec_rejection``: how often a perturbed spec is rejected;
    ``degraded``: accuracy on the renders after ``degrade``; ``degraded_wrong_spec_rejection`` likewise.
    """
    rng = np.random.default_rng([seed, 1])
    scenes = make_scenes(n, seed, size)
    tasks = [scene.task for scene in scenes]
    gt, wrong, deg, deg_wrong = [], [], [], []
    for scene in scenes:
        image = render(scene)
        bad = perturb_spec(scene.spec, rng)
        found, found_degraded = detect(image), detect(degrade(image, rng, noise))
        gt.append(judge(found, scene.spec, size).correct)
        wrong.append(not judge(found, bad, size).correct)
        deg.append(judge(found_degraded, scene.spec, size).correct)
        deg_wrong.append(not judge(found_degraded, bad, size).correct)
    return {
        "n": n,
        "gt": summarize(gt, tasks),
        "wrong_spec_rejection": summarize(wrong, tasks),
        "degraded": summarize(deg, tasks),
        "degraded_wrong_spec_rejection": summarize(deg_wrong, tasks),
    }
