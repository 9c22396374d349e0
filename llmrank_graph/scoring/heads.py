"""Head scorers: one score per query head of every attention layer (higher = more important = kept first).

The attention counterpart of the neuron registry (:mod:`.registry`), with the same mechanism:
a :class:`HeadScorer` is a :class:`~llmrank_graph.scoring.registry.Scorer` (its parameters are
declared once in ``_parameter_constraints`` and checked at the entry, ``get_params`` and
``set_params`` as there) whose :meth:`HeadScorer.score` returns :class:`HeadScores`. Head scorers
live in a registry of their own (:func:`head_scorers`, :func:`register_head_scorer`), under the
name of the neuron scorer of the same idea, so that one ``method`` names both when
:func:`llmrank_graph.prune_model` prunes MLP neurons and heads together (``target='both'``).

Built in:

``magnitude``
    the norm of the head's block of the output projection, ``||W_O[:, head]||`` (Frobenius,
    or the entrywise L1 norm with ``ord=1``).
``activation``
    the head's output norm over the calibration tokens
    (:func:`llmrank_graph.data.stats.head_norms`).
``flap``
    FLAP's fluctuation summed over the head's ``head_dim`` output features:
    ``sum_j Var(x_j) ||W_O[:, j]||^2``, x the input of the output projection.
``random``
    uniform random scores from one seeded generator over all layers.

``pagerank``
    the head's PageRank on the graph of the whole network, MLPs and attention heads
    (``export_graph(..., attention=True)``), with the neuron scorer's defaults.

Scores depend on the output projection only: in every supported family the query heads' output
features are its input columns ``h * head_dim : (h + 1) * head_dim``
(:class:`~llmrank_graph.models.attention.AttentionModules`).

>>> import torch, transformers, llmrank_graph as lg
>>> cfg = transformers.LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=12, num_hidden_layers=2,
...                                num_attention_heads=4, num_key_value_heads=2)
>>> model = transformers.LlamaForCausalLM(cfg).eval()
>>> stats = lg.calibrate(model, input_ids=torch.randint(0, 32, (2, 8)), attention=True)
>>> score_heads(model, stats, "flap").sizes()
{0: 4, 1: 4}
>>> score_heads(model, None, "magnitude", ord=1).heads[1].shape   # weights only
torch.Size([4])
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar

import torch

from ..base.checks import check_choice, fail, fail_type, format_allowed
from ..base.params import Check, Constraint, OneOf, validated
from ..compensation.algebra import fluctuation
from ..compensation.heads import o_weight
from ..data.stats import ActivationStats, head_norms
from ..errors import InvalidArgumentError
from ..graph.heads import head_scores as graph_head_scores
from ..graph.mlpgraph import export_graph
from ..models.architectures import MODEL
from ..models.attention import AttentionModules, attention_layers
from .baselines import _seed
from .graph import _PAGERANK_FN, PAGERANK_CENTRALITY, PAGERANK_EXPORT, PageRankScorer
from .registry import Scorer

logger = logging.getLogger(__name__)

__all__ = ["HeadScores", "HeadScorer", "register_head_scorer", "head_scorers", "head_scorer_class",
           "get_head_scorer", "score_heads", "HeadMagnitudeScorer", "HeadActivationScorer",
           "HeadFlapScorer", "HeadRandomScorer", "HeadPageRankScorer"]


@dataclass
class HeadScores:
    """Importance of every query head, per layer (higher = more important).

    Attributes
    ----------
    heads : dict of int -> torch.Tensor
        Layer index -> float64 tensor of shape (num_heads_l,).
    method : str
        Registry name of the head scorer.
    params : dict
        Its parameters.

    Example
    -------
    >>> s = HeadScores({1: torch.ones(3), 0: torch.zeros(2)}, method="magnitude")
    >>> s.layers, s.sizes()
    ([0, 1], {0: 2, 1: 3})
    """

    heads: dict[int, torch.Tensor]
    method: str = ""
    params: dict = field(default_factory=dict)

    @property
    def layers(self) -> list[int]:
        """Layer indices, in order."""
        return sorted(self.heads)

    def sizes(self) -> dict[int, int]:
        """Layer -> number of query heads scored, in layer order."""
        return {l: int(self.heads[l].numel()) for l in self.layers}


_HEAD_REGISTRY: dict[str, type[HeadScorer]] = {}


def register_head_scorer(cls: type[HeadScorer]) -> type[HeadScorer]:
    """Add (or replace) a :class:`HeadScorer` subclass in the head registry under ``cls.name``.

    Usable as a class decorator; what the graph scorers of head nodes call to join.

    Raises
    ------
    InvalidArgumentTypeError
        ``cls`` is not a HeadScorer subclass (a TypeError).
    InvalidArgumentError
        ``cls.name`` is empty (a ValueError).
    """
    if not (isinstance(cls, type) and issubclass(cls, HeadScorer)):
        raise fail_type("cls", "a HeadScorer subclass", cls)
    if not isinstance(cls.name, str) or not cls.name:
        raise fail("cls.name", "a non-empty str", cls.name)
    _HEAD_REGISTRY[cls.name] = cls
    return cls


def head_scorers() -> list[str]:
    """Names of the registered head scorers, in registration order.

    >>> head_scorers()[:4]
    ['magnitude', 'activation', 'flap', 'random']
    """
    return list(_HEAD_REGISTRY)


def head_scorer_class(name: str) -> type[HeadScorer]:
    """The registered :class:`HeadScorer` subclass called ``name``.

    Raises
    ------
    InvalidArgumentError
        Unknown ``name``; the message lists the head scorers (a neuron scorer without a head
        counterpart, such as ``pagerank`` before the attention graph registers it, is unknown here).
    InvalidArgumentTypeError
        ``name`` is not a str.
    """
    if isinstance(name, str) and name not in _HEAD_REGISTRY:
        raise InvalidArgumentError(f"`method` {name!r} has no head scorer: heads can be scored by "
                                   f"{format_allowed(_HEAD_REGISTRY)}")
    return _HEAD_REGISTRY[check_choice("method", name, _HEAD_REGISTRY)]


def get_head_scorer(name: str, **params) -> HeadScorer:
    """A head scorer of the registry, built with ``params`` (checked now).

    >>> get_head_scorer("random", seed=3)
    HeadRandomScorer(seed=3)
    """
    cls = head_scorer_class(name)
    cls.check_params(**params)
    return cls(**params)


@validated({"model": MODEL})
def score_heads(model, stats: ActivationStats | None, method: str = "magnitude", *, check_input: bool = True,
                **params) -> HeadScores:
    """Score every query head of ``model`` with a registered head scorer.

    Parameters
    ----------
    model : transformers model of a family with attention support
    stats : ActivationStats or None
        Calibrated with ``attention=True``; None for the weight-only scorers (``magnitude``,
        ``random``).
    method : str
        One of :func:`head_scorers`.
    check_input : bool
        As in :meth:`~llmrank_graph.scoring.registry.Scorer.score`: False for a caller that has
        just checked ``stats`` against the model.
    **params
        Parameters of the scorer.

    Returns
    -------
    HeadScores

    Raises
    ------
    InvalidArgumentError
        Unknown ``method`` (listing the head scorers), bad parameters, missing or mismatched
        head statistics (saying how to collect them), NaN or inf scores.
    UnsupportedArchitectureError
        A family without attention support.
    """
    cls = head_scorer_class(method)
    cls.check_params(**params)
    return cls(**params)._run(model, stats, check_input)


def _o64(att: AttentionModules) -> torch.Tensor:
    """The output projection's weight as float64 (hidden, num_heads * head_dim), whatever the module type."""
    return o_weight(att).detach().to(torch.float64)


