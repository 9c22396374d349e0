"""Compensation after head removal: repair each layer's attention output from calibration statistics.

The algebra of :mod:`llmrank_graph.compensation.algebra` (docs/design.md section 6), with the
attention output projection in the place of down_proj: ``x`` is the input of the output
projection (the heads' outputs, ``num_heads * head_dim`` features), ``W`` its weight
(hidden, num_heads * head_dim), ``K`` the columns of the kept heads and ``R`` those of the
removed ones. Calibration with ``attention=True`` (and ``second_moments=True`` for the refit)
gives ``mu = E[x]`` and ``G = E[x x^T]``.

``compensate='bias'``
    FLAP's bias ``b = W_R mu_R`` (:func:`~llmrank_graph.compensation.algebra.bias_term`), added
    to the output projection's bias.
``compensate='lstsq'``
    the ridge refit of the kept columns, ``W_K + W_R G_RK (G_KK + lambda I)^-1``
    (:func:`~llmrank_graph.compensation.algebra.ridge_refit`), with the ridge of
    :func:`~llmrank_graph.compensation.algebra.token_ridge` over the kept columns.
``compensate='lstsq+bias'``
    the same fit on the covariance, then ``b = W mu - W'_K mu_K``.

Where the bias lives: GPT-2's ``c_proj`` and OPT's ``out_proj`` have one. Llama, Qwen3 and
Gemma have the config flag ``attention_bias``, which :func:`enable_o_bias` turns on (with zero
biases on the query, key and value projections too, since the flag gives every projection one
when transformers builds the model). Mistral and Qwen2 have no such flag: ``bias`` is refused
there, and ``lstsq`` suggested.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from ..data.stats import ActivationStats
from ..errors import InvalidArgumentError
from ..models.architectures import get_architecture
from ..models.attention import AttentionModules, attention_layers
from .algebra import DownUpdate, column_update, needs_second_moments, uses_bias

logger = logging.getLogger(__name__)

__all__ = ["ATTENTION_BIAS_FLAG", "o_weight", "head_columns", "check_head_compensation", "check_o_bias_possible",
           "o_updates", "apply_o_updates", "enable_o_bias"]

#: The config flag that gives every attention projection a bias (Llama, Qwen3, Gemma).
ATTENTION_BIAS_FLAG = "attention_bias"


def o_weight(att: AttentionModules) -> torch.Tensor:
    """The output projection's weight as (hidden, num_heads * head_dim), a view (transposed for ``Conv1D``)."""
    w = att.o.weight
    return w.T if att.conv1d else w


def head_columns(att: AttentionModules, keep_heads: torch.Tensor) -> torch.Tensor:
    """bool (num_heads * head_dim,): the output projection's input columns of the heads ``keep_heads`` keeps."""
    return torch.as_tensor(keep_heads, dtype=torch.bool).repeat_interleave(att.head_dim)


def check_o_bias_possible(model: nn.Module) -> None:
    """Refuse a bias compensation of heads where the output projection has no bias and no flag gives it one.

    Raises
    ------
    InvalidArgumentError
        Naming the family and suggesting ``compensate='lstsq'`` (a ValueError).
    """
    layers = attention_layers(model)
    if all(getattr(a.o, "bias", None) is not None for a in layers):
        return
    if isinstance(getattr(model.config, ATTENTION_BIAS_FLAG, None), bool):
        return
    spec = get_architecture(model)
    raise InvalidArgumentError(
        f"compensate='bias' for attention heads stores a bias in the attention output projection, but family "
        f"{spec.name!r} has none there and no '{ATTENTION_BIAS_FLAG}' option in its config, so the saved model "
        "would not load in transformers; use compensate='lstsq', which refits the kept columns without a bias")


def check_head_compensation(model: nn.Module, stats: ActivationStats | None, compensate: str) -> list[AttentionModules]:
    """Refuse, before any work, a head compensation that cannot be done on ``model`` with ``stats``.

    On a checked ``compensate``: the stats must hold every output projection's input means (and,
    for ``lstsq``, finite Gram matrices), and a bias must have somewhere to live.

    Raises
    ------
    InvalidArgumentError
        Saying what is missing and how to collect it, or why the bias cannot be stored.
    """
    layers = attention_layers(model)
    if compensate == "none":
        return layers
    if stats is None:
        raise InvalidArgumentError(f"compensate={compensate!r} needs calibration statistics of the attention output "
                                   "projections; calibrate with llmrank_graph.calibrate(model, ..., attention=True"
                                   + (", second_moments=True)" if needs_second_moments(compensate) else ")"))
    stats.check_attention(layers, means=True, second_moments=needs_second_moments(compensate),
                          why=f"compensate={compensate!r} of attention heads")
    if uses_bias(compensate):
        check_o_bias_possible(model)
    return layers


