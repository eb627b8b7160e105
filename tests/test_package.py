"""The pack's contract with its surroundings: importable without ComfyUI, l2p/ free of ComfyUI, metadata."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys
import tomllib

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_pack_imports_outside_comfyui():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('pack', {str(REPO / '__init__.py')!r}, "
        f"submodule_search_locations=[{str(REPO)!r}])\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['pack'] = m; spec.loader.exec_module(m)\n"
        "import pack.l2p.format.layouts, pack.l2p.head\n"
        "assert m.WEB_DIRECTORY == './js' and not hasattr(m, 'comfy_entrypoint')\n"
        "assert not any(k == 'comfy' or k.startswith(('comfy.', 'comfy_api')) for k in sys.modules), 'comfy imported'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def absolute_imports(path: pathlib.Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.append(node.module or "")
    return names


def repo_imports(path: pathlib.Path) -> set[str]:
    """The repository's top-level folders a file imports, relative imports resolved (``..l2p.head`` -> ``l2p``)."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    tops: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            tops |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = parts[: len(parts) - node.level] if node.level else []
            if node.level and len(parts) - node.level < 0:
                continue
            names = [*base, *(node.module or "").split(".")] if node.module else base
            if names:
                tops.add(names[0])
            elif node.level:  # ``from .. import x`` at the repository root names folders
                tops |= {a.name for a in node.names}
    return tops & FOLDERS


FOLDERS = {"l2p", "nodes", "dataset", "harness", "training", "shapes_world", "scripts", "bench", "tests"}
SHIPPED = ("l2p", "nodes", "dataset", "harness", "training", "shapes_world", "scripts")


def files_in(*folders: str) -> list[pathlib.Path]:
    return [p for d in folders for p in sorted((REPO / d).rglob("*.py"))]


def test_l2p_never_imports_comfyui():
    for path in files_in("l2p"):
        names = absolute_imports(path)
        assert not [n for n in names if n.split(".")[0] in ("comfy", "comfy_api", "folder_paths", "nodes")], path


def test_l2p_is_the_method_only():
    """l2p/ imports nothing of the pack outside itself, so the method stays usable anywhere."""
    offenders = {p.relative_to(REPO).as_posix(): repo_imports(p) - {"l2p"} for p in files_in("l2p")}
    assert not {k: v for k, v in offenders.items() if v}, offenders


def test_layering():
    """training/ never imports the ComfyUI glue; dataset/ and harness/ neither; harness/ needs nothing of the
    method; nothing shipped imports tests/ or bench/."""
    rules = {"training": {"nodes", "scripts"}, "dataset": {"nodes", "training", "scripts"},
             "harness": {"nodes", "training", "l2p", "dataset", "shapes_world", "scripts"},
             **{d: {"tests", "bench"} for d in SHIPPED}}
    broken = {}
    for folder in SHIPPED:
        banned = rules.get(folder, set()) | {"tests", "bench"}
        for path in files_in(folder):
            if bad := repo_imports(path) & banned:
                broken[path.relative_to(REPO).as_posix()] = sorted(bad)
    assert not broken, broken


def test_demo_world_only_behind_demo_nodes():
    """The shapes world (demo and replication only) is reachable from the nodes only through nodes/demo_world.py,
    whose nodes all sit in the L2P/demo category; no other shipped part of the pack imports it."""
    users = sorted(p.relative_to(REPO).as_posix() for p in files_in("l2p", "nodes", "dataset", "harness", "training")
                   if "shapes_world" in repo_imports(p))
    assert users == ["nodes/demo_world.py"], users
    tree = ast.parse((REPO / "nodes" / "demo_world.py").read_text())
    constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                 for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)}
    categories = [constants.get(k.value.id) if isinstance(k.value, ast.Name) else getattr(k.value, "value", None)
                  for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "Schema"
                  for k in n.keywords if k.arg == "category"]
    assert len(categories) == 2 and set(categories) == {"L2P/demo"}, categories
    importers = sorted(p.relative_to(REPO).as_posix() for p in files_in("nodes")
                       if "demo_world" in p.read_text() and "import" in p.read_text() and p.name != "demo_world.py")
    assert importers == ["nodes/__init__.py"], importers


def test_core_internals_only_in_the_seam_module():
    """ComfyUI's internals (``comfy.*``) are used in one module, nodes/comfy_core.py, whose docstring lists each
    seam; the other nodes use only the public surfaces (comfy_api.latest, folder_paths, server, nodes)."""
    seam = REPO / "nodes" / "comfy_core.py"
    shipped = files_in("nodes", "l2p", "dataset", "training", "shapes_world")  # harness/ drives ComfyUI, not the pack
    users = [p.relative_to(REPO).as_posix() for p in shipped
             if any(n == "comfy" or n.startswith("comfy.") for n in absolute_imports(p))]
    assert users == ["nodes/comfy_core.py"], users
    doc = ast.get_docstring(ast.parse(seam.read_text()))
    assert all(f"S{i} " in doc for i in range(1, 11)) and "TESTED_COMFYUI" in doc


def test_pyproject_metadata():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    comfy = meta["tool"]["comfy"]
    assert {"PublisherId", "DisplayName", "Icon"} <= set(comfy) and comfy["requires-comfyui"] == ">=0.3.75,<0.39"
    project = meta["project"]
    every = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    assert not [d for d in every if d.split(">")[0].split("=")[0].strip().lower() in ("torch", "torchvision", "comfy")]
    specs = [d.split(";")[0] for d in every]  # environment markers may compare versions
    assert all(">=" in d and "==" not in d and "<" not in d for d in specs), every
    assert not [d for d in project["dependencies"] if d.startswith(("accelerate", "diffusers"))]
