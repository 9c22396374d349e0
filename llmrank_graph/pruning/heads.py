"""Attention heads removed for real: the head mask and :func:`remove_heads`.

A :class:`HeadMask` maps layer -> bool keep-tensor over the layer's query heads (``True`` =
kept), as :class:`~llmrank_graph.pruning.masks.NeuronMask` does for MLP neurons, and saves to
JSON-able dicts or a safetensors file the same way. :func:`remove_heads` applies it:
``how="remove"`` slices the heads' weights out (:meth:`~llmrank_graph.models.attention.AttentionModules.keep_heads`)
and records the per-layer head counts in the config, in the saved format
(:mod:`llmrank_graph.models.saved_format`), so that :func:`llmrank_graph.save_pruned` and
:func:`llmrank_graph.load_model` round-trip the model; ``how="zero"`` zeroes the heads' output
columns and gives the same logits.

The rule of grouped-query attention: transformers repeats every key/value head by one factor
per layer, so a layer keeps the same number of query heads in every key/value group it keeps;
a group that keeps none is removed whole (its key/value rows too). A layer keeps at least one
head.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..base.checks import fail, fail_type
from ..base.params import InstanceOf, OneOf, validate
from ..errors import InvalidArgumentError
from ..models.architectures import MODEL
from ..models.attention import AttentionModules, attention_layers
from ..models.saved_format import original_intermediate_size, record_sizes
from .core import HOWS
from .keeps import LayerKeeps, _same, keep_tensors

logger = logging.getLogger(__name__)

__all__ = ["HeadMask", "remove_heads", "removed_parameters"]

class HeadMask(LayerKeeps):
    """Which query heads of each attention layer to keep.

    Parameters
    ----------
    heads : mapping of int -> torch.Tensor
        Layer index -> bool tensor of shape (num_heads_l,); ``True`` keeps the query head
        (``head_dim`` rows of the query projection, the same columns of the output one).
    meta : dict, optional
        JSON-able description (method, amount, ...), saved with the mask.

    Raises
    ------
    InvalidArgumentTypeError
        A tensor that is not bool, a key that is not an int, ``heads`` not a mapping.
    InvalidArgumentError
        A tensor that is not 1-D and non-empty, a negative key, or a layer that keeps no head.

    Example
    -------
    >>> import torch
    >>> mask = HeadMask({0: torch.tensor([True, False, True, False]), 1: torch.tensor([True] * 4)})
    >>> mask.sizes(), mask.n_pruned(), mask.fraction
    ([2, 4], 2, 0.25)
    >>> mask.pruned_indices(0).tolist()
    [1, 3]
    """

    _KEEPS = "heads"
    _FORMAT = "llmrank_graph.HeadMask"
    _KINDS = ("heads",)

    def __init__(self, heads: Mapping[int, torch.Tensor], meta: dict | None = None):
        what = "a non-empty mapping of layer -> bool keep-tensor over the query heads"
        if not isinstance(heads, Mapping):
            raise fail_type("heads", what, heads)
        if not heads:
            raise fail("heads", what, heads)
        self.heads: dict[int, torch.Tensor] = keep_tensors("heads", heads, "head")
        self.meta: dict = dict(meta or {})

    @classmethod
    def keep_all(cls, model: nn.Module, meta: dict | None = None) -> "HeadMask":
        """The mask that keeps every head of ``model`` (one entry per layer, of its current head count)."""
        return cls({a.layer: torch.ones(a.num_heads, dtype=torch.bool) for a in attention_layers(model)}, meta)

    # ------------------------------------------------------------------ summaries (counts: LayerKeeps)
    def __repr__(self) -> str:
        return (f"HeadMask({len(self.heads)} layers, kept {self.n_kept()}/{self.n_total()} query heads "
                f"({self.fraction:.1%} pruned))")

    def __eq__(self, other) -> bool:
        if not isinstance(other, HeadMask):
            return NotImplemented
        return _same(self.heads, other.heads) and self.meta == other.meta

    # ------------------------------------------------------------------ model check
    def check_model(self, model_or_layers: nn.Module | list[AttentionModules]) -> None:
        """Raise InvalidArgumentError if this mask does not fit ``model``'s attention layers.

        One entry per decoder layer, each of the layer's current number of query heads, that
        keeps at least one head and the same number of query heads in every key/value group
        it keeps (:meth:`~llmrank_graph.models.attention.AttentionModules.plan`).

        Raises
        ------
        InvalidArgumentError
            Naming the layer, and the sizes or the rule (a ValueError).
        UnsupportedArchitectureError
            ``model``'s family has no attention support.
        """
        layers = attention_layers(model_or_layers) if isinstance(model_or_layers, nn.Module) else model_or_layers
        model_layers = [a.layer for a in layers]
        if self.layers != model_layers:
            raise InvalidArgumentError(f"the head mask does not match the model: it has layers {self.layers} but the "
                                       f"model has {len(model_layers)} attention layers {model_layers}")
        for att in layers:
            att.plan(self.heads[att.layer])

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        """JSON-able dict: ``{"heads": {"0": [true, false, ...], ...}, "meta": {...}}``."""
        return {"heads": {str(l): k.tolist() for l, k in self.heads.items()}, "meta": dict(self.meta)}

    @classmethod
    def from_dict(cls, data: Mapping) -> "HeadMask":
        """Inverse of :meth:`to_dict`.

        Raises
        ------
        InvalidArgumentTypeError
            ``data`` is not a mapping.
        InvalidArgumentError
            ``data`` lacks the ``"heads"`` key or holds invalid masks.
        """
        what = "a dict with a 'heads' key (as written by HeadMask.to_dict)"
        if not isinstance(data, Mapping):
            raise fail_type("data", what, data)
        if not isinstance(data.get("heads"), Mapping):
            raise fail("data", what, data)
        return cls({k: torch.tensor(v, dtype=torch.bool) for k, v in data["heads"].items()}, data.get("meta") or {})

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the mask to a ``.safetensors`` file, atomically, as ``NeuronMask.save`` does.

        Raises
        ------
        OutputExistsError
            ``path`` exists and ``overwrite`` is False, or is a directory.
        WriteFailedError
            The system refused the write: nothing is left at ``path`` but what was there before.

        Example
        -------
        >>> import tempfile, torch
        >>> mask = HeadMask({0: torch.tensor([True, False])}, meta={"method": "magnitude"})
        >>> with tempfile.TemporaryDirectory() as d:
        ...     HeadMask.load(mask.save(f"{d}/heads.safetensors")) == mask
        True
        """
        return self._save({f"heads.{l}": k.contiguous() for l, k in self.heads.items()}, {}, path, overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "HeadMask":
        """Read a mask written by :meth:`save`.

        Raises
        ------
        MissingInputError
            ``path`` does not exist (a FileNotFoundError).
        FileFormatError
            Not a HeadMask file, or damaged or truncated (naming the file).
        """
        return cls._load(path)

    @classmethod
    def _from_file(cls, groups, metadata, meta):
        return cls(groups["heads"], meta)


def removed_parameters(model: nn.Module, mask: HeadMask) -> int:
    """Parameters that ``remove_heads(model, mask)`` removes: per layer, each removed query head's
    cost plus each removed key/value group's (:meth:`~llmrank_graph.models.attention.AttentionModules.head_cost`).

    Raises
    ------
    InvalidArgumentError
        ``mask`` does not fit ``model`` (:meth:`HeadMask.check_model`).
    """
    layers = attention_layers(model)
    mask.check_model(layers)
    return parameters_removed(layers, mask)


def parameters_removed(layers, mask: HeadMask) -> int:
    """:func:`removed_parameters` on the attention layers of a model that ``mask`` was checked against."""
    total = 0
    for att in layers:
        heads, groups = att.plan(mask.heads[att.layer])
        cost = att.head_cost()
        total += (att.num_heads - len(heads)) * cost["query_head"]
        total += (att.num_key_value_heads - len(groups)) * cost["kv_group"]
    return total


#: The parameter constraints of :func:`remove_heads`, checked once at its entry.
REMOVE_CONSTRAINTS = {"model": MODEL, "mask": InstanceOf(HeadMask, "a HeadMask"), "how": OneOf(*HOWS)}


def remove_heads(model: nn.Module, mask: HeadMask, how: str = "remove") -> nn.Module:
    """Prune ``model``'s attention heads in place as ``mask`` says.

    The rule (grouped-query attention): transformers' attention repeats every key/value head
    by one factor per layer, so each layer must keep the same number of query heads in every
    key/value group it keeps. A group that keeps none of its query heads is removed whole,
    with its key/value rows. So a layer of 9 query heads in 3 groups can keep 9, 6 or 3 heads
    by removing whole groups, or 6 or 3 by removing 1 or 2 heads from every group (and, by
    both, 4, 2 or 1); a layer of a single group (Gemma's multi-query layers) can lose only
    query heads; GPT-2, OPT and multi-head Llama layers can lose any heads. Every layer keeps
    at least one head. A mask that breaks the rule is refused before any weight changes.

    Parameters
    ----------
    model : transformers model of a family with attention support
        Llama, Mistral, Qwen2/3, Gemma/Gemma2/Gemma3, GPT-2 or OPT
        (:func:`~llmrank_graph.models.attention.attention_spec`).
    mask : HeadMask
        One keep-tensor per layer, of the layer's current number of query heads.
    how : {'remove', 'zero'}
        ``remove`` slices the removed heads' query rows and output columns (and the key/value
        rows of removed groups), with their biases (Qwen2's q/k/v, GPT-2's fused ``c_attn``
        columns, OPT's), updates each attention module's head counts, and records the
        per-layer counts in ``model.config`` in the saved format, so that
        :func:`llmrank_graph.save_pruned` and :func:`llmrank_graph.load_model` round-trip the
        model. ``zero`` zeroes the removed heads' output columns only: the model keeps its
        shapes and gives the same logits (zeroing query rows would not silence a head).

    Returns
    -------
    torch.nn.Module
        ``model`` itself.

    Raises
    ------
    InvalidArgumentTypeError
        ``model`` not an nn.Module, ``mask`` not a HeadMask (a TypeError).
    InvalidArgumentError
        Unknown ``how``; a mask that does not fit the model (naming the layer and both sizes)
        or breaks the rule above (naming the layer and the rule).
    UnsupportedArchitectureError
        A family without attention support (naming it and the supported ones).

    Example
    -------
    >>> import torch
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=12,
    ...                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
    >>> uneven = HeadMask({0: torch.tensor([True, True, True, False]), 1: torch.ones(4, dtype=torch.bool)})
    >>> remove_heads(model, uneven)
    Traceback (most recent call last):
    ...
    llmrank_graph.errors.InvalidArgumentError: the head mask is uneven in layer 0 (model.layers.0.self_attn.o_proj): ...
    >>> mask = HeadMask({0: torch.tensor([True, True, False, False]),  # the second group goes whole
    ...                  1: torch.tensor([True, False, True, False])})  # one head of each group goes
    >>> model = remove_heads(model, mask)
    >>> entry = model.config.llmrank_graph["attention"]
    >>> entry["num_heads"], entry["num_key_value_heads"]
    ([2, 2], [1, 2])
    """
    how = validate(REMOVE_CONSTRAINTS, {"model": model, "mask": mask, "how": how})["how"]
    layers = attention_layers(model)
    mask.check_model(layers)  # every layer, before the first weight changes
    if how == "zero":
        for att in layers:
            att.zero_heads(mask.heads[att.layer])
        logger.debug("zeroed %d of %d attention heads", mask.n_pruned(), mask.n_total())
        return model
    original = original_intermediate_size(model)
    for att in layers:
        keep = mask.heads[att.layer]
        if not keep.all():
            att.keep_heads(keep.nonzero().flatten())
    record_sizes(model, original)
    logger.debug("removed %d of %d attention heads; heads now %s", mask.n_pruned(), mask.n_total(),
                 [a.num_heads for a in layers])
    return model
