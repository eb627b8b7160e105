"""Reading and writing weights without holding two copies: lazy sources and a streaming safetensors writer.

A *source* exposes every tensor's shape and dtype as meta tensors (for planning: config inference, key
maps, policies) and loads one real tensor at a time. It is a plain dict in memory, one .safetensors file,
or a diffusers folder of shards (``config.json`` + ``*.safetensors`` [+ index]), as Z-Image ships.

The writer follows the safetensors format (8-byte little-endian header size, JSON header, raw bytes) and
writes tensor after tensor, so a 6B conversion never holds the output in memory; it writes through
``atomic.atomic_file``, so a reader never sees half a file and nothing saved is overwritten half way.
Only safetensors are read (never pickle); every reader here refuses a bad file with the same one-line errors.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import torch

from .atomic import atomic_file

SAFETENSORS_EXTENSIONS = (".safetensors", ".sft")

_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}


class TensorSource(Protocol):
    meta: dict[str, torch.Tensor]  # name -> meta tensor (shape and dtype only)
    metadata: dict[str, str]

    def get(self, name: str) -> torch.Tensor: ...


class DictSource:
    """Tensors already in memory."""

    def __init__(self, sd: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None):
        self._sd = dict(sd)
        self.meta = {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in self._sd.items()}
        self.metadata = dict(metadata or {})

    def get(self, name: str) -> torch.Tensor:
        return self._sd[name]


@contextmanager
def _one_line_errors(path: str) -> Iterator[None]:
    """safetensors' own errors (bad header, short file) -> ValueError, one line naming the file."""
    try:
        yield
    except Exception as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{os.path.basename(path)} is truncated or corrupt ({reason}): download or copy it "
                         "again") from None


def _check_name(path: str) -> None:
    if os.path.splitext(path)[1].lower() not in SAFETENSORS_EXTENSIONS:
        raise ValueError(f"{os.path.basename(path)} is not a .safetensors file: only safetensors weights are "
                         "loaded (no pickle); convert it to safetensors first")


