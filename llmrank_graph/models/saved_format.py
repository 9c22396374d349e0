"""The saved format of pruned models: one place for what :mod:`pruning` writes and the loader reads.

A pruned model is an ordinary Hugging Face directory (``config.json``, safetensors weights,
tokenizer files) whose ``config.json`` carries one more entry, under :data:`PRUNED_CONFIG_KEY`::

    "llmrank_graph": {"format": 1, "version": "0.1.0", "architecture": "llama",
                      "intermediate_attr": "intermediate_size",
                      "intermediate_sizes": [1152, 1098, ...], "original_intermediate_size": 1536}

When every layer keeps the same size, the config's own intermediate-size field is that int
and a plain ``transformers.AutoModelForCausalLM.from_pretrained(dir)`` loads the directory.
When the sizes differ, no registered transformers family can build the model (their MLPs read
one ``config.intermediate_size``), so that field holds a *string*, :func:`nonuniform_hint`,
which transformers rejects while reading the config and quotes in its error: it tells the user
to load the directory with ``llmrank_graph.load_model(dir)``.

In memory, a model pruned non-uniformly keeps an int in its config (the largest layer's size;
configs validate their fields) and the entry as a dict in ``config.llmrank_graph``.

This module sits just above :mod:`architectures`: the loader (:mod:`models`) and the pruner
(:mod:`pruning`) both use it, and neither needs the other.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from .._version import __version__
from ..errors import FileFormatError
from .architectures import get_architecture, intermediate_sizes

__all__ = ["PRUNED_CONFIG_KEY", "FORMAT_VERSION", "TOKENIZER_FILES", "MASK_FILE", "PrunedEntry", "is_pruned",
           "is_saved_pruned", "read_config", "nonuniform_hint", "has_tokenizer", "original_intermediate_size",
           "record_sizes", "disk_config"]

#: Key of the pruning entry in ``config.json`` (and attribute of ``model.config``).
PRUNED_CONFIG_KEY = "llmrank_graph"
#: Version of the entry's layout; a reader refuses entries of a newer format.
FORMAT_VERSION = 1
#: Files whose presence means that a directory carries a tokenizer.
TOKENIZER_FILES: tuple[str, ...] = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json",
                                    "spiece.model")
#: Where, inside a saved pruned model, the neuron mask that produced it is kept (beside, not
#: among, the weights: loaders glob ``*.safetensors`` at the top level only).
MASK_FILE = "llmrank_graph/neuron_mask.safetensors"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class PrunedEntry:
    """The validated pruning entry of a config.

    Attributes
    ----------
    intermediate_sizes : tuple of int
        Kept intermediate neurons of each layer, in layer order.
    original_intermediate_size : int
        Intermediate size of the model before pruning.
    architecture : str or None
        Registry name of the family (informational).
    intermediate_attr : str or None
        Config field of the intermediate size (informational).
    format : int
        Layout version of the entry.
    version : str or None
        llmrank_graph version that wrote it.
    """

    intermediate_sizes: tuple[int, ...]
    original_intermediate_size: int
    architecture: str | None = None
    intermediate_attr: str | None = None
    format: int = FORMAT_VERSION
    version: str | None = None

    @property
    def uniform(self) -> bool:
        """Whether every layer has the same size."""
        return len(set(self.intermediate_sizes)) == 1

    def to_dict(self) -> dict:
        """The JSON-able entry, as written to ``config.json``."""
        return {"format": self.format, "version": self.version, "architecture": self.architecture,
                "intermediate_attr": self.intermediate_attr, "intermediate_sizes": list(self.intermediate_sizes),
                "original_intermediate_size": self.original_intermediate_size}

    @classmethod
    def for_model(cls, model: nn.Module, original: int) -> "PrunedEntry":
        """The entry describing ``model``'s current MLP sizes."""
        spec = get_architecture(model)
        return cls(tuple(intermediate_sizes(model)), int(original), spec.name, spec.intermediate_attr,
                   FORMAT_VERSION, __version__)

    @classmethod
    def from_config(cls, config: Mapping, source: str | os.PathLike = "config.json") -> "PrunedEntry":
        """Read and validate the entry of a config dict.

        Parameters
        ----------
        config : mapping
            The parsed ``config.json``.
        source : str or path-like
            The file it came from, named in the messages.

        Raises
        ------
        FileFormatError
            No entry, or a field of the wrong type or value; the message names the file and
            the field.
        """
        where = f"{os.fspath(source)!r} has no valid '{PRUNED_CONFIG_KEY}' entry"
        entry = config.get(PRUNED_CONFIG_KEY) if isinstance(config, Mapping) else None
        if not isinstance(entry, Mapping):
            raise FileFormatError(f"{where}: it must be an object with 'intermediate_sizes', a list of positive "
                                  f"ints (one per layer), as save_pruned writes; got {_short(entry)}")

        def bad(field: str, what: str):
            return FileFormatError(f"{where}: field '{PRUNED_CONFIG_KEY}.{field}' must be {what}; "
                                   f"got {_short(entry.get(field))}")

        sizes = entry.get("intermediate_sizes")
        if not isinstance(sizes, list) or not sizes or not all(_is_int(s) and s > 0 for s in sizes):
            raise bad("intermediate_sizes", "a non-empty list of positive ints (one per layer), as save_pruned writes")
        fmt = entry.get("format", FORMAT_VERSION)
        if not _is_int(fmt) or fmt < 1:
            raise bad("format", "a positive int")
        if fmt > FORMAT_VERSION:
            raise FileFormatError(f"{os.fspath(source)!r} was written by a newer llmrank_graph (entry format {fmt}; "
                                  f"this version reads format {FORMAT_VERSION} and older): upgrade llmrank_graph")
        original = entry.get("original_intermediate_size")
        if original is None:
            original = max(sizes)
        elif not _is_int(original) or original < max(sizes):
            raise bad("original_intermediate_size", f"an int >= the largest layer size ({max(sizes)})")
        for field in ("architecture", "intermediate_attr", "version"):
            if entry.get(field) is not None and not isinstance(entry.get(field), str):
                raise bad(field, "a str")
        return cls(tuple(sizes), original, entry.get("architecture"), entry.get("intermediate_attr"), fmt,
                   entry.get("version"))


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def is_pruned(config: Mapping) -> bool:
    """Whether a parsed ``config.json`` has a pruning entry (the directory needs the pruned loader)."""
    return isinstance(config, Mapping) and PRUNED_CONFIG_KEY in config


