"""Prompt banks for L2P's synthetic dataset (paper §3.2): taxonomy -> prompts -> filter -> JSON Lines.

Pure Python (no ComfyUI, no torch): ``python -m dataset.prompts --n 10000 --seed 0 --out prompts.jsonl``.
"""

from .chat import ChatPromptWriter
from .checks import malformed_reason
from .compose import generate_prompt
from .filters import FilterReport, filter_prompts, load_blocklist
from .generate import generate_bank
from .records import PromptRecord, read_jsonl, write_jsonl
from .rules import MAX_CHARS, MIN_CHARS
from .taxonomy import Category, Taxonomy, load_taxonomy

__all__ = [
    "MAX_CHARS",
    "MIN_CHARS",
    "Category",
    "ChatPromptWriter",
    "FilterReport",
    "PromptRecord",
    "Taxonomy",
    "filter_prompts",
    "generate_bank",
    "generate_prompt",
    "load_blocklist",
    "load_taxonomy",
    "malformed_reason",
    "read_jsonl",
    "write_jsonl",
]
