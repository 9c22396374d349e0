"""Graph scorers: centralities of the intermediate nodes of the whole-MLP graph.

``pagerank`` (the product's main method, here), the other centralities of
:mod:`llmrank_graph.centrality` (``katz``, ``hits``, ``eigenvector``, ``strength``,
``degree``: :mod:`.centralities`) and the output-seeded path ``influence`` (:mod:`.gradient`)
share one set of graph options (the fields of :class:`~llmrank_graph.graph.ExportOptions`,
``attention`` included: with ``attention=True`` the graph holds the attention heads too, and
neurons are ranked on the whole network's graph), the centrality ``backend``, an optional ready
``graph`` and ``prune_hidden`` (which must be False). The score of intermediate neuron j of
layer l is the centrality of node ``I_l,j`` (docs/design.md sections 2 and 4).

Each scorer takes the parameters of its centrality with the same defaults, read from the
centrality function, so every default is written once. The defaults of ``pagerank`` are the
constants below.

>>> import torch, transformers, llmrank_graph as lg
>>> cfg = transformers.LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=12, num_hidden_layers=2,
...                                num_attention_heads=2)
>>> model = transformers.LlamaForCausalLM(cfg).eval()
>>> stats = lg.calibrate(model, input_ids=torch.randint(0, 32, (2, 8)))
>>> PageRankScorer().score(model, stats).sizes()
{0: 12, 1: 12}
>>> PageRankScorer(attention=True).score(model, lg.calibrate(model, input_ids=torch.randint(0, 32, (2, 8)),
...                                                          attention=True)).sizes()   # the whole network's graph
{0: 12, 1: 12}
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar

import numpy as np
import torch

from .. import centrality as _centrality
from ..base.checks import (
    check_choice,
    check_finite_array,
    check_keep,
    check_residual,
    fail,
    fail_type,
    format_allowed,
)
from ..base.params import Boolean, Check, Constraint, InstanceOf, Interval, OneOf
from ..centrality import (
    DIRECTIONS,
    TELEPORTS,
    CentralityResult,
    backend_names,
    centrality_entry,
    get_backend,
)
from ..centrality.sweep import resolve_device
from ..data.calibration import ActivationStats
from ..data.gradients import OUTPUT_WEIGHTS, output_weights
from ..errors import InvalidArgumentError
from ..graph import DEFAULT_EXPORT, GATES, MODES, WEIGHTINGS, ExportOptions, MLPGraph
from ..graph.export import CALIBRATED_EXPORT, export_parts
from .registry import Scorer

logger = logging.getLogger(__name__)

__all__ = ["PAGERANK_EXPORT", "PAGERANK_CENTRALITY", "PAGERANK_DEFAULTS", "PAGERANK_WITHOUT_STATS",
           "PERSONALIZATIONS", "ACTIVATION_PERSONALIZATIONS", "PageRankScorer", "OUTPUT_SEEDS",
           "output_seed_vector"]

#: Named teleport vectors of :func:`llmrank_graph.centrality.pagerank`.
PERSONALIZATIONS: tuple[str, ...] = TELEPORTS
#: Those that need calibration statistics (the nodes' activation norms).
ACTIVATION_PERSONALIZATIONS: tuple[str, ...] = ("activation",)
#: The seeds of the output-seeded scorers (:func:`output_seed_vector`).
OUTPUT_SEEDS: tuple[str, ...] = OUTPUT_WEIGHTS

# Defaults of the ``pagerank`` scorer: its graph here, its centrality options in the entry of
# the centrality registry (which the analyses read too); :class:`PageRankScorer`'s keyword
# defaults and the CLI's ``rank`` defaults are read from the two constants below. Chosen by
# measurement (``benchmarks/quality.py``, tables in the README): reverse PageRank, activation
# teleport, on "activation share" edges (every node sends its calibration activation norm, split
# over its out-edges in proportion to |W|). On SmolLM2-135M it is below the activation baseline
# at 10, 30 and 50% under local allocation (0.3% above at 20%) and well below every baseline at
# 30-50% under global allocation; forward PageRank on plain |W| with uniform teleport (the
# paper's graph) is worse than random.

_PAGERANK = centrality_entry("pagerank")

#: Graph the ``pagerank`` scorer exports by default: the graph export's own default when
#: calibration statistics are given (:data:`llmrank_graph.graph.export.CALIBRATED_EXPORT`), so
#: that a calibrated export, ``rank --graph`` and this scorer rank alike.
PAGERANK_EXPORT = CALIBRATED_EXPORT
#: Centrality options of the ``pagerank`` scorer (read-only): the library's PageRank defaults,
#: kept in the centrality registry (:func:`llmrank_graph.centrality.centrality_entry`), and the
#: automatic choice of backend.
PAGERANK_CENTRALITY: Mapping[str, object] = MappingProxyType({**_PAGERANK.defaults, "backend": "auto"})
#: All defaults of the ``pagerank`` scorer in one dict: :data:`PAGERANK_EXPORT` as a dict, then
#: :data:`PAGERANK_CENTRALITY`. Derived from them, never edited.
PAGERANK_DEFAULTS: dict = {**PAGERANK_EXPORT.as_dict(), **PAGERANK_CENTRALITY}
#: What the defaults that need calibration statistics fall back to where there are none (the
#: CLI's ``rank`` without ``--calibrate``): plain |W| edges and a uniform teleport.
PAGERANK_WITHOUT_STATS: Mapping[str, str] = MappingProxyType(
    {"weighting": DEFAULT_EXPORT.weighting, **_PAGERANK.without_stats})


def _defaults_of(fn) -> dict:
    """Keyword defaults of a centrality function (the graph scorers take them as theirs)."""
    return {p.name: p.default for p in inspect.signature(fn).parameters.values() if p.default is not p.empty}


_PAGERANK_FN = _defaults_of(_centrality.pagerank)


# ----------------------------------------------------------------------------- constraints
# Every parameter is decided here, before any model work (the command line checks `--param`
# values with these tables before it loads a model). Only what needs the graph waits for it: the
# length of a per-node array.
def _backend(arg: str, value) -> str:
    # Read when checked, not at import: a backend may be registered after this module loads.
    return check_choice(arg, value, ("auto", *backend_names()))


def _backend_for(algorithm: str) -> Check:
    """'auto' or a registered backend that implements ``algorithm``."""
    def check(arg: str, value) -> str:
        name = _backend(arg, value)
        if name != "auto" and not get_backend(name).implements(algorithm):
            able = [b for b in backend_names() if get_backend(b).implements(algorithm)]
            raise fail(arg, f"'auto' or a backend that implements {algorithm} ({format_allowed(able)})", value)
        return name

    return Check(check, f"'auto' or a backend that implements {algorithm}")


def _residual(arg: str, value):
    if isinstance(value, str) and value != "measured":
        raise fail(arg, "a float >= 0 or 'measured'", value)
    return value if isinstance(value, str) else check_residual(value, arg)


def _keep(arg: str, value):
    return check_keep(value)


def _node_array(arg: str, value, what: str, *, positive: bool = False):
    """A 1-D array of finite values (>= 0, or > 0 when ``positive``); its length is checked on the graph."""
    if isinstance(value, (str, bytes, dict)) or np.ndim(value) != 1:
        raise fail_type(arg, what, value)
    arr = check_finite_array(arg, value, nonnegative=True, what=what)
    if positive and not (arr > 0).all():
        raise fail(arg, what, value)
    return value  # as given: its length is checked against the graph when the scorer runs


def _teleport(arg: str, value):
    if isinstance(value, str):
        return check_choice(arg, value, PERSONALIZATIONS)
    return _node_array(arg, value, f"one of {format_allowed(PERSONALIZATIONS)} or an array of one value per node")


def _device(arg: str, value):
    resolve_device(value)  # None, 'cpu', 'cuda' or 'cuda:N' that this machine has
    return value


_POSITIVE = Interval(float, 0, closed="neither")
_DEVICE = Check(_device, "None, 'cpu', 'cuda' or 'cuda:N' (a torch device this machine has)")

#: The parameters every graph scorer shares.
_GRAPH_CONSTRAINTS: Mapping[str, Constraint] = MappingProxyType({
    "mode": OneOf(*MODES),
    "gate": OneOf(*GATES),
    "residual": Check(_residual, "a float >= 0 that float32 holds, or 'measured'"),
    "weighting": OneOf(*WEIGHTINGS),
    "keep": Check(_keep, "None, an int >= 1 (top-k in-edges per node) or a float in (0, 1] (fraction of edges "
                         "kept)"),
    "backend": Check(_backend, "'auto' or a backend name (llmrank_graph.centrality.backend_names)"),
    "graph": InstanceOf((MLPGraph, type(None)), "an MLPGraph (llmrank_graph.export_graph / read_graph) or None"),
    "prune_hidden": Boolean(),
    "attention": Boolean(),
})


def _intermediate_slices(graph: MLPGraph, scores: np.ndarray) -> dict[int, torch.Tensor]:
    return {p.layer: torch.from_numpy(np.array(scores[p.offset:p.stop], dtype=np.float64))
            for p in graph.intermediate_partitions()}


def output_seed_vector(model, stats, graph: MLPGraph, seed: str) -> np.ndarray:
    """The output seed: zero but on the chained ``graph``'s last partition (the stream after the last MLP),
    where it is :func:`~llmrank_graph.data.gradients.output_weights` (``seed``: ``'uniform'``, ``'unembedding'``
    or ``'gradient'``). One float64 value per node, not normalised."""
    last = graph.partitions[-1]
    weights = output_weights(model, stats, seed).numpy()
    if graph.meta.get("mode") == "isolated" or weights.size != last.size or not weights.sum() > 0:
        raise InvalidArgumentError(f"`output_seed={seed!r}` needs a chained graph of this model and a non-zero "
                                   f"seed; last partition {last.name!r}: {last.size} nodes, seed: {weights.size}")
    out = np.zeros(graph.n_nodes)
    out[last.offset:last.stop] = weights
    return out


# ----------------------------------------------------------------------------- base
class _GraphScorer(Scorer):
    """Base of the scorers that rank the intermediate nodes of the whole-MLP graph.

    It holds the graph options (the fields of :class:`~llmrank_graph.graph.ExportOptions`:
    ``mode``, ``gate``, ``residual``, ``weighting``, ``keep``), the centrality ``backend``, an
    optional ready ``graph`` and ``prune_hidden`` (which must be False). A subclass stores its
    own centrality parameters, calls this ``__init__`` with the shared ones, adds its own
    constraints to :data:`_GRAPH_CONSTRAINTS`, and runs its algorithm in :meth:`_centrality`.
    """

    _parameter_constraints: ClassVar[Mapping[str, Constraint]] = _GRAPH_CONSTRAINTS

    def __init__(self, *, mode: str, gate: str, residual: float, weighting: str, keep: int | float | None,
                 backend: str, graph: MLPGraph | None, prune_hidden: bool, attention: bool = False):
        self.attention = attention
        self.mode = mode
        self.gate = gate
        self.residual = residual
        self.weighting = weighting
        self.keep = keep
        self.backend = backend
        self.graph = graph
        self.prune_hidden = prune_hidden

    @property
    def export_options(self) -> ExportOptions:
        """The graph options, as one :class:`~llmrank_graph.graph.ExportOptions`."""
        return ExportOptions(mode=self.mode, gate=self.gate, residual=self.residual, weighting=self.weighting,
                             keep=self.keep, attention=self.attention)

    @classmethod
    def _checked(cls, params: Mapping) -> dict:
        checked = super()._checked(params)
        # The options that exclude each other (attention=True with mode='isolated' or residual='measured'),
        # refused here, before any model work, by the one check of the graph options.
        ExportOptions(**{k: params[k] for k in ("mode", "residual", "attention") if k in params})
        return checked

    def needs_stats(self) -> bool:
        return self.graph is None and self.export_options.needs_stats

    def _graph_for(self, model, stats: ActivationStats | None) -> MLPGraph:
        """The graph to rank: ``self.graph`` (checked against the model and the options), or a fresh export."""
        options = self.export_options
        if self.graph is None:
            # The work of export_graph without its checks, which the entry has made (stats of this
            # model, the options, the one scan of the weights).
            return MLPGraph.from_parts(export_parts(model, stats, options))
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
        if g.meta.get("residual_weights", "constant") != options.residual_weights:
            raise InvalidArgumentError(f"`graph` was exported with residual_weights={g.meta['residual_weights']!r} "
                                       f"but scorer {self.name!r} has residual={self.residual!r}")
        return g

    def _centrality(self, graph: MLPGraph) -> CentralityResult:
        """The centrality of every node of ``graph``."""
        raise NotImplementedError

    def _score(self, model, mlps, stats):
        graph = self._graph_for(model, stats)
        res = self._centrality(graph)
        logger.debug("%s scorer: backend %r, %r iterations", self.name, res.backend, res.iterations)
        return _intermediate_slices(graph, res.scores), None


# ----------------------------------------------------------------------------- pagerank
class PageRankScorer(_GraphScorer):
    """Global PageRank of the intermediate nodes on the whole-MLP graph.

    The score of neuron j of layer l is the PageRank of vertex ``I_l,j`` of
    ``export_graph(model, stats, mode, gate, residual, weighting, keep)`` computed by
    ``pagerank(graph, alpha, personalization, direction, backend, tol, max_iter)``. The graph
    defaults are :data:`PAGERANK_EXPORT`, the centrality defaults :data:`PAGERANK_CENTRALITY`
    (both together: :data:`PAGERANK_DEFAULTS`).

    Parameters
    ----------
    mode, gate, residual, weighting, keep, attention
        Graph options (:class:`~llmrank_graph.graph.ExportOptions`), passed to
        :func:`llmrank_graph.export_graph`. ``attention=True`` ranks the neurons on the graph of
        the whole network, attention heads included (statistics from ``calibrate(...,
        attention=True)``); ``prune_model(..., target='both')`` ranks neurons and heads on it.
    direction : {'forward', 'reverse'}
    personalization : {'uniform', 'activation'} or array of shape (n_nodes,)
    alpha : float in (0, 1)
    backend : str
        ``'auto'`` or one of :func:`llmrank_graph.centrality.backend_names`.
    tol, max_iter
        Passed to :func:`llmrank_graph.pagerank`, with its defaults.
    output_seed : None, 'uniform', 'unembedding' or 'gradient'
        Output seeding: the teleport (and dangling mass) only on the last hidden partition,
        weighted by :func:`output_seed_vector` (``'gradient'`` needs ``calibrate(..., gradients=True)``).
        Replaces ``personalization``; needs the reverse direction and the chained mode.
    graph : MLPGraph, optional
        A graph already exported from the model (or read from Parquet) to use instead of a
        fresh export. Its export options must equal the scorer's (else ValueError), and it
        carries its own weights and activations, so ``stats`` are then optional.
    prune_hidden : bool
        Must be False (no hidden-channel scores).

    Example
    -------
    >>> PageRankScorer().needs_stats()       # activation-share edges, activation teleport
    True

    >>> PageRankScorer(weighting="abs", personalization="uniform").needs_stats()
    False
    """

    name = "pagerank"
    description = "global PageRank of the intermediate nodes of the whole-MLP graph"
    _parameter_constraints = MappingProxyType({
        **_GRAPH_CONSTRAINTS,
        "backend": _backend_for("pagerank"),
        "direction": OneOf(*DIRECTIONS),
        "personalization": Check(_teleport, f"one of {', '.join(map(repr, PERSONALIZATIONS))} or an array of "
                                            "one value per node"),
        "alpha": Interval(float, 0, 1, closed="neither"), "tol": _POSITIVE, "max_iter": Interval(int, 1),
        "output_seed": OneOf(None, *OUTPUT_SEEDS)})

    def __init__(self, *, mode: str = PAGERANK_EXPORT.mode, gate: str = PAGERANK_EXPORT.gate,
                 residual: float = PAGERANK_EXPORT.residual, weighting: str = PAGERANK_EXPORT.weighting,
                 keep: int | float | None = PAGERANK_EXPORT.keep,
                 direction: str = PAGERANK_CENTRALITY["direction"],
                 personalization=PAGERANK_CENTRALITY["personalization"],
                 alpha: float = PAGERANK_CENTRALITY["alpha"], backend: str = PAGERANK_CENTRALITY["backend"],
                 tol: float = _PAGERANK_FN["tol"], max_iter: int = _PAGERANK_FN["max_iter"],
                 output_seed: str | None = None, graph: MLPGraph | None = None, prune_hidden: bool = False,
                 attention: bool = False):
        self.direction = direction
        self.personalization = personalization
        self.alpha = alpha
        self.tol = tol
        self.max_iter = max_iter
        self.output_seed = output_seed
        super().__init__(mode=mode, gate=gate, residual=residual, weighting=weighting, keep=keep, backend=backend,
                         graph=graph, prune_hidden=prune_hidden, attention=attention)

    @classmethod
    def _checked(cls, params: Mapping) -> dict:
        checked = super()._checked(params)
        got = (params.get("direction", PAGERANK_CENTRALITY["direction"]), params.get("mode", "chained"),
               isinstance(params.get("personalization", ""), str))
        if params.get("output_seed") is not None and got != ("reverse", "chained", True):
            raise InvalidArgumentError(f"`output_seed={params['output_seed']!r}` seeds the output, from which only "
                                       "the reverse direction flows back, and replaces the teleport: it needs "
                                       "direction='reverse', mode='chained' and no personalization array; got "
                                       f"direction={got[0]!r}, mode={got[1]!r}")
        return checked

    def needs_stats(self) -> bool:
        uses_activation = (self.output_seed is None and isinstance(self.personalization, str)
                           and self.personalization in ACTIVATION_PERSONALIZATIONS)
        return self.output_seed == "gradient" or (
            self.graph is None and (self.export_options.needs_stats or uses_activation))

    def node_scores(self, model, stats, graph: MLPGraph) -> np.ndarray:
        """This scorer's PageRank of every node of ``graph`` (exported from ``model`` with its options):
        the one computation behind the neuron scores and the head scores
        (:class:`~llmrank_graph.scoring.heads.HeadPageRankScorer`)."""
        teleport = (self.personalization if self.output_seed is None
                    else output_seed_vector(model, stats, graph, self.output_seed))
        res = _centrality.pagerank(graph, alpha=self.alpha, personalization=teleport, direction=self.direction,
                                   backend=self.backend, tol=self.tol, max_iter=self.max_iter)
        return res.scores

    def _score(self, model, mlps, stats):
        graph = self._graph_for(model, stats)
        return _intermediate_slices(graph, self.node_scores(model, stats, graph)), None
