"""Small file helpers shared by the modules that write (nothing is half-written)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def save_safetensors_atomic(tensors: dict, path: str | os.PathLike, metadata: dict[str, str]) -> Path:
    """Write ``tensors`` to ``path`` as safetensors: to a temporary sibling, then renamed."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path
