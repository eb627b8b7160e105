"""Train an L2P model: ``python training/launch.py --config run.toml`` or, distributed,
``accelerate launch [--num_processes N --num_machines M ...] training/launch.py --config run.toml``.
``--help`` lists every option with its description and default (from ``TrainConfig``'s fields).

Exit codes: 0 done (or stopped cleanly by SIGINT/SIGTERM after saving a checkpoint), 2 a bad config or
dataset (one line on stderr starting with ``error: ``, before step 1; or mid-run when no item of a size bucket
loads any more), 1 anything else (one ``error: `` line when another process of a distributed run died: within
``process_group_timeout_s`` at most, then ``--resume latest`` continues from the newest complete checkpoint).
Items that fail to load mid-run are skipped, not fatal (training/data.py).
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from training.config import launch_summary, parse_args  # noqa: E402
from training.contract import ERROR_PREFIX, to_toml  # noqa: E402


def refuse(error: Exception) -> int:
    """A refusal as its one stderr line (what L2PTrain shows) and exit code 2."""
    print(ERROR_PREFIX + " ".join(str(error).split("\n")), file=sys.stderr, flush=True)
    return 2


def print_dataset(cfg) -> int:
    """``--print-dataset``: the folder as the trainer reads it (sizes from the model's patch grid when given)."""
    from training.data import describe, scan_dataset

    if not cfg.dataset or not os.path.isdir(cfg.dataset):
        raise ValueError(f"dataset folder {cfg.dataset!r} does not exist: give it with --dataset DIR")
    multiple, width = 1, None
    if cfg.model:
        from l2p.sizes import side_multiple
        from training.model import model_header

        header = model_header(cfg.model)
        multiple, width = side_multiple(header.patch_size, header.head_variant), header.cap_feat_dim
    print(describe(scan_dataset(cfg.dataset, multiple, width), multiple, cfg.max_pixels))
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        cfg, args = parse_args(argv)
        if args.print_config:
            print(launch_summary(cfg, args.accelerate_config))
            print(to_toml(cfg), end="")
            return 0
        if args.print_dataset:
            return print_dataset(cfg)
        cfg.check()  # before torch is imported: a bad config is refused at once
        from training.data import DatasetError
        from training.trainer import Trainer, make_accelerator, prepare_dataset

        if args.cache_text:
            if not cfg.text_encoder:
                raise ValueError("--cache-text needs text_encoder: give the model's text encoder (--text-encoder FILE)")
            prepare_dataset(cfg, make_accelerator(cfg))
            return 0
        trainer = Trainer(cfg)
        trainer.begin()
    except ValueError as e:
        return refuse(e)
    try:
        trainer.train()
    except DatasetError as e:
        return refuse(e)
    except Exception as e:  # noqa: BLE001 (told apart below; anything else is re-raised)
        if not peer_lost(e):
            raise
        print(ERROR_PREFIX + f"another process of this distributed run stopped ({one_line(e)}); the newest complete "
              f"checkpoint in {cfg.output_dir} holds the progress: run the same launch with --resume latest",
              file=sys.stderr, flush=True)
        return 1
    return 0


# What the process group raises when a peer process dies or stops answering (gloo, NCCL, the store), as opposed
# to a bug in this process: told apart by type (torch.distributed.DistError) or by the backends' own words.
_PEER_WORDS = ("connection closed by peer", "connection reset by peer", "broken pipe", "nccl", "gloo",
               "timed out", "timeout")


def peer_lost(error: BaseException) -> bool:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return False
    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    return isinstance(error, RuntimeError) and any(w in str(error).lower() for w in _PEER_WORDS)


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:200]}"


if __name__ == "__main__":
    sys.exit(main())
