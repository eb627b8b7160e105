"""The pack's one atomic file writer: a reader sees the old file or the whole new one, never half of one.

Used for checkpoints (``tensor_io``), dataset items (``dataset.folder``) and prompt banks
(``dataset.prompts.records``). Plain Python, no torch: the dataset tools import it outside ComfyUI too.
"""

from __future__ import annotations

import os
import tempfile
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
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=os.path.dirname(os.path.abspath(path)))
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
