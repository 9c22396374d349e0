"""The scorer registry: the :class:`Scorer` base class, the registry and the one-call entry point.

Every method is a :class:`Scorer` in a registry (:func:`scorers`, :func:`get_scorer`,
:func:`register_scorer`). A scorer's ``__init__`` only stores its parameters; each class
declares their constraints once, in ``_parameter_constraints``
(:mod:`llmrank_graph.base.params`), checked at the entry: :meth:`Scorer.score`,
:func:`score_neurons`, or :meth:`Scorer.check_params` before any model work.
:meth:`Scorer.score` returns a :class:`NeuronScores` (layer -> scores, higher = more
important = kept first). :func:`score_neurons` is the one-call entry point used by
:func:`llmrank_graph.prune_model`.

The families live in their own modules (docs/design.md section 4): graph centralities
(:mod:`.graph`), the reproductions of the LLM-Rank reference code (:mod:`.reference`), the
baselines (:mod:`.baselines`) and the compensation-aware criteria (:mod:`.second_order`).
The package registers them all when it is imported, so the registry is complete whichever
module a caller imports.

All scores are float64 CPU tensors. Calibration statistics are computed once by the caller
(:func:`llmrank_graph.calibrate`) and passed in; weight-only scorers accept ``stats=None``.

>>> from llmrank_graph.scoring import get_scorer
>>> get_scorer("wpr", gamma=0.9)
WeightedPageRankScorer(gamma=0.9, theta=0.5, mode='chained', prune_hidden=False)
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

from ..base.checks import check_choice, fail, fail_type, format_allowed
from ..base.params import Boolean, Constraint, OneOf, validate, validated
from ..data.calibration import ActivationStats
from ..errors import InvalidArgumentError, InvalidArgumentTypeError
from ..graph import MODES
from ..models.architectures import MODEL, MLPModules, check_finite_weights, mlp_layers

logger = logging.getLogger(__name__)

__all__ = ["NeuronScores", "Scorer", "register_scorer", "scorers", "get_scorer", "scorer_class", "score_neurons",
           "hidden_scorers"]


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

    Example
    -------
    >>> import torch
    >>> s = NeuronScores({1: torch.ones(3), 0: torch.zeros(2)}, method="magnitude")
    >>> s.layers, s.sizes()
    ([0, 1], {1: 3, 0: 2})
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
    >>> from llmrank_graph.scoring import scorers
    >>> "pagerank" in scorers() and "wpr" in scorers()
    True
    """
    return list(_REGISTRY)


def hidden_scorers() -> list[str]:
    """Names of the registered scorers that support ``prune_hidden=True``.

    Example
    -------
    >>> from llmrank_graph.scoring import hidden_scorers
    >>> hidden_scorers()
    ['wpr', 'mpr', 'channel-wanda', 'norm']
    """
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
    >>> from llmrank_graph.scoring import scorer_class
    >>> scorer_class("wpr").rounding
    'reference'
    """
    return _REGISTRY[check_choice("method", name, _REGISTRY)]


def get_scorer(name: str, **params) -> Scorer:
    """A scorer of the registry, built with ``params`` (checked now, as :meth:`Scorer.check_params` does).

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
    >>> from llmrank_graph.scoring import get_scorer
    >>> get_scorer("wpr", gamma=0.9).get_params()["gamma"]
    0.9
    >>> get_scorer("wpr", gamma=2)
    Traceback (most recent call last):
    ...
    llmrank_graph.errors.InvalidArgumentError: `gamma` must be a float in [0, 1]; got 2
    """
    cls = scorer_class(name)
    cls.check_params(**params)
    return cls(**params)


@validated({"model": MODEL})
def score_neurons(model, stats: ActivationStats | None, method: str = "pagerank", *, mode: str = "chained",
                  prune_hidden: bool = False, check_input: bool = True, **params) -> NeuronScores:
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
    check_input : bool
        As in :meth:`Scorer.score`: False skips the check of ``stats`` against the model and the
        scan of the weights, for a caller that has just made them.
    **params
        Further parameters of the scorer.

    Returns
    -------
    NeuronScores

    Raises
    ------
    ValueError
        Unknown ``method``, bad parameter values, ``stats`` missing or from another model,
        NaN/inf in the weights or stats, ``prune_hidden=True`` with a method without hidden scores;
        ``model`` of no registered family (UnsupportedArchitectureError).
    TypeError
        A parameter the scorer does not have; ``model`` not an nn.Module (a name is loaded with
        :func:`llmrank_graph.load_model` first).

    Example
    -------
    >>> import torch, transformers, llmrank_graph as lg
    >>> cfg = transformers.LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=12, num_hidden_layers=2,
    ...                                num_attention_heads=2)
    >>> model = transformers.LlamaForCausalLM(cfg).eval()
    >>> stats = lg.calibrate(model, input_ids=torch.randint(0, 32, (2, 8)))
    >>> score_neurons(model, stats, "wpr", gamma=0.9).intermediate[0].shape
    torch.Size([12])
    """
    cls = scorer_class(method)
    params = {"mode": mode, "prune_hidden": prune_hidden, **params}
    cls.check_params(**params)
    return cls(**params)._run(model, stats, check_input)  # checked just above: the one check of this call


