"""What a command reads, checked before the work: the model's layer sizes from its config alone,
the cache the embedded model is converted into, and the text sources.

A command refuses what it can before it loads a model (seconds), not after the load or the
calibration (minutes): :func:`model_layout` gives the sizes that ``prune --amount`` is checked
against, :func:`check_default_cache` refuses a cache the embedded model cannot be converted
into before the conversion starts, and :func:`read_texts` reads the text options once, so
that an empty file is refused before the model loads.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import torch

from ..data.texts import load_texts
from ..errors import InvalidArgumentError
from ..models.architectures import get_architecture, mlp_layers
from ..models.loading import DEFAULT_MODEL_NAME, ModelSource, cache_dir
from ..models.saved_format import PrunedEntry, read_config
from ._words import _relabel

logger = logging.getLogger("llmrank_graph.cli")

#: The text options of the commands -> the split of the embedded corpus each reads.
TEXT_SPLITS = {"texts": "calibration", "eval_texts": "evaluation"}

#: The environment variable that names the cache directory (llmrank_graph.models.loading.cache_dir).
CACHE_VARIABLE = "LLMRANK_GRAPH_CACHE"


def _converted_configs(cache: Path) -> list[Path]:
    """``config.json`` of every complete conversion of the embedded model in ``cache``."""
    return sorted(cache.glob(f"{DEFAULT_MODEL_NAME}-*/config.json")) if cache.is_dir() else []


def check_default_cache() -> None:
    """Refuse, before the conversion starts, a cache the embedded model cannot be converted into.

    The first use of the embedded model converts its GGUF file (about 35 s) and saves the
    result under :func:`llmrank_graph.models.loading.cache_dir`; a cache that is a file, or a
    read-only directory, made that conversion fail at its end. A cache that already holds a
    conversion is read, not written, and passes whatever its permissions. (A conversion of
    another release of the GGUF file counts as one: the loader would then convert again.)

    Raises
    ------
    InvalidArgumentError
        Naming ``LLMRANK_GRAPH_CACHE``, the directory and why it cannot be written.

    Example
    -------
    >>> import os, tempfile
    >>> from unittest import mock
    >>> with tempfile.NamedTemporaryFile() as f, mock.patch.dict(os.environ, {CACHE_VARIABLE: f.name}):
    ...     check_default_cache()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    llmrank_graph.errors.InvalidArgumentError: `LLMRANK_GRAPH_CACHE` must be a writable directory: ... is a file; ...
    """
    cache = cache_dir()
    if _converted_configs(cache):
        return
    nearest = cache  # the directory the conversion creates its way down from
    while not os.path.lexists(nearest) and nearest != nearest.parent:
        nearest = nearest.parent
    if not nearest.is_dir():
        why = f"{str(nearest)!r} is {'a file' if nearest.is_file() else 'not a directory'}"
    elif not os.access(nearest, os.W_OK | os.X_OK):
        why = f"{str(nearest)!r} is not writable"
    else:
        return
    origin = CACHE_VARIABLE if os.environ.get(CACHE_VARIABLE) else f"the default, as {CACHE_VARIABLE} is not set"
    raise InvalidArgumentError(
        f"`{CACHE_VARIABLE}` must be a writable directory: the embedded model is converted into it before its first "
        f"use (about a minute), and the cache {str(cache)!r} ({origin}) cannot be written: {why}; set "
        f"{CACHE_VARIABLE} to a writable directory, or pass --model")


def _config_file(source: ModelSource) -> Path | None:
    """The ``config.json`` that describes ``source``: its own, or a conversion's of the embedded model."""
    if source.kind == "default":
        converted = _converted_configs(cache_dir())
        return converted[0] if converted else None  # every conversion of the embedded model has its sizes
    return None if source.kind == "gguf" else source.path / "config.json"


def _hf_config(source: ModelSource, raw: dict | None):
    """The transformers config of ``source`` (of ``raw``, its config.json when it has one), read without any weight."""
    from transformers import AutoConfig

    if raw is not None:
        return AutoConfig.for_model(**raw)
    # The GGUF metadata, read as the loader reads it (seconds: the vocabulary is in it).
    return AutoConfig.from_pretrained(source.file.parent, gguf_file=source.file.name, local_files_only=True)