def read_safetensors(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Every tensor and the metadata of one .safetensors file; refuses anything else with a one-line reason."""
    import safetensors

    _check_name(path)
    with _one_line_errors(path), safetensors.safe_open(path, framework="pt", device="cpu") as f:
        metadata = f.metadata() or {}
        sd = {k: f.get_tensor(k) for k in f.keys()}
    return sd, metadata


class SafetensorsSource:
    """One or more .safetensors files read lazily (memory-mapped): a tensor is loaded when asked for."""

    def __init__(self, files: Iterable[str], config: Mapping | None = None):
        import safetensors

        self.files = sorted(files)
        self.config = dict(config or {})
        self.meta: dict[str, torch.Tensor] = {}
        self.metadata: dict[str, str] = {}
        self._where: dict[str, object] = {}
        self._handles = []
        for path in self.files:
            with _one_line_errors(path):
                handle = safetensors.safe_open(path, framework="pt", device="cpu")
                names = list(handle.keys())
                slices = {k: handle.get_slice(k) for k in names}
            self._handles.append(handle)
            self.metadata.update(handle.metadata() or {})
            for k in names:
                s = slices[k]
                self.meta[k] = torch.empty(s.get_shape(), dtype=_dtype_from_name(s.get_dtype()), device="meta")
                self._where[k] = handle

    def get(self, name: str) -> torch.Tensor:
        return self._where[name].get_tensor(name)


def _dtype_from_name(name: str) -> torch.dtype:
    for dtype, short in _DTYPES.items():
        if short == name:
            return dtype
    raise ValueError(f"tensor dtype {name} is not supported")


def open_source(path: str) -> SafetensorsSource:
    """A .safetensors file, or a diffusers folder (``transformer/`` inside a pipeline folder is found too)."""
    if os.path.isfile(path):
        _check_name(path)
        return SafetensorsSource([path])
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path} does not exist: give a .safetensors file or a diffusers model folder")
    folder = path
    if not os.path.isfile(os.path.join(folder, "config.json")) and os.path.isdir(os.path.join(folder, "transformer")):
        folder = os.path.join(folder, "transformer")
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise ValueError(f"{path} has no config.json: a diffusers model folder has config.json next to its "
                         "*.safetensors shards")
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    files = [os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".safetensors")]
    index = [n for n in os.listdir(folder) if n.endswith(".safetensors.index.json")]
    if index:
        with open(os.path.join(folder, index[0]), encoding="utf-8") as f:
            wanted = set(json.load(f).get("weight_map", {}).values())
        missing = sorted(wanted - {os.path.basename(p) for p in files})
        if missing:
            raise ValueError(f"{path} is missing shard {missing[0]} (of {len(wanted)}): download the folder again")
        files = [p for p in files if os.path.basename(p) in wanted]
    if not files:
        raise ValueError(f"{path} has config.json but no .safetensors weights: download the weights too")
    return SafetensorsSource(files, config=config)


def tensors_hash(source: TensorSource) -> str:
    """sha256 over names, dtypes, shapes and bytes in name order: the same weights give the same hash."""
    h = hashlib.sha256()
    for name in sorted(source.meta):
        t = source.get(name)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(_as_bytes(t))
    return h.hexdigest()


def _as_bytes(t: torch.Tensor) -> memoryview:
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")


@dataclass(frozen=True)
class PlannedTensor:
    """One output tensor: its name, a meta tensor with its shape and dtype, and how to make it."""

    name: str
    meta: torch.Tensor
    make: Callable[[], torch.Tensor]


Progress = Callable[[Iterator[PlannedTensor], int], Iterator[PlannedTensor]]


def write_safetensors(path: str, items: Iterable[PlannedTensor], metadata: Mapping[str, object] | None = None,
                      progress: Progress | None = None, overwrite: bool = True) -> None:
    """Stream ``items`` into ``path`` atomically (``atomic_file``). With ``overwrite=False`` an existing ``path``
    is never replaced, even by a concurrent writer (FileExistsError)."""
    items = list(items)
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    offset = 0
    for item in items:
        if item.meta.dtype not in _DTYPES:
            raise ValueError(f"{item.name}: dtype {item.meta.dtype} cannot be stored in safetensors")
        size = item.meta.numel() * item.meta.element_size()
        header[item.name] = {"dtype": _DTYPES[item.meta.dtype], "shape": list(item.meta.shape),
                             "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_file(path, overwrite=overwrite, suffix=".safetensors") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for item in progress(iter(items), len(items)) if progress else items:
            t = item.make()
            if tuple(t.shape) != tuple(item.meta.shape) or t.dtype != item.meta.dtype:
                raise RuntimeError(f"{item.name}: made {tuple(t.shape)} {t.dtype}, planned "
                                   f"{tuple(item.meta.shape)} {item.meta.dtype}")
            f.write(_as_bytes(t))
            del t


def plan_dict(sd: Mapping[str, torch.Tensor], dtype: torch.dtype | None = None) -> list[PlannedTensor]:
    """In-memory tensors as a write plan (floating tensors optionally cast to ``dtype``)."""
    def cast(v: torch.Tensor) -> torch.Tensor:
        return v.to(dtype) if dtype is not None and v.is_floating_point() else v

    return [PlannedTensor(k, torch.empty(v.shape, dtype=cast(v).dtype, device="meta"), lambda v=v: cast(v))
            for k, v in sd.items()]


def save_safetensors_atomic(sd: Mapping[str, torch.Tensor], path: str, metadata: Mapping[str, object] | None = None,
                            dtype: torch.dtype | None = None) -> None:
    """Write a state dict atomically (``atomic_file``)."""
    write_safetensors(path, plan_dict(sd, dtype), metadata)
