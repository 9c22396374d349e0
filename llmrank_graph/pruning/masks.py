"""Neuron masks: which MLP neurons each layer keeps, and how they are chosen from scores.

A :class:`NeuronMask` maps layer -> bool keep-tensor of the layer's intermediate neurons
(``True`` = kept), plus, in the reference's "paper mode", layer -> bool keep-tensor of the
hidden channels written by the layer's down projection (its output rows). It is plain data:
it serialises to JSON-able dicts or to a safetensors file, and :mod:`llmrank_graph.pruning.surgery`
applies it to a model.

:func:`allocate` turns :class:`~llmrank_graph.scoring.registry.NeuronScores` into a mask:

``allocation="local"``
    every layer loses the same fraction of its neurons.
``allocation="global"``
    one threshold over all layers. Each layer's scores are first divided by their mean
    absolute value, so that a layer's typical neuron scores 1 whatever the scale of the
    layer's scores (PageRank mass, width, activation magnitude); how spread out a layer's
    scores are then decides how much it loses. A floor (``min_keep``) per layer keeps every
    layer alive, and exactly ``round(amount * total)`` neurons are pruned.
``allocation="standardized"``
    FLAP's global allocation: the same single threshold, with the same floor, on scores
    standardised per layer, ``(s - mean(s)) / std(s)``.
``rounding="reference"``
    reproduces the LLM-Rank reference code (docs/design.md section 5), which prunes with
    :func:`torch.nn.utils.prune.ln_structured`: ``round(amount * n)`` rows per module for local,
    and for global the ``ceil(total * amount)`` lowest raw scores pooled over all modules
    (no normalisation, no floor).

Ties are broken deterministically: the lowest score is pruned first, and among equal scores
the lower layer (module) and then the lower index.

:func:`allocate` checks its arguments and the scores once, at its entry; the rules then run on
plain arrays in :mod:`llmrank_graph.pruning.allocation`. :func:`allocate_checked` is the same
allocation for callers that have checked everything already (:func:`llmrank_graph.prune_model`).
"""

from __future__ import annotations

import json
import logging
import numbers
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from ..base.checks import fail, fail_type, is_real
from ..base.params import Check, Interval, OneOf, validate
from ..errors import InvalidArgumentError
from ..models.architectures import mlp_layers
from .allocation import ALLOCATIONS, ROUNDINGS, choose, prune_lowest
from .keeps import LayerKeeps, _as_keep, _as_layer, _same, keep_tensors

logger = logging.getLogger(__name__)

# ALLOCATIONS, ROUNDINGS and prune_lowest live with the allocation rules (allocation.py) and
# are re-exported here, where users found them.
__all__ = ["NeuronMask", "allocate", "ALLOCATIONS", "ROUNDINGS", "check_amount", "prune_lowest"]


