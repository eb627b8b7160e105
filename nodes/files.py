"""Model folders, and the reader the nodes load weight files with (safetensors only: never pickle)."""

from __future__ import annotations

import os

import folder_paths

# One reader for every weight file (``l2p/format/tensor_io.py``): its one-line errors are the nodes' errors.
from ..l2p.format.tensor_io import SAFETENSORS_EXTENSIONS
from ..l2p.format.tensor_io import read_safetensors as load_safetensors  # noqa: F401 (the nodes' name for it)

L2P_FOLDER = "l2p"
SAFETENSORS = set(SAFETENSORS_EXTENSIONS)
# The demo model trained on the shapes world ships with the pack (a few MB): listed after the user's folders.
SHIPPED_MODELS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "shapes_world", "models")


def register_l2p_folder() -> None:
    """Add models/l2p, keeping every path users gave for ``l2p`` in extra_model_paths.yaml."""
    default = os.path.join(folder_paths.models_dir, L2P_FOLDER)
    if L2P_FOLDER in folder_paths.folder_names_and_paths:
        paths, _ = folder_paths.folder_names_and_paths[L2P_FOLDER]
        if default not in paths:
            paths.append(default)
        folder_paths.folder_names_and_paths[L2P_FOLDER] = (paths, set(SAFETENSORS))
    else:
        folder_paths.folder_names_and_paths[L2P_FOLDER] = ([default], set(SAFETENSORS))
    for folder in (L2P_FOLDER, "text_encoders"):
        shipped = os.path.join(SHIPPED_MODELS, folder)
        if shipped not in folder_paths.get_folder_paths(folder):
            folder_paths.add_model_folder_path(folder, shipped)


def checkpoint_names() -> list[str]:
    """Safetensors files in models/l2p and models/diffusion_models (l2p first, no duplicates)."""
    names: list[str] = []
    for folder in (L2P_FOLDER, "diffusion_models"):
        for name in folder_paths.get_filename_list(folder):
            if os.path.splitext(name)[1].lower() in SAFETENSORS and name not in names:
                names.append(name)
    return names


def checkpoint_path(name: str) -> str:
    """Resolve a listed name inside its model folder (folder_paths refuses names that escape it)."""
    for folder in (L2P_FOLDER, "diffusion_models"):
        path = folder_paths.get_full_path(folder, name)
        if path is not None:
            return path
    raise FileNotFoundError(f"{name} is not in models/l2p or models/diffusion_models: refresh the node list "
                            "(press R) and pick a listed file")


def _is_diffusers_folder(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "config.json")) or os.path.isfile(
        os.path.join(path, "transformer", "config.json"))


def source_names() -> list[str]:
    """Latent sources in models/diffusion_models: safetensors files and diffusers folders (config.json + shards,
    listed once with a trailing '/', their shards not listed on their own)."""
    folders: list[str] = []
    for base in folder_paths.get_folder_paths("diffusion_models"):
        if os.path.isdir(base):
            folders += sorted(f"{d}/" for d in os.listdir(base) if _is_diffusers_folder(os.path.join(base, d)))
    files = [n for n in folder_paths.get_filename_list("diffusion_models")
             if os.path.splitext(n)[1].lower() in SAFETENSORS and n.replace(os.sep, "/").split("/")[0] + "/"
             not in folders]
    return files + folders


def source_path(name: str) -> str:
    """A listed source (file, or folder written with a trailing '/') resolved inside diffusion_models only."""
    if name.endswith("/"):
        rel = os.path.relpath(os.path.join("/", name.rstrip("/")), "/")  # the same clamp folder_paths uses
        for base in folder_paths.get_folder_paths("diffusion_models"):
            path = os.path.join(base, rel)
            if _inside(path, base) and _is_diffusers_folder(path):
                return path
    else:
        path = folder_paths.get_full_path("diffusion_models", name)
        if path is not None:
            return path
    raise FileNotFoundError(f"{name} is not in models/diffusion_models: refresh the node list (press R) and pick a "
                            "listed source")


def _inside(path: str, base: str) -> bool:
    path, base = os.path.realpath(path), os.path.realpath(base)
    return os.path.commonpath([path, base]) == base


def subpath(base: str, rel: str, what: str, example: str) -> str:
    """``base/rel`` for a relative name from a workflow; refuses anything that would leave ``base``."""
    clean = rel.strip().replace("\\", "/")
    if not clean or clean.startswith("/") or ".." in clean.split("/") or ":" in clean:
        raise ValueError(f"{what} {rel!r} must be a relative name inside {os.path.basename(base)}, e.g. {example}")
    path = os.path.join(base, clean)
    if not _inside(path, base):
        raise ValueError(f"{what} {rel!r} leaves {os.path.basename(base)}: use a name inside it, e.g. {example}")
    return path


def new_checkpoint_path(filename_prefix: str, folder: str = L2P_FOLDER) -> str:
    """models/<folder>/<prefix>_NNNNN.safetensors with the next free number (folder: l2p, or loras for a LoRA):
    never overwrites, never leaves the folder."""
    base = os.path.join(folder_paths.models_dir, folder)
    where, stem = os.path.split(subpath(base, filename_prefix, "filename_prefix", "my-l2p or converted/my-l2p"))
    os.makedirs(where, exist_ok=True)
    taken = set(os.listdir(where))
    n = 1
    while f"{stem}_{n:05d}.safetensors" in taken:
        n += 1
    return os.path.join(where, f"{stem}_{n:05d}.safetensors")
