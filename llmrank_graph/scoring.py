"""Neuron importance: one score per intermediate MLP neuron, from one calibration pass.

Every method is a :class:`Scorer` in a registry (:func:`scorers`, :func:`get_scorer`,
:func:`register_scorer`). A scorer stores its parameters in ``__init__`` and does its work in
:meth:`Scorer.score`, which returns a :class:`NeuronScores` (layer -> scores, higher = more
important = kept first). :func:`score_neurons` is the one-call entry point used by
:func:`llmrank_graph.prune_model`.

Families (DESIGN.md section 4):

- graph centralities on the whole-MLP graph: ``pagerank`` (the product's main method) and the
  other centralities of :mod:`llmrank_graph.centrality` where they exist;
- faithful reproductions of the LLM-Rank reference code (DESIGN.md section 5): ``wpr``,
  ``mpr``, ``channel-wanda``, ``norm``, with its two pipelines (``mode="chained"`` /
  ``"isolated"``) and its "paper mode" scores of the hidden channels (``prune_hidden=True``);
- baselines: ``magnitude``, ``activation``, ``wanda-sp``, ``random``.

All scores are float64 CPU tensors. Calibration statistics are computed once by the caller
(:func:`llmrank_graph.calibrate`) and passed in; weight-only scorers accept ``stats=None``.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from . import centrality as _centrality
from .architectures import MLPModules, mlp_layers
from .calibration import ActivationStats
from .centrality.backends import registered as _registered_backends
from .centrality.pagerank import DIRECTIONS
from .graph import ACTIVATION_WEIGHTINGS, GATES, MODES, WEIGHTINGS, _validate_keep, export_graph

logger = logging.getLogger(__name__)

__all__ = [
    "NeuronScores",
    "Scorer",
    "register_scorer",
    "scorers",
    "get_scorer",
    "score_neurons",
    "hidden_scorers",
    "PAGERANK_DEFAULTS",
    "PageRankScorer",
    "WeightedPageRankScorer",
    "ModifiedPageRankScorer",
    "ChannelWandaScorer",
    "NormScorer",
    "MagnitudeScorer",
    "ActivationScorer",
    "WandaSPScorer",
    "RandomScorer",
]

#: Defaults of the ``pagerank`` scorer (the keyword defaults of :class:`PageRankScorer` are read
#: from here). Chosen by measurement (``benchmarks/quality.py``, tables in the README): reverse
#: PageRank, activation teleport, on "activation share" edges (every node sends its
#: calibration activation norm, split over its out-edges in proportion to |W|). On
#: SmolLM2-135M it is below the activation baseline at 10, 30 and 50% under local allocation
#: (0.3% above at 20%) and well below every baseline at 30-50% under global allocation;
#: forward PageRank on plain |W| with uniform teleport (the paper's graph) is worse than random.
PAGERANK_DEFAULTS: dict = {
    "mode": "chained",
    "gate": "up",
    "residual": 0.0,
    "weighting": "activation_share",
    "keep": None,
    "direction": "reverse",
    "personalization": "activation",
    "alpha": 0.85,
    "backend": "auto",
}


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
        raise TypeError(f"`cls` must be a Scorer subclass; got {cls!r}")
    if not isinstance(cls.name, str) or not cls.name:
        raise ValueError(f"`cls.name` must be a non-empty str; got {cls.name!r}")
    _REGISTRY[cls.name] = cls
    return cls


def scorers() -> list[str]:
    """Names of the registered scorers, in registration order.

    Example
    -------
    >>> from llmrank_graph.scoring import scorers
    >>> "pagerank" in scorers() and "wpr" in scorers()
    True
    """
    return list(_REGISTRY)


def hidden_scorers() -> list[str]:
    """Names of the registered scorers that support ``prune_hidden=True``."""
    return [n for n, c in _REGISTRY.items() if c.supports_hidden]


def _scorer_class(name) -> type[Scorer]:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"`method` must be one of {', '.join(map(repr, _REGISTRY))}; got {name!r}")
    return _REGISTRY[name]


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
        A parameter the scorer does not have (the message lists the ones it has).

    Example
    -------
    >>> from llmrank_graph.scoring import get_scorer
    >>> get_scorer("wpr", gamma=0.9).get_params()["gamma"]
    0.9
    """
    cls = _scorer_class(name)
    allowed = cls.param_names()
    unknown = [k for k in params if k not in allowed]
    if unknown:
        raise TypeError(f"scorer {name!r} got unknown parameter(s) {', '.join(map(repr, unknown))}; "
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


# ----------------------------------------------------------------------------- validation
def _check_choice(arg: str, value, allowed) -> None:
    if not isinstance(value, (str, int)) or isinstance(value, bool) or value not in allowed:
        raise ValueError(f"`{arg}` must be one of {', '.join(map(repr, allowed))}; got {value!r}")


def _check_bool(arg: str, value) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{arg}` must be a bool; got {value!r}")


def _check_unit(arg: str, value, open_: bool = False) -> float:
    """A float in [0, 1] (or (0, 1) when ``open_``)."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if ok:
        v = float(value)
        ok = (0 < v < 1) if open_ else (0 <= v <= 1)
    if not ok:
        interval = "(0, 1)" if open_ else "[0, 1]"
        raise ValueError(f"`{arg}` must be a float in {interval}; got {value!r}")
    return float(value)


# ----------------------------------------------------------------------------- base class
class Scorer:
    """Base class of neuron scorers (scikit-learn manners).

    ``__init__`` stores (and validates) the parameters, :meth:`score` does the work. Subclasses
    set ``name``, ``supports_hidden``, ``description``, implement :meth:`_score`, and say
    whether they need calibration statistics with :meth:`needs_stats`.
    """

    name: ClassVar[str] = ""
    supports_hidden: ClassVar[bool] = False
    description: ClassVar[str] = ""

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
        _check_choice("mode", self.mode, MODES)
        _check_bool("prune_hidden", self.prune_hidden)
        if self.prune_hidden and not self.supports_hidden:
            raise ValueError(f"`prune_hidden=True` needs scores of the hidden channels, which scorer "
                             f"{self.name!r} does not give; methods that do: {', '.join(map(repr, hidden_scorers()))}")

    # -- work --------------------------------------------------------------------
    def needs_stats(self) -> bool:
        """True when this scorer, with these parameters, uses calibration statistics."""
        return True

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
            raise ValueError(f"`stats` are required by scorer {self.name!r} with these parameters (it uses "
                             "calibration activation norms); compute them once with "
                             "llmrank_graph.calibrate(model, ...) and pass them in")
        if stats is not None:
            if not isinstance(stats, ActivationStats):
                raise TypeError(f"`stats` must be an ActivationStats (llmrank_graph.calibrate) or None; "
                                f"got {type(stats).__name__}")
            stats.check_model(model)
            _check_finite_stats(stats, mlps)
        _check_finite_weights(mlps)
        inter, hidden = self._score(model, mlps, stats)
        inter = {l: s.detach().to("cpu", torch.float64) for l, s in inter.items()}
        if hidden is not None:
            hidden = {l: s.detach().to("cpu", torch.float64) for l, s in hidden.items()}
        for what, d in (("intermediate", inter), ("hidden", hidden or {})):
            for l, s in d.items():
                if not torch.isfinite(s).all():
                    raise ValueError(f"scorer {self.name!r} produced NaN or inf {what} scores in layer {l}; "
                                     "check the weights and stats")
        logger.debug("scorer %r scored %d layers in %.3fs", self.name, len(inter), time.perf_counter() - t0)
        params = {k: (repr(v) if k == "graph" and v is not None else v) for k, v in self.get_params().items()}
        return NeuronScores(inter, hidden, self.name, params)

    def _score(self, model, mlps: list[MLPModules], stats):
        raise NotImplementedError


def _check_finite_weights(mlps: list[MLPModules]) -> None:
    for m in mlps:
        for which in (["gate"] if m.gate is not None else []) + ["up", "down"]:
            if not torch.isfinite(m.weight(which)).all():
                raise ValueError(f"`model` has NaN or inf in the {which} weight of layer {m.layer}")


def _check_finite_stats(stats: ActivationStats, mlps: list[MLPModules]) -> None:
    # check_model covers the sums of squares; the per-batch norm sums are checked here.
    for m in mlps:
        for name in m.named_modules():
            s = stats[name]
            for what, t in (("input", s.input_batch_norm_sum), ("output", s.output_batch_norm_sum)):
                if not torch.isfinite(t).all():
                    raise ValueError(f"`stats` for module {name!r} contain NaN or inf in the {what} statistics")


def _abs64(m: MLPModules, which: str) -> torch.Tensor:
    """|W| as float64, (out, in), on the weight's device."""
    with torch.no_grad():
        return m.weight(which).detach().to(torch.float64).abs()


def _vec(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.to(device=like.device, dtype=torch.float64)


# ----------------------------------------------------------------------------- graph scorers
def _pagerank_needs_stats(weighting, personalization) -> bool:
    return weighting in ACTIVATION_WEIGHTINGS or (isinstance(personalization, str) and personalization == "activation")


def _check_graph_params(s) -> None:
    _check_choice("gate", s.gate, GATES)
    _check_choice("weighting", s.weighting, WEIGHTINGS)
    r = s.residual
    if isinstance(r, bool) or not isinstance(r, (int, float, np.integer, np.floating)) or not math.isfinite(r) or r < 0:
        raise ValueError(f"`residual` must be a finite float >= 0; got {r!r}")
    _validate_keep(s.keep)
    backend = getattr(s, "backend", "auto")
    if not isinstance(backend, str) or (backend != "auto" and backend not in _registered_backends()):
        raise ValueError(f"`backend` must be one of {', '.join(map(repr, ['auto', *_registered_backends()]))}; "
                         f"got {backend!r}")


def _intermediate_slices(graph, scores: np.ndarray) -> dict[int, torch.Tensor]:
    return {p.layer: torch.from_numpy(np.array(scores[p.offset:p.stop], dtype=np.float64))
            for p in graph.intermediate_partitions()}


_GRAPH_OPTIONS = ("mode", "gate", "residual", "weighting", "keep")


def _check_graph_arg(graph) -> None:
    from .graph import MLPGraph

    if graph is not None and not isinstance(graph, MLPGraph):
        raise TypeError(f"`graph` must be an MLPGraph (llmrank_graph.export_graph / read_graph) or None; "
                        f"got {type(graph).__name__}")


def _graph_for(scorer, model, stats):
    """The scorer's graph: the one it was given (checked against the model and the options), or a fresh export."""
    g = scorer.graph
    if g is None:
        return export_graph(model, stats, **{k: getattr(scorer, k) for k in _GRAPH_OPTIONS})
    g.check_model(model)
    for k in _GRAPH_OPTIONS:
        have, want = g.meta.get(k), getattr(scorer, k)
        if k == "residual" and have is not None:
            have, want = float(have), float(want)
        if have != want:
            raise ValueError(f"`graph` was exported with {k}={have!r} but scorer {scorer.name!r} has {k}={want!r}; "
                             f"pass {k}={have!r} or export the graph with the scorer's options")
    return g


@register_scorer
class PageRankScorer(Scorer):
    """Global PageRank of the intermediate nodes on the whole-MLP graph.

    The score of neuron j of layer l is the PageRank of vertex ``I_l,j`` of
    ``export_graph(model, stats, mode, gate, residual, weighting, keep)`` computed by
    ``pagerank(graph, alpha, personalization, direction, backend, tol, max_iter)``. Defaults
    come from :data:`PAGERANK_DEFAULTS`.

    Parameters
    ----------
    mode, gate, residual, weighting, keep
        Passed to :func:`llmrank_graph.export_graph`.
    direction, personalization, alpha, backend, tol, max_iter
        Passed to :func:`llmrank_graph.pagerank`.
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

    def __init__(self, *, mode: str = PAGERANK_DEFAULTS["mode"], gate: str = PAGERANK_DEFAULTS["gate"],
                 residual: float = PAGERANK_DEFAULTS["residual"], weighting: str = PAGERANK_DEFAULTS["weighting"],
                 keep: int | float | None = PAGERANK_DEFAULTS["keep"],
                 direction: str = PAGERANK_DEFAULTS["direction"],
                 personalization=PAGERANK_DEFAULTS["personalization"], alpha: float = PAGERANK_DEFAULTS["alpha"],
                 backend: str = PAGERANK_DEFAULTS["backend"], tol: float = 1e-10, max_iter: int = 1000,
                 graph=None, prune_hidden: bool = False):
        self.mode = mode
        self.gate = gate
        self.residual = residual
        self.weighting = weighting
        self.keep = keep
        self.direction = direction
        self.personalization = personalization
        self.alpha = alpha
        self.backend = backend
        self.tol = tol
        self.max_iter = max_iter
        self.graph = graph
        self.prune_hidden = prune_hidden
        self._validate_common()
        _check_graph_params(self)
        _check_graph_arg(graph)
        _check_choice("direction", self.direction, DIRECTIONS)
        _check_unit("alpha", self.alpha, open_=True)

    def needs_stats(self) -> bool:
        return self.graph is None and _pagerank_needs_stats(self.weighting, self.personalization)

    def _score(self, model, mlps, stats):
        graph = _graph_for(self, model, stats)
        res = _centrality.pagerank(graph, alpha=self.alpha, personalization=self.personalization,
                                   direction=self.direction, backend=self.backend, tol=self.tol,
                                   max_iter=self.max_iter)
        logger.debug("pagerank scorer: backend %r, %d iterations", res.backend, res.iterations)
        return _intermediate_slices(graph, res.scores), None


_MULTI_RESULT = {"hits": ("hubs", "authorities")}  # algorithms that return several results


def _make_centrality_scorer(algo: str, fn) -> type[Scorer]:
    """A scorer class for a centrality function ``fn(graph, **kw) -> CentralityResult``.

    Its parameters are the graph options of :func:`export_graph` (``weighting='abs'`` by
    default), the keyword parameters of ``fn`` with ``fn``'s defaults (``fn`` validates their
    values when it runs), and ``prune_hidden`` (must be False). For algorithms that return
    several results (HITS: hubs, authorities), ``kind`` picks one (default: the first).
    """
    sig = inspect.signature(fn)
    fn_params = {p.name: p.default for p in list(sig.parameters.values())[1:]
                 if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    graph_defaults = {"mode": "chained", "gate": "up", "residual": 0.0, "weighting": "abs", "keep": None}
    own = {k: v for k, v in fn_params.items() if k not in graph_defaults and k not in ("kind", "graph")}
    # A function with its own selector (``hits(graph, which=...)``) needs no ``kind``.
    kinds = None if "which" in fn_params else _MULTI_RESULT.get(algo)
    extra = {"kind": kinds[0]} if kinds else {}
    all_defaults = {**graph_defaults, **own, **extra, "graph": None, "prune_hidden": False}
    required = [k for k, v in own.items() if v is inspect.Parameter.empty]

    def __init__(self, **params):
        unknown = [k for k in params if k not in all_defaults]
        if unknown:
            raise TypeError(f"scorer {algo!r} got unknown parameter(s) {', '.join(map(repr, unknown))}; "
                            f"its parameters are {', '.join(map(repr, all_defaults))}")
        missing = [k for k in required if k not in params]
        if missing:
            raise TypeError(f"scorer {algo!r} needs parameter(s) {', '.join(map(repr, missing))}")
        for k, v in all_defaults.items():
            setattr(self, k, params.get(k, v))
        self._validate_common()
        _check_graph_params(self)
        _check_graph_arg(self.graph)
        if kinds:
            _check_choice("kind", self.kind, kinds)

    @classmethod
    def param_names(cls):
        return list(all_defaults)

    def needs_stats(self):
        return self.graph is None and _pagerank_needs_stats(self.weighting, getattr(self, "personalization", None))

    def _score(self, model, mlps, stats):
        graph = _graph_for(self, model, stats)
        res = fn(graph, **{k: getattr(self, k) for k in own})
        if isinstance(res, (tuple, list)):
            if not kinds:
                raise TypeError(f"centrality {algo!r} returned {len(res)} results; the scorer needs one")
            by_name = {getattr(r, "algorithm", None): r for r in res}
            res = by_name.get(self.kind, res[kinds.index(self.kind)])
        return _intermediate_slices(graph, np.asarray(res.scores, dtype=np.float64)), None

    doc = (f"Centrality ``{algo}`` of the intermediate nodes on the whole-MLP graph.\n\n"
           f"Parameters: the graph options of export_graph ({', '.join(graph_defaults)}), those of "
           f"llmrank_graph.centrality.{algo} ({', '.join(own) or 'none'})"
           + (f", kind ({' or '.join(kinds)})" if kinds else "") + ", and prune_hidden (must be False).")
    return type(f"{algo.capitalize()}Scorer", (Scorer,), {
        "name": algo, "description": f"{algo} centrality of the intermediate nodes of the whole-MLP graph",
        "__init__": __init__, "param_names": param_names, "needs_stats": needs_stats, "_score": _score,
        "__doc__": doc, "__module__": __name__,
    })


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
        raise ValueError(f"cannot normalise the scores of {what}: they sum to {float(total):.3g} "
                         "(all activations or weights zero?)")
    return v / total


class _ReferenceScorer(Scorer):
    """Shared driver of the reference code's ``BaseScorer.iterate`` (DESIGN.md section 5).

    For each chain of modules (``mode``): ``s_0`` = in-activation of the first module, normalised
    to sum 1; module k's scores = ``_step(|W_k|, s_{k-1}, in_k, out_k)`` normalised to sum 1.
    In/out activations are the per-batch L2 norms averaged over batches. Intermediate scores of
    layer l are the scores of up_l (its output rows); hidden scores, those of down_l.
    """

    supports_hidden = True

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
        _check_unit("gamma", gamma)
        _check_unit("theta", theta)

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
        _check_choice("p", p, (1, 2))

    def needs_stats(self) -> bool:
        return False

    def _step(self, w, prev, inp, out):
        return torch.linalg.vector_norm(w, ord=self.p, dim=1)


# ----------------------------------------------------------------------------- baselines
class _LayerScorer(Scorer):
    """A scorer computed independently per layer: the same result in both modes."""

    def _layer(self, m: MLPModules, stats) -> torch.Tensor:
        raise NotImplementedError

    def _score(self, model, mlps, stats):
        return {m.layer: self._layer(m, stats) for m in mlps}, None


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
        _check_choice("which", which, ("up", "gate", "down"))
        _check_choice("ord", ord, (1, 2))

    def needs_stats(self) -> bool:
        return False

    def _layer(self, m, stats):
        if self.which == "gate" and m.gate is None:
            raise ValueError(f"`which='gate'` needs a gated MLP, but layer {m.layer} has none; use 'up' or 'down'")
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

    def __init__(self, *, seed: int = 0, mode: str = "chained", prune_hidden: bool = False):
        self.seed = seed
        self.mode = mode
        self.prune_hidden = prune_hidden
        self._validate_common()
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"`seed` must be a non-negative int; got {seed!r}")

    def needs_stats(self) -> bool:
        return False

    def _score(self, model, mlps, stats):
        g = torch.Generator(device="cpu").manual_seed(int(self.seed))
        return {m.layer: torch.rand(m.intermediate_size, generator=g, dtype=torch.float64) for m in mlps}, None


# ----------------------------------------------------------------------------- other centralities
_OTHER_CENTRALITIES = ("katz", "hits", "eigenvector", "strength", "degree")


def _register_other_centralities() -> list[str]:
    """Register a scorer for each other centrality :mod:`llmrank_graph.centrality` provides."""
    done = []
    for algo in _OTHER_CENTRALITIES:
        fn = getattr(_centrality, algo, None)
        if callable(fn) and algo not in _REGISTRY:
            register_scorer(_make_centrality_scorer(algo, fn))
            done.append(algo)
    if done:
        logger.debug("registered centrality scorers: %s", ", ".join(done))
    return done


_register_other_centralities()
