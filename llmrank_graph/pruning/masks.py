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
    reproduces the LLM-Rank reference code (DESIGN.md section 5), which prunes with
    :func:`torch.nn.utils.prune.ln_structured`: ``round(amount * n)`` rows per module for local,
    and for global the ``ceil(total * amount)`` lowest raw scores pooled over all modules
    (no normalisation, no floor).

Ties are broken deterministically: the lowest score is pruned first, and among equal scores
the lower layer (module) and then the lower index.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from ..base.checks import check_choice, check_float, fail, fail_type, is_real
from ..base.files import save_safetensors_atomic
from ..errors import FileFormatError, InvalidArgumentError, InvalidArgumentTypeError, MissingInputError

logger = logging.getLogger(__name__)

__all__ = ["NeuronMask", "allocate", "ALLOCATIONS", "ROUNDINGS", "check_amount", "prune_lowest"]

#: Allocation strategies accepted by :func:`allocate`.
ALLOCATIONS: tuple[str, ...] = ("local", "global", "standardized")
#: Rounding rules accepted by :func:`allocate`.
ROUNDINGS: tuple[str, ...] = ("floor", "round", "reference")
#: Fraction of each layer kept by default under global allocation (at least one neuron).
GLOBAL_MIN_KEEP_FRACTION = 0.05

_FORMAT = "llmrank_graph.NeuronMask"


def check_amount(amount) -> float:
    """Validate a pruning fraction and return it as a float.

    Raises
    ------
    InvalidArgumentTypeError
        If ``amount`` is not a real number (a TypeError; bools are refused).
    InvalidArgumentError
        If ``amount`` is not in [0, 1) (a ValueError).
    """
    return check_float("amount", amount, 0.0, 1.0, max_open=True)


def _as_keep(t, what: str) -> torch.Tensor:
    try:
        t = torch.as_tensor(t)
    except (TypeError, ValueError, RuntimeError):
        raise InvalidArgumentTypeError(f"{what} must be a bool tensor (True = kept); got {type(t).__name__}") from None
    if t.dtype != torch.bool:
        raise InvalidArgumentTypeError(f"{what} must be a bool tensor (True = kept); got dtype {t.dtype}")
    if t.dim() != 1 or t.numel() == 0:
        raise InvalidArgumentError(f"{what} must be a non-empty 1-D bool tensor; got shape {tuple(t.shape)}")
    return t.detach().to("cpu").clone()


def _as_layer(key, what: str) -> int:
    if isinstance(key, str) and key.lstrip("-").isdigit():
        key = int(key)
    message = f"{what} keys must be non-negative layer indices; got {key!r}"
    if isinstance(key, bool) or not isinstance(key, numbers.Integral):
        raise InvalidArgumentTypeError(message)
    if int(key) < 0:
        raise InvalidArgumentError(message)
    return int(key)


