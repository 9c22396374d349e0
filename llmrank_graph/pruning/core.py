"""What both pruning modes share: the ways to apply a mask, zeroing one MLP, and the result type.

:func:`llmrank_graph.prune_model` (:mod:`llmrank_graph.pruning.surgery`) and its layer-by-layer mode
(:mod:`llmrank_graph.pruning.sequential`) both use these; they sit here, below both, so that
``pruning`` imports ``sequential`` and never the reverse. ``HOWS`` and ``PruneResult`` are
public as ``llmrank_graph.pruning.surgery.HOWS`` and ``llmrank_graph.PruneResult``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..models.architectures import MLPModules
from ..data.calibration import ActivationStats
from .masks import NeuronMask

__all__ = ["HOWS", "PruneResult", "zero_mlp"]

#: Ways to apply a mask.
HOWS: tuple[str, ...] = ("remove", "zero")


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
    masks : NeuronMask
        The neurons kept.
    scores : NeuronScores
        The scores the masks came from.
    stats : ActivationStats or None
        In the sequential mode, the statistics each layer was pruned with (collected on the
        outputs of the already-pruned layers; without the Gram matrices, freed layer by
        layer). None otherwise.
    """

    model: nn.Module
    masks: NeuronMask
    scores: Any
    stats: ActivationStats | None = None
