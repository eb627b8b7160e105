"""The shapes world: sampler, renderer, prompt grammar, procedural GenEval scorer and detail metric."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from shapes_world.detail import detail_ratio, hf_energy, stripe_contrast
from shapes_world.prompts import prompt_for, spec_from_prompt, vocabulary
from shapes_world.render import render, render_background
from shapes_world.scene import (
    BORDER_GAP,
    OBJECT_GAP,
    TASKS,
    Background,
    ObjectSpec,
    Scene,
    SceneObject,
    Spec,
    make_scenes,
    relation_holds,
    sample_scene,
)
from shapes_world.score import check, detect, evaluate, validate

SCENES = make_scenes(600, seed=11)


def _blur8(image: np.ndarray) -> np.ndarray:
    """What an 8x-downsampling autoencoder keeps at best: box down 8x, bilinear back up."""
    size = image.shape[0]
    small = Image.fromarray(image).resize((size // 8, size // 8), Image.BOX)
    return np.asarray(small.resize((size, size), Image.BILINEAR))


def test_make_scenes_and_render_are_deterministic() -> None:
    again = make_scenes(40, seed=11)
    assert again == SCENES[:40]  # scene i depends only on (seed, i)
    assert make_scenes(40, seed=12) != again
    for scene in again[:10]:
        image = render(scene)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert np.array_equal(image, render(scene))


def test_every_task_appears_and_sampling_respects_the_geometry() -> None:
    assert {scene.task for scene in SCENES} == set(TASKS)
    for scene in SCENES:
        boxes = [(o.x - o.size / 2, o.y - o.size / 2, o.x + o.size / 2, o.y + o.size / 2) for o in scene.objects]
        for x0, y0, x1, y1 in boxes:
            assert min(x0, y0) >= BORDER_GAP - 1e-9 and max(x1, y1) <= 64 - BORDER_GAP + 1e-9
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                apart_x = max(a[0], b[0]) - min(a[2], b[2])
                apart_y = max(a[1], b[1]) - min(a[3], b[3])
                assert max(apart_x, apart_y) >= OBJECT_GAP - 1e-9
        assert all(12 <= o.size <= 22 for o in scene.objects)
        spec = scene.spec
        if scene.task == "color_attr":
            assert spec.objects[0].color != spec.objects[1].color and spec.objects[0].shape != spec.objects[1].shape
        if scene.task == "position":
            assert relation_holds(scene.objects[0], scene.objects[1], str(spec.relation), OBJECT_GAP)
        if scene.task == "counting":
            assert len(scene.objects) == spec.objects[0].count in (2, 3, 4)


def test_sample_scene_per_task_and_size() -> None:
    rng = np.random.default_rng(3)
    for task in TASKS:
        scene = sample_scene(rng, task=task, size=128)
        assert scene.task == scene.spec.task == task
        assert render(scene).shape == (128, 128, 3)
        assert all(24 <= o.size <= 44 for o in scene.objects)
        assert check(render(scene), scene.spec).correct
    with pytest.raises(ValueError, match="unknown task"):
        sample_scene(rng, task="spatial")


def test_prompt_round_trip() -> None:
    for scene in SCENES:
        text = prompt_for(scene)
        assert spec_from_prompt(text) == scene.spec, text
    text = prompt_for(SCENES[0])
    assert spec_from_prompt("  " + text.upper().replace(" ", "   ") + ".") == SCENES[0].spec


def test_prompt_examples() -> None:
    assert spec_from_prompt("a photo of a red circle on a striped background") == Spec(
        "single_object", (ObjectSpec("red", "circle"),), "striped"
    )
    assert spec_from_prompt("three green triangles on a dotted background") == Spec(
        "counting", (ObjectSpec("green", "triangle", 3),), "dotted"
    )
    position = spec_from_prompt("a red circle to the left of a blue square on a plain background")
    assert position.relation == "left_of" and position.objects[1] == ObjectSpec("blue", "square")
    assert spec_from_prompt("a red circle and a blue square on a plain background").task == "two_object"
    assert spec_from_prompt("a yellow colored square and a purple colored triangle on a plain background").task == (
        "color_attr"
    )


def test_vocabulary_is_exactly_the_words_of_the_prompts() -> None:
    words = vocabulary()
    assert words == sorted(words) and all(w == w.lower() for w in words)
    used = {word for scene in SCENES for word in prompt_for(scene).split()}
    assert used == set(words)


@pytest.mark.parametrize(
    "text",
    [
        "a photo of a cat",
        "a photo of a red circle",  # no background
        "five red circles on a plain background",
        "a red circle\non a plaid background",
        "x" * 500,
        "",
    ],
)
def test_parse_errors_are_one_line(text: str) -> None:
    with pytest.raises(ValueError) as info:
        spec_from_prompt(text)
    message = str(info.value)
    assert "\n" not in message and len(message) < 160


def test_scorer_validation() -> None:
    report = validate(n=180, seed=5)
    assert report["gt"]["overall"] >= 0.97, report["gt"]
    assert report["wrong_spec_rejection"]["overall"] >= 0.97, report["wrong_spec_rejection"]
    assert report["degraded"]["overall"] >= 0.9, report["degraded"]
    assert set(report["gt"]["per_task"]) == set(TASKS)


def test_background_only_and_blank_images_score_zero() -> None:
    specs = [scene.spec for scene in SCENES[:60]]
    backgrounds = [render_background(scene.background, 64).astype(np.uint8) for scene in SCENES[:60]]
    assert evaluate(backgrounds, specs)["overall"] == 0.0
    assert all(detect(image) == [] for image in backgrounds)
    for level in (0, 128, 255):
        assert evaluate([np.full((64, 64, 3), level, np.uint8)] * 60, specs)["overall"] == 0.0


def test_noise_images_score_low() -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (60, 64, 64, 3), dtype=np.uint8)
    specs = [scene.spec for scene in SCENES[:60]]
    assert evaluate(noise, specs)["overall"] <= 0.05


def _scene(objects: list[SceneObject], spec: Spec) -> Scene:
    return Scene(spec.task, tuple(objects), Background("plain", (240, 240, 240), 0), spec)


def test_check_semantics() -> None:
    red_circle, blue_square = ObjectSpec("red", "circle"), ObjectSpec("blue", "square")
    objects = [SceneObject("circle", "red", 16, 20, 16), SceneObject("square", "blue", 46, 40, 16)]
    single = Spec("single_object", (red_circle,), "plain")
    assert check(render(_scene(objects, single)), single).correct  # an extra object of another kind is fine
    left = Spec("position", (red_circle, blue_square), "plain", "left_of")
    assert check(render(_scene(objects, left)), left).correct
    right = dataclasses.replace(left, relation="right_of")
    assert not check(render(_scene(objects, left)), right).correct
    swapped = Spec("color_attr", (ObjectSpec("blue", "circle"), ObjectSpec("red", "square")), "plain")
    result = check(render(_scene(objects, single)), swapped)
    assert not result.correct and any("found is red" in reason for reason in result.reasons)
    three = [SceneObject("triangle", "green", x, 16, 14) for x in (12, 32, 52)] + objects[1:]
    counting = Spec("counting", (ObjectSpec("green", "triangle", 3),), "plain")
    assert check(render(_scene(three, counting)), counting).correct  # others do not count
    assert not check(render(_scene(three[:2] + objects[1:], counting)), counting).correct


def test_colour_level_ignores_the_outline_only() -> None:
    objects = [SceneObject("circle", "red", 16, 20, 16), SceneObject("square", "blue", 46, 40, 16)]
    red_square = Spec("single_object", (ObjectSpec("red", "square"),), "plain")
    image = render(_scene(objects, red_square))
    assert not check(image, red_square).correct
    assert check(image, red_square, match_shape=False).correct  # a red object is there, outline aside
    green = Spec("single_object", (ObjectSpec("green", "square"),), "plain")
    assert not check(image, green, match_shape=False).correct  # the colour still counts
    left = Spec("position", (ObjectSpec("red", "triangle"), ObjectSpec("blue", "circle")), "plain", "left_of")
    assert check(image, left, match_shape=False).correct
    assert not check(image, dataclasses.replace(left, relation="below"), match_shape=False).correct
    two_red = Spec("counting", (ObjectSpec("red", "circle", 2),), "plain")
    assert not check(image, two_red, match_shape=False).correct  # and so does the count
    specs = [scene.spec for scene in SCENES[:60]]
    images = [render(scene) for scene in SCENES[:60]]
    assert evaluate(images, specs, match_shape=False)["overall"] == 1.0
    backgrounds = [render_background(scene.background, 64).astype(np.uint8) for scene in SCENES[:60]]
    assert evaluate(backgrounds, specs, match_shape=False)["overall"] == 0.0


def test_hf_energy_sees_stripes_and_their_loss() -> None:
    base = (236, 236, 236)
    plain = render_background(Background("plain", base, 0), 64).astype(np.uint8)
    for period in (2, 3):
        for vertical in (False, True):
            striped = render_background(Background("striped", base, 90, period, vertical), 64).astype(np.uint8)
            assert hf_energy(striped)[0] > 0.5 > hf_energy(plain)[0]
            assert hf_energy(_blur8(striped))[0] < 0.05
            assert stripe_contrast(striped)[0] > 100 > 10 > stripe_contrast(_blur8(striped))[0]
    by_kind: dict[str, list[np.ndarray]] = {}
    for scene in SCENES[:150]:
        by_kind.setdefault(scene.background.kind, []).append(render(scene))
    energy = {kind: hf_energy(np.stack(images)).mean() for kind, images in by_kind.items()}
    assert energy["striped"] > energy["dotted"] > energy["plain"]
    striped = np.stack(by_kind["striped"])
    assert detail_ratio(striped, striped) == pytest.approx(1.0)
    assert detail_ratio([_blur8(image) for image in striped], striped) < 0.1
    assert hf_energy(np.full((64, 64, 3), 7, np.uint8))[0] == 0.0