def _layer_update(att: AttentionModules, stats: ActivationStats, keep: torch.Tensor, compensate: str,
                  ridge: float) -> DownUpdate:
    return column_update(att.layer, o_weight(att), stats[att.names["o"]], keep, compensate, ridge)


def o_updates(layers: list[AttentionModules], heads: dict[int, torch.Tensor], stats: ActivationStats,
              compensate: str, ridge: float) -> dict[int, DownUpdate]:
    """The compensation of every layer that loses heads, computed without changing the model.

    Parameters
    ----------
    layers : list of AttentionModules
        The model's attention layers, not yet pruned.
    heads : dict of int -> torch.Tensor
        Layer -> bool keep-mask over its query heads (:attr:`llmrank_graph.pruning.heads.HeadMask.heads`).
    stats : ActivationStats
        Checked by :func:`check_head_compensation`.
    compensate : {'bias', 'lstsq', 'lstsq+bias'}
    ridge : float
        The base relative ridge.

    Returns
    -------
    dict of int -> DownUpdate
        The new kept columns (hidden, kept features) and the bias to add, per layer: the record
        of :func:`~llmrank_graph.compensation.algebra.down_updates`, for the output projection.
    """
    out = {}
    with torch.no_grad():
        for att in layers:
            keep = heads[att.layer]
            if keep.all():
                continue
            out[att.layer] = _layer_update(att, stats, head_columns(att, keep), compensate, ridge)
    return out


def enable_o_bias(model: nn.Module) -> None:
    """Give every attention output projection a bias: turn on ``attention_bias`` (zero biases where none).

    Nothing to do where every output projection has a bias (GPT-2, OPT). Otherwise the config flag
    gives one to the query, key, value and output projections when transformers builds the model,
    so each of them gets a zero bias now, and the flag is set.

    Raises
    ------
    InvalidArgumentError
        A family whose config has no such flag (:func:`check_o_bias_possible`).
    """
    layers = attention_layers(model)
    if all(getattr(a.o, "bias", None) is not None for a in layers):
        return
    check_o_bias_possible(model)
    for att in layers:
        for mod in (att.q, att.k, att.v, att.qkv, att.o):
            if mod is not None and getattr(mod, "bias", None) is None:
                w = mod.weight
                out_features = w.shape[1] if att.conv1d else w.shape[0]
                mod.bias = nn.Parameter(torch.zeros(out_features, dtype=w.dtype, device=w.device),
                                        requires_grad=w.requires_grad)
    setattr(model.config, ATTENTION_BIAS_FLAG, True)
    logger.debug("turned on %s=True: zero biases on every attention projection", ATTENTION_BIAS_FLAG)


def apply_o_updates(model: nn.Module, updates: dict[int, DownUpdate],
                    keep: dict[int, torch.Tensor] | None = None) -> None:
    """Write :func:`o_updates` into ``model``, whose heads are already removed (or zeroed).

    Parameters
    ----------
    model : transformers model
    updates : dict of int -> DownUpdate
    keep : dict of int -> torch.Tensor, optional
        After ``how='zero'`` (the output projection still has every column): each layer's
        keep-mask over its query heads, saying which columns get the new weights. None after
        ``how='remove'``.
    """
    if any(u.bias is not None for u in updates.values()):
        enable_o_bias(model)
    layers = {a.layer: a for a in attention_layers(model)}
    with torch.no_grad():
        for layer, u in updates.items():
            att = layers[layer]
            if u.weight is not None:
                w = o_weight(att)
                new = u.weight.to(dtype=w.dtype, device=w.device)
                if keep is None:
                    w.copy_(new)
                else:
                    w[:, head_columns(att, keep[layer]).to(w.device)] = new
            if u.bias is not None:
                att.o.bias.add_(u.bias.to(dtype=att.o.bias.dtype, device=att.o.bias.device))
