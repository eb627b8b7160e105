"""Build a filtered prompt bank: ``python -m dataset.prompts --n 10000 --seed 0 --out prompts.jsonl``.

Offline by default (seeded templates); ``--endpoint URL --model NAME`` lets an OpenAI-compatible chat server
write the prompts instead, falling back to the offline prompt per item. Errors are one line, exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from .chat import ChatPromptWriter
from .filters import filter_prompts, load_blocklist
from .generate import generate_bank
from .records import write_jsonl
from .taxonomy import load_taxonomy

API_KEY_ENV = "L2P_CHAT_API_KEY"


class UsageError(Exception):
    """A bad argument or an unusable path: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's default prints the whole usage block
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m dataset.prompts", description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10000, help="prompts to generate (default 10000, the paper's count)")
    p.add_argument("--seed", type=int, default=0, help="bank seed: category order and per-prompt image seeds")
    p.add_argument("--out", required=True, help="output .jsonl file (written atomically)")
    p.add_argument("--taxonomy", help="taxonomy JSON (default: the shipped 4/17/1000+ taxonomy)")
    p.add_argument("--endpoint", help="OpenAI-compatible chat server URL (needs --model)")
    p.add_argument("--model", help="chat model name the endpoint serves")
    p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV),
                   help=f"bearer token for the endpoint (default: ${API_KEY_ENV})")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per chat request (default 30)")
    p.add_argument("--workers", type=int, default=1, help="parallel chat requests (default 1)")
    p.add_argument("--no-filter", action="store_true", help="write every generated prompt, unchecked")
    p.add_argument("--near-duplicate", type=float, default=0.8, help="MinHash Jaccard threshold (default 0.8)")
    p.add_argument("--blocklist", help="blocklist file, one term per line (default: the shipped one)")
    return p


def _check(args: argparse.Namespace) -> None:
    if args.n < 1:
        raise UsageError(f"--n must be at least 1, got {args.n}")
    if bool(args.endpoint) != bool(args.model):
        raise UsageError("--endpoint and --model go together: give both, or neither for the offline generator")
    if args.timeout <= 0 or args.workers < 1:
        raise UsageError("--timeout must be positive and --workers at least 1")
    if not 0 < args.near_duplicate <= 1:
        raise UsageError(f"--near-duplicate must be in (0, 1], got {args.near_duplicate}")
    folder = os.path.dirname(os.path.abspath(args.out))
    if os.path.isdir(args.out):
        raise UsageError(f"--out {args.out} is a folder: give a file path such as {args.out}/prompts.jsonl")
    if not os.path.isdir(folder):
        raise UsageError(f"output folder {folder} does not exist: create it or choose another --out")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"output folder {folder} is not writable: choose another --out")


def run(args: argparse.Namespace) -> None:
    _check(args)
    try:
        taxonomy = load_taxonomy(args.taxonomy)
        blocklist = load_blocklist(args.blocklist)
        writer = ChatPromptWriter(args.endpoint, args.model, args.timeout, args.api_key) if args.endpoint else None
    except (OSError, ValueError) as e:
        raise UsageError(str(e)) from None
    start = time.perf_counter()
    records = generate_bank(args.n, args.seed, taxonomy, writer, workers=args.workers)
    if writer:
        print(f"chat: {writer.requests} requests to {writer.url}, {writer.fallbacks} fell back to the offline "
              "generator")
    if not args.no_filter:
        records, report = filter_prompts(records, near_duplicate=args.near_duplicate, blocklist=blocklist)
        print(report)
    try:
        count = write_jsonl(args.out, records)
    except OSError as e:
        raise UsageError(f"cannot write {args.out}: {e.strerror or e}") from None
    print(f"wrote {count} prompts over {len(taxonomy.leaves())} categories to {args.out} "
          f"in {time.perf_counter() - start:.1f} s")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        run(build_parser().parse_args(argv))
    except UsageError as e:
        print(f"python -m dataset.prompts: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