def _unknown_params(cls: type[Scorer], unknown: list[str]) -> InvalidArgumentTypeError:
    return InvalidArgumentTypeError(f"scorer {cls.name!r} got unknown parameter(s) {format_allowed(unknown)}; "
                                    f"its parameters are {format_allowed(cls.param_names())}")


# ----------------------------------------------------------------------------- base class
class Scorer:
    """Base class of neuron scorers (scikit-learn manners).

    ``__init__`` only stores the parameters; :meth:`score` checks them against the class's
    ``_parameter_constraints`` and does the work. Subclasses set ``name``,
    ``supports_hidden``, ``description``, declare ``_parameter_constraints`` (one
    :class:`~llmrank_graph.base.params.Constraint` per parameter of ``__init__``), implement
    :meth:`_score`, and say whether they need calibration statistics with :meth:`needs_stats`.

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
    _parameter_constraints: ClassVar[Mapping[str, Constraint]] = MappingProxyType({"mode": OneOf(*MODES),
                                                                                   "prune_hidden": Boolean()})

    # -- parameters --------------------------------------------------------------
    # Scorers whose only parameters are these inherit this __init__.
    def __init__(self, *, mode: str = "chained", prune_hidden: bool = False):
        self.mode = mode
        self.prune_hidden = prune_hidden

    @classmethod
    def param_names(cls) -> list[str]:
        """Names of the parameters of ``__init__``."""
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values()
                if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    @classmethod
    def check_params(cls, **params) -> dict:
        """Check parameters of this scorer without building it (nor any model): what ``get_scorer`` refuses.

        Parameters not given take their defaults, which are valid.

        Returns
        -------
        dict
            The given parameters, normalised (Python ints, floats and bools).

        Raises
        ------
        TypeError
            A parameter the scorer does not have (the message lists the ones it has), or a
            value of the wrong type.
        ValueError
            An invalid value, or ``prune_hidden=True`` for a scorer without hidden scores.

        Example
        -------
        >>> from llmrank_graph.scoring import WeightedPageRankScorer
        >>> WeightedPageRankScorer.check_params(gamma=1)
        {'gamma': 1.0}
        >>> WeightedPageRankScorer.check_params(alpha=0.5)
        Traceback (most recent call last):
        ...
        llmrank_graph.errors.InvalidArgumentTypeError: scorer 'wpr' got unknown parameter(s) 'alpha';
        its parameters are 'gamma', 'theta', 'mode', 'prune_hidden'
        """
        unknown = [k for k in params if k not in cls.param_names()]
        if unknown:
            raise _unknown_params(cls, unknown)
        return cls._checked(params)

    @classmethod
    def _checked(cls, params: Mapping) -> dict:
        table = cls._parameter_constraints
        # As scikit-learn: a parameter without a declared constraint (a scorer written before the
        # tables, elsewhere) is not checked. Every scorer of this package declares all of its own.
        checked = validate(table, {k: v for k, v in params.items() if k in table})
        if checked.get("prune_hidden") and not cls.supports_hidden:
            raise InvalidArgumentError(f"`prune_hidden=True` needs scores of the hidden channels, which scorer "
                                       f"{cls.name!r} does not give; methods that do: "
                                       f"{format_allowed(hidden_scorers())}")
        return checked

    def get_params(self) -> dict:
        """The scorer's parameters, as given to ``__init__`` or :meth:`set_params`."""
        return {k: getattr(self, k) for k in self.param_names()}

    def set_params(self, **params) -> Scorer:
        """Change parameters (checked when the scorer next runs); returns the scorer.

        Raises
        ------
        TypeError
            A parameter the scorer does not have (the message lists the ones it has).

        Example
        -------
        >>> from llmrank_graph.scoring import NormScorer
        >>> NormScorer().set_params(p=2)
        NormScorer(p=2, mode='chained', prune_hidden=False)
        """
        unknown = [k for k in params if k not in self.param_names()]
        if unknown:
            raise _unknown_params(type(self), unknown)
        for k, v in params.items():
            setattr(self, k, v)
        return self

    def _validate_params(self) -> dict:
        """Check the stored parameters against the class's table (the entry's one check)."""
        return type(self)._checked(self.get_params())

    # Scorers written before the constraint tables call this from their __init__.
    _validate_common = _validate_params

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items()
                         if not isinstance(v, (np.ndarray, torch.Tensor)))
        return f"{type(self).__name__}({args})"

    # -- work --------------------------------------------------------------------
    def needs_stats(self) -> bool:
        """True when this scorer, with these parameters, uses calibration statistics."""
        return True

    def needs_second_moments(self) -> bool:
        """True when this scorer needs the Gram matrices of the down_proj inputs (``second_moments=True``)."""
        return False

    def needs_gradients(self) -> bool:
        """True when this scorer reads the loss gradients of calibration (``calibrate(..., gradients=True)``):
        ``taylor``, and the graph scorers seeded by the gradient (``output_seed='gradient'``)."""
        return getattr(self, "output_seed", None) == "gradient"

    def needs_residual(self) -> bool:
        """True when this scorer exports a graph with measured skip edges (``residual='measured'``), which
        need the residual stream's statistics (``calibrate(..., residual=True)``)."""
        options = getattr(self, "export_options", None)
        return getattr(self, "graph", None) is None and getattr(options, "residual_weights", None) == "measured"

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
        layerwise = [n for n, c in _REGISTRY.items() if c.layerwise]
        raise InvalidArgumentError(f"scorer {self.name!r} scores all layers at once (it is not layerwise); "
                                   f"layerwise scorers: {format_allowed(layerwise)}")

    def score(self, model, stats: ActivationStats | None = None, *, check_input: bool = True) -> NeuronScores:
        """Score the intermediate neurons of ``model``.

        Parameters
        ----------
        model : transformers model of a registered architecture.
        stats : ActivationStats or None
            Calibration statistics of ``model``; required when :meth:`needs_stats` is True.
        check_input : bool
            Check ``stats`` against the model (``ActivationStats.check_model``) and scan the
            weights for NaN and inf (:func:`llmrank_graph.models.architectures.check_finite_weights`).
            As scikit-learn's ``check_input``: pass False only when the caller has just made
            these two checks on the same model and statistics (:func:`llmrank_graph.prune_model`).

        Returns
        -------
        NeuronScores

        Raises
        ------
        ValueError
            Bad parameters; ``stats`` missing when needed or from another model; NaN/inf in
            weights or stats.
        """
        self._validate_params()
        return self._run(model, stats, check_input)

    def _run(self, model, stats: ActivationStats | None, check_input: bool) -> NeuronScores:
        """:meth:`score` after the parameter check: one scan of the input (if asked), the work, the result."""
        t0 = time.perf_counter()
        mlps = mlp_layers(model)
        self._check_stats(model, stats, mlps, check_input)
        if check_input:
            check_finite_weights(mlps)
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

    def _check_stats(self, model, stats, mlps: list[MLPModules], check_input: bool) -> None:
        if stats is None and self.needs_stats():
            raise InvalidArgumentError(f"`stats` are required by scorer {self.name!r} with these parameters (it uses "
                                       "calibration activation norms); compute them once with "
                                       "llmrank_graph.calibrate(model, ...) and pass them in")
        if stats is None:
            return
        if check_input:
            if not isinstance(stats, ActivationStats):
                raise InvalidArgumentTypeError(f"`stats` must be an ActivationStats (llmrank_graph.calibrate) or "
                                               f"None; got {type(stats).__name__}")
            stats.check_model(model)
        _check_finite_stats(stats, mlps)  # the per-batch sums, which check_model does not cover
        if self.needs_second_moments():
            _check_second_moments(stats, mlps, self.name)

    def _score(self, model, mlps: list[MLPModules], stats):
        """``({layer: intermediate scores}, {layer: hidden scores} or None)`` of checked input."""
        raise NotImplementedError