class NeuronMask:
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

    def __init__(self, intermediate: Mapping[int, torch.Tensor], hidden: Mapping[int, torch.Tensor] | None = None,
                 meta: dict | None = None):
        what = "a non-empty mapping of layer -> bool keep-tensor"
        if not isinstance(intermediate, Mapping):
            raise fail_type("intermediate", what, intermediate)
        if not intermediate:
            raise fail("intermediate", what, intermediate)
        self.intermediate: dict[int, torch.Tensor] = {}
        for key in sorted(intermediate, key=lambda k: _as_layer(k, "`intermediate`")):
            layer = _as_layer(key, "`intermediate`")
            keep = _as_keep(intermediate[key], f"`intermediate[{layer}]`")
            if not keep.any():
                raise InvalidArgumentError(f"`intermediate[{layer}]` keeps no neuron of layer {layer} "
                                 f"(all {keep.numel()} pruned); a layer must keep at least one")
            self.intermediate[layer] = keep
        self.hidden: dict[int, torch.Tensor] | None = None
        if hidden is not None:
            if not isinstance(hidden, Mapping):
                raise fail_type("hidden", "a mapping of layer -> bool keep-tensor or None", hidden)
            self.hidden = {}
            for key in sorted(hidden, key=lambda k: _as_layer(k, "`hidden`")):
                layer = _as_layer(key, "`hidden`")
                if layer not in self.intermediate:
                    raise InvalidArgumentError(f"`hidden` has layer {layer}, which `intermediate` does not have "
                                     f"(layers {list(self.intermediate)})")
                self.hidden[layer] = _as_keep(hidden[key], f"`hidden[{layer}]`")
        self.meta: dict = dict(meta or {})

    # ------------------------------------------------------------------ summaries
    @property
    def layers(self) -> list[int]:
        """Layer indices, in order."""
        return list(self.intermediate)

    def sizes(self) -> list[int]:
        """Number of intermediate neurons kept in each layer, in layer order."""
        return [int(k.sum()) for k in self.intermediate.values()]

    def n_total(self, layer: int | None = None) -> int:
        """Number of intermediate neurons (kept or not), in one layer or in all."""
        return int(sum(k.numel() for k in self._select(layer)))

    def n_kept(self, layer: int | None = None) -> int:
        """Number of intermediate neurons kept, in one layer or in all."""
        return int(sum(int(k.sum()) for k in self._select(layer)))

    def n_pruned(self, layer: int | None = None) -> int:
        """Number of intermediate neurons pruned, in one layer or in all."""
        return self.n_total(layer) - self.n_kept(layer)

    @property
    def fraction(self) -> float:
        """Fraction of all intermediate neurons that are pruned."""
        return self.n_pruned() / self.n_total()

    def kept_indices(self, layer: int) -> torch.Tensor:
        """Indices of the kept intermediate neurons of ``layer``, ascending (int64)."""
        return self._select(layer)[0].nonzero().flatten()

    def pruned_indices(self, layer: int) -> torch.Tensor:
        """Indices of the pruned intermediate neurons of ``layer``, ascending (int64)."""
        return (~self._select(layer)[0]).nonzero().flatten()

    def n_hidden_pruned(self) -> int:
        """Number of hidden channels (down_proj rows) pruned over all layers (0 without ``hidden``)."""
        return int(sum(int((~k).sum()) for k in (self.hidden or {}).values()))

    def _select(self, layer: int | None) -> list[torch.Tensor]:
        if layer is None:
            return list(self.intermediate.values())
        if layer not in self.intermediate:
            raise KeyError(f"`layer` must be one of {self.layers}; got {layer!r}")
        return [self.intermediate[layer]]

    def __repr__(self) -> str:
        extra = f", hidden pruned={self.n_hidden_pruned()}" if self.hidden is not None else ""
        return (f"NeuronMask({len(self.intermediate)} layers, kept {self.n_kept()}/{self.n_total()} "
                f"intermediate neurons ({self.fraction:.1%} pruned){extra})")

    def __eq__(self, other) -> bool:
        if not isinstance(other, NeuronMask):
            return NotImplemented
        return (_same(self.intermediate, other.intermediate) and _same(self.hidden, other.hidden)
                and self.meta == other.meta)

    __hash__ = None  # mutable container of tensors

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
        from ..models.architectures import mlp_layers

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
                    raise InvalidArgumentError(f"the mask does not match the model: layer {mlp.layer} ({mlp.down_name}) "
                                     f"has {d} hidden channels in the model but {got} in the hidden mask")

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

        Example
        -------
        >>> mask.save("mask.safetensors")                     # doctest: +SKIP
        >>> NeuronMask.load("mask.safetensors") == mask       # doctest: +SKIP
        True
        """
        from .._version import __version__

        tensors = {f"intermediate.{l}": k.contiguous() for l, k in self.intermediate.items()}
        for l, k in (self.hidden or {}).items():
            tensors[f"hidden.{l}"] = k.contiguous()
        metadata = {"format": _FORMAT, "version": __version__, "has_hidden": json.dumps(self.hidden is not None),
                    "meta": json.dumps(self.meta)}
        return save_safetensors_atomic(tensors, path, metadata, overwrite=overwrite)

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
        from safetensors import SafetensorError, safe_open

        if not isinstance(path, (str, os.PathLike)):
            raise fail_type("path", "a str or a path", path)
        path = Path(path).expanduser()
        if not path.is_file():
            raise MissingInputError(f"`path` {str(path)!r} does not exist")
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                if metadata.get("format") != _FORMAT:
                    raise FileFormatError(f"`path` {str(path)!r} is not an llmrank_graph NeuronMask file")
                inter, hidden = {}, {}
                for key in f.keys():
                    kind, _, layer = key.partition(".")
                    if kind not in ("intermediate", "hidden") or not layer.isdigit():
                        raise FileFormatError(f"`path` {str(path)!r} has an unexpected tensor {key!r}; a NeuronMask "
                                              "file holds 'intermediate.<layer>' and 'hidden.<layer>'")
                    (inter if kind == "intermediate" else hidden)[int(layer)] = f.get_tensor(key)
            has_hidden = json.loads(metadata.get("has_hidden", "false"))
            meta = json.loads(metadata.get("meta", "{}"))
            return cls(inter, hidden if has_hidden else None, meta)
        except FileFormatError:
            raise
        except (SafetensorError, OSError, json.JSONDecodeError) as e:
            raise FileFormatError(f"`path` {str(path)!r} is not a readable NeuronMask file (truncated or "
                                  f"damaged?): {e}") from None
        except (InvalidArgumentError, InvalidArgumentTypeError) as e:
            raise FileFormatError(f"`path` {str(path)!r} holds an invalid NeuronMask: {e}") from None


def _same(a: dict | None, b: dict | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------- allocation
def _round_count(x: float, rounding: str) -> int:
    if rounding == "floor":
        # amount * n carries float noise (0.29 * 100 = 28.999999999999996): floor with a tolerance.
        return int(math.floor(x + 1e-9))
    return int(round(x))  # Python round (half to even), as torch.nn.utils.prune


def _resolve_floor(min_keep, n: int, allocation: str, what: str) -> int:
    if min_keep is None:
        if allocation == "global":
            return max(1, math.ceil(GLOBAL_MIN_KEEP_FRACTION * n))
        return 1
    if isinstance(min_keep, numbers.Integral) and not isinstance(min_keep, bool):
        if min_keep > n:
            raise InvalidArgumentError(f"`min_keep` ({int(min_keep)}) is larger than {what}, which has {n} neurons")
        return int(min_keep)
    return math.ceil(float(min_keep) * n)


def _check_min_keep(min_keep) -> None:
    what = "None, an int >= 0 or a float in [0, 1)"
    if min_keep is None:
        return
    if not is_real(min_keep):
        raise fail_type("min_keep", what, min_keep)
    if isinstance(min_keep, numbers.Integral):
        if min_keep < 0:
            raise fail("min_keep", what, min_keep)
    elif not 0.0 <= float(min_keep) < 1.0:
        raise fail("min_keep", what, min_keep)


@runtime_checkable
class ScoresLike(Protocol):
    """What :func:`allocate` reads from scores (:class:`llmrank_graph.scoring.registry.NeuronScores` is one).

    ``intermediate``: layer -> (m_l,) scores; ``hidden``: layer -> (d,) scores or None;
    ``method``: the scorer's name or None.
    """

    intermediate: Mapping
    hidden: Mapping | None
    method: str | None


def _score_modules(scores) -> tuple[list[tuple[str, int]], list[np.ndarray], bool]:
    """Flatten scores into modules in the reference's order [I_0, H_0, I_1, H_1, ...]."""
    if isinstance(scores, Mapping):
        inter, hidden = scores, None
    elif isinstance(scores, ScoresLike):
        inter, hidden = scores.intermediate, scores.hidden
    else:
        raise fail_type("scores", "a NeuronScores (llmrank_graph.scoring.registry) or a mapping of layer -> scores", scores)
    if not isinstance(inter, Mapping) or not inter:
        raise fail("scores", "intermediate scores for at least one layer", scores)
    keys, vals = [], []
    layers = sorted(_as_layer(k, "`scores.intermediate`") for k in inter)
    inter = {_as_layer(k, "`scores.intermediate`"): v for k, v in inter.items()}
    hidden = None if hidden is None else {_as_layer(k, "`scores.hidden`"): v for k, v in hidden.items()}
    for layer in layers:
        parts = [("intermediate", inter[layer])]
        if hidden is not None and layer in hidden:
            parts.append(("hidden", hidden[layer]))
        for kind, s in parts:
            t = torch.as_tensor(s).detach().to("cpu", torch.float64)
            if t.dim() != 1 or t.numel() == 0:
                raise InvalidArgumentError(f"`scores.{kind}[{layer}]` must be a non-empty 1-D tensor; got shape "
                                 f"{tuple(t.shape)}")
            if not torch.isfinite(t).all():
                raise InvalidArgumentError(f"`scores.{kind}[{layer}]` contains NaN or inf (layer {layer}); "
                                 "scores must be finite")
            keys.append((kind, layer))
            vals.append(t.numpy())
    if hidden is not None:
        extra = sorted(set(hidden) - set(layers))
        if extra:
            raise InvalidArgumentError(f"`scores.hidden` has layers {extra} that `scores.intermediate` does not have")
    return keys, vals, hidden is not None


