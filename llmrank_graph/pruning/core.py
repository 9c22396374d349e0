"""What the pruning entry points share: the ways to apply a mask, the checks of a model and its
statistics, the surgery on checked arguments, and the result type.

:func:`llmrank_graph.prune_model` (:mod:`llmrank_graph.pruning.prune`), its layer-by-layer mode
(:mod:`llmrank_graph.pruning.sequential`) and :func:`llmrank_graph.apply_mask`
(:mod:`llmrank_graph.pruning.surgery`) all use these; they sit here, below all three, so that
no two of them import each other. ``HOWS`` and ``PruneResult`` are public as
``llmrank_graph.pruning.surgery.HOWS`` and ``llmrank_graph.PruneResult``.

Every entry point checks its arguments once, at the top (docs/design.md section 3): its
parameter table (:mod:`llmrank_graph.base.params`), then :func:`check_model_and_stats`, which
scans the weights and checks the statistics once per call. What it calls after that
(:func:`apply_checked`, :func:`llmrank_graph.pruning.masks.allocate_checked`, the compensation's
:func:`~llmrank_graph.compensation.algebra.down_updates`) trusts what it gets.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..base.params import InstanceOf, Optional
from ..compensation.algebra import apply_updates, down_updates
from ..data.calibration import ActivationStats
from ..errors import InvalidArgumentError
from ..models.architectures import MLPModules, check_finite_weights, get_architecture, intermediate_sizes, mlp_layers
from ..models.saved_format import original_intermediate_size, record_sizes
from .masks import NeuronMask

logger = logging.getLogger(__name__)

__all__ = ["HOWS", "PruneResult", "zero_mlp", "STATS", "check_model_and_stats", "apply_checked",
           "check_hidden_compensation"]

#: Ways to apply a mask.
HOWS: tuple[str, ...] = ("remove", "zero")
#: The constraint of every ``stats`` argument.
STATS = Optional(InstanceOf(ActivationStats, "an ActivationStats or None"))


def check_model_and_stats(model: nn.Module, stats: ActivationStats | None) -> list[MLPModules]:
    """The checks of a model and its statistics that an entry point makes once per call.

    ``model`` must be of a registered family; ``stats`` (already known to be an
    :class:`~llmrank_graph.data.calibration.ActivationStats` or None) must describe it
    (:meth:`~llmrank_graph.data.calibration.ActivationStats.check_model`); the MLP weights must
    be finite (:func:`~llmrank_graph.models.architectures.check_finite_weights`, the one scan).

    Returns
    -------
    list of MLPModules
        The model's MLP layers.

    Raises
    ------
    InvalidArgumentError
        Naming the module whose statistics or weights are wrong (a ValueError).
    UnsupportedArchitectureError
        ``model`` is of no registered family.
    """
    get_architecture(model)
    if stats is not None:
        stats.check_model(model)
    mlps = mlp_layers(model)
    check_finite_weights(mlps)
    return mlps


def check_hidden_compensation(prunes_hidden: bool, compensate: str) -> None:
    """Refuse a compensation with the paper mode's hidden channels (``apply_mask`` and ``prune_model`` alike)."""
    if prunes_hidden and compensate != "none":
        raise InvalidArgumentError(f"compensate={compensate!r} refits down_proj for the kept intermediate "
                                   "neurons, which the paper mode's zeroed down_proj rows contradict; use "
                                   "compensate='none' with prune_hidden")


def apply_checked(model: nn.Module, mask: NeuronMask, how: str, compensate: str, stats: ActivationStats | None,
                  ridge: float) -> nn.Module:
    """:func:`llmrank_graph.apply_mask` on checked arguments: nothing is re-checked.

    Every compensation is computed before the first weight changes, so that an error in it
    leaves the model as it was.
    """
    updates = down_updates(model, mask, stats, compensate, ridge) if compensate != "none" else {}
    if how == "zero":
        for mlp in mlp_layers(model):
            hidden_keep = mask.hidden.get(mlp.layer) if mask.hidden is not None else None
            zero_mlp(mlp, mask.intermediate[mlp.layer], hidden_keep)
        apply_updates(model, updates, keep=mask.intermediate)
        logger.debug("zeroed %d intermediate neurons and %d hidden channels", mask.n_pruned(),
                     mask.n_hidden_pruned())
        return model
    original = original_intermediate_size(model)
    for mlp in mlp_layers(model):
        keep = mask.intermediate[mlp.layer]
        if not keep.all():
            mlp.keep_neurons(keep.nonzero().flatten())
    record_sizes(model, original)
    apply_updates(model, updates)
    logger.debug("removed %d intermediate neurons; sizes now %s; compensation %s", mask.n_pruned(),
                 intermediate_sizes(model), compensate)
    return model


def zero_mlp(mlp: MLPModules, keep: torch.Tensor, hidden_keep: torch.Tensor | None) -> None:
    """Zero the gate/up rows (and biases) and down columns of the neurons ``keep`` drops, in place.

    ``hidden_keep`` (the paper mode) also zeroes the down rows of the dropped hidden channels.
    """
    c = mlp.conv1d
    with torch.no_grad():
        drop = (~keep).to(mlp.up.weight.device)
        for mod in (mlp.gate, mlp.up):
            if mod is not None:
                if c:
                    mod.weight[:, drop] = 0
                else:
                    mod.weight[drop] = 0
                if getattr(mod, "bias", None) is not None:
                    mod.bias[drop] = 0
        if c:
            mlp.down.weight[drop] = 0
        else:
            mlp.down.weight[:, drop] = 0
        if hidden_keep is not None:
            # Paper mode: zero the down rows (output channels) as ln_structured on "weight"
            # does; the bias, if any, is left alone like there.
            hdrop = (~hidden_keep).to(mlp.down.weight.device)
            if c:
                mlp.down.weight[:, hdrop] = 0
            else:
                mlp.down.weight[hdrop] = 0


@dataclass
class PruneResult:
    """What :func:`llmrank_graph.prune_model` returns.

    Attributes
    ----------
    model : torch.nn.Module
        The pruned model (the same object that was passed in, pruned in place).
    masks : NeuronMask or None
        The neurons kept; None with ``target='attention'``, which prunes heads only.
    scores : NeuronScores or None
        The scores the masks came from (None with ``target='attention'``).
    stats : ActivationStats or None
        In the sequential mode, the statistics each layer was pruned with (collected on the
        outputs of the already-pruned layers; without the Gram matrices, freed layer by
        layer). None otherwise.
    head_mask : HeadMask or None
        The attention heads kept (``target='attention'`` or ``'both'``); None with
        ``target='mlp'``. Its ``meta['fraction']`` is the exact fraction of heads removed.
    head_scores : HeadScores or None
        The head scores the head mask came from.
    """

    model: nn.Module
    masks: NeuronMask | None
    scores: Any
    stats: ActivationStats | None = None
    head_mask: Any = None  # a HeadMask (pruning.heads imports this module)
    head_scores: Any = None