class HeadScorer(Scorer):
    """Base class of head scorers: a :class:`~llmrank_graph.scoring.registry.Scorer` over query heads.

    Subclasses set ``name`` and ``description``, declare ``_parameter_constraints`` (one per
    parameter of ``__init__``), say whether they read statistics (:meth:`needs_stats`) and their
    means (:meth:`needs_means`), and implement :meth:`_head` (one layer) or :meth:`_score_heads`
    (all layers at once).
    """

    _parameter_constraints: ClassVar[Mapping[str, Constraint]] = MappingProxyType({})

    def __init__(self):
        pass

    def needs_means(self) -> bool:
        """True when the scorer reads the mean of the output projections' inputs."""
        return False

    def score(self, model, stats: ActivationStats | None = None, *, check_input: bool = True) -> HeadScores:
        """Score the query heads of ``model`` (see :func:`score_heads`)."""
        self._validate_params()
        return self._run(model, stats, check_input)

    def _run(self, model, stats: ActivationStats | None, check_input: bool) -> HeadScores:
        t0 = time.perf_counter()
        layers = attention_layers(model)
        if self.needs_stats():
            if stats is None:
                raise InvalidArgumentError(f"`stats` are required by head scorer {self.name!r} (it uses the "
                                           "calibrated head outputs); compute them once with "
                                           "llmrank_graph.calibrate(model, ..., attention=True) and pass them in")
            if check_input and not isinstance(stats, ActivationStats):
                raise fail_type("stats", "an ActivationStats (llmrank_graph.calibrate) or None", stats)
            stats.check_attention(layers, means=self.needs_means(), why=f"head scorer {self.name!r}")
        scores = {l: s.detach().to("cpu", torch.float64) for l, s in self._score_model(model, layers, stats).items()}
        for layer, s in scores.items():
            if not torch.isfinite(s).all():
                raise InvalidArgumentError(f"head scorer {self.name!r} produced NaN or inf scores in layer {layer}; "
                                           "check the weights and stats")
        logger.debug("head scorer %r scored %d layers in %.3fs", self.name, len(scores), time.perf_counter() - t0)
        return HeadScores(scores, self.name, self.get_params())

    def _score_model(self, model, layers: list[AttentionModules], stats) -> dict[int, torch.Tensor]:
        """All layers' scores; the scorers that read the whole model (a graph of it) override this."""
        return self._score_heads(layers, stats)

    def _score_heads(self, layers: list[AttentionModules], stats) -> dict[int, torch.Tensor]:
        return {att.layer: self._head(att, stats) for att in layers}

    def _head(self, att: AttentionModules, stats) -> torch.Tensor:
        raise NotImplementedError


