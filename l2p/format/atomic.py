"""The pack's one atomic file writer: a reader sees the old file or the whole new one, never half of one.

Used for checkpoints (``tensor_io``), dataset items (``dataset.folder``) and prompt banks
(``dataset.prompts.records``). Plain Python, no torch: the dataset tools import it outside ComfyUI too.

The temp file is created the way ``open()`` creates a file (mode 0666 less the umask, and whatever the
folder's default ACL adds), not with ``tempfile.mkstemp``'s 0600, so the finished file has the user's normal
mode. No umask is read or changed: ``os.umask`` can only be read by setting it, which races other threads.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any


@contextmanager
def atomic_file(path: str, mode: str = "wb", *, overwrite: bool = True, prefix: str = ".partial-",
                suffix: str = "", **open_kwargs: Any) -> Iterator[IO]:
    """Yield a temp file in ``path``'s folder; on a clean exit flush, fsync and rename it to ``path``.

    On any error (the body's included) the temp file is removed and ``path`` is left as it was. With
    ``overwrite=False`` an existing ``path`` is never replaced, even one a concurrent writer has just made
    (the temp file is hard-linked, which refuses an existing name: FileExistsError).
    """
    fd, tmp = _create_temp(os.path.dirname(os.path.abspath(path)), prefix, suffix)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
            os.unlink(tmp)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)


def _create_temp(folder: str, prefix: str, suffix: str) -> tuple[int, str]:
    """A new file with a random name in ``folder``, opened read-write, mode 0666 & ~umask (as ``open()`` makes)."""
    for _ in range(100):
        name = os.path.join(folder, f"{prefix}{secrets.token_hex(8)}{suffix}")
        try:
            return os.open(name, _FLAGS, 0o666), name
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temp file name in {folder}")
