"""The training configuration on the command line: a TOML file with flag overrides.

    python training/launch.py --config run.toml [--steps 200 --lr 1e-4 ...] [--print-config] [--print-dataset]
        [--cache-text] [--help]

Every field is also a flag (``--batch-size`` for ``batch_size``); flags win over the file. Each flag's help
line and default come from the field itself (``TrainConfig``'s field metadata), so ``--help`` and the schema
cannot drift apart. Checked before any work starts, each problem as one line saying what to change. The
schema itself (``TrainConfig``, ``to_toml``) is training/contract.py, shared with the L2PTrain node.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, NoReturn

from .contract import ERROR_PREFIX, TrainConfig, help_text, load_toml

__all__ = ["TrainConfig", "parse_args"]  # TrainConfig re-exported: it lives in training/contract.py

_TYPES = {"int": int, "float": float, "bool": bool, "str": str}
_METAVARS = {int: "N", float: "X", bool: "BOOL", str: "TEXT"}


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def _flag_type(f: dataclasses.Field) -> type:
    return f.type if isinstance(f.type, type) else _TYPES.get(str(f.type), str)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """A bad flag is refused like a bad config value: one line, exit code 2."""
        self.exit(2, f"{ERROR_PREFIX}{message}: see {self.prog} --help\n")


def parser() -> argparse.ArgumentParser:
    extra = next(f for f in dataclasses.fields(TrainConfig) if f.name == "extra")
    ap = _Parser(prog="training/launch.py", description="Train an L2P pixel model. Every option is also a key of "
                 "the --config TOML file (its name with _ for -); options given here win over the file.",
                 epilog=f"TOML only: [extra], {extra.metadata['help']}. Exit codes: 0 done or stopped cleanly "
                        "(SIGINT/SIGTERM, after a checkpoint), 2 a bad config or dataset (one line on stderr "
                        f"starting with {ERROR_PREFIX.strip()!r}), 1 anything else (also one such line when another "
                        "process of a distributed run died: then --resume latest continues).")
    ap.add_argument("--config", metavar="TOML", help="TOML file with these options as keys")
    ap.add_argument("--print-config", action="store_true", help="print the merged config as TOML and exit")
    ap.add_argument("--accelerate-config", metavar="YAML", help="with --print-config: the accelerate config the run "
                    "will be launched with, whose process and machine counts name the effective world size")
    ap.add_argument("--print-dataset", action="store_true", help="list the dataset's layout, items per size bucket "
                    "and every skipped item with its reason, and exit")
    ap.add_argument("--cache-text", action="store_true", help="only cache the missing text conditioning with "
                    "text_encoder (every process of a distributed launch takes a share), and exit")
    for f in dataclasses.fields(TrainConfig):
        if f.name == "extra":
            continue  # a TOML table only
        kind = _flag_type(f)
        ap.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=_bool if kind is bool else kind,
                        default=None, metavar=f.metadata.get("metavar") or _METAVARS.get(kind, "VALUE"),
                        help=help_text(f).replace("%", "%%"))
    return ap


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, argparse.Namespace]:
    args = parser().parse_args(argv)
    values: dict[str, Any] = load_toml(args.config) if args.config else {}
    for f in dataclasses.fields(TrainConfig):
        if getattr(args, f.name, None) is not None:
            values[f.name] = getattr(args, f.name)
    return TrainConfig(**values), args


def launch_summary(cfg: TrainConfig, accelerate_config: str | None = None) -> str:
    """``# effective launch: ...`` for --print-config: the world size (from ``accelerate_config``'s process and
    machine counts, else this launch's WORLD_SIZE), the per-device and global batch; a DeepSpeed config whose
    accumulation or clipping disagrees with the run is named, since DeepSpeed's own values would win."""
    import os

    notes = []
    if accelerate_config:
        import yaml

        try:
            with open(accelerate_config, encoding="utf-8") as f:
                launch = yaml.safe_load(f) or {}
            world, machines = int(launch.get("num_processes", 1)), int(launch.get("num_machines", 1))
        except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError) as e:
            raise ValueError(f"accelerate config {accelerate_config} cannot be read ({e}): give the YAML file "
                             "that accelerate launch --config_file takes") from None
        how = f"{machines} machine{'s' if machines > 1 else ''} x {world // max(machines, 1)} processes, " \
              f"{launch.get('distributed_type', 'NO')}, from {os.path.basename(accelerate_config)}"
        ds = launch.get("deepspeed_config") or {}
        for key, mine in (("gradient_accumulation_steps", cfg.gradient_accumulation_steps),
                          ("gradient_clipping", cfg.max_grad_norm)):
            if key in ds and float(ds[key]) != float(mine):
                notes.append(f"deepspeed {key} {ds[key]} differs from this run's {mine}")
    else:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        how = "this launch" if "WORLD_SIZE" in os.environ else "one process; --accelerate-config YAML names another"
    batch = cfg.batch_size * world * cfg.gradient_accumulation_steps
    line = (f"# effective launch: world size {world} ({how}), per-device batch {cfg.batch_size}, gradient "
            f"accumulation {cfg.gradient_accumulation_steps}, global batch {batch}")
    return "\n".join([line] + [f"# warning: {n}" for n in notes])
