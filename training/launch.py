"""Train an L2P model: ``python training/launch.py --config run.toml`` or, distributed,
``accelerate launch [--num_processes N --num_machines M ...] training/launch.py --config run.toml``.
``--help`` lists every option with its description and default (from ``TrainConfig``'s fields).

Exit codes: 0 done (or stopped cleanly by SIGINT/SIGTERM after saving a checkpoint), 2 a bad config or
dataset (one line on stderr starting with ``error: ``, before step 1; or mid-run when no item of a size bucket
loads any more), 1 anything else. Items that fail to load mid-run are skipped, not fatal (training/data.py).
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from training.config import parse_args  # noqa: E402
from training.contract import ERROR_PREFIX, to_toml  # noqa: E402


def refuse(error: Exception) -> int:
    """A refusal as its one stderr line (what L2PTrain shows) and exit code 2."""
    print(ERROR_PREFIX + " ".join(str(error).split("\n")), file=sys.stderr, flush=True)
    return 2


def main(argv: list[str] | None = None) -> int:
    try:
        cfg, args = parse_args(argv)
        if args.print_config:
            print(to_toml(cfg), end="")
            return 0
        cfg.check()  # before torch is imported: a bad config is refused at once
        from training.data import DatasetError
        from training.trainer import Trainer

        trainer = Trainer(cfg)
        trainer.begin()
    except ValueError as e:
        return refuse(e)
    try:
        trainer.train()
    except DatasetError as e:
        return refuse(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