def _per_head(values: torch.Tensor, att: AttentionModules) -> torch.Tensor:
    """Per-feature values (num_heads * head_dim,) summed over each head's features, (num_heads,)."""
    return values.reshape(att.num_heads, att.head_dim).sum(1)


class HeadMagnitudeScorer(HeadScorer):
    """The norm of each head's block of the output projection, ``W_O[:, h * hd:(h + 1) * hd]``.

    Parameters
    ----------
    ord : {1, 2}
        The entrywise L1 norm, or the Frobenius norm.

    Example
    -------
    >>> HeadMagnitudeScorer(ord=1).needs_stats()
    False
    """

    name = "magnitude"
    description = "norm of the head's block of columns of the attention output projection"
    _parameter_constraints: ClassVar[Mapping[str, Constraint]] = MappingProxyType({"ord": OneOf(1, 2)})

    def __init__(self, *, ord: int = 2):
        self.ord = ord

    def needs_stats(self) -> bool:
        return False

    def _head(self, att, stats):
        w = _o64(att).abs()
        per = w.sum(0) if self.ord == 1 else w.square().sum(0)
        per = _per_head(per, att)
        return per if self.ord == 1 else per.sqrt()


class HeadActivationScorer(HeadScorer):
    """Each head's output norm over the calibration tokens (:func:`llmrank_graph.data.stats.head_norms`).

    Example
    -------
    >>> HeadActivationScorer().needs_stats()
    True
    """

    name = "activation"
    description = "the head's output norm over the calibration tokens"

    def _head(self, att, stats):
        return head_norms(stats, att)


class HeadFlapScorer(HeadScorer):
    """FLAP's fluctuation of a head: ``sum_j Var(x_j) ||W_O[:, j]||^2`` over its ``head_dim`` features.

    x is the input of the attention output projection (the heads' outputs); it is the expected
    squared error of the attention output that a bias (``compensate='bias'``) leaves when the
    head alone is removed. Needs the input means, which calibration records.

    Example
    -------
    >>> HeadFlapScorer().needs_means()
    True
    """

    name = "flap"
    description = "FLAP fluctuation: variance of the head's outputs times the squared output-projection columns"

    def needs_means(self) -> bool:
        return True

    def _head(self, att, stats):
        w = _o64(att)
        var = stats[att.names["o"]].input_variance.to(device=w.device, dtype=torch.float64)
        return _per_head(fluctuation(w, var), att)


