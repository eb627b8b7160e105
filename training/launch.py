"""Train an L2P model: ``python training/launch.py --config run.toml`` or, distributed,
``accelerate launch [--num_processes N --num_machines M ...] training/launch.py --config run.toml``.

Exit codes: 0 done (or stopped cleanly by SIGINT/SIGTERM after saving a checkpoint), 2 a bad config or
dataset (one line on stderr, before any work starts), 1 anything else.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from training.config import parse_args  # noqa: E402
from training.contract import to_toml  # noqa: E402
from training.trainer import Trainer  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    try:
        cfg, args = parse_args(argv)
        if args.print_config:
            print(to_toml(cfg), end="")
            return 0
        trainer = Trainer(cfg)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    trainer.train()
    return 0


if __name__ == "__main__":
    sys.exit(main())
