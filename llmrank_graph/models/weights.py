"""Weights read safely, and the dtypes they load as.

Only safetensors files are read (nothing is unpickled: unpickling runs code), and every
``dtype`` argument of the loaders is checked by one constraint, :data:`DTYPE`. The headers of
the files (names, dtypes and shapes of the tensors, :func:`read_header`) are read without
any weight, so that a directory can be checked against its config before a model is built
(:mod:`llmrank_graph.models.checks`).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from ..base.checks import fail, fail_type
from ..base.params import Check
from ..errors import FileFormatError, MissingInputError

__all__ = ["DTYPE", "checked_dtype", "dtype_kwargs", "safetensors_files", "read_safetensors", "TensorHeader",
           "read_header", "checkpoint_headers", "WEIGHTS_FILE", "WEIGHTS_INDEX_FILE"]

#: The single weights file of a Hugging Face directory.
WEIGHTS_FILE = "model.safetensors"
#: The index of a sharded checkpoint: ``{"weight_map": {tensor name: shard file}}``.
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
# The safetensors library refuses headers above 100 MB; so does this reader.
_MAX_HEADER_BYTES = 100_000_000

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
    """The safetensors weights of ``directory`` that a loader reads, each checked to open (headers only).

    As transformers chooses them: ``model.safetensors`` when present, else the shards that
    ``model.safetensors.index.json`` lists, else every top-level ``*.safetensors`` file.

    Raises
    ------
    FileFormatError
        The weights are only in pickle formats, a file is damaged, or the index is damaged or
        lists a shard that is missing (naming the file).
    MissingInputError
        No weights at all.
    """
    index = directory / WEIGHTS_INDEX_FILE
    if (directory / WEIGHTS_FILE).is_file():
        files = [directory / WEIGHTS_FILE]
    elif index.is_file():
        files = [directory / name for name in sorted(set(_read_index(index).values()))]
        for f in files:
            if not f.is_file():
                raise FileFormatError(f"{str(index)!r} lists the shard {f.name!r}, which is missing from "
                                      f"{str(directory)!r}")
    else:
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


def _read_index(index: Path) -> dict[str, str]:
    """The ``weight_map`` of a shard index: tensor name -> shard file name (beside the index)."""
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise FileFormatError(f"{str(index)!r} is not valid JSON: {e}") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if (not isinstance(weight_map, dict) or not weight_map
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items())):
        raise FileFormatError(f"{str(index)!r}: field 'weight_map' must be a non-empty object mapping tensor "
                              f"names to shard files, as save_pretrained writes; got {_short(weight_map)}")
    for name in set(weight_map.values()):
        if Path(name).name != name or name in (".", "..") or not name.endswith(".safetensors"):
            raise FileFormatError(f"{str(index)!r}: field 'weight_map' names the shard {name!r}; shards must be "
                                  ".safetensors files beside the index")
    return weight_map


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True)
class TensorHeader:
    """What a safetensors header says of one tensor.

    Attributes
    ----------
    dtype : str
        The safetensors dtype name: ``'F32'``, ``'BF16'``, ``'F8_E4M3'``, ``'I8'``, ``'BOOL'``...
    shape : tuple of int
    file : pathlib.Path
        The file that holds it.
    """

    dtype: str
    shape: tuple[int, ...]
    file: Path

    @property
    def floating(self) -> bool:
        """Whether the dtype is a floating-point one (``F*`` or ``BF16``)."""
        return self.dtype.startswith(("F", "BF"))


def read_header(file: Path) -> dict[str, TensorHeader]:
    """The tensors of a safetensors file, from its header alone (no weight is read).

    The header is an 8-byte little-endian length followed by that many bytes of JSON.

    Raises
    ------
    FileFormatError
        A damaged header (naming the file).

    Example
    -------
    >>> import tempfile
    >>> from safetensors.torch import save_file
    >>> scratch = tempfile.TemporaryDirectory()
    >>> save_file({"w": torch.zeros(2, 3, dtype=torch.bfloat16)}, f"{scratch.name}/model.safetensors")
    >>> header = read_header(Path(scratch.name) / "model.safetensors")
    >>> header["w"].dtype, header["w"].shape, header["w"].floating
    ('BF16', (2, 3), True)
    >>> scratch.cleanup()
    """
    try:
        with open(file, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise ValueError("the file is shorter than the 8 bytes of its header length")
            (length,) = struct.unpack("<Q", prefix)
            if length > _MAX_HEADER_BYTES:
                raise ValueError(f"its header length ({length} bytes) is above {_MAX_HEADER_BYTES}")
            header = json.loads(f.read(length))
        return {name: TensorHeader(str(entry["dtype"]), tuple(int(n) for n in entry["shape"]), file)
                for name, entry in header.items() if name != "__metadata__"}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise _unreadable(file, e) from None


def checkpoint_headers(directory: Path, files: list[Path]) -> dict[str, TensorHeader]:
    """Every tensor of the weights ``files`` of ``directory`` (as :func:`safetensors_files` gives them).

    For a sharded checkpoint, each tensor that the index places in a shard must be there.

    Raises
    ------
    FileFormatError
        A damaged header, or an index that places a tensor in a shard that lacks it.
    """
    tensors: dict[str, TensorHeader] = {}
    for f in files:
        tensors.update(read_header(f))
    index = directory / WEIGHTS_INDEX_FILE
    if index.is_file() and not (directory / WEIGHTS_FILE).is_file():
        for name, shard in _read_index(index).items():
            if name not in tensors or tensors[name].file.name != shard:
                raise FileFormatError(f"{str(index)!r} places {name!r} in {shard!r}, which does not hold it")
    return tensors


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
