"""Compensation-aware criteria: ``flap`` and ``obs`` (docs/design.md section 6).

Each scores a neuron by the output error that a repair of down_proj cannot undo when it is
removed: ``flap`` (FLAP's fluctuation metric) what a bias cannot repair, ``obs`` (greedy
structured OBS) what a least-squares refit cannot repair. The algebra is
:mod:`llmrank_graph.compensation.algebra`, shared with the compensation that pruning applies.

>>> import torch, transformers, llmrank_graph as lg
>>> cfg = transformers.LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=12, num_hidden_layers=2,
...                                num_attention_heads=2)
>>> model = transformers.LlamaForCausalLM(cfg).eval()
>>> stats = lg.calibrate(model, input_ids=torch.randint(0, 32, (4, 8)), second_moments=True)
>>> FlapScorer().score(model, stats).sizes()
{0: 12, 1: 12}
>>> OBSScorer().score(model, stats).intermediate[1].shape
torch.Size([12])
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar

import torch

from ..base.params import Check, Constraint
from ..compensation.algebra import DEFAULT_RIDGE, check_ridge, fluctuation, obs_greedy, relative_damp
from ..errors import InvalidArgumentError
from .registry import Scorer, _LayerScorer, _vec

__all__ = ["FlapScorer", "OBSScorer"]


class FlapScorer(_LayerScorer):
    """FLAP's fluctuation metric: ``Var(h_j) * ||W_down[:, j]||^2``, h the input of down_proj.

    It is the expected squared error of the MLP output that ``compensate='bias'`` leaves when
    neuron j alone is removed (docs/design.md section 6). Needs the input means, which
    :func:`llmrank_graph.calibrate` records. FLAP pairs it with a standardised global
    allocation (``allocation='standardized'``).

    Parameters
    ----------
    mode : {'chained', 'isolated'}
        No effect on the scores (per-layer method).
    prune_hidden : bool
        Must be False.

    Example
    -------
    >>> FlapScorer().needs_second_moments()    # the means only, which every calibration records
    False
    """

    name = "flap"
    description = "FLAP fluctuation: variance of the neuron's activation times its squared down_proj column"

    def _layer(self, m, stats):
        var = stats[m.down_name].input_variance
        if var is None:
            raise InvalidArgumentError(f"scorer 'flap' needs the mean of the down_proj inputs, which `stats` lack "
                                       f"({m.down_name!r}); collect them with llmrank_graph.calibrate")
        w = m.weight("down").detach().to(torch.float64)  # (d, m)
        return fluctuation(w, _vec(var, w))


def _ridge(arg: str, value) -> float:
    return check_ridge(value)


class OBSScorer(_LayerScorer):
    """Greedy structured OBS on down_proj (ZipLM, SlimGPT): what a least-squares refit cannot repair.

    With ``H = G + lambda I`` (G the second moment of down_proj's input, ``lambda = ridge *
    mean(diag G)``), removing neuron j and refitting the others costs
    ``||W[:, j]||^2 / [H^-1]_jj``. Neurons are removed one at a time, cheapest first, with
    rank-1 updates of W and of ``H^-1`` (:func:`llmrank_graph.compensation.algebra.obs_greedy`); a
    neuron's score is the total cost of the removals up to and including its own, so the
    lowest k scores are the greedy choice of k neurons for every k. The refit that the greedy
    updates build is the closed-form one of ``compensate='lstsq'``, which applies it.

    Parameters
    ----------
    ridge : float
        Relative ridge (default :data:`llmrank_graph.compensation.algebra.DEFAULT_RIDGE`).
    mode : {'chained', 'isolated'}
        No effect on the scores (per-layer method).
    prune_hidden : bool
        Must be False.

    Example
    -------
    >>> OBSScorer().needs_second_moments()     # calibrate(..., second_moments=True)
    True
    >>> OBSScorer.check_params(ridge=0)
    Traceback (most recent call last):
    ...
    llmrank_graph.errors.InvalidArgumentError: `ridge` must be a positive finite float; got 0
    """

    name = "obs"
    description = "greedy structured OBS on down_proj: output error left after a least-squares refit"
    _parameter_constraints: ClassVar[Mapping[str, Constraint]] = MappingProxyType({
        **Scorer._parameter_constraints, "ridge": Check(_ridge, "a positive finite float")})

    def __init__(self, *, ridge: float = DEFAULT_RIDGE, mode: str = "chained", prune_hidden: bool = False):
        self.ridge = ridge
        self.mode = mode
        self.prune_hidden = prune_hidden

    def needs_second_moments(self) -> bool:
        return True

    def _layer(self, m, stats):
        s = stats[m.down_name]
        w = m.weight("down").detach().to(torch.float64)  # (d, m)
        g = _vec(s.input_second_moment, w)  # (m, m)
        res = obs_greedy(w, g, relative_damp(g, float(self.ridge)))
        scores = torch.empty(w.shape[1], dtype=torch.float64)
        scores[res.order] = torch.cumsum(res.costs, 0)
        return scores