def is_saved_pruned(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` was written by ``save_pruned``: its ``config.json`` carries the entry.

    Never raises: a missing, unreadable or damaged ``config.json`` means "no". ``save_pruned``
    replaces (with ``overwrite``) only such directories unless told ``force``.
    """
    try:
        return is_pruned(read_config(Path(directory) / "config.json"))
    except (OSError, FileFormatError):
        return False


def read_config(path: str | os.PathLike) -> dict:
    """Parse a ``config.json``; every way it can be damaged gets a message naming the file.

    Raises
    ------
    FileFormatError
        Not UTF-8, not JSON, or not a JSON object.
    """
    path = Path(path)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise FileFormatError(f"{str(path)!r} is not UTF-8 text (byte {e.start}); it is not a model config") from None
    except json.JSONDecodeError as e:
        raise FileFormatError(f"{str(path)!r} is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise FileFormatError(f"{str(path)!r} must hold a JSON object; got {type(config).__name__}")
    return config


def nonuniform_hint(sizes) -> str:
    """The string written as the intermediate size when layers differ (see the module docstring)."""
    return (f"llmrank_graph pruned model with per-layer MLP sizes {list(sizes)}, which transformers cannot "
            f"build: load this directory with llmrank_graph.load_model(dir)")


def has_tokenizer(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds one of :data:`TOKENIZER_FILES`."""
    return any((Path(directory) / name).is_file() for name in TOKENIZER_FILES)


def original_intermediate_size(model: nn.Module) -> int:
    """Intermediate size of ``model`` before any pruning: from its entry, else its config."""
    config = model.config
    entry = getattr(config, PRUNED_CONFIG_KEY, None)
    if isinstance(entry, Mapping) and _is_int(entry.get("original_intermediate_size")):
        return entry["original_intermediate_size"]
    value = getattr(config, get_architecture(model).intermediate_attr, None)
    if _is_int(value):
        return value
    return max(intermediate_sizes(model))  # e.g. GPT-2's n_inner=None (4 * n_embd)


def record_sizes(model: nn.Module, original: int) -> PrunedEntry:
    """Write ``model``'s current MLP sizes into its in-memory config, and return the entry.

    The intermediate-size field gets an int (the size when uniform, else the largest; configs
    validate their field types) and ``config.llmrank_graph`` the entry as a dict.
    """
    entry = PrunedEntry.for_model(model, original)
    sizes = entry.intermediate_sizes
    setattr(model.config, get_architecture(model).intermediate_attr, sizes[0] if entry.uniform else max(sizes))
    setattr(model.config, PRUNED_CONFIG_KEY, entry.to_dict())
    return entry


def disk_config(config: Mapping, entry: PrunedEntry, intermediate_attr: str) -> dict:
    """The ``config.json`` to write: ``config`` with the entry and the on-disk intermediate size."""
    out = dict(config)
    out[PRUNED_CONFIG_KEY] = entry.to_dict()
    sizes = entry.intermediate_sizes
    out[intermediate_attr] = sizes[0] if entry.uniform else nonuniform_hint(sizes)
    return out