class _LayerScorer(Scorer):
    """A scorer computed independently per layer (:attr:`layerwise`): the same result in both modes.

    Subclasses implement :meth:`_layer`, the scores of one layer.
    """

    layerwise = True

    def _layer(self, m: MLPModules, stats) -> torch.Tensor:
        raise NotImplementedError

    def _score(self, model, mlps, stats):
        return {m.layer: self._layer(m, stats) for m in mlps}, None

    def score_layer(self, mlp: MLPModules, stats) -> torch.Tensor:
        self._validate_params()
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


# ----------------------------------------------------------------------------- shared by the families
def _check_finite_stats(stats: ActivationStats, mlps: list[MLPModules]) -> None:
    """Refuse NaN or inf in the per-batch norm sums of ``mlps``' modules.

    ``ActivationStats.check_model`` covers the sums of squares; the reference reproductions
    also read the per-batch sums, checked here.
    """
    for m in mlps:
        for name in m.named_modules():
            s = stats[name]
            for what, t in (("input", s.input_batch_norm_sum), ("output", s.output_batch_norm_sum)):
                if not torch.isfinite(t).all():
                    raise InvalidArgumentError(f"`stats` for module {name!r} contain NaN or inf in the {what} "
                                               "statistics")


def _check_second_moments(stats: ActivationStats, mlps: list[MLPModules], name: str) -> None:
    """Refuse stats without the Gram matrices of the down_proj inputs, which scorer ``name`` needs."""
    for m in mlps:
        s = stats[m.down_name]
        if s.input_gram is None or s.input_sum is None:
            raise InvalidArgumentError(f"scorer {name!r} needs the second moments (Gram matrices) of the down_proj "
                                       f"inputs, which `stats` lack ({m.down_name!r}); collect them with "
                                       "llmrank_graph.calibrate(model, tokenizer, second_moments=True)")


def _abs64(m: MLPModules, which: str) -> torch.Tensor:
    """|W| of ``m``'s ``which`` weight as float64, (out, in), on the weight's device."""
    with torch.no_grad():
        return m.weight(which).detach().to(torch.float64).abs()


def _vec(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``t`` as float64 on ``ref``'s device."""
    return t.to(device=ref.device, dtype=torch.float64)
