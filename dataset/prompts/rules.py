"""The prompt rules shared by the offline generator, the chat writer's system message and the filters.

The paper's prompts sit between 200 and 350 characters (§3.2, Figure 2c) and describe one category with
dense detail; keeping the rules in one place means an LLM-written bank and an offline one obey the same window.
"""

from __future__ import annotations

import hashlib

MIN_CHARS = 200
MAX_CHARS = 350

RULES = (
    "Describe one image in plain English prose, one paragraph, no lists, no quotation marks.",
    "Name the category explicitly and make it the clear main subject.",
    "Cover the subject's framing and attributes, the setting, the composition, the lighting and the visual style.",
    "Keep it concrete and visual; no text to render in the image, no real people's names, nothing unsafe.",
    f"Length: between {MIN_CHARS} and {MAX_CHARS} characters, spaces included.",
)


def derive_seed(*parts: object) -> int:
    """A stable 32-bit seed from any parts (never Python's salted ``hash``): same parts, same seed, any process."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 2**32
