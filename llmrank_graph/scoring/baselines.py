"""Baselines: ``magnitude``, ``activation``, ``wanda-sp``, ``random``.

Per-layer scores from a layer's weights and its calibration statistics (docs/design.md
section 4); the same in both modes. ``random`` draws from one seeded generator over all
layers.

>>> import torch, transformers, llmrank_graph as lg
>>> cfg = transformers.LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=12, num_hidden_layers=2,
...                                num_attention_heads=2)
>>> model = transformers.LlamaForCausalLM(cfg).eval()
>>> stats = lg.calibrate(model, input_ids=torch.randint(0, 32, (2, 8)))
>>> WandaSPScorer().score(model, stats).sizes()
{0: 12, 1: 12}
>>> MagnitudeScorer(which="down", ord=1).score(model).intermediate[0].shape   # weights only
torch.Size([12])
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar

import numpy as np
import torch

from ..base.checks import fail, fail_type
from ..base.params import Check, Constraint, OneOf
from ..errors import InvalidArgumentError
from .registry import Scorer, _abs64, _LayerScorer, _vec

__all__ = ["MagnitudeScorer", "ActivationScorer", "WandaSPScorer", "RandomScorer"]


class MagnitudeScorer(_LayerScorer):
    """Weight magnitude per intermediate neuron.

    ``which='up'`` or ``'gate'``: norm of row j of that (m, d) weight; ``which='down'``: norm of
    column j of the (d, m) down weight.

    Parameters
    ----------
    which : {'up', 'gate', 'down'}
    ord : {1, 2}
        L1 or L2 norm.
    mode : {'chained', 'isolated'}
        No effect on the scores (per-layer method); accepted for a uniform interface.
    prune_hidden : bool
        Must be False.

    Example
    -------
    >>> MagnitudeScorer(which="down", ord=2).needs_stats()
    False
    """

    name = "magnitude"
    description = "L1/L2 norm of the up/gate rows or down columns of each neuron"
    _parameter_constraints: ClassVar[Mapping[str, Constraint]] = MappingProxyType({
        **Scorer._parameter_constraints, "which": OneOf("up", "gate", "down"), "ord": OneOf(1, 2)})

    def __init__(self, *, which: str = "up", ord: int = 2, mode: str = "chained", prune_hidden: bool = False):
        self.which = which
        self.ord = ord
        self.mode = mode
        self.prune_hidden = prune_hidden

    def needs_stats(self) -> bool:
        return False

    def _layer(self, m, stats):
        if self.which == "gate" and m.gate is None:
            raise InvalidArgumentError(f"`which='gate'` needs a gated MLP, but layer {m.layer} has none; "
                                       "use 'up' or 'down'")
        w = _abs64(m, self.which)
        dim = 0 if self.which == "down" else 1  # down is (d, m): neuron j is column j
        return torch.linalg.vector_norm(w, ord=self.ord, dim=dim)


class ActivationScorer(_LayerScorer):
    """L2 norm over calibration tokens of each intermediate neuron's activation.

    That is the input norm of down_proj: ``||act(gate x) * up x||`` (``||act(fc1 x)||`` for a
    plain MLP).

    Parameters
    ----------
    mode : {'chained', 'isolated'}
        No effect on the scores (per-layer method).
    prune_hidden : bool
        Must be False.

    Example
    -------
    >>> ActivationScorer.check_params(prune_hidden=True)
    Traceback (most recent call last):
    ...
    llmrank_graph.errors.InvalidArgumentError: `prune_hidden=True` needs scores of the hidden channels,
    which scorer 'activation' does not give; methods that do: 'wpr', 'mpr', 'channel-wanda', 'norm'
    """

    name = "activation"
    description = "input norm of down_proj (intermediate activation norm)"

    def _layer(self, m, stats):
        return stats.input_norm(m.down_name).to(torch.float64)


class WandaSPScorer(_LayerScorer):
    """FLAP's Wanda-sp: ``score_j = sum_i |W_down[i, j]| * ||x_j||``, x the input of down_proj.

    Parameters
    ----------
    mode : {'chained', 'isolated'}
        No effect on the scores (per-layer method).
    prune_hidden : bool
        Must be False.

    Example
    -------
    >>> WandaSPScorer().layerwise           # the sequential mode rescores each layer
    True
    """

    name = "wanda-sp"
    description = "structured Wanda (FLAP): column sums of |W_down| times the neuron's input norm"

    def _layer(self, m, stats):
        w = _abs64(m, "down")  # (d, m)
        return w.sum(0) * _vec(stats.input_norm(m.down_name), w)


def _seed(arg: str, value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise fail_type(arg, "a non-negative int", value)
    if value < 0:
        raise fail(arg, "a non-negative int", value)
    return int(value)


class RandomScorer(_LayerScorer):
    """Uniform random scores from a seeded ``torch.Generator`` (reproducible).

    Parameters
    ----------
    seed : int
    mode : {'chained', 'isolated'}
        No effect on the scores.
    prune_hidden : bool
        Must be False.

    Example
    -------
    >>> RandomScorer(seed=1).get_params()
    {'seed': 1, 'mode': 'chained', 'prune_hidden': False}
    """

    name = "random"
    description = "uniform random scores (seeded)"
    layerwise = False  # one generator over all layers
    _parameter_constraints: ClassVar[Mapping[str, Constraint]] = MappingProxyType({
        **Scorer._parameter_constraints, "seed": Check(_seed, "a non-negative int")})

    def __init__(self, *, seed: int = 0, mode: str = "chained", prune_hidden: bool = False):
        self.seed = seed
        self.mode = mode
        self.prune_hidden = prune_hidden

    def needs_stats(self) -> bool:
        return False

    def _score(self, model, mlps, stats):
        g = torch.Generator(device="cpu").manual_seed(int(self.seed))
        return {m.layer: torch.rand(m.intermediate_size, generator=g, dtype=torch.float64) for m in mlps}, None
