"""Weights read safely, and the dtypes they load as.

Only safetensors files are read (nothing is unpickled: unpickling runs code), and every
``dtype`` argument of the loaders is checked by one constraint, :data:`DTYPE`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..base.checks import fail, fail_type
from ..base.params import Check
from ..errors import FileFormatError, MissingInputError

__all__ = ["DTYPE", "checked_dtype", "dtype_kwargs", "safetensors_files", "read_safetensors"]

_DTYPE_WHAT = "a floating torch.dtype, its name (e.g. 'bfloat16') or None"


def checked_dtype(arg: str, dtype) -> torch.dtype | None:
    """A floating torch.dtype from a dtype or its name (``'bfloat16'``, ``'torch.float16'``); None stays None.

    The check behind :data:`DTYPE`; ``arg`` names the argument in the message.

    >>> checked_dtype("dtype", "bfloat16")
    torch.bfloat16
    >>> checked_dtype("dtype", torch.int8)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    llmrank_graph.errors.InvalidArgumentError: `dtype` must be a floating torch.dtype, ... or None; got torch.int8
    """
    if dtype is None:
        return None
    if isinstance(dtype, str):
        candidate = getattr(torch, dtype.removeprefix("torch."), None)
        if isinstance(candidate, torch.dtype) and candidate.is_floating_point:
            return candidate
        raise fail(arg, _DTYPE_WHAT, dtype)
    if not isinstance(dtype, torch.dtype):
        raise fail_type(arg, _DTYPE_WHAT, dtype)
    if not dtype.is_floating_point:
        raise fail(arg, _DTYPE_WHAT, dtype)
    return dtype


#: The constraint of every ``dtype`` argument of the loaders.
DTYPE = Check(checked_dtype, _DTYPE_WHAT)


def dtype_kwargs(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """The keyword that gives ``from_pretrained``/``from_config`` their dtype: ``dtype`` or ``torch_dtype``."""
    # transformers renamed `torch_dtype` to `dtype` in 4.56.
    import transformers
    from packaging.version import Version

    if Version(transformers.__version__) >= Version("4.56"):
        return {"dtype": dtype}
    return {"torch_dtype": dtype}


def safetensors_files(directory: Path) -> list[Path]:
    """The top-level safetensors weights of ``directory``, each checked to open (headers only).

    Raises
    ------
    FileFormatError
        The weights are only in pickle formats, or a file is damaged (naming it).
    MissingInputError
        No weights at all.
    """
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        pickled = sorted(p.name for pattern in ("*.bin", "*.pt", "*.pth", "*.ckpt") for p in directory.glob(pattern))
        if pickled:
            raise FileFormatError(
                f"`path` {str(directory)!r} holds weights only in pickle formats ({', '.join(pickled[:3])}), which "
                "llmrank_graph never unpickles (unpickling runs code). Convert them to safetensors where you trust "
                "the files, e.g. model.save_pretrained(dir, safe_serialization=True)")
        raise MissingInputError(f"`path` {str(directory)!r} holds no .safetensors weights")
    for f in files:
        _open_safetensors(f)
    return files


def _unreadable(file: Path, e: Exception) -> FileFormatError:
    return FileFormatError(f"{str(file)!r} is not a readable safetensors file (truncated or damaged?): {e}")


def _open_safetensors(file: Path) -> None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            f.keys()
    except (SafetensorError, OSError) as e:
        raise _unreadable(file, e) from None


def read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file; FileFormatError naming a damaged file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(file))
    except (SafetensorError, OSError) as e:
        raise _unreadable(file, e) from None
