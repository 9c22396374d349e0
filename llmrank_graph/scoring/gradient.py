"""Scores from the output side: the first-order Taylor importance, and path influence seeded at the output.

``taylor`` is LLM-Pruner's first-order importance of an intermediate neuron (a channel),
``|sum_t x_t,j dL/dx_t,j|`` over the calibration tokens, with ``x`` the input of down_proj and
``L`` the summed next-token loss: the size of the first-order change of the loss when neuron
``j`` is removed. It reads the statistics of ``calibrate(..., gradients=True)``
(:mod:`llmrank_graph.data.gradients`, which states their cost), so it needs backward passes and
is opt-in. The gradient at a neuron depends on every layer after it, so the scorer is not
layerwise: the sequential mode uses the scores of the dense model.

``influence`` is the graph's answer to the same question: the share of the output that each
neuron's paths account for, ``(I - A)^-1`` on the normalised graph, seeded on the last hidden
partition (the residual stream after the last MLP) in proportion to the unembedding's column
norms or to the loss gradient at the final hidden state (:func:`.graph.output_seed_vector`, shared
with the ``output_seed`` of ``pagerank``; docs/design.md section 2).

>>> import torch, transformers, llmrank_graph as lg
>>> cfg = transformers.LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=12, num_hidden_layers=2,
...                                num_attention_heads=2)
>>> model = transformers.LlamaForCausalLM(cfg).eval()
>>> stats = lg.calibrate(model, input_ids=torch.randint(0, 32, (2, 8)), gradients=True)
>>> TaylorScorer().score(model, stats).sizes()
{0: 12, 1: 12}
"""

from __future__ import annotations

from types import MappingProxyType

import torch

from .. import centrality as _centrality
from ..base.params import OneOf
from ..errors import InvalidArgumentError
from ..graph import DEFAULT_EXPORT, MLPGraph
from ..models.architectures import MLPModules
from .graph import _DEVICE, _GRAPH_CONSTRAINTS, OUTPUT_SEEDS, _GraphScorer, _intermediate_slices, output_seed_vector
from .registry import Scorer

__all__ = ["TaylorScorer", "InfluenceScorer"]

_GRADIENTS_HINT = "calibrate with llmrank_graph.calibrate(model, ..., gradients=True)"


def _check_gradients(stats, mlps: list[MLPModules], why: str) -> None:
    missing = [m.down_name for m in mlps if stats is None or not stats.has_gradients([m.down_name])]
    if missing:
        raise InvalidArgumentError(f"{why} needs the loss gradients of the calibration text, which `stats` lack "
                                   f"({missing[0]!r}); {_GRADIENTS_HINT}")


class TaylorScorer(Scorer):
    """First-order Taylor importance: ``|sum_t x_t,j dL/dx_t,j|`` per intermediate neuron (LLM-Pruner's channel).

    ``x`` is the input of down_proj and ``L`` the next-token loss of the calibration tokens,
    summed over them; equal to ``|sum_i W_down[i, j] dL/dW_down[i, j]|``. The statistics come
    from ``calibrate(..., gradients=True)``: one forward and one backward pass per batch
    (:mod:`llmrank_graph.data.gradients` states the time and memory).

    Parameters
    ----------
    mode : {'chained', 'isolated'}
        No effect on the scores; accepted for a uniform interface.
    prune_hidden : bool
        Must be False.

    Example
    -------
    >>> import torch, transformers, llmrank_graph as lg
    >>> cfg = transformers.LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=12, num_hidden_layers=1,
    ...                                num_attention_heads=2)
    >>> model = transformers.LlamaForCausalLM(cfg).eval()
    >>> TaylorScorer().score(model, lg.calibrate(model, input_ids=torch.randint(0, 32, (1, 8))))
    Traceback (most recent call last):
    ...
    llmrank_graph.errors.InvalidArgumentError: scorer 'taylor' needs the loss gradients of the calibration text,
    which `stats` lack ('model.layers.0.mlp.down_proj'); calibrate with llmrank_graph.calibrate(model, ...,
    gradients=True)
    """

    name = "taylor"
    description = "first-order Taylor importance |sum x dL/dx| of the down_proj input (needs gradients=True)"

    def needs_gradients(self) -> bool:
        return True

    def _score(self, model, mlps, stats):
        _check_gradients(stats, mlps, f"scorer {self.name!r}")
        return {m.layer: stats[m.down_name].input_taylor.to(torch.float64).abs() for m in mlps}, None



class InfluenceScorer(_GraphScorer):
    """Path influence of the intermediate nodes, seeded at the output: ``(I - A)^-1 seed`` on a normalised adjacency.

    Every node shares the influence it receives among its in-edges in proportion to their
    weights (the shares sum to one), and the seed sits on the last hidden partition
    (:func:`~llmrank_graph.scoring.graph.output_seed_vector`), so a neuron scores the part of the
    output that its paths account for, as attribution-graph pruning computes it
    (:func:`llmrank_graph.centrality.influence`, direction ``'reverse'``, one exact sweep).
    Unlike ``katz`` the adjacency is normalised and the seed is at the output; unlike the
    output-seeded ``pagerank`` there is no damping: without skip edges every path from a layer
    to the output has the same length, and the two rank each layer alike (docs/design.md
    section 2).

    Parameters
    ----------
    mode, gate, residual, weighting, keep
        Graph options (:class:`~llmrank_graph.graph.ExportOptions`); chained only, and by
        default ``weighting='abs_x_input'``: an edge carries ``a_u |W_vu|``, so a node's
        shares are the parts of its input that each source brings.
    output_seed : {'unembedding', 'gradient', 'uniform'}
        The output seed (``'gradient'`` needs ``calibrate(..., gradients=True)``).
    device : torch device, optional
        Where the sweep runs (default: CUDA when available).
    graph : MLPGraph, optional
        A graph exported with the scorer's graph options.
    prune_hidden : bool
        Must be False.

    Example
    -------
    >>> InfluenceScorer().needs_stats(), InfluenceScorer(weighting="abs").needs_stats()
    (True, False)
    """

    name = "influence"
    description = "path influence (I - A)^-1 on the normalised graph, seeded at the output"
    _parameter_constraints = MappingProxyType({
        **{k: v for k, v in _GRAPH_CONSTRAINTS.items() if k != "backend"}, "mode": OneOf("chained"),
        "output_seed": OneOf(*OUTPUT_SEEDS), "device": _DEVICE})

    def __init__(self, *, mode: str = "chained", gate: str = DEFAULT_EXPORT.gate,
                 residual: float = DEFAULT_EXPORT.residual, weighting: str = "abs_x_input",
                 keep: int | float | None = DEFAULT_EXPORT.keep, output_seed: str = "unembedding", device=None,
                 graph: MLPGraph | None = None, prune_hidden: bool = False,
                 attention: bool = False):
        self.output_seed = output_seed
        self.device = device
        super().__init__(mode=mode, gate=gate, residual=residual, weighting=weighting, keep=keep, backend="sweep",
                         graph=graph, prune_hidden=prune_hidden, attention=attention)

    def needs_stats(self) -> bool:
        return self.output_seed == "gradient" or super().needs_stats()

    def _score(self, model, mlps, stats):
        graph = self._graph_for(model, stats)
        start = output_seed_vector(model, stats, graph, self.output_seed)
        res = _centrality.influence(graph, start, "reverse", self.device)
        return _intermediate_slices(graph, res.scores), None