def _lowest(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k lowest values; ties by index (stable sort)."""
    return np.argsort(values, kind="stable")[:k]


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
    amount = check_amount(amount)
    check_choice("allocation", allocation, ALLOCATIONS)
    check_choice("rounding", rounding, ROUNDINGS)
    _check_min_keep(min_keep)
    if rounding == "reference" and min_keep is not None:
        raise InvalidArgumentError(f"`min_keep` must be None with rounding='reference' (the reference code has no "
                         f"per-layer floor); got {min_keep!r}")
    keys, vals, has_hidden = _score_modules(scores)
    sizes = [v.size for v in vals]
    names = [f"layer {l}" if kind == "intermediate" else f"layer {l} hidden channels (down rows)"
             for kind, l in keys]

    if allocation == "local":
        pruned = _allocate_local(vals, sizes, names, amount, min_keep, rounding)
    elif rounding == "reference" and allocation == "global":
        pruned = _allocate_global_reference(vals, sizes, amount)
    else:
        normalise = _standardise if allocation == "standardized" else _by_mean_abs
        pruned = _allocate_global(vals, sizes, names, amount, min_keep, rounding, normalise)

    inter, hidden = {}, ({} if has_hidden else None)
    for (kind, layer), n, idx, name in zip(keys, sizes, pruned, names):
        if len(idx) >= n:
            raise InvalidArgumentError(
                f"allocation={allocation!r} with amount={amount} (rounding={rounding!r}) would prune all {n} "
                f"neurons of {name}; lower `amount`" + (" or raise `min_keep`" if rounding != "reference" else "")
            )
        keep = torch.ones(n, dtype=torch.bool)
        keep[torch.as_tensor(idx, dtype=torch.long)] = False
        (inter if kind == "intermediate" else hidden)[layer] = keep
    meta = {"amount": amount, "allocation": allocation, "rounding": rounding,
            "min_keep": min_keep, "method": scores.method if isinstance(scores, ScoresLike) else None}
    mask = NeuronMask(inter, hidden, meta)
    logger.debug("allocate: %s", mask)
    return mask


def _allocate_local(vals, sizes, names, amount, min_keep, rounding) -> list[np.ndarray]:
    out = []
    for v, n, name in zip(vals, sizes, names):
        k = _round_count(amount * n, rounding)
        floor = 0 if rounding == "reference" else _resolve_floor(min_keep, n, "local", name)
        if n - k < floor:
            raise InvalidArgumentError(f"allocation='local' with amount={amount} would keep {n - k} of {n} neurons of "
                             f"{name}, below min_keep={floor}; lower `amount` or `min_keep`")
        out.append(_lowest(v, k))
    return out


def _pool_lowest(values: np.ndarray, module: np.ndarray, index: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k lowest pooled values; ties by module, then index."""
    order = np.lexsort((index, module, values))
    return order[:k]


def _split(selected: np.ndarray, module: np.ndarray, index: np.ndarray, n_modules: int) -> list[np.ndarray]:
    return [np.sort(index[selected][module[selected] == i]) for i in range(n_modules)]


def _allocate_global_reference(vals, sizes, amount) -> list[np.ndarray]:
    # As the reference GlobalPruner: flat_scores = cat(all modules), threshold_idx =
    # math.ceil(len(flat_scores) * amount), prune flat_scores.argsort()[:threshold_idx].
    total = sum(sizes)
    k = math.ceil(total * amount)
    flat = np.concatenate(vals)
    module = np.concatenate([np.full(n, i) for i, n in enumerate(sizes)])
    index = np.concatenate([np.arange(n) for n in sizes])
    return _split(_pool_lowest(flat, module, index, k), module, index, len(vals))


def _by_mean_abs(v: np.ndarray) -> np.ndarray:
    scale = np.abs(v).mean()
    return v / scale if scale > 0 else np.zeros_like(v)


def _standardise(v: np.ndarray) -> np.ndarray:
    std = v.std()
    return (v - v.mean()) / std if std > 0 else np.zeros_like(v)


def _allocate_global(vals, sizes, names, amount, min_keep, rounding, normalise=_by_mean_abs) -> list[np.ndarray]:
    total = sum(sizes)
    k = _round_count(amount * total, rounding)
    floors = [_resolve_floor(min_keep, n, "global", name) for n, name in zip(sizes, names)]
    caps = [n - f for n, f in zip(sizes, floors)]
    if k > sum(caps):
        raise InvalidArgumentError(f"allocation='global' with amount={amount} must prune {k} of {total} neurons, but the "
                         f"per-layer floor (min_keep={min_keep!r}: {sum(floors)} kept in all) leaves only "
                         f"{sum(caps)} prunable; lower `amount` or `min_keep`")
    cand_val, cand_mod, cand_idx = [], [], []
    for i, (v, cap) in enumerate(zip(vals, caps)):
        normed = normalise(v)
        # Only a layer's `cap` lowest neurons may be pruned: pooling those candidates and taking
        # the k lowest is one threshold with a floor per layer.
        idx = _lowest(normed, cap)
        cand_val.append(normed[idx])
        cand_mod.append(np.full(len(idx), i))
        cand_idx.append(idx)
    values, module, index = (np.concatenate(x) for x in (cand_val, cand_mod, cand_idx))
    return _split(_pool_lowest(values, module, index, k), module, index, len(vals))


def prune_lowest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Keep-mask of one layer that prunes its ``k`` lowest scores (ties: the lower index first).

    Parameters
    ----------
    scores : torch.Tensor
        (m,) scores, higher = more important.
    k : int
        Number of neurons to prune, in [0, m).

    Returns
    -------
    torch.Tensor
        bool, (m,): True = kept.
    """
    v = torch.as_tensor(scores).detach().to("cpu", torch.float64).numpy()
    if not 0 <= int(k) < v.size:
        raise InvalidArgumentError(f"`k` must be in [0, {v.size}) (a layer keeps at least one neuron); got {k}")
    keep = torch.ones(v.size, dtype=torch.bool)
    keep[torch.as_tensor(_lowest(v, int(k)), dtype=torch.long)] = False
    return keep
