"""The training configuration on the command line: a TOML file with flag overrides.

    python training/launch.py --config run.toml [--steps 200 --lr 1e-4 ...] [--print-config]

Every field is also a flag (``--batch-size`` for ``batch_size``); flags win over the file. Checked before
any work starts, each problem as one line saying what to change. The schema itself (``TrainConfig``,
``to_toml``) is training/contract.py, shared with the L2PTrain node.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from .contract import TrainConfig, load_toml

__all__ = ["TrainConfig", "parse_args"]  # TrainConfig re-exported: it lives in training/contract.py


def _flag_type(f: dataclasses.Field):
    kind = f.type if isinstance(f.type, type) else {"int": int, "float": float, "bool": bool, "str": str}.get(
        str(f.type), str)
    if kind is bool:
        return lambda s: s.lower() in ("1", "true", "yes", "on")
    return kind


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, argparse.Namespace]:
    ap = argparse.ArgumentParser(prog="training/launch.py", description="Train an L2P pixel model.")
    ap.add_argument("--config", help="TOML file with TrainConfig fields")
    ap.add_argument("--print-config", action="store_true", help="print the merged config as TOML and exit")
    for f in dataclasses.fields(TrainConfig):
        if f.name != "extra":
            ap.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=_flag_type(f), default=None)
    args = ap.parse_args(argv)
    values: dict[str, Any] = load_toml(args.config) if args.config else {}
    for f in dataclasses.fields(TrainConfig):
        if getattr(args, f.name, None) is not None:
            values[f.name] = getattr(args, f.name)
    return TrainConfig(**values), args

