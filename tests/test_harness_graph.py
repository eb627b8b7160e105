"""harness/graph.py on the shipped API workflows: nodes found by type, copies edited, the caller's graph intact,
and one-line errors that name the node type."""

from __future__ import annotations

import copy
import json
import pathlib

import pytest

from harness.graph import check_api_format, inline_outputs, node_of, nodes_of, replace_node, set_inputs

API = pathlib.Path(__file__).resolve().parents[1] / "workflows" / "api"
UI = API.parent / "l2p_shapes_demo.json"


def load(name: str) -> dict:
    return json.loads((API / f"{name}.api.json").read_text())


def test_every_shipped_workflow_has_one_node_per_id_found_by_type():
    for path in sorted(API.glob("*.api.json")):
        graph = json.loads(path.read_text())
        found = sorted(nid for t in {n["class_type"] for n in graph.values()} for nid in nodes_of(graph, t))
        assert found == sorted(graph), path.name


def test_node_of_finds_the_one_node_and_where_narrows_a_type():
    demo = load("l2p_shapes_demo")
    assert node_of(demo, "KSampler") == "7"
    assert nodes_of(demo, "L2PDemoTextEncode") == ["2", "3"]
    assert node_of(demo, "L2PDemoTextEncode", where=lambda n: not n["inputs"]["text"]) == "3"
    assert nodes_of(demo, "NoSuchNode") == []


@pytest.mark.parametrize(("class_type", "where", "message"), [
    ("L2PPromptBank", None, "the workflow has no L2PPromptBank node, expected exactly one"),
    ("L2PDemoTextEncode", None, "the workflow has 2 L2PDemoTextEncode nodes (2, 3), expected exactly one"),
    ("KSampler", lambda n: False, "the workflow has no KSampler node selected by `where`, expected exactly one"),
])
def test_missing_or_ambiguous_type_is_one_line_naming_it(class_type, where, message):
    demo = load("l2p_shapes_demo")
    with pytest.raises(ValueError) as info:
        set_inputs(demo, class_type, where=where, seed=1)
    assert str(info.value) == message


def test_set_inputs_edits_a_copy_only():
    demo = load("l2p_shapes_demo")
    before = copy.deepcopy(demo)
    out = set_inputs(demo, "KSampler", seed=7, steps=3)
    out = set_inputs(out, "L2PDemoTextEncode", where=lambda n: bool(n["inputs"]["text"]), text="a blue circle")
    assert demo == before
    assert out["7"]["inputs"] == {**before["7"]["inputs"], "seed": 7, "steps": 3}
    assert out["2"]["inputs"]["text"] == "a blue circle" and out["3"]["inputs"]["text"] == ""
    assert {k: v for k, v in out.items() if k not in ("2", "7")} == {k: v for k, v in before.items()
                                                                      if k not in ("2", "7")}
    out["5"]["inputs"]["model"][0] = "changed"  # nested lists are copies too
    assert demo["5"]["inputs"]["model"] == ["4", 0]


def test_inline_outputs_replaces_each_link_by_its_slot_value_and_drops_the_node():
    graph = load("l2p_make_dataset")
    before = copy.deepcopy(graph)
    out = inline_outputs(graph, "L2PPromptBank", ["a prompt", 11, "a/b/c", 5])
    assert graph == before and "4" not in out and len(out) == len(graph) - 1
    assert out["5"]["inputs"]["text"] == "a prompt" and out["9"]["inputs"]["seed"] == 11
    writer = out["11"]["inputs"]
    assert (writer["prompt"], writer["seed"], writer["category"], writer["index"]) == ("a prompt", 11, "a/b/c", 5)
    assert writer["images"] == ["10", 0]  # links to other nodes stay
    assert not [v for n in out.values() for v in n["inputs"].values() if isinstance(v, list) and v[0] == "4"]
    with pytest.raises(ValueError, match="links output 3 of L2PPromptBank, which has 2"):
        inline_outputs(graph, "L2PPromptBank", ["a prompt", 11])


def test_replace_node_keeps_only_the_named_inputs():
    graph = load("l2p_make_dataset")
    before = copy.deepcopy(graph)
    out = replace_node(graph, "L2PDatasetWriter", "PreviewImage", keep=("images",))
    assert graph == before
    assert out["11"] == {"class_type": "PreviewImage", "inputs": {"images": ["10", 0]}}
    assert nodes_of(out, "L2PDatasetWriter") == []
    with pytest.raises(ValueError, match="L2PDatasetWriter node has no input 'pixels'"):
        replace_node(graph, "L2PDatasetWriter", "PreviewImage", keep=("pixels",))


def test_ui_format_is_refused_with_the_fix():
    ui = json.loads(UI.read_text())
    assert isinstance(ui["nodes"], list)
    for call in (lambda: check_api_format(ui), lambda: nodes_of(ui, "KSampler"), lambda: set_inputs(ui, "KSampler")):
        with pytest.raises(ValueError, match=r"UI-format workflow: export it with 'Export \(API\)'"):
            call()
    check_api_format(load("l2p_tiny_demo"))  # an API graph passes
