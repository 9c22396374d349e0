"""Neuron importance: one score per intermediate MLP neuron, from one calibration pass.

Every method is a :class:`Scorer` in a registry (:func:`scorers`, :func:`get_scorer`,
:func:`register_scorer`). A scorer stores its parameters in ``__init__`` and does its work in
:meth:`Scorer.score`, which returns a :class:`NeuronScores` (layer -> scores, higher = more
important = kept first). :func:`score_neurons` is the one-call entry point used by
:func:`llmrank_graph.prune_model`.

Families (DESIGN.md section 4):

- graph centralities on the whole-MLP graph: ``pagerank`` (the product's main method) and the
  other centralities of :mod:`llmrank_graph.centrality` (``katz``, ``hits``, ``eigenvector``,
  ``strength``, ``degree``), all sharing one set of graph options
  (:class:`~llmrank_graph.graph.mlpgraph.ExportOptions`);
- faithful reproductions of the LLM-Rank reference code (DESIGN.md section 5): ``wpr``,
  ``mpr``, ``channel-wanda``, ``norm``, with its two pipelines (``mode="chained"`` /
  ``"isolated"``) and its "paper mode" scores of the hidden channels (``prune_hidden=True``);
- baselines: ``magnitude``, ``activation``, ``wanda-sp``, ``random``;
- compensation-aware criteria (DESIGN.md section 6): ``flap`` (FLAP's fluctuation metric, what
  a bias cannot repair) and ``obs`` (greedy structured OBS on down_proj, what a least-squares
  refit cannot repair).

All scores are float64 CPU tensors. Calibration statistics are computed once by the caller
(:func:`llmrank_graph.calibrate`) and passed in; weight-only scorers accept ``stats=None``.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar

import numpy as np
import torch

from .. import centrality as _centrality
from ..base.checks import check_bool, check_choice, check_unit, fail, fail_type
from ..models.architectures import MLPModules, check_finite_weights, mlp_layers
from ..data.calibration import ActivationStats
from ..compensation.algebra import DEFAULT_RIDGE, check_ridge, fluctuation, obs_greedy, relative_damp
from ..centrality import DIRECTIONS, TELEPORTS, CentralityResult, backend_names
from ..errors import InvalidArgumentError, InvalidArgumentTypeError
from ..graph.mlpgraph import DEFAULT_EXPORT, MODES, ExportOptions, MLPGraph, export_graph

logger = logging.getLogger(__name__)

__all__ = [
    "NeuronScores",
    "Scorer",
    "register_scorer",
    "scorers",
    "get_scorer",
    "scorer_class",
    "score_neurons",
    "hidden_scorers",
    "PAGERANK_EXPORT",
    "PAGERANK_CENTRALITY",
    "PAGERANK_DEFAULTS",
    "PAGERANK_WITHOUT_STATS",
    "PERSONALIZATIONS",
    "ACTIVATION_PERSONALIZATIONS",
    "PageRankScorer",
    "KatzScorer",
    "HitsScorer",
    "EigenvectorScorer",
    "StrengthScorer",
    "DegreeScorer",
    "WeightedPageRankScorer",
    "ModifiedPageRankScorer",
    "ChannelWandaScorer",
    "NormScorer",
    "MagnitudeScorer",
    "ActivationScorer",
    "WandaSPScorer",
    "RandomScorer",
    "FlapScorer",
    "OBSScorer",
]

#: Named teleport vectors of :func:`llmrank_graph.centrality.pagerank`.
PERSONALIZATIONS: tuple[str, ...] = TELEPORTS
#: Those that need calibration statistics (the nodes' activation norms).
ACTIVATION_PERSONALIZATIONS: tuple[str, ...] = ("activation",)

# Defaults of the ``pagerank`` scorer, written once here; :class:`PageRankScorer`'s keyword
# defaults and the CLI's ``rank`` defaults are read from these two constants. Chosen by
# measurement (``benchmarks/quality.py``, tables in the README): reverse PageRank, activation
# teleport, on "activation share" edges (every node sends its calibration activation norm, split
# over its out-edges in proportion to |W|). On SmolLM2-135M it is below the activation baseline
# at 10, 30 and 50% under local allocation (0.3% above at 20%) and well below every baseline at
# 30-50% under global allocation; forward PageRank on plain |W| with uniform teleport (the
# paper's graph) is worse than random.

#: Graph the ``pagerank`` scorer exports by default.
PAGERANK_EXPORT = ExportOptions(weighting="activation_share")
#: Centrality options of the ``pagerank`` scorer (read-only).
PAGERANK_CENTRALITY: Mapping[str, object] = MappingProxyType(
    {"direction": "reverse", "personalization": "activation", "alpha": 0.85, "backend": "auto"})
#: All defaults of the ``pagerank`` scorer in one dict: :data:`PAGERANK_EXPORT` as a dict, then
#: :data:`PAGERANK_CENTRALITY`. Derived from them, never edited.
PAGERANK_DEFAULTS: dict = {**PAGERANK_EXPORT.as_dict(), **PAGERANK_CENTRALITY}
#: What the defaults that need calibration statistics fall back to where there are none (the
#: CLI's ``rank`` without ``--calibrate``): plain |W| edges and a uniform teleport.
PAGERANK_WITHOUT_STATS: Mapping[str, str] = MappingProxyType(
    {"weighting": DEFAULT_EXPORT.weighting, "personalization": "uniform"})


# ----------------------------------------------------------------------------- result
@dataclass
class NeuronScores:
    """Importance of every intermediate neuron, per layer (higher = more important).

    Attributes
    ----------
    intermediate : dict of int -> torch.Tensor
        Layer index -> float64 tensor of shape (m_l,): one score per intermediate neuron.
    hidden : dict of int -> torch.Tensor or None
        Layer index -> float64 tensor of shape (d,): scores of the output rows of the layer's
        down projection (hidden channels). Only the reference reproductions fill it, and only
        with ``prune_hidden=True`` (the paper's mode, which also zeroes down_proj rows).
    method : str
        Registry name of the scorer that produced the scores.
    params : dict
        The scorer's parameters.
    """

    intermediate: dict[int, torch.Tensor]
    hidden: dict[int, torch.Tensor] | None = None
    method: str = ""
    params: dict = field(default_factory=dict)

    @property
    def layers(self) -> list[int]:
        """Layer indices, in order."""
        return sorted(self.intermediate)

    def sizes(self) -> dict[int, int]:
        """Layer -> number of intermediate neurons scored."""
        return {l: int(s.numel()) for l, s in self.intermediate.items()}


# ----------------------------------------------------------------------------- registry
_REGISTRY: dict[str, type[Scorer]] = {}


def register_scorer(cls: type[Scorer]) -> type[Scorer]:
    """Add (or replace) a :class:`Scorer` subclass in the registry under ``cls.name``.

    Usable as a class decorator.

    Raises
    ------
    TypeError
        If ``cls`` is not a Scorer subclass.
    ValueError
        If ``cls.name`` is empty.
    """
    if not (isinstance(cls, type) and issubclass(cls, Scorer)):
        raise fail_type("cls", "a Scorer subclass", cls)
    if not isinstance(cls.name, str):
        raise fail_type("cls.name", "a non-empty str", cls.name)
    if not cls.name:
        raise fail("cls.name", "a non-empty str", cls.name)
    _REGISTRY[cls.name] = cls
    return cls


def scorers() -> list[str]:
    """Names of the registered scorers, in registration order.

    Example
    -------
    >>> from llmrank_graph.scoring.registry import scorers
    >>> "pagerank" in scorers() and "wpr" in scorers()
    True
    """
    return list(_REGISTRY)


def hidden_scorers() -> list[str]:
    """Names of the registered scorers that support ``prune_hidden=True``."""
    return [n for n, c in _REGISTRY.items() if c.supports_hidden]


def scorer_class(name: str) -> type[Scorer]:
    """The registered :class:`Scorer` subclass called ``name``.

    Class attributes such as ``rounding`` and ``supports_hidden`` can be read from it without
    building a scorer.

    Raises
    ------
    ValueError
        Unknown ``name`` (the message lists the registry).
    TypeError
        ``name`` is not a str.

    Example
    -------
    >>> from llmrank_graph.scoring.registry import scorer_class
    >>> scorer_class("wpr").rounding
    'reference'
    """
    return _REGISTRY[check_choice("method", name, _REGISTRY)]


def get_scorer(name: str, **params) -> Scorer:
    """A scorer of the registry, built with ``params``.

    Parameters
    ----------
    name : str
        One of :func:`scorers`.
    **params
        Parameters of that scorer (see its class, or ``get_scorer(name).get_params()``).

    Returns
    -------
    Scorer

    Raises
    ------
    ValueError
        Unknown ``name`` (the message lists the registry) or an invalid parameter value.
    TypeError
        A parameter the scorer does not have (the message lists the ones it has), a ``name``
        that is not a str, or a parameter of the wrong type.

    Example
    -------
    >>> from llmrank_graph.scoring.registry import get_scorer
    >>> get_scorer("wpr", gamma=0.9).get_params()["gamma"]
    0.9
    """
    cls = scorer_class(name)
    allowed = cls.param_names()
    unknown = [k for k in params if k not in allowed]
    if unknown:
        raise InvalidArgumentTypeError(f"scorer {name!r} got unknown parameter(s) {', '.join(map(repr, unknown))}; "
                                       f"its parameters are {', '.join(map(repr, allowed))}")
    return cls(**params)


def score_neurons(model, stats: ActivationStats | None, method: str = "pagerank", *, mode: str = "chained",
                  prune_hidden: bool = False, **params) -> NeuronScores:
    """Score every intermediate neuron of ``model`` with a registered method.

    Parameters
    ----------
    model : transformers model of a registered architecture.
    stats : ActivationStats or None
        Calibration statistics of ``model`` (:func:`llmrank_graph.calibrate`). May be None for
        scorers that use weights only (``magnitude``, ``norm``, ``random``, and ``pagerank``
        with ``weighting='abs'`` and ``personalization='uniform'``).
    method : str
        One of :func:`scorers`.
    mode : {'chained', 'isolated'}
        Whole-stack graph / reference pipeline through all layers, or each MLP on its own.
        Per-layer scorers give the same scores in both modes.
    prune_hidden : bool
        Also score the hidden channels (down_proj output rows), as the reference's paper mode.
        Only the methods of :func:`hidden_scorers` support it.
    **params
        Further parameters of the scorer.

    Returns
    -------
    NeuronScores

    Raises
    ------
    ValueError
        Unknown ``method``, bad parameter values, ``stats`` missing or from another model,
        NaN/inf in the weights or stats, ``prune_hidden=True`` with a method without hidden scores.
    TypeError
        A parameter the scorer does not have.

    Example
    -------
    >>> stats = calibrate(model, input_ids=ids)                     # doctest: +SKIP
    >>> scores = score_neurons(model, stats, "wpr", gamma=0.9)      # doctest: +SKIP
    >>> scores.intermediate[0].shape                                # doctest: +SKIP
    torch.Size([1536])
    """
    return get_scorer(method, mode=mode, prune_hidden=prune_hidden, **params).score(model, stats)


# ----------------------------------------------------------------------------- base class
class Scorer:
    """Base class of neuron scorers (scikit-learn manners).

    ``__init__`` stores (and validates) the parameters, :meth:`score` does the work. Subclasses
    set ``name``, ``supports_hidden``, ``description``, implement :meth:`_score`, and say
    whether they need calibration statistics with :meth:`needs_stats`.

    Attributes
    ----------
    name : str
        Registry name.
    supports_hidden : bool
        Whether the scorer also scores the hidden channels (``prune_hidden=True``).
    description : str
        One line for listings.
    rounding : str
        How :func:`llmrank_graph.prune_model` turns a fraction into neuron counts (the
        ``rounding`` of :func:`llmrank_graph.allocate`): ``"round"``, or ``"reference"`` for
        the reproductions of the LLM-Rank code, which round as it does.
    layerwise : bool
        Whether a layer's scores depend on that layer alone, so that :meth:`score_layer`
        can score it from its own statistics (the sequential mode of
        :func:`llmrank_graph.prune_model` rescores each layer on the pruned inputs).
    """

    name: ClassVar[str] = ""
    supports_hidden: ClassVar[bool] = False
    description: ClassVar[str] = ""
    rounding: ClassVar[str] = "round"
    layerwise: ClassVar[bool] = False

    # -- parameters --------------------------------------------------------------
    # Scorers whose only parameters are these inherit this __init__.
    def __init__(self, *, mode: str = "chained", prune_hidden: bool = False):
        self.mode = mode
        self.prune_hidden = prune_hidden
        self._validate_common()

    @classmethod
    def param_names(cls) -> list[str]:
        """Names of the parameters of ``__init__``."""
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values()
                if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def get_params(self) -> dict:
        """The scorer's parameters, as given to ``__init__``."""
        return {k: getattr(self, k) for k in self.param_names()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items()
                         if not isinstance(v, (np.ndarray, torch.Tensor)))
        return f"{type(self).__name__}({args})"

    def _validate_common(self) -> None:
        check_choice("mode", self.mode, MODES)
        check_bool("prune_hidden", self.prune_hidden)
        if self.prune_hidden and not self.supports_hidden:
            raise InvalidArgumentError(f"`prune_hidden=True` needs scores of the hidden channels, which scorer "
                             f"{self.name!r} does not give; methods that do: {', '.join(map(repr, hidden_scorers()))}")

    # -- work --------------------------------------------------------------------
    def needs_stats(self) -> bool:
        """True when this scorer, with these parameters, uses calibration statistics."""
        return True

    def needs_second_moments(self) -> bool:
        """True when this scorer needs the Gram matrices of the down_proj inputs (``second_moments=True``)."""
        return False

    def score_layer(self, mlp: MLPModules, stats) -> torch.Tensor:
        """Scores of one layer's neurons from that layer's statistics alone (only if :attr:`layerwise`).

        Parameters
        ----------
        mlp : MLPModules
            The layer (:func:`llmrank_graph.models.architectures.mlp_layers`).
        stats : ActivationStats
            Holding at least that layer's modules.

        Returns
        -------
        torch.Tensor
            float64, (m,), on the CPU.

        Raises
        ------
        InvalidArgumentError
            If the scorer is not :attr:`layerwise`, or the stats lack what it needs.
        """
        raise InvalidArgumentError(f"scorer {self.name!r} scores all layers at once (it is not layerwise); "
                                   f"layerwise scorers: {', '.join(repr(n) for n, c in _REGISTRY.items() if c.layerwise)}")

    def score(self, model, stats: ActivationStats | None = None) -> NeuronScores:
        """Score the intermediate neurons of ``model``.

        Parameters
        ----------
        model : transformers model of a registered architecture.
        stats : ActivationStats or None
            Calibration statistics of ``model``; required when :meth:`needs_stats` is True.

        Returns
        -------
        NeuronScores

        Raises
        ------
        ValueError
            ``stats`` missing when needed or from another model; NaN/inf in weights or stats.
        """
        t0 = time.perf_counter()
        mlps = mlp_layers(model)
        if stats is None and self.needs_stats():
            raise InvalidArgumentError(f"`stats` are required by scorer {self.name!r} with these parameters (it uses "
                             "calibration activation norms); compute them once with "
                             "llmrank_graph.calibrate(model, ...) and pass them in")
        if stats is not None:
            if not isinstance(stats, ActivationStats):
                raise InvalidArgumentTypeError(f"`stats` must be an ActivationStats (llmrank_graph.calibrate) or "
                                               f"None; got {type(stats).__name__}")
            stats.check_model(model)
            _check_finite_stats(stats, mlps)
            if self.needs_second_moments():
                _check_second_moments(stats, mlps, self.name)
        _check_finite_weights(mlps)
        inter, hidden = self._score(model, mlps, stats)
        inter = {l: s.detach().to("cpu", torch.float64) for l, s in inter.items()}
        if hidden is not None:
            hidden = {l: s.detach().to("cpu", torch.float64) for l, s in hidden.items()}
        for what, d in (("intermediate", inter), ("hidden", hidden or {})):
            for l, s in d.items():
                if not torch.isfinite(s).all():
                    raise InvalidArgumentError(f"scorer {self.name!r} produced NaN or inf {what} scores in layer {l}; "
                                     "check the weights and stats")
        logger.debug("scorer %r scored %d layers in %.3fs", self.name, len(inter), time.perf_counter() - t0)
        params = {k: (repr(v) if k == "graph" and v is not None else v) for k, v in self.get_params().items()}
        return NeuronScores(inter, hidden, self.name, params)

    def _score(self, model, mlps: list[MLPModules], stats):
        raise NotImplementedError


def _check_finite_weights(mlps: list[MLPModules]) -> None:
    check_finite_weights(mlps)


def _check_finite_stats(stats: ActivationStats, mlps: list[MLPModules]) -> None:
    # check_model covers the sums of squares; the per-batch norm sums are checked here.
    for m in mlps:
        for name in m.named_modules():
            s = stats[name]
            for what, t in (("input", s.input_batch_norm_sum), ("output", s.output_batch_norm_sum)):
                if not torch.isfinite(t).all():
                    raise InvalidArgumentError(f"`stats` for module {name!r} contain NaN or inf in the {what} "
                                               "statistics")


def _check_second_moments(stats: ActivationStats, mlps: list[MLPModules], name: str) -> None:
    for m in mlps:
        s = stats[m.down_name]
        if s.input_gram is None or s.input_sum is None:
            raise InvalidArgumentError(f"scorer {name!r} needs the second moments (Gram matrices) of the down_proj "
                                       f"inputs, which `stats` lack ({m.down_name!r}); collect them with "
                                       "llmrank_graph.calibrate(model, tokenizer, second_moments=True)")


def _abs64(m: MLPModules, which: str) -> torch.Tensor:
    """|W| as float64, (out, in), on the weight's device."""
    with torch.no_grad():
        return m.weight(which).detach().to(torch.float64).abs()


def _vec(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.to(device=like.device, dtype=torch.float64)


# ----------------------------------------------------------------------------- graph scorers
def _defaults_of(fn) -> dict:
    """Keyword defaults of a centrality function.

    The graph scorers take the parameters of their centrality with the same defaults; reading
    them from the signature keeps each default written once, in :mod:`llmrank_graph.centrality`.
    """
    return {p.name: p.default for p in inspect.signature(fn).parameters.values() if p.default is not p.empty}


_PAGERANK_FN = _defaults_of(_centrality.pagerank)
_KATZ_FN = _defaults_of(_centrality.katz)
_HITS_FN = _defaults_of(_centrality.hits)
_EIGENVECTOR_FN = _defaults_of(_centrality.eigenvector)
_STRENGTH_FN = _defaults_of(_centrality.strength)
_DEGREE_FN = _defaults_of(_centrality.degree)


def _intermediate_slices(graph: MLPGraph, scores: np.ndarray) -> dict[int, torch.Tensor]:
    return {p.layer: torch.from_numpy(np.array(scores[p.offset:p.stop], dtype=np.float64))
            for p in graph.intermediate_partitions()}


class _GraphScorer(Scorer):
    """Base of the scorers that rank the intermediate nodes of the whole-MLP graph.

    It holds the graph options (the fields of :class:`~llmrank_graph.graph.mlpgraph.ExportOptions`:
    ``mode``, ``gate``, ``residual``, ``weighting``, ``keep``), the centrality ``backend``, an
    optional ready ``graph`` and ``prune_hidden`` (which must be False). A subclass stores its
    own centrality parameters, calls this ``__init__`` with the shared ones, and runs its
    algorithm in :meth:`_centrality`. The score of intermediate neuron j of layer l is the
    centrality of node ``I_l,j``.
    """

    def __init__(self, *, mode: str, gate: str, residual: float, weighting: str, keep: int | float | None,
                 backend: str, graph: MLPGraph | None, prune_hidden: bool):
        self.mode = mode
        self.gate = gate
        self.residual = residual
        self.weighting = weighting
        self.keep = keep
        self.backend = backend
        self.graph = graph
        self.prune_hidden = prune_hidden
        self._validate_common()
        self.export_options  # noqa: B018  (builds, and so validates, the graph options)
        check_choice("backend", backend, ("auto", *backend_names()))
        if graph is not None and not isinstance(graph, MLPGraph):
            raise fail_type("graph", "an MLPGraph (llmrank_graph.export_graph / read_graph) or None", graph)

    @property
    def export_options(self) -> ExportOptions:
        """The graph options, as one validated :class:`~llmrank_graph.graph.mlpgraph.ExportOptions`."""
        return ExportOptions(mode=self.mode, gate=self.gate, residual=self.residual, weighting=self.weighting,
                             keep=self.keep)

    def needs_stats(self) -> bool:
        return self.graph is None and self.export_options.needs_stats

    def _graph_for(self, model, stats: ActivationStats | None) -> MLPGraph:
        """The graph to rank: ``self.graph`` (checked against the model and the options), or a fresh export."""
        options = self.export_options
        if self.graph is None:
            return export_graph(model, stats, **options.as_dict())
        g = self.graph
        g.check_model(model)
        for k, want in options.as_dict().items():
            have = g.meta.get(k)
            if k == "residual" and have is not None:
                have = float(have)
            if have != want:
                raise InvalidArgumentError(
                    f"`graph` was exported with {k}={have!r} but scorer {self.name!r} has {k}={want!r}; "
                    f"pass {k}={have!r} or export the graph with the scorer's options")
        return g

    def _centrality(self, graph: MLPGraph) -> CentralityResult:
        """The centrality of every node of ``graph``."""
        raise NotImplementedError

    def _score(self, model, mlps, stats):
        graph = self._graph_for(model, stats)
        res = self._centrality(graph)
        logger.debug("%s scorer: backend %r, %r iterations", self.name, res.backend, res.iterations)
        return _intermediate_slices(graph, res.scores), None


@register_scorer
class PageRankScorer(_GraphScorer):
    """Global PageRank of the intermediate nodes on the whole-MLP graph.

    The score of neuron j of layer l is the PageRank of vertex ``I_l,j`` of
    ``export_graph(model, stats, mode, gate, residual, weighting, keep)`` computed by
    ``pagerank(graph, alpha, personalization, direction, backend, tol, max_iter)``. The graph
    defaults are :data:`PAGERANK_EXPORT`, the centrality defaults :data:`PAGERANK_CENTRALITY`
    (both together: :data:`PAGERANK_DEFAULTS`).

    Parameters
    ----------
    mode, gate, residual, weighting, keep
        Graph options (:class:`~llmrank_graph.graph.mlpgraph.ExportOptions`), passed to
        :func:`llmrank_graph.export_graph`.
    direction : {'forward', 'reverse'}
    personalization : {'uniform', 'activation'} or array of shape (n_nodes,)
    alpha : float in (0, 1)
    backend : str
        ``'auto'`` or one of :func:`llmrank_graph.centrality.backend_names`.
    tol, max_iter
        Passed to :func:`llmrank_graph.pagerank`, with its defaults.
    graph : MLPGraph, optional
        A graph already exported from the model (or read from Parquet) to use instead of a
        fresh export. Its export options must equal the scorer's (else ValueError), and it
        carries its own weights and activations, so ``stats`` are then optional.
    prune_hidden : bool
        Must be False (no hidden-channel scores).

    Example
    -------
    >>> PageRankScorer(direction="forward").score(model, stats).intermediate[0]   # doctest: +SKIP
    """

    name = "pagerank"
    description = "global PageRank of the intermediate nodes of the whole-MLP graph"

    def __init__(self, *, mode: str = PAGERANK_EXPORT.mode, gate: str = PAGERANK_EXPORT.gate,
                 residual: float = PAGERANK_EXPORT.residual, weighting: str = PAGERANK_EXPORT.weighting,
                 keep: int | float | None = PAGERANK_EXPORT.keep,
                 direction: str = PAGERANK_CENTRALITY["direction"],
                 personalization=PAGERANK_CENTRALITY["personalization"],
                 alpha: float = PAGERANK_CENTRALITY["alpha"], backend: str = PAGERANK_CENTRALITY["backend"],
                 tol: float = _PAGERANK_FN["tol"], max_iter: int = _PAGERANK_FN["max_iter"],
                 graph: MLPGraph | None = None, prune_hidden: bool = False):
        self.direction = direction
        self.personalization = personalization
        self.alpha = alpha
        self.tol = tol
        self.max_iter = max_iter
        super().__init__(mode=mode, gate=gate, residual=residual, weighting=weighting, keep=keep, backend=backend,
                         graph=graph, prune_hidden=prune_hidden)
        check_choice("direction", direction, DIRECTIONS)
        if isinstance(personalization, str):  # an array is checked against the graph when it runs
            check_choice("personalization", personalization, PERSONALIZATIONS)
        check_unit("alpha", alpha, open_=True)

    def needs_stats(self) -> bool:
        uses_activation = isinstance(self.personalization, str) and self.personalization in ACTIVATION_PERSONALIZATIONS
        return self.graph is None and (self.export_options.needs_stats or uses_activation)

    def _centrality(self, graph):
        return _centrality.pagerank(graph, alpha=self.alpha, personalization=self.personalization,
                                    direction=self.direction, backend=self.backend, tol=self.tol,
                                    max_iter=self.max_iter)


# ----------------------------------------------------------------------------- reference code
def _reference_chains(mlps: list[MLPModules], mode: str) -> list[list[tuple[MLPModules, str]]]:
    """Module sequences of the reference pipelines: one chain [up_0, down_0, up_1, ...] or one per MLP."""
    seq = [[(m, "up"), (m, "down")] for m in mlps]
    if mode == "chained":
        return [[x for pair in seq for x in pair]]
    return seq


def _module_name(m: MLPModules, which: str) -> str:
    return m.up_name if which == "up" else m.down_name


def _normalise(v: torch.Tensor, what: str) -> torch.Tensor:
    total = v.sum()
    if not torch.isfinite(total) or total <= 0:
        raise InvalidArgumentError(f"cannot normalise the scores of {what}: they sum to {float(total):.3g} "
                                   "(all activations or weights zero?)")
    return v / total


class _ReferenceScorer(Scorer):
    """Shared driver of the reference code's ``BaseScorer.iterate`` (DESIGN.md section 5).

    For each chain of modules (``mode``): ``s_0`` = in-activation of the first module, normalised
    to sum 1; module k's scores = ``_step(|W_k|, s_{k-1}, in_k, out_k)`` normalised to sum 1.
    In/out activations are the per-batch L2 norms averaged over batches. Intermediate scores of
    layer l are the scores of up_l (its output rows); hidden scores, those of down_l.
    Allocated with the reference's rounding (``rounding = "reference"``).
    """

    supports_hidden = True
    rounding = "reference"

    def _step(self, w_abs: torch.Tensor, prev: torch.Tensor, inp: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _score(self, model, mlps, stats):
        inter: dict[int, torch.Tensor] = {}
        hidden: dict[int, torch.Tensor] = {}
        for chain in _reference_chains(mlps, self.mode):
            prev = None
            for k, (m, which) in enumerate(chain):
                name = _module_name(m, which)
                w = _abs64(m, which)  # (out, in)
                st = stats[name] if stats is not None else None
                inp = _vec(st.input_norm_batch_mean, w) if st is not None else None
                out = _vec(st.output_norm_batch_mean, w) if st is not None else None
                if k == 0:
                    prev = _normalise(inp, f"the input activations of {name!r}") if inp is not None else None
                cur = _normalise(self._step(w, prev, inp, out), f"module {name!r}")
                (inter if which == "up" else hidden)[m.layer] = cur
                prev = cur
                del w
        return inter, (hidden if self.prune_hidden else None)


def _safe_div(v: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """v / d with 0 where d == 0 (the reference's nan_to_num on 0/0 columns)."""
    return torch.where(d != 0, v / torch.where(d != 0, d, torch.ones_like(d)), torch.zeros_like(v))


@register_scorer
class WeightedPageRankScorer(_ReferenceScorer):
    """The reference's weighted PageRank (``WeightedPageRankScorer``), layer by layer.

    For module k with weight W (out x in)::

        A   = theta * |W| / colsum|W| + (1 - theta) * 1[W!=0] / colsum(1[W!=0])   (0 on zero columns)
        s_k = gamma * A @ s_{k-1} + (1 - gamma) * out_k / sum(out_k),  then / sum

    Parameters
    ----------
    gamma : float in [0, 1]
        Weight of the propagated term. The reference default 0 ranks by output activation.
    theta : float in [0, 1]
        Trade-off between weights and the 0/1 connectivity pattern.
    mode : {'chained', 'isolated'}
        Reference pipelines: [up_0, down_0, up_1, ...] as one chain, or each [up_l, down_l].
    prune_hidden : bool
        Also return the scores of down_l (hidden channels), the paper mode.

    Example
    -------
    >>> WeightedPageRankScorer(gamma=0.9).score(model, stats)     # doctest: +SKIP
    """

    name = "wpr"
    description = "reference weighted PageRank (LLM-Rank), layer-wise"

    def __init__(self, *, gamma: float = 0.0, theta: float = 0.5, mode: str = "chained", prune_hidden: bool = False):
        self.gamma = gamma
        self.theta = theta
        self.mode = mode
        self.prune_hidden = prune_hidden
        self._validate_common()
        check_unit("gamma", gamma)
        check_unit("theta", theta)

    def _step(self, w, prev, inp, out):
        gamma, theta = float(self.gamma), float(self.theta)
        s = torch.zeros(w.shape[0], dtype=torch.float64, device=w.device)
        if gamma > 0:
            pattern = (w != 0).to(torch.float64)
            # A @ prev without forming A: scale prev by 1/colsum (0 on empty columns).
            prop = theta * (w @ _safe_div(prev, w.sum(0))) + (1 - theta) * (pattern @ _safe_div(prev, pattern.sum(0)))
            s = s + gamma * prop
        if gamma < 1:
            s = s + (1 - gamma) * _normalise(out, "output activations")
        return s


@register_scorer
class ModifiedPageRankScorer(_ReferenceScorer):
    """The reference's modified PageRank (``ModifiedPageRankScorer``, z_importance=False).

    ``s_k = (|W_k| @ s_{k-1}) * out_k``, normalised to sum 1.

    Parameters
    ----------
    mode : {'chained', 'isolated'}
    prune_hidden : bool

    Example
    -------
    >>> ModifiedPageRankScorer(mode="isolated").score(model, stats)     # doctest: +SKIP
    """

    name = "mpr"
    description = "reference modified PageRank (LLM-Rank), layer-wise"

    def _step(self, w, prev, inp, out):
        return (w @ prev) * out


@register_scorer
class ChannelWandaScorer(_ReferenceScorer):
    """The reference's "wanda (channel)" (``WandaScorer``): ``|W| @ in_activation`` per module.

    Scores of each module are normalised to sum 1 (as the reference does), which matters for
    its global allocation. The same in both modes.

    Parameters
    ----------
    mode : {'chained', 'isolated'}
    prune_hidden : bool

    Example
    -------
    >>> ChannelWandaScorer().score(model, stats)     # doctest: +SKIP
    """

    name = "channel-wanda"
    description = "reference channel Wanda: |W| @ input activation norms, per module"

    def _step(self, w, prev, inp, out):
        return w @ inp


@register_scorer
class NormScorer(_ReferenceScorer):
    """The reference's ``NormScorer``: p-norm of each row of W, per module, normalised to sum 1.

    Parameters
    ----------
    p : {1, 2}
        Row norm (the reference default is 1).
    mode : {'chained', 'isolated'}
    prune_hidden : bool

    Example
    -------
    >>> NormScorer().score(model)     # doctest: +SKIP
    """

    name = "norm"
    description = "reference row norm of |W|, per module"

    def __init__(self, *, p: int = 1, mode: str = "chained", prune_hidden: bool = False):
        self.p = p
        self.mode = mode
        self.prune_hidden = prune_hidden
        self._validate_common()
        check_choice("p", p, (1, 2))

    def needs_stats(self) -> bool:
        return False

    def _step(self, w, prev, inp, out):
        return torch.linalg.vector_norm(w, ord=self.p, dim=1)


# ----------------------------------------------------------------------------- baselines
class _LayerScorer(Scorer):
    """A scorer computed independently per layer: the same result in both modes."""

    layerwise = True

    def _layer(self, m: MLPModules, stats) -> torch.Tensor:
        raise NotImplementedError

    def _score(self, model, mlps, stats):
        return {m.layer: self._layer(m, stats) for m in mlps}, None

    def score_layer(self, mlp: MLPModules, stats) -> torch.Tensor:
        if stats is None and self.needs_stats():
            raise InvalidArgumentError(f"`stats` are required by scorer {self.name!r}")
        if stats is not None:
            _check_finite_stats(stats, [mlp])
            if self.needs_second_moments():
                _check_second_moments(stats, [mlp], self.name)
        scores = self._layer(mlp, stats).detach().to("cpu", torch.float64)
        if not torch.isfinite(scores).all():
            raise InvalidArgumentError(f"scorer {self.name!r} produced NaN or inf scores in layer {mlp.layer}")
        return scores


@register_scorer
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
    >>> MagnitudeScorer(which="down", ord=2).score(model)     # doctest: +SKIP
    """

    name = "magnitude"
    description = "L1/L2 norm of the up/gate rows or down columns of each neuron"

    def __init__(self, *, which: str = "up", ord: int = 2, mode: str = "chained", prune_hidden: bool = False):
        self.which = which
        self.ord = ord
        self.mode = mode
        self.prune_hidden = prune_hidden
        self._validate_common()
        check_choice("which", which, ("up", "gate", "down"))
        check_choice("ord", ord, (1, 2))

    def needs_stats(self) -> bool:
        return False

    def _layer(self, m, stats):
        if self.which == "gate" and m.gate is None:
            raise InvalidArgumentError(f"`which='gate'` needs a gated MLP, but layer {m.layer} has none; "
                                       "use 'up' or 'down'")
        w = _abs64(m, self.which)
        dim = 0 if self.which == "down" else 1  # down is (d, m): neuron j is column j
        return torch.linalg.vector_norm(w, ord=self.ord, dim=dim)


@register_scorer
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
    >>> ActivationScorer().score(model, stats)     # doctest: +SKIP
    """

    name = "activation"
    description = "input norm of down_proj (intermediate activation norm)"

    def _layer(self, m, stats):
        return stats.input_norm(m.down_name).to(torch.float64)


@register_scorer
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
    >>> WandaSPScorer().score(model, stats)     # doctest: +SKIP
    """

    name = "wanda-sp"
    description = "structured Wanda (FLAP): column sums of |W_down| times the neuron's input norm"

    def _layer(self, m, stats):
        w = _abs64(m, "down")  # (d, m)
        return w.sum(0) * _vec(stats.input_norm(m.down_name), w)


@register_scorer
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
    >>> RandomScorer(seed=1).score(model)     # doctest: +SKIP
    """

    name = "random"
    description = "uniform random scores (seeded)"
    layerwise = False  # one generator over all layers

    def __init__(self, *, seed: int = 0, mode: str = "chained", prune_hidden: bool = False):
        self.seed = seed
        self.mode = mode
        self.prune_hidden = prune_hidden
        self._validate_common()
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
            raise fail_type("seed", "a non-negative int", seed)
        if seed < 0:
            raise fail("seed", "a non-negative int", seed)

    def needs_stats(self) -> bool:
        return False

    def _score(self, model, mlps, stats):
        g = torch.Generator(device="cpu").manual_seed(int(self.seed))
        return {m.layer: torch.rand(m.intermediate_size, generator=g, dtype=torch.float64) for m in mlps}, None


# ----------------------------------------------------------------------------- compensation-aware
@register_scorer
class FlapScorer(_LayerScorer):
    """FLAP's fluctuation metric: ``Var(h_j) * ||W_down[:, j]||^2``, h the input of down_proj.

    It is the expected squared error of the MLP output that ``compensate='bias'`` leaves when
    neuron j alone is removed (DESIGN.md section 6). Needs the input means, which
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
    >>> FlapScorer().score(model, stats)     # doctest: +SKIP
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


@register_scorer
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
    >>> stats = calibrate(model, tokenizer, second_moments=True)    # doctest: +SKIP
    >>> OBSScorer().score(model, stats)                             # doctest: +SKIP
    """

    name = "obs"
    description = "greedy structured OBS on down_proj: output error left after a least-squares refit"

    def __init__(self, *, ridge: float = DEFAULT_RIDGE, mode: str = "chained", prune_hidden: bool = False):
        self.ridge = ridge
        self.mode = mode
        self.prune_hidden = prune_hidden
        self._validate_common()
        check_ridge(ridge)

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


# ----------------------------------------------------------------------------- other centralities
@register_scorer
class KatzScorer(_GraphScorer):
    """Katz centrality of the intermediate nodes on the whole-MLP graph.

    Parameters
    ----------
    mode, gate, residual, weighting, keep
        Graph options (:class:`~llmrank_graph.graph.mlpgraph.ExportOptions`); by default the plain
        export :data:`~llmrank_graph.graph.mlpgraph.DEFAULT_EXPORT` (|W| edges).
    alpha, beta, direction, backend, tol, max_iter, nstart, normalized, device
        Passed to :func:`llmrank_graph.centrality.katz`, with its defaults.
    graph : MLPGraph, optional
        A graph exported from the model with the scorer's graph options (see
        :class:`PageRankScorer`).
    prune_hidden : bool
        Must be False.

    Example
    -------
    >>> KatzScorer(alpha=0.05, direction="reverse").score(model)     # doctest: +SKIP
    """

    name = "katz"
    description = "katz centrality of the intermediate nodes of the whole-MLP graph"

    def __init__(self, *, mode: str = DEFAULT_EXPORT.mode, gate: str = DEFAULT_EXPORT.gate,
                 residual: float = DEFAULT_EXPORT.residual, weighting: str = DEFAULT_EXPORT.weighting,
                 keep: int | float | None = DEFAULT_EXPORT.keep, alpha: float = _KATZ_FN["alpha"],
                 beta=_KATZ_FN["beta"], direction: str = _KATZ_FN["direction"], backend: str = _KATZ_FN["backend"],
                 tol: float = _KATZ_FN["tol"], max_iter: int = _KATZ_FN["max_iter"], nstart=_KATZ_FN["nstart"],
                 normalized: bool = _KATZ_FN["normalized"], device=_KATZ_FN["device"],
                 graph: MLPGraph | None = None, prune_hidden: bool = False):
        self.alpha = alpha
        self.beta = beta
        self.direction = direction
        self.tol = tol
        self.max_iter = max_iter
        self.nstart = nstart
        self.normalized = normalized
        self.device = device
        super().__init__(mode=mode, gate=gate, residual=residual, weighting=weighting, keep=keep, backend=backend,
                         graph=graph, prune_hidden=prune_hidden)
        check_choice("direction", direction, DIRECTIONS)

    def _centrality(self, graph):
        return _centrality.katz(graph, alpha=self.alpha, beta=self.beta, direction=self.direction,
                                backend=self.backend, tol=self.tol, max_iter=self.max_iter, nstart=self.nstart,
                                normalized=self.normalized, device=self.device)


@register_scorer
class HitsScorer(_GraphScorer):
    """One HITS vector (authorities or hubs) of the intermediate nodes on the whole-MLP graph.

    Parameters
    ----------
    mode, gate, residual, weighting, keep
        Graph options (:class:`~llmrank_graph.graph.mlpgraph.ExportOptions`); by default the plain
        export :data:`~llmrank_graph.graph.mlpgraph.DEFAULT_EXPORT`.
    which, backend, tol, max_iter, nstart, normalized
        Passed to :func:`llmrank_graph.centrality.hits`, with its defaults: ``which`` is
        ``'authorities'`` (fed by good hubs) or ``'hubs'``.
    graph : MLPGraph, optional
        A graph exported with the scorer's graph options.
    prune_hidden : bool
        Must be False.

    Example
    -------
    >>> HitsScorer(which="hubs").score(model)     # doctest: +SKIP
    """

    name = "hits"
    description = "hits centrality of the intermediate nodes of the whole-MLP graph"

    def __init__(self, *, mode: str = DEFAULT_EXPORT.mode, gate: str = DEFAULT_EXPORT.gate,
                 residual: float = DEFAULT_EXPORT.residual, weighting: str = DEFAULT_EXPORT.weighting,
                 keep: int | float | None = DEFAULT_EXPORT.keep, which: str = _HITS_FN["which"],
                 backend: str = _HITS_FN["backend"], tol: float = _HITS_FN["tol"],
                 max_iter: int = _HITS_FN["max_iter"], nstart=_HITS_FN["nstart"],
                 normalized: bool = _HITS_FN["normalized"], graph: MLPGraph | None = None,
                 prune_hidden: bool = False):
        self.which = which
        self.tol = tol
        self.max_iter = max_iter
        self.nstart = nstart
        self.normalized = normalized
        super().__init__(mode=mode, gate=gate, residual=residual, weighting=weighting, keep=keep, backend=backend,
                         graph=graph, prune_hidden=prune_hidden)

    def _centrality(self, graph):
        return _centrality.hits(graph, which=self.which, backend=self.backend, tol=self.tol,
                                max_iter=self.max_iter, nstart=self.nstart, normalized=self.normalized)


@register_scorer
class EigenvectorScorer(_GraphScorer):
    """Eigenvector centrality (of the undirected graph) of the intermediate nodes.

    Parameters
    ----------
    mode, gate, residual, weighting, keep
        Graph options (:class:`~llmrank_graph.graph.mlpgraph.ExportOptions`); by default the plain
        export :data:`~llmrank_graph.graph.mlpgraph.DEFAULT_EXPORT`.
    backend, tol, max_iter, nstart, directed
        Passed to :func:`llmrank_graph.centrality.eigenvector`, with its defaults
        (``directed=True`` is refused there: the whole-MLP graph is a DAG).
    graph : MLPGraph, optional
        A graph exported with the scorer's graph options.
    prune_hidden : bool
        Must be False.

    Example
    -------
    >>> EigenvectorScorer().score(model)     # doctest: +SKIP
    """

    name = "eigenvector"
    description = "eigenvector centrality of the intermediate nodes of the whole-MLP graph"

    def __init__(self, *, mode: str = DEFAULT_EXPORT.mode, gate: str = DEFAULT_EXPORT.gate,
                 residual: float = DEFAULT_EXPORT.residual, weighting: str = DEFAULT_EXPORT.weighting,
                 keep: int | float | None = DEFAULT_EXPORT.keep, backend: str = _EIGENVECTOR_FN["backend"],
                 tol: float = _EIGENVECTOR_FN["tol"], max_iter: int = _EIGENVECTOR_FN["max_iter"],
                 nstart=_EIGENVECTOR_FN["nstart"], directed: bool = _EIGENVECTOR_FN["directed"],
                 graph: MLPGraph | None = None, prune_hidden: bool = False):
        self.tol = tol
        self.max_iter = max_iter
        self.nstart = nstart
        self.directed = directed
        super().__init__(mode=mode, gate=gate, residual=residual, weighting=weighting, keep=keep, backend=backend,
                         graph=graph, prune_hidden=prune_hidden)

    def _centrality(self, graph):
        return _centrality.eigenvector(graph, backend=self.backend, tol=self.tol, max_iter=self.max_iter,
                                       nstart=self.nstart, directed=self.directed)


@register_scorer
class StrengthScorer(_GraphScorer):
    """Strength (sum of in-, out- or all edge weights) of the intermediate nodes.

    Parameters
    ----------
    mode, gate, residual, weighting, keep
        Graph options (:class:`~llmrank_graph.graph.mlpgraph.ExportOptions`); by default the plain
        export :data:`~llmrank_graph.graph.mlpgraph.DEFAULT_EXPORT`.
    direction, backend, device
        Passed to :func:`llmrank_graph.centrality.strength`, with its defaults (``direction``:
        ``'in'``, ``'out'`` or ``'total'``).
    graph : MLPGraph, optional
        A graph exported with the scorer's graph options.
    prune_hidden : bool
        Must be False.

    Example
    -------
    >>> StrengthScorer(direction="out", weighting="abs_x_input").score(model, stats)   # doctest: +SKIP
    """

    name = "strength"
    description = "strength centrality of the intermediate nodes of the whole-MLP graph"

    def __init__(self, *, mode: str = DEFAULT_EXPORT.mode, gate: str = DEFAULT_EXPORT.gate,
                 residual: float = DEFAULT_EXPORT.residual, weighting: str = DEFAULT_EXPORT.weighting,
                 keep: int | float | None = DEFAULT_EXPORT.keep, direction: str = _STRENGTH_FN["direction"],
                 backend: str = _STRENGTH_FN["backend"], device=_STRENGTH_FN["device"],
                 graph: MLPGraph | None = None, prune_hidden: bool = False):
        self.direction = direction
        self.device = device
        super().__init__(mode=mode, gate=gate, residual=residual, weighting=weighting, keep=keep, backend=backend,
                         graph=graph, prune_hidden=prune_hidden)

    def _centrality(self, graph):
        return _centrality.strength(graph, direction=self.direction, backend=self.backend, device=self.device)


@register_scorer
class DegreeScorer(_GraphScorer):
    """Degree (number of in-, out- or all edges) of the intermediate nodes.

    Parameters
    ----------
    mode, gate, residual, weighting, keep
        Graph options (:class:`~llmrank_graph.graph.mlpgraph.ExportOptions`); by default the plain
        export :data:`~llmrank_graph.graph.mlpgraph.DEFAULT_EXPORT`.
    direction, backend
        Passed to :func:`llmrank_graph.centrality.degree`, with its defaults.
    graph : MLPGraph, optional
        A graph exported with the scorer's graph options.
    prune_hidden : bool
        Must be False.

    Example
    -------
    >>> DegreeScorer(keep=3).score(model)     # doctest: +SKIP
    """

    name = "degree"
    description = "degree centrality of the intermediate nodes of the whole-MLP graph"

    def __init__(self, *, mode: str = DEFAULT_EXPORT.mode, gate: str = DEFAULT_EXPORT.gate,
                 residual: float = DEFAULT_EXPORT.residual, weighting: str = DEFAULT_EXPORT.weighting,
                 keep: int | float | None = DEFAULT_EXPORT.keep, direction: str = _DEGREE_FN["direction"],
                 backend: str = _DEGREE_FN["backend"], graph: MLPGraph | None = None, prune_hidden: bool = False):
        self.direction = direction
        super().__init__(mode=mode, gate=gate, residual=residual, weighting=weighting, keep=keep, backend=backend,
                         graph=graph, prune_hidden=prune_hidden)

    def _centrality(self, graph):
        return _centrality.degree(graph, direction=self.direction, backend=self.backend)


#: The graph scorers other than ``pagerank``, one per centrality of :mod:`llmrank_graph.centrality`.
_OTHER_CENTRALITIES = tuple(c.name for c in (KatzScorer, HitsScorer, EigenvectorScorer, StrengthScorer,
                                               DegreeScorer))
