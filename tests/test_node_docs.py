"""Every node the pack registers has a help page, a description and a tooltip on every input and output
(checked on the server's /object_info, which is what the frontend shows)."""

from __future__ import annotations

import pathlib

DOCS = pathlib.Path(__file__).resolve().parents[1] / "js" / "docs"
# Node ids are a public contract (saved workflows name them): once released, an id is never renamed or dropped.
RELEASED = {"L2PModelLoader", "L2PEmptyImage", "L2PTextEncoderLoader", "L2PSourceModelLoader", "L2PConvert",
            "L2PSaveCheckpoint", "L2PNoiseShift", "L2PPromptBank", "L2PDatasetWriter", "L2PHeadTiling", "L2PTrain",
            "L2PDemoTextEncode", "L2PDemoVAELoader", "L2PLoraFromLatent"}


def test_released_node_ids_stay(comfy_server):
    ours = {k for k, v in comfy_server.object_info().items() if "ComfyUI-L2P" in str(v.get("python_module", ""))}
    assert RELEASED <= ours, f"released node ids missing: {sorted(RELEASED - ours)}"
    assert all(k.startswith("L2P") for k in ours), sorted(ours)


def test_every_l2p_node_is_documented(comfy_server):
    info = {k: v for k, v in comfy_server.object_info().items() if k.startswith("L2P")}
    assert {"L2PModelLoader", "L2PSourceModelLoader", "L2PConvert", "L2PSaveCheckpoint"} <= set(info)
    for node_id, node in info.items():
        assert (DOCS / f"{node_id}.md").is_file(), f"{node_id} has no js/docs/{node_id}.md"
        assert node.get("description"), node_id
        for section in ("required", "optional"):
            for name, spec in node["input"].get(section, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
        tooltips = node.get("output_tooltips") or []
        assert len(tooltips) == len(node["output"]) and all(tooltips), f"{node_id} outputs lack tooltips"