def _sizes(config) -> tuple[int, int, int] | None:
    """(layers, intermediate size, hidden size) of a config (dict or transformers config), if it states all three.

    The family's spec names the field of the intermediate size; the layer count and the hidden
    size have transformers' common names.
    """
    get = config.get if isinstance(config, dict) else functools.partial(getattr, config)
    intermediate_attr = get_architecture(get("model_type", None)).intermediate_attr
    found = (get("num_hidden_layers", None), get(intermediate_attr, None), get("hidden_size", None))
    return found if all(isinstance(v, int) and not isinstance(v, bool) for v in found) else None


def model_layout(source: ModelSource) -> tuple[list[int], list[int]] | None:
    """The MLP sizes of the model ``source`` names, from its config alone (no weight is read).

    The family's :class:`~llmrank_graph.models.architectures.ArchitectureSpec` names the config
    field of the intermediate size. ``config.json`` is read as it is when it states the sizes
    (milliseconds); otherwise transformers reads the config (a GGUF file's metadata), and a
    size that transformers derives (GPT-2's ``n_inner`` of None) is read from the model built
    on the ``meta`` device (shapes, no storage). A pruned model's sizes are its saved ones.

    Returns
    -------
    (list of int, list of int) or None
        Intermediate size of each layer, and hidden size of each layer (the rows of its down
        projection); None for a family transformers has no class for (it is checked once
        loaded).

    Example
    -------
    >>> import tempfile
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> from llmrank_graph.models.loading import check_model_path
    >>> scratch = tempfile.TemporaryDirectory()
    >>> LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=12, num_hidden_layers=2,
    ...                              num_attention_heads=2, num_key_value_heads=2)).save_pretrained(scratch.name)
    >>> model_layout(check_model_path(scratch.name))
    ([12, 12], [8, 8])
    >>> scratch.cleanup()
    """
    config_file = _config_file(source)
    raw = read_config(config_file) if config_file is not None else None
    entry = PrunedEntry.from_config(raw, config_file) if source.kind == "pruned" else None
    if entry is not None:  # its config.json holds no single size: built at the largest, as the loader does
        raw = {**raw, get_architecture(raw.get("model_type")).intermediate_attr: max(entry.intermediate_sizes)}
    sizes = (_sizes(raw) if raw is not None else None) or _transformers_sizes(source, raw)
    if sizes is None:
        return None
    n_layers, size, hidden = sizes
    inter = list(entry.intermediate_sizes) if entry is not None else [size] * n_layers
    return inter, [hidden] * n_layers


def _transformers_sizes(source: ModelSource, raw: dict | None) -> tuple[int, int, int] | None:
    """:func:`_sizes` of the config as transformers reads it (None for a family it has no class for)."""
    try:
        config = _hf_config(source, raw)
    except (ValueError, KeyError) as e:  # a family transformers does not know: it is loaded with its own code
        logger.debug("the MLP sizes of %s are checked once it is loaded: %s", source.path, e)
        return None
    sizes = _sizes(config)
    if sizes is None:  # a size the model class derives: build it, without storage
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            layers = mlp_layers(AutoModelForCausalLM.from_config(config))
        sizes = (len(layers), layers[0].intermediate_size, layers[0].hidden_size)
    return sizes


def read_texts(args, name: str = "texts") -> list[str]:
    """The documents of text option ``name`` (``texts`` or ``eval_texts``), read once, before the model loads.

    An empty file, or one of blank lines only, is refused now, naming the option.

    >>> import argparse, tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
    ...     try:
    ...         read_texts(argparse.Namespace(eval_texts=f.name), "eval_texts")
    ...     except InvalidArgumentError as e:
    ...         print(str(e).split(";")[0])
    `--eval-texts` must contain some text
    """
    option = "--" + name.replace("_", "-")
    return _relabel({"source": option, "texts": option}, load_texts, getattr(args, name), split=TEXT_SPLITS[name])
