"""Edit an API-format ComfyUI graph (``{node_id: {"class_type", "inputs"}}``) by node type, not by node id.

Node ids differ between a shipped workflow and a user's own export of it, but the node types do not; the demo,
the dataset driver and the replication all address nodes this way. Every function returns a new graph and
leaves the caller's untouched; a missing or ambiguous node type is a one-line ValueError naming it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Graph = dict[str, dict[str, Any]]
Where = Callable[[dict[str, Any]], bool]

UI_FORMAT = "this is a UI-format workflow: export it with 'Export (API)' and pass that file"


def check_api_format(graph: dict[str, Any]) -> None:
    """Raise ValueError for a UI-format workflow (``{"nodes": [...], "links": ...}``), the usual wrong file."""
    if isinstance(graph.get("nodes"), list):
        raise ValueError(UI_FORMAT)


def nodes_of(graph: dict[str, Any], class_type: str, where: Where | None = None) -> list[str]:
    """Ids of the nodes of ``class_type`` (and, with ``where``, for which ``where(node)`` holds), in graph order."""
    check_api_format(graph)
    return [nid for nid, node in graph.items()
            if isinstance(node, dict) and node.get("class_type") == class_type and (where is None or where(node))]


def node_of(graph: dict[str, Any], class_type: str, where: Where | None = None) -> str:
    """The id of the one node of ``class_type`` (see ``nodes_of``); ValueError if there is none or several."""
    ids = nodes_of(graph, class_type, where)
    if len(ids) != 1:
        which = " selected by `where`" if where is not None else ""
        found = f"{len(ids)} {class_type} nodes{which} ({', '.join(ids)})" if ids else f"no {class_type} node{which}"
        raise ValueError(f"the workflow has {found}, expected exactly one")
    return ids[0]


def set_inputs(graph: dict[str, Any], class_type: str, /, *, where: Where | None = None, **inputs: Any) -> Graph:
    """A copy with ``inputs`` set on the one node of ``class_type`` (literal values or ``[node_id, slot]`` links)."""
    nid = node_of(graph, class_type, where)
    out = copy.deepcopy(graph)
    out[nid].setdefault("inputs", {}).update(inputs)
    return out


def replace_node(graph: dict[str, Any], class_type: str, new_class_type: str, keep: Sequence[str] = ()) -> Graph:
    """A copy where the one node of ``class_type`` becomes a ``new_class_type`` node with the inputs in ``keep``."""
    nid = node_of(graph, class_type)
    out = copy.deepcopy(graph)
    old = out[nid].get("inputs", {})
    missing = [name for name in keep if name not in old]
    if missing:
        raise ValueError(f"the workflow's {class_type} node has no input {missing[0]!r}")
    out[nid] = {"class_type": new_class_type, "inputs": {name: old[name] for name in keep}}
    return out


def inline_outputs(graph: dict[str, Any], class_type: str, values: Sequence[Any]) -> Graph:
    """A copy without the one node of ``class_type``: every link to its output slot ``i`` becomes ``values[i]``."""
    nid = node_of(graph, class_type)
    out = copy.deepcopy(graph)
    del out[nid]
    for node in out.values():
        inputs = node.get("inputs", {}) if isinstance(node, dict) else {}
        for name, value in inputs.items():
            if isinstance(value, list) and len(value) == 2 and str(value[0]) == nid:
                slot = int(value[1])
                if not 0 <= slot < len(values):
                    raise ValueError(f"the workflow links output {slot} of {class_type}, which has {len(values)}")
                inputs[name] = values[slot]
    return out


TINY_DEMO = Path(__file__).resolve().parents[1] / "workflows" / "api" / "l2p_tiny_demo.api.json"
SMALL = {"6": {"width": 96, "height": 64, "batch_size": 1}, "7": {"steps": 3}}  # a few seconds on a CPU


def with_step_cache(graph: dict[str, Any], node: str, threshold: float, sampler: str = "KSampler") -> Graph:
    """A copy with a stock step-cache node (``EasyCache`` / ``LazyCache``: verbose, the nodes' default range)
    between the model and the one ``sampler`` node."""
    sid = node_of(graph, sampler)
    out = copy.deepcopy(graph)
    out["cache"] = {"class_type": node, "inputs": {"model": out[sid]["inputs"]["model"], "reuse_threshold": threshold,
                                                   "start_percent": 0.15, "end_percent": 0.95, "verbose": True}}
    out[sid]["inputs"]["model"] = ["cache", 0]
    return out


def tiny_demo_prompt(changes: dict[str, dict[str, Any]] | None = None, small: bool = True) -> Graph:
    """The shipped tiny-demo API workflow (``TINY_DEMO``), by default at a small size with few steps (``SMALL``).

    ``changes``: ``{node id: {input: value}}`` merged into that node's inputs, or ``{node id: a whole node}``
    (a dict with ``class_type``) replacing it."""
    graph = json.loads(TINY_DEMO.read_text())
    for edit in (SMALL if small else {}), (changes or {}):
        for node, inputs in edit.items():
            if "class_type" in inputs:
                graph[node] = copy.deepcopy(inputs)
            else:
                graph[node]["inputs"].update(inputs)
    return graph
