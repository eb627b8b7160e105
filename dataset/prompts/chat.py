"""Optional LLM prompt writer: any OpenAI-compatible chat endpoint, with the offline composer as a safety net.

The paper lets an LLM write the prompts from fixed rules (§3.2). A local server (llama.cpp, vLLM, Ollama...)
or a hosted API can play that part here; a bank must still come out complete, so every failed or
out-of-window reply is replaced by the offline prompt for the same (category, seed), counted and logged.
Only ``urllib`` is used: no new dependency.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import urllib.error
import urllib.parse
import urllib.request

from .compose import generate_prompt, prompt_hint
from .rules import MAX_CHARS, MIN_CHARS, RULES
from .taxonomy import Category

log = logging.getLogger(__name__)

SYSTEM_MESSAGE = (
    "You write prompts for a text-to-image model. Follow these rules:\n"
    + "\n".join(f"{i}. {rule}" for i, rule in enumerate(RULES, 1))
    + "\nReply with the prompt text only."
)
MAX_REPLY_BYTES = 1 << 20
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)


def chat_endpoint(url: str) -> str:
    """The completions URL: kept when it already ends in /chat/completions, else /v1/chat/completions appended."""
    parts = urllib.parse.urlparse(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"endpoint {url!r} is not an http(s) URL: pass e.g. http://127.0.0.1:8080")
    base = url.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    return base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")


def clean_reply(content: object) -> str:
    """The prompt inside a reply: drops think blocks, a JSON wrapper ({"prompt": ...}), outer quotes, line breaks."""
    if not isinstance(content, str):
        raise ValueError("reply has no text content")
    text = _THINK.sub("", content).strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("prompt"), str):
            text = data["prompt"]
    text = " ".join(text.split())
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


class ChatPromptWriter:
    """Callable ``(category, seed) -> prompt`` backed by a chat endpoint; thread-safe counters of what happened."""

    def __init__(self, url: str, model: str, timeout: float = 30, api_key: str | None = None):
        if not model:
            raise ValueError("no chat model name given: pass the model the endpoint serves")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.url = chat_endpoint(url)
        self.model = model
        self.timeout = float(timeout)
        self.api_key = api_key
        self.requests = 0
        self.fallbacks = 0
        self._lock = threading.Lock()

    def _ask(self, category: Category, seed: int) -> str:
        user = (f"Category: {category.name} (class: {category.major} > {category.sub}).\n"
                f"Optional angle for variety: {prompt_hint(category, seed)}.\n"
                f"Write one prompt of {MIN_CHARS}-{MAX_CHARS} characters.")
        body = {"model": self.model, "temperature": 0.9, "max_tokens": 400, "seed": seed,
                "messages": [{"role": "system", "content": SYSTEM_MESSAGE}, {"role": "user", "content": user}]}
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode("utf-8"), headers=headers,
                                         method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            payload = json.loads(response.read(MAX_REPLY_BYTES).decode("utf-8"))
        return clean_reply(payload["choices"][0]["message"]["content"])

    def __call__(self, category: Category, seed: int) -> str:
        with self._lock:
            self.requests += 1
        try:
            text = self._ask(category, seed)
            problem = None if MIN_CHARS <= len(text) <= MAX_CHARS else (
                f"reply is {len(text)} characters, outside {MIN_CHARS}-{MAX_CHARS}")
        except urllib.error.HTTPError as e:
            problem = f"HTTP {e.code} {e.reason}"
        except urllib.error.URLError as e:
            problem = f"cannot reach {self.url}: {e.reason}"
        except TimeoutError:
            problem = f"no reply within {self.timeout:g} s"
        except Exception as e:  # any failure of one item (network, bad JSON, odd reply shape) falls back
            problem = f"{type(e).__name__}: {e}".splitlines()[0]
        if problem is None:
            return text
        with self._lock:
            self.fallbacks += 1
        log.warning("chat prompt for %s (seed %d) fell back to the offline generator: %s", category.path, seed,
                    problem)
        return generate_prompt(category, seed)
