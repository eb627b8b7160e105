"""Model folders and safe reading of weight files (safetensors only: never pickle)."""

from __future__ import annotations

import os

import folder_paths
import safetensors
import torch

L2P_FOLDER = "l2p"
SAFETENSORS = {".safetensors", ".sft"}


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


def load_safetensors(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read every tensor of a .safetensors file; refuse anything else with a one-line reason."""
    name = os.path.basename(path)
    if os.path.splitext(path)[1].lower() not in SAFETENSORS:
        raise ValueError(f"{name} is not a .safetensors file: only safetensors weights are loaded (no pickle); "
                         "convert it to safetensors first")
    try:
        with safetensors.safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for bad headers and short files
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{name} is truncated or corrupt ({reason}): download or copy it again") from None
    return sd, metadata