class HeadRandomScorer(HeadScorer):
    """Uniform random head scores from one seeded ``torch.Generator`` over all layers, in layer order.

    Parameters
    ----------
    seed : int
    """

    name = "random"
    description = "uniform random scores (seeded)"
    _parameter_constraints: ClassVar[Mapping[str, Constraint]] = MappingProxyType({
        "seed": Check(_seed, "a non-negative int")})

    def __init__(self, *, seed: int = 0):
        self.seed = seed

    def needs_stats(self) -> bool:
        return False

    def _score_heads(self, layers, stats):
        g = torch.Generator(device="cpu").manual_seed(int(self.seed))
        return {att.layer: torch.rand(att.num_heads, generator=g, dtype=torch.float64) for att in layers}


class HeadPageRankScorer(HeadScorer):
    """Global PageRank of the head nodes on the graph of the whole network, MLPs and attention.

    The graph is ``export_graph(model, stats, attention=True, gate=, residual=, weighting=,
    keep=)`` (chained: docs/design.md, "Attention heads in the graph"), the centrality
    ``pagerank(graph, alpha=, personalization=, direction=, backend=, tol=, max_iter=)`` (or the
    ``output_seed`` teleport), both with the defaults of the neuron scorer ``pagerank``
    (:data:`~llmrank_graph.scoring.graph.PAGERANK_DEFAULTS`) and computed by it
    (:meth:`~llmrank_graph.scoring.graph.PageRankScorer.node_scores` of ``PageRankScorer(attention=True)``):
    a head's score is its node's (:func:`llmrank_graph.graph.heads.head_scores`), a neuron's the
    same PageRank's, so ``prune_model(..., target='both')`` ranks neurons and heads on one graph.
    With the default activation weighting the statistics must come from ``calibrate(...,
    attention=True)``. ``graph``: a graph with head nodes already exported from the model with
    these options. After scoring, ``graph_`` holds the graph it ranked.

    Example
    -------
    >>> HeadPageRankScorer().needs_stats(), HeadPageRankScorer(weighting="abs", personalization="uniform").needs_stats()
    (True, False)
    """

    name = "pagerank"
    description = "global PageRank of the head nodes of the whole network's graph (MLPs and attention)"
    _parameter_constraints: ClassVar[Mapping[str, Constraint]] = MappingProxyType({
        k: c for k, c in PageRankScorer._parameter_constraints.items()
        if k not in ("mode", "prune_hidden", "attention")})

    def __init__(self, *, gate: str = PAGERANK_EXPORT.gate, residual: float = PAGERANK_EXPORT.residual,
                 weighting: str = PAGERANK_EXPORT.weighting, keep: int | float | None = PAGERANK_EXPORT.keep,
                 direction: str = PAGERANK_CENTRALITY["direction"],
                 personalization=PAGERANK_CENTRALITY["personalization"],
                 alpha: float = PAGERANK_CENTRALITY["alpha"], backend: str = PAGERANK_CENTRALITY["backend"],
                 tol: float = _PAGERANK_FN["tol"], max_iter: int = _PAGERANK_FN["max_iter"],
                 output_seed: str | None = None, graph=None):
        self.gate, self.residual, self.weighting, self.keep = gate, residual, weighting, keep
        self.direction, self.personalization, self.alpha = direction, personalization, alpha
        self.backend, self.tol, self.max_iter = backend, tol, max_iter
        self.output_seed, self.graph = output_seed, graph

    @classmethod
    def _checked(cls, params: Mapping) -> dict:
        checked = super()._checked(params)
        PageRankScorer._checked({**params, "attention": True})  # the neuron scorer's cross checks (output_seed)
        return checked

    def _neuron_scorer(self) -> PageRankScorer:
        """The neuron scorer of the same parameters on the graph with head nodes: its options, its PageRank."""
        return PageRankScorer(mode="chained", attention=True, **self.get_params())

    def needs_stats(self) -> bool:
        return self._neuron_scorer().needs_stats()

    def _score_model(self, model, layers, stats):
        inner = self._neuron_scorer()
        graph = export_graph(model, stats, options=inner.export_options) if self.graph is None else \
            inner._graph_for(model, stats)
        self.graph_ = graph  # the graph it ranked (scikit-learn's fitted attribute): target='both' ranks neurons on it
        return graph_head_scores(graph, inner.node_scores(model, stats, graph))


for _cls in (HeadMagnitudeScorer, HeadActivationScorer, HeadFlapScorer, HeadRandomScorer, HeadPageRankScorer):
    register_head_scorer(_cls)
del _cls
