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


def test_l2p_never_imports_comfyui():
    for path in (REPO / "l2p").glob("*.py"):
        names = absolute_imports(path)
        assert not [n for n in names if n.split(".")[0] in ("comfy", "comfy_api", "folder_paths", "nodes")], path


def test_core_internals_only_in_the_seam_module():
    """ComfyUI's internals (``comfy.*``) are used in one module, nodes/comfy_core.py, whose docstring lists each
    seam; the other nodes use only the public surfaces (comfy_api.latest, folder_paths, server, nodes)."""
    seam = REPO / "nodes" / "comfy_core.py"
    shipped = [p for d in ("nodes", "l2p", "training", "shapes_world") for p in (REPO / d).rglob("*.py")]
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