class NeuronMask(LayerKeeps):
    """Which neurons of each MLP layer to keep.

    Parameters
    ----------
    intermediate : mapping of int -> torch.Tensor
        Layer index -> bool tensor of shape (m_l,); ``True`` keeps the intermediate neuron
        (row of up/gate, column of down).
    hidden : mapping of int -> torch.Tensor, optional
        Layer index -> bool tensor of shape (d,) over the output rows of the layer's down
        projection (hidden channels); ``False`` rows are zeroed by
        ``apply_mask(..., how="zero")``. Only the reference's paper mode uses it.
    meta : dict, optional
        JSON-able description (method, amount, allocation, ...), saved with the mask.

    Raises
    ------
    InvalidArgumentTypeError
        If a tensor is not bool, a key is not an int, or ``intermediate``/``hidden`` is not a
        mapping (a TypeError).
    InvalidArgumentError
        If a tensor is not 1-D and non-empty, a key is negative, or a layer keeps no
        intermediate neuron (a ValueError).

    Example
    -------
    >>> import torch
    >>> mask = NeuronMask({0: torch.tensor([True, False, True]), 1: torch.tensor([True, True, False])})
    >>> mask.n_kept(), mask.n_pruned(), round(mask.fraction, 3)
    (4, 2, 0.333)
    >>> mask.sizes()
    [2, 2]
    """

    _KEEPS = "intermediate"
    _FORMAT = "llmrank_graph.NeuronMask"
    _KINDS = ("intermediate", "hidden")

    def __init__(self, intermediate: Mapping[int, torch.Tensor], hidden: Mapping[int, torch.Tensor] | None = None,
                 meta: dict | None = None):
        what = "a non-empty mapping of layer -> bool keep-tensor"
        if not isinstance(intermediate, Mapping):
            raise fail_type("intermediate", what, intermediate)
        if not intermediate:
            raise fail("intermediate", what, intermediate)
        self.intermediate: dict[int, torch.Tensor] = keep_tensors("intermediate", intermediate, "neuron")
        self.hidden: dict[int, torch.Tensor] | None = None
        if hidden is not None:
            if not isinstance(hidden, Mapping):
                raise fail_type("hidden", "a mapping of layer -> bool keep-tensor or None", hidden)
            self.hidden = {}
            for key in sorted(hidden, key=lambda k: _as_layer(k, "`hidden`")):
                layer = _as_layer(key, "`hidden`")
                if layer not in self.intermediate:
                    raise InvalidArgumentError(f"`hidden` has layer {layer}, which `intermediate` does not "
                                               f"have (layers {list(self.intermediate)})")
                self.hidden[layer] = _as_keep(hidden[key], f"`hidden[{layer}]`")
        self.meta: dict = dict(meta or {})

    # ------------------------------------------------------------------ summaries (counts: LayerKeeps)
    def n_hidden_pruned(self) -> int:
        """Number of hidden channels (down_proj rows) pruned over all layers (0 without ``hidden``)."""
        return int(sum(int((~k).sum()) for k in (self.hidden or {}).values()))

    def __repr__(self) -> str:
        extra = f", hidden pruned={self.n_hidden_pruned()}" if self.hidden is not None else ""
        return (f"NeuronMask({len(self.intermediate)} layers, kept {self.n_kept()}/{self.n_total()} "
                f"intermediate neurons ({self.fraction:.1%} pruned){extra})")

    def __eq__(self, other) -> bool:
        if not isinstance(other, NeuronMask):
            return NotImplemented
        return (_same(self.intermediate, other.intermediate) and _same(self.hidden, other.hidden)
                and self.meta == other.meta)

    # ------------------------------------------------------------------ model check
    def check_model(self, model: nn.Module) -> None:
        """Raise InvalidArgumentError if this mask does not fit ``model``'s MLP layers.

        The mask must have exactly one entry per decoder layer, each of the layer's current
        intermediate size, and (with ``hidden``) hidden masks of the model's hidden size.

        Raises
        ------
        InvalidArgumentError
            Naming the layer and both sizes (a ValueError).
        """
        mlps = mlp_layers(model)
        model_layers = [m.layer for m in mlps]
        if self.layers != model_layers:
            raise InvalidArgumentError(f"the mask does not match the model: it has layers {self.layers} but the "
                                       f"model has {len(model_layers)} MLP layers {model_layers}")
        for mlp in mlps:
            m = mlp.intermediate_size
            got = self.intermediate[mlp.layer].numel()
            if got != m:
                raise InvalidArgumentError(f"the mask does not match the model: layer {mlp.layer} ({mlp.up_name}) has "
                                           f"{m} intermediate neurons in the model but {got} in the mask")
            if self.hidden is not None and mlp.layer in self.hidden:
                d = mlp.hidden_size
                got = self.hidden[mlp.layer].numel()
                if got != d:
                    raise InvalidArgumentError(f"the mask does not match the model: layer {mlp.layer} "
                                               f"({mlp.down_name}) has {d} hidden channels in the model but {got} "
                                               "in the hidden mask")

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        """JSON-able dict: ``{"intermediate": {"0": [true, ...]}, "hidden": ... or None, "meta": {...}}``."""
        return {
            "intermediate": {str(l): k.tolist() for l, k in self.intermediate.items()},
            "hidden": None if self.hidden is None else {str(l): k.tolist() for l, k in self.hidden.items()},
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> "NeuronMask":
        """Inverse of :meth:`to_dict`.

        Raises
        ------
        InvalidArgumentTypeError
            If ``data`` is not a mapping.
        InvalidArgumentError
            If ``data`` lacks the ``"intermediate"`` key or holds invalid masks.
        """
        what = "a dict with an 'intermediate' key (as written by NeuronMask.to_dict)"
        if not isinstance(data, Mapping):
            raise fail_type("data", what, data)
        if "intermediate" not in data:
            raise fail("data", what, data)

        def conv(d):
            return {k: torch.tensor(v, dtype=torch.bool) for k, v in d.items()}

        hidden = data.get("hidden")
        return cls(conv(data["intermediate"]), None if hidden is None else conv(hidden), data.get("meta") or {})

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the mask to a ``.safetensors`` file, atomically (:func:`llmrank_graph.base.files.atomic_file`).

        Parameters
        ----------
        path : str or path-like
            The file to write; parent directories are created.
        overwrite : bool
            Replace an existing file.

        Returns
        -------
        pathlib.Path
            The written path.

        Raises
        ------
        OutputExistsError
            If ``path`` exists and ``overwrite`` is False, or is a directory.
        WriteFailedError
            The system refused the write (disk full, file too large): nothing is left at
            ``path`` but what was there before.

        Example
        -------
        >>> import tempfile, torch
        >>> mask = NeuronMask({0: torch.tensor([True, False, True])}, meta={"method": "magnitude"})
        >>> with tempfile.TemporaryDirectory() as d:
        ...     NeuronMask.load(mask.save(f"{d}/mask.safetensors")) == mask
        True
        """
        tensors = {f"intermediate.{l}": k.contiguous() for l, k in self.intermediate.items()}
        for l, k in (self.hidden or {}).items():
            tensors[f"hidden.{l}"] = k.contiguous()
        return self._save(tensors, {"has_hidden": json.dumps(self.hidden is not None)}, path, overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "NeuronMask":
        """Read a mask written by :meth:`save`.

        Raises
        ------
        MissingInputError
            If ``path`` does not exist (a FileNotFoundError).
        FileFormatError
            If the file is not a NeuronMask file, or is damaged or truncated (a ValueError
            naming the file).
        """
        return cls._load(path)

    @classmethod
    def _from_file(cls, groups, metadata, meta):
        has_hidden = json.loads(metadata.get("has_hidden", "false"))
        return cls(groups["intermediate"], groups["hidden"] if has_hidden else None, meta)


# ---------------------------------------------------------------------------- allocation
def check_min_keep(arg: str, min_keep) -> int | float | None:
    """None, an int >= 0 (a count) or a float in [0, 1) (a fraction), as a Python int or float."""
    what = "None, an int >= 0 or a float in [0, 1)"
    if min_keep is None:
        return None
    if not is_real(min_keep):
        raise fail_type(arg, what, min_keep)
    if isinstance(min_keep, numbers.Integral):
        if min_keep < 0:
            raise fail(arg, what, min_keep)
        return int(min_keep)
    if not 0.0 <= float(min_keep) < 1.0:
        raise fail(arg, what, min_keep)
    return float(min_keep)


#: A pruning fraction: the constraint of every ``amount``.
AMOUNT = Interval(float, 0, 1, closed="left")


def check_amount(amount) -> float:
    """Validate a pruning fraction and return it as a float.

    Raises
    ------
    InvalidArgumentTypeError
        If ``amount`` is not a real number (a TypeError; bools are refused).
    InvalidArgumentError
        If ``amount`` is not in [0, 1) (a ValueError).

    Example
    -------
    >>> check_amount(0.3)
    0.3
    """
    return AMOUNT.check("amount", amount)


#: A per-layer floor: the constraint of every ``min_keep``.
MIN_KEEP = Check(check_min_keep, "None, an int >= 0 or a float in [0, 1)")
#: The parameter constraints of :func:`allocate`, checked once at its entry.
ALLOCATE_CONSTRAINTS = {"amount": AMOUNT, "allocation": OneOf(*ALLOCATIONS), "rounding": OneOf(*ROUNDINGS),
                        "min_keep": MIN_KEEP}


def check_reference_floor(rounding: str, min_keep) -> None:
    """Refuse a floor with ``rounding='reference'``, whose code has none (on checked values)."""
    if rounding == "reference" and min_keep is not None:
        raise InvalidArgumentError(f"`min_keep` must be None with rounding='reference' (the reference code has no "
                                   f"per-layer floor); got {min_keep!r}")


@runtime_checkable
class ScoresLike(Protocol):
    """What :func:`allocate` reads from scores (:class:`llmrank_graph.scoring.registry.NeuronScores` is one).

    ``intermediate``: layer -> (m_l,) scores; ``hidden``: layer -> (d,) scores or None;
    ``method``: the scorer's name or None.
    """

    intermediate: Mapping
    hidden: Mapping | None
    method: str | None


def allocate(scores, amount: float, allocation: str = "local", *, min_keep: int | float | None = None,
             rounding: str = "round") -> NeuronMask:
    """Choose the neurons to prune from their scores (lowest scores are pruned first).

    Parameters
    ----------
    scores : NeuronScores or mapping of int -> torch.Tensor
        Layer -> (m_l,) scores, higher = more important. With ``scores.hidden`` (the
        reference's paper mode) the hidden channels are allocated too, each layer's down
        projection rows being one more module.
    amount : float
        Fraction of neurons to prune, in [0, 1).
    allocation : {'local', 'global', 'standardized'}
        ``local``: every layer (module) loses the same fraction. ``global``: one threshold
        over all layers, on scores divided by each layer's mean absolute score; exactly
        ``round(amount * total)`` neurons are pruned (``floor`` with ``rounding='floor'``).
        ``standardized``: the same on scores standardised per layer (FLAP).
    min_keep : int, float or None
        Floor of neurons kept per layer: an int is a count, a float in [0, 1) a fraction of the
        layer (rounded up). ``None``: 1 for local, ``max(1, ceil(5% of m_l))`` for global.
        Global allocation never takes a layer below it; local allocation raises if the amount
        would. Not allowed with ``rounding='reference'`` (the reference has no floor).
    rounding : {'round', 'floor', 'reference'}
        How ``amount * n`` becomes a count. ``round`` is Python's ``round`` (half to even), as
        :func:`torch.nn.utils.prune.ln_structured`. ``reference`` reproduces the LLM-Rank code:
        ``round(amount * n)`` per module for local; for global ``ceil(total * amount)`` of the
        lowest *raw* scores pooled over all modules, with no normalisation and no floor.

    Returns
    -------
    NeuronMask
        With ``meta`` holding amount, allocation, rounding and the scores' method.

    Raises
    ------
    InvalidArgumentError
        ``amount`` outside [0, 1); unknown ``allocation`` or ``rounding`` (the message lists the
        allowed ones); NaN or inf in the scores (naming the layer); an allocation that would
        empty a layer or go below ``min_keep`` (a ValueError).
    InvalidArgumentTypeError
        An argument of the wrong type, e.g. ``amount="0.3"`` (a TypeError).

    Example
    -------
    >>> import torch
    >>> scores = {0: torch.tensor([0.1, 0.5, 0.3, 0.9]), 1: torch.tensor([0.2, 0.8, 0.6, 0.4])}
    >>> allocate(scores, 0.5).intermediate[0]
    tensor([False,  True, False,  True])
    """
    v = validate(ALLOCATE_CONSTRAINTS, {"amount": amount, "allocation": allocation, "rounding": rounding,
                                        "min_keep": min_keep})
    check_reference_floor(v["rounding"], v["min_keep"])
    inter, hidden, method = _check_scores(scores)
    return _allocate(inter, hidden, method, v["amount"], v["allocation"], v["min_keep"], v["rounding"])


def allocate_checked(scores, amount: float, allocation: str, min_keep: int | float | None,
                     rounding: str) -> NeuronMask:
    """:func:`allocate` on checked arguments and finite 1-D scores keyed by int layers; nothing is re-checked.

    What :func:`llmrank_graph.prune_model` and the sequential mode call once their entry has
    validated the arguments (and the scorer has produced finite scores).
    """
    if isinstance(scores, Mapping):
        return _allocate(scores, None, None, amount, allocation, min_keep, rounding)
    return _allocate(scores.intermediate, scores.hidden, scores.method, amount, allocation, min_keep, rounding)


def _allocate(inter: Mapping, hidden: Mapping | None, method: str | None, amount: float, allocation: str,
              min_keep, rounding: str) -> NeuronMask:
    # Modules in the reference's order [I_0, H_0, I_1, H_1, ...].
    keys, vals = [], []
    for layer in sorted(inter):
        keys.append(("intermediate", layer))
        vals.append(_as_numpy(inter[layer]))
        if hidden is not None and layer in hidden:
            keys.append(("hidden", layer))
            vals.append(_as_numpy(hidden[layer]))
    names = [f"layer {l}" if kind == "intermediate" else f"layer {l} hidden channels (down rows)" for kind, l in keys]
    pruned = choose(vals, names, amount, allocation, min_keep, rounding)
    keeps: dict[str, dict[int, torch.Tensor]] = {"intermediate": {}, "hidden": {}}
    for (kind, layer), v, idx in zip(keys, vals, pruned):
        keep = torch.ones(v.size, dtype=torch.bool)
        keep[torch.as_tensor(idx, dtype=torch.long)] = False
        keeps[kind][layer] = keep
    meta = {"amount": amount, "allocation": allocation, "rounding": rounding, "min_keep": min_keep, "method": method}
    mask = NeuronMask(keeps["intermediate"], keeps["hidden"] if hidden is not None else None, meta)
    logger.debug("allocate: %s", mask)
    return mask


def _as_numpy(scores) -> np.ndarray:
    return torch.as_tensor(scores).detach().to("cpu", torch.float64).numpy()


def _check_scores(scores) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor] | None, str | None]:
    """The scores as (intermediate, hidden, method), int-keyed float64 CPU tensors, checked."""
    if isinstance(scores, Mapping):
        inter, hidden, method = scores, None, None
    elif isinstance(scores, ScoresLike):
        inter, hidden, method = scores.intermediate, scores.hidden, scores.method
    else:
        raise fail_type("scores", "a NeuronScores (llmrank_graph.scoring.registry) or a mapping of layer -> scores",
                        scores)
    if not isinstance(inter, Mapping) or not inter:
        raise fail("scores", "intermediate scores for at least one layer", scores)
    inter = {_as_layer(k, "`scores.intermediate`"): v for k, v in inter.items()}
    hidden = None if hidden is None else {_as_layer(k, "`scores.hidden`"): v for k, v in hidden.items()}
    out_inter, out_hidden = {}, ({} if hidden is not None else None)
    for layer in sorted(inter):
        out_inter[layer] = _check_layer_scores(inter[layer], "intermediate", layer)
        if hidden is not None and layer in hidden:
            out_hidden[layer] = _check_layer_scores(hidden[layer], "hidden", layer)
    if hidden is not None:
        extra = sorted(set(hidden) - set(inter))
        if extra:
            raise InvalidArgumentError(f"`scores.hidden` has layers {extra} that `scores.intermediate` does not have")
    return out_inter, out_hidden, method


def _check_layer_scores(s, kind: str, layer: int) -> torch.Tensor:
    t = torch.as_tensor(s).detach().to("cpu", torch.float64)
    if t.dim() != 1 or t.numel() == 0:
        raise InvalidArgumentError(f"`scores.{kind}[{layer}]` must be a non-empty 1-D tensor; got shape "
                                   f"{tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise InvalidArgumentError(f"`scores.{kind}[{layer}]` contains NaN or inf (layer {layer}); "
                                   "scores must be finite")
    return t
