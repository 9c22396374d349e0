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

A model whose attention heads were removed (:func:`llmrank_graph.pruning.heads.remove_heads`)
has one more field in the entry, ``"attention"`` (:class:`HeadEntry`)::

    "attention": {"num_heads": [6, 9, ...], "num_key_value_heads": [2, 3, ...], "head_dim": 64,
                  "original_num_heads": 9, "original_num_key_value_heads": 3}

and ``config.json`` always holds ``head_dim``. When every layer keeps the same counts and the
family's config can say so (a ``head_dim`` field, and a config class that accepts the counts;
e.g. ``LlamaConfig`` refuses a ``hidden_size`` that the head count does not divide), the head
count fields hold those ints and plain transformers loads the directory. Otherwise (per-layer
counts; GPT-2 and OPT, which derive ``head_dim`` from ``hidden_size // heads``) the query head
count field holds a string, :func:`heads_hint`, that points to ``llmrank_graph.load_model`` as
:func:`nonuniform_hint` does. In memory the config's head count fields keep the counts the
model was built with (the original ones, from which its ``head_dim`` and scaling derive), and
the loader builds a model at those counts and shrinks each layer to its saved ones
(:func:`buildable_config`, :func:`~llmrank_graph.models.attention.set_head_counts`).

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
from .attention import attention_layers, head_counts

__all__ = ["PRUNED_CONFIG_KEY", "FORMAT_VERSION", "TOKENIZER_FILES", "MASK_FILE", "HEAD_MASK_FILE", "PrunedEntry",
           "HeadEntry", "is_pruned", "is_saved_pruned", "read_config", "nonuniform_hint", "heads_hint", "has_tokenizer",
           "original_intermediate_size", "record_sizes", "disk_config", "buildable_config"]

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
#: Where the head mask that produced a head-pruned model is kept, beside :data:`MASK_FILE`.
HEAD_MASK_FILE = "llmrank_graph/head_mask.safetensors"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class HeadEntry:
    """The attention part of a pruning entry: the head counts of every layer.

    Attributes
    ----------
    num_heads : tuple of int
        Query heads kept in each layer, in layer order.
    num_key_value_heads : tuple of int
        Key/value heads (groups) kept in each layer; each divides the layer's ``num_heads``.
    head_dim : int
        Features per head (unchanged by pruning).
    original_num_heads, original_num_key_value_heads : int
        The counts of every layer before pruning (the counts the loader builds the model at).
    """

    num_heads: tuple[int, ...]
    num_key_value_heads: tuple[int, ...]
    head_dim: int
    original_num_heads: int
    original_num_key_value_heads: int

    @property
    def counts(self) -> list[tuple[int, int]]:
        """(query heads, key/value heads) of each layer."""
        return list(zip(self.num_heads, self.num_key_value_heads))

    @property
    def uniform(self) -> bool:
        """Whether every layer has the same counts."""
        return len(set(self.counts)) == 1

    def to_dict(self) -> dict:
        """The JSON-able ``"attention"`` field of the entry."""
        return {"num_heads": list(self.num_heads), "num_key_value_heads": list(self.num_key_value_heads),
                "head_dim": self.head_dim, "original_num_heads": self.original_num_heads,
                "original_num_key_value_heads": self.original_num_key_value_heads}

    @classmethod
    def for_model(cls, model: nn.Module) -> "HeadEntry | None":
        """The counts of ``model`` now, or None when no layer has lost a head (or the family has no head support).

        The original counts come from the model's entry when it has one (a model pruned
        before), else from its config.
        """
        spec = get_architecture(model)
        if spec.attention is None:
            return None
        layers = attention_layers(model)
        counts = head_counts(layers)
        entry = getattr(model.config, PRUNED_CONFIG_KEY, None)
        recorded = entry.get("attention") if isinstance(entry, Mapping) else None
        if isinstance(recorded, Mapping):
            original = (recorded["original_num_heads"], recorded["original_num_key_value_heads"])
        else:
            heads = model.config.num_attention_heads
            kv = getattr(model.config, "num_key_value_heads", None) if spec.attention.kv_heads_attr else None
            original = (heads, kv or heads)
        if all(c == original for c in counts):
            return None
        return cls(tuple(n for n, _ in counts), tuple(k for _, k in counts), layers[0].head_dim, *original)

    @classmethod
    def from_dict(cls, data, n_layers: int, where: str) -> "HeadEntry":
        """Read and validate the ``"attention"`` field of an entry of ``n_layers`` layers.

        Raises
        ------
        FileFormatError
            A field of the wrong type or value, naming it (``where`` begins the message).
        """
        def bad(field: str, what: str):
            got = _short(data.get(field)) if isinstance(data, Mapping) else _short(data)
            return FileFormatError(f"{where}: field '{PRUNED_CONFIG_KEY}.attention{field}' must be {what}; got {got}")

        if not isinstance(data, Mapping):
            raise bad("", "an object with 'num_heads', 'num_key_value_heads', 'head_dim' and the original counts")
        lists = {}
        for field in ("num_heads", "num_key_value_heads"):
            value = data.get(field)
            if not isinstance(value, list) or len(value) != n_layers or not all(_is_int(v) and v > 0 for v in value):
                raise bad(f".{field}", f"a list of {n_layers} positive ints (one per layer, as intermediate_sizes)")
            lists[field] = tuple(value)
        ints = {}
        for field in ("head_dim", "original_num_heads", "original_num_key_value_heads"):
            if not _is_int(data.get(field)) or data[field] < 1:
                raise bad(f".{field}", "a positive int")
            ints[field] = data[field]
        heads, kv = ints["original_num_heads"], ints["original_num_key_value_heads"]
        if heads % kv:
            raise bad(".original_num_key_value_heads", f"a divisor of original_num_heads={heads}")
        for i, (n, k) in enumerate(zip(lists["num_heads"], lists["num_key_value_heads"])):
            if n % k or k > kv or n // k > heads // kv:
                raise bad(".num_heads", f"per-layer counts reachable from {heads} query heads in {kv} key/value "
                          f"groups (layer {i} has {n} query heads in {k} groups)")
        return cls(lists["num_heads"], lists["num_key_value_heads"], ints["head_dim"], heads, kv)


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
    heads : HeadEntry or None
        The per-layer head counts of a model whose attention heads were removed; None when
        every layer has all its heads.
    """

    intermediate_sizes: tuple[int, ...]
    original_intermediate_size: int
    architecture: str | None = None
    intermediate_attr: str | None = None
    format: int = FORMAT_VERSION
    version: str | None = None
    heads: HeadEntry | None = None

    @property
    def uniform(self) -> bool:
        """Whether every layer has the same size."""
        return len(set(self.intermediate_sizes)) == 1

    def to_dict(self) -> dict:
        """The JSON-able entry, as written to ``config.json``."""
        out = {"format": self.format, "version": self.version, "architecture": self.architecture,
               "intermediate_attr": self.intermediate_attr, "intermediate_sizes": list(self.intermediate_sizes),
               "original_intermediate_size": self.original_intermediate_size}
        if self.heads is not None:
            out["attention"] = self.heads.to_dict()
        return out

    @classmethod
    def for_model(cls, model: nn.Module, original: int) -> "PrunedEntry":
        """The entry describing ``model``'s current MLP sizes and head counts."""
        spec = get_architecture(model)
        return cls(tuple(intermediate_sizes(model)), int(original), spec.name, spec.intermediate_attr,
                   FORMAT_VERSION, __version__, HeadEntry.for_model(model))

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
        heads = HeadEntry.from_dict(entry["attention"], len(sizes), where) if "attention" in entry else None
        return cls(tuple(sizes), original, entry.get("architecture"), entry.get("intermediate_attr"), fmt,
                   entry.get("version"), heads)


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


def heads_hint(heads: HeadEntry) -> str:
    """The string written as the query head count when transformers cannot build the heads (module docstring)."""
    return (f"llmrank_graph pruned model with per-layer attention heads {list(heads.num_heads)} (key/value heads "
            f"{list(heads.num_key_value_heads)}, head_dim {heads.head_dim}), which transformers cannot build: "
            "load this directory with llmrank_graph.load_model(dir)")


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
    """The ``config.json`` to write: ``config`` with the entry and the on-disk intermediate size and head counts."""
    out = dict(config)
    out[PRUNED_CONFIG_KEY] = entry.to_dict()
    sizes = entry.intermediate_sizes
    out[intermediate_attr] = sizes[0] if entry.uniform else nonuniform_hint(sizes)
    if entry.heads is not None:
        att = get_architecture(out.get("model_type")).attention
        heads = entry.heads
        out["head_dim"] = heads.head_dim  # always written: a reader need not derive it
        plain = {att.heads_attr: heads.num_heads[0]}
        if att.kv_heads_attr is not None:
            plain[att.kv_heads_attr] = heads.num_key_value_heads[0]
        values = {**out, **plain, intermediate_attr: max(sizes)}
        if heads.uniform and att.head_dim_attr is not None and _transformers_accepts(values):
            out.update(plain)
        else:
            out[att.heads_attr] = heads_hint(heads)
    return out


def buildable_config(config: Mapping, entry: PrunedEntry | None) -> dict:
    """The ``config.json`` values the loader builds a head-pruned model from, before shrinking its layers.

    The head count fields get the original counts (and ``head_dim`` its value), whatever the
    file says there (the counts or :func:`heads_hint`): the model is built as it was before
    pruning, then each layer is shrunk to its saved counts
    (:func:`~llmrank_graph.models.attention.set_head_counts`). Other fields are unchanged;
    ``config`` is returned as a dict when the entry has no heads.
    """
    out = dict(config)
    if entry is None or entry.heads is None:
        return out
    att = get_architecture(out.get("model_type")).attention
    out[att.heads_attr] = entry.heads.original_num_heads
    if att.kv_heads_attr is not None:
        out[att.kv_heads_attr] = entry.heads.original_num_key_value_heads
    if att.head_dim_attr is not None:
        out[att.head_dim_attr] = entry.heads.head_dim
    return out


def _transformers_accepts(values: Mapping) -> bool:
    """Whether transformers' config class of the family accepts ``values`` (it validates its fields)."""
    from transformers import CONFIG_MAPPING

    errors: tuple[type[BaseException], ...] = (TypeError, ValueError, KeyError)
    try:
        from huggingface_hub.errors import StrictDataclassError

        errors += (StrictDataclassError,)
    except ImportError:  # an older huggingface_hub, whose configs validate nothing
        pass
    try:
        CONFIG_MAPPING[values["model_type"]].from_dict(dict(values))
    except errors:
        return False
    return True
