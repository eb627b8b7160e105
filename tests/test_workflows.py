"""Every shipped workflow loads on a real server: node types exist, UI and API twins agree, widgets line up."""

from __future__ import annotations

import json
import pathlib

import pytest

from scripts.make_workflows import WORKFLOWS, to_api, to_ui

REPO = pathlib.Path(__file__).resolve().parents[1]
UI_FILES = sorted((REPO / "workflows").glob("*.json"))
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
# Combos that list files on disk: the shipped value need not exist on the test server.
FILE_COMBOS = {"ckpt_name", "clip_name", "vae_name", "unet_name", "text_encoder_name", "text_encoder", "source",
               "prompts", "model", "lora_name"}


def api_twin(ui_file: pathlib.Path) -> pathlib.Path:
    return REPO / "workflows" / "api" / f"{ui_file.stem}.api.json"


def test_every_shipped_workflow_has_an_api_twin():
    assert {f.stem for f in UI_FILES} == set(WORKFLOWS) and len(UI_FILES) >= 2
    for ui_file in UI_FILES:
        assert api_twin(ui_file).is_file(), f"{ui_file.name} has no API twin under workflows/api/"


@pytest.mark.parametrize("ui_file", UI_FILES, ids=lambda p: p.stem)
def test_files_are_what_the_generator_writes(ui_file):
    """Edits go through scripts/make_workflows.py, so the two formats cannot drift apart."""
    nodes = WORKFLOWS[ui_file.stem]
    assert json.loads(ui_file.read_text()) == to_ui(nodes)
    assert json.loads(api_twin(ui_file).read_text()) == to_api(nodes)


def widget_names(info: dict) -> list[str]:
    names = []
    for section in ("required", "optional"):
        for name, spec in info["input"].get(section, {}).items():
            kind = spec[0]
            if len(spec) > 1 and isinstance(spec[1], dict) and spec[1].get("forceInput"):
                continue  # a socket only, no widget
            if isinstance(kind, list) or kind in WIDGET_TYPES:
                names.append(name)
                if len(spec) > 1 and isinstance(spec[1], dict) and spec[1].get("control_after_generate"):
                    names.append("control_after_generate")
    return names


@pytest.mark.parametrize("ui_file", UI_FILES, ids=lambda p: p.stem)
def test_node_types_exist_and_twins_name_the_same_types(comfy_server, ui_file):
    object_info = comfy_server.object_info()
    ui = json.loads(ui_file.read_text())
    api = json.loads(api_twin(ui_file).read_text())
    ui_types = sorted(n["type"] for n in ui["nodes"])
    assert ui_types == sorted(n["class_type"] for n in api.values())
    missing = sorted(set(ui_types) - set(object_info))
    assert missing == [], f"{ui_file.name}: node types unknown to the server: {missing}"
    for node in ui["nodes"]:
        info = object_info[node["type"]]
        linked = {i["name"] for i in node.get("inputs", []) if i.get("link") is not None}
        expected = widget_names(info)  # the frontend saves a value for every widget, linked ones too
        assert len(node["widgets_values"]) == len(expected), (node["type"], expected, node["widgets_values"])
        api_inputs = api[str(node["id"])]["inputs"]
        for name in expected:
            if name == "control_after_generate" or name in linked:
                continue
            spec = (info["input"].get("required", {}) | info["input"].get("optional", {}))[name]
            value = api_inputs[name]
            options = spec[0] if isinstance(spec[0], list) else (spec[1] or {}).get("options")
            if options is not None and name not in FILE_COMBOS:
                assert value in options, (node["type"], name, value)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and len(spec) > 1:
                assert spec[1].get("min", value) <= value <= spec[1].get("max", value), (node["type"], name)
