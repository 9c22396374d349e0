"""What one run of a sweep is: its calibration and evaluation settings, its configuration, the
parameters a method may vary.

A :class:`RunConfig` holds everything that determines a run's result; its
:attr:`~RunConfig.run_id` is a hash of it, stable across machines, which names the run's files
and lets a rerun of a sweep skip what is done. The settings are checked when they are made,
against one table of constraints each (:mod:`llmrank_graph.base.params`).

What a run prunes, its ``target`` (:func:`~llmrank_graph.prune_model`'s), is one of its
``params`` when it is not the default ``'mlp'``, as ``compensate`` is when it is not ``'none'``:
a run of MLP neurons is recorded as runs were before heads could be pruned, and keeps its id.
A run of heads (``'attention'`` or ``'both'``) is scored by the head scorer of its method
(:mod:`llmrank_graph.scoring.heads`), whose parameters it may vary, and its calibration records
the attention output projections (``CalibrationSetting.attention``).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from ..base.checks import fail, fail_type
from ..base.params import Boolean, Check, InstanceOf, Interval, Optional, validate
from ..compensation.algebra import needs_second_moments
from ..data.calibration import calibrate
from ..data.evaluation import compare_throughput, lm_eval, perplexity
from ..errors import InvalidArgumentError
from ..pruning.surgery import prune_model
from ..scoring.heads import get_head_scorer, head_scorer_class
from ..scoring.registry import get_scorer, scorer_class

__all__ = ["CalibrationSetting", "EvaluationSetting", "RunConfig", "NO_COMPENSATION", "DEFAULT_TARGET",
           "method_parameters", "second_moments_reason"]

# prune_model arguments that are grid axes or inputs, never ``params``. The sweep passes the
# calibration tokens as ``input_ids`` to runs with ``sequential=True``, and its own ``device``.
_NOT_PARAMS = frozenset({"model", "stats", "method", "amount", "allocation", "how", "mode", "graph", "input_ids",
                         "progress", "device", "target"})
# A file or directory argument, as every entry point of the experiments takes it.
_A_PATH = InstanceOf((str, os.PathLike), "a str or a path")


def _default(fn, name: str):
    """Default of parameter ``name`` of the library callable ``fn``: defaults live in one place."""
    return inspect.signature(fn).parameters[name].default


def _hash(obj) -> str:
    """SHA-256 of ``obj``'s canonical JSON: equal settings, equal hashes, on every machine."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# ---------------------------------------------------------------------------- parameters of a method
def _prune_keywords() -> list[str]:
    """Keywords of :func:`prune_model` besides the axes (e.g. ``prune_hidden``, ``min_keep``)."""
    sig = inspect.signature(prune_model)
    return [p.name for p in sig.parameters.values()
            if p.name not in _NOT_PARAMS and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


#: What a run without ``target`` among its params prunes: prune_model's default (``'mlp'``).
DEFAULT_TARGET: str = _default(prune_model, "target")


def _scorer_names(method: str, target: str) -> list[str]:
    """The parameters of the scorers that score a run of ``target``: the neuron scorer's, the head scorer's, or both."""
    names = [] if target == "attention" else list(scorer_class(method).param_names())
    if target != DEFAULT_TARGET:
        names += [n for n in head_scorer_class(method).param_names() if n not in names]
    return names


def method_parameters(method: str, target: str = DEFAULT_TARGET) -> list[str]:
    """Parameters a grid may vary for ``method``: its scorer's, and prune_model's keywords.

    ``mode`` and ``target`` are axes of their own (``modes``, ``targets``), so they are not among
    them. With ``target='attention'`` the scorer is the method's head scorer; with ``'both'``,
    its neuron scorer and its head scorer.

    Raises
    ------
    InvalidArgumentError
        Unknown ``method`` (the message lists the registry), or a ``target`` of heads for a
        method without a head scorer (the message lists the head scorers).

    Example
    -------
    >>> "alpha" in method_parameters("pagerank") and "min_keep" in method_parameters("pagerank")
    True
    >>> method_parameters("random", "attention")[:2]
    ['seed', 'prune_hidden']
    """
    names = [n for n in _scorer_names(method, target) if n not in _NOT_PARAMS]
    return names + [k for k in _prune_keywords() if k not in names]


def _scorer_only(method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    names = set(_scorer_names(method, params.get("target", DEFAULT_TARGET)))
    return {k: v for k, v in params.items() if k in names}


#: What a run without ``compensate`` among its params ran: prune_model's default (``'none'``).
#: Sweeps made before compensation was a grid axis recorded no ``compensate``, and their runs
#: keep their ids because a run of the axis's value ``'none'`` is recorded the same way.
NO_COMPENSATION: str = _default(prune_model, "compensate")


def second_moments_reason(method: str, mode: str, params: Mapping[str, Any]) -> str | None:
    """Why a run needs the Gram matrices of the down_proj inputs in its calibration, or None.

    A least-squares ``compensate`` needs them (of the attention output projections' inputs too,
    for a run of heads), and so does a scorer that scores with them (``obs``). A ``sequential``
    run collects its own for its refit, layer by layer; its scorer's need still counts (a global
    allocation scores on the calibration's statistics). Builds the run's scorers, so that a bad
    parameter value is refused here.

    Example
    -------
    >>> second_moments_reason("pagerank", "chained", {"compensate": "lstsq"})
    "compensate='lstsq'"
    >>> second_moments_reason("pagerank", "chained", {"compensate": "lstsq", "sequential": True}) is None
    True
    >>> second_moments_reason("obs", "chained", {}), second_moments_reason("activation", "chained", {"target": "both"})
    ("method 'obs'", None)
    """
    target = params.get("target", DEFAULT_TARGET)
    mine = _scorer_only(method, params)
    scorers = []
    if target != "attention":
        neuron = set(scorer_class(method).param_names())
        scorers.append(get_scorer(method, mode=mode, **{k: v for k, v in mine.items() if k in neuron}))
    if target != DEFAULT_TARGET:
        head = set(head_scorer_class(method).param_names())
        scorers.append(get_head_scorer(method, **{k: v for k, v in mine.items() if k in head}))
    compensate = params.get("compensate", NO_COMPENSATION)
    if needs_second_moments(compensate) and not params.get("sequential"):
        return f"compensate={compensate!r}"
    return f"method {method!r}" if any(s.needs_second_moments() for s in scorers) else None


# ---------------------------------------------------------------------------- settings
def _as_texts(arg: str, value) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise fail_type(arg, "None (the embedded corpus), a file path or a datasets name", value)
    return os.fspath(value)


def _as_tasks(arg: str, tasks) -> tuple[str, ...]:
    if isinstance(tasks, str) or not isinstance(tasks, Iterable):
        raise fail_type(arg, "a list of lm-eval task names", tasks)
    tasks = list(tasks)
    if not all(isinstance(t, str) for t in tasks):
        raise fail_type(arg, "a list of lm-eval task names", tasks)
    return tuple(dict.fromkeys(tasks))


def _store_checked(obj, constraints: Mapping, prefix: str) -> None:
    """Check every field of the frozen dataclass ``obj`` against ``constraints``; store them normalised."""
    values = validate(constraints, {f.name: getattr(obj, f.name) for f in fields(obj)}, prefix=prefix)
    for name, value in values.items():
        object.__setattr__(obj, name, value)


_TEXTS = Check(_as_texts, "None (the embedded corpus), a file path or a datasets name")
_CALIBRATION_CONSTRAINTS = {"texts": _TEXTS, "n_samples": Interval(int, 1), "seq_len": Interval(int, 1),
                            "batch_size": Interval(int, 1), "second_moments": Optional(Boolean()),
                            "attention": Optional(Boolean())}
_EVALUATION_CONSTRAINTS = {"texts": _TEXTS, "n_samples": Interval(int, 1), "seq_len": Interval(int, 1),
                           "batch_size": Interval(int, 1), "throughput_batch": Interval(int, 1),
                           "throughput_rounds": Interval(int, 1), "tasks": Check(_as_tasks, "a list of task names"),
                           "task_limit": Optional(Interval(int, 1)), "task_batch_size": Interval(int, 1)}


@dataclass(frozen=True)
class CalibrationSetting:
    """How calibration statistics are collected (:func:`llmrank_graph.calibrate`).

    Defaults are :func:`~llmrank_graph.calibrate`'s. ``texts`` None means the embedded
    Wikipedia calibration articles. ``second_moments`` also collects the Gram matrices of the
    down_proj inputs, which least-squares compensation and the ``obs`` scorer need;
    None (the default) collects them when a run needs them (a grid's runs share one setting,
    true when any of them needs them: :meth:`Grid.runs <llmrank_graph.experiments.grid.Grid.runs>`).
    ``attention`` also records the attention output projections (``calibrate(...,
    attention=True)``), which runs of heads need; None (the default): when a run prunes heads.
    Left out of :meth:`to_dict` unless true, so that a setting without it has the key it had
    before it existed.

    Example
    -------
    >>> CalibrationSetting(n_samples=8).key == CalibrationSetting(n_samples=8).key
    True
    >>> "attention" in CalibrationSetting().to_dict(), CalibrationSetting(attention=True).to_dict()["attention"]
    (False, True)
    >>> CalibrationSetting(n_samples=0)
    Traceback (most recent call last):
    ...
    llmrank_graph.errors.InvalidArgumentError: `calibration.n_samples` must be a positive int; got 0
    """

    texts: str | None = None
    n_samples: int = _default(calibrate, "n_samples")
    seq_len: int = _default(calibrate, "seq_len")
    batch_size: int = _default(calibrate, "batch_size")
    second_moments: bool | None = None
    attention: bool | None = None

    def __post_init__(self):
        _store_checked(self, _CALIBRATION_CONSTRAINTS, "calibration.")

    def to_dict(self) -> dict:
        """JSON-able dict of the fields; ``attention`` only when true. ``CalibrationSetting(**d)`` inverts it."""
        d = asdict(self)
        if not d["attention"]:
            del d["attention"]
        return d

    @property
    def key(self) -> str:
        """Short hash of the setting (names its calibration file)."""
        return _hash(self.to_dict())[:10]


@dataclass(frozen=True)
class EvaluationSetting:
    """How every model (dense and pruned) is evaluated.

    Attributes
    ----------
    texts : str or None
        Perplexity text; None means the held-out Wikipedia articles.
    n_samples, seq_len, batch_size : int
        Perplexity on ``n_samples`` windows of ``seq_len`` tokens (defaults of
        :func:`~llmrank_graph.data.evaluation.perplexity`).
    throughput_batch : int
        Windows per forward pass when measuring tokens/s (dense and pruned alternately, in
        the same run, :func:`~llmrank_graph.data.evaluation.compare_throughput`).
    throughput_rounds : int
        Alternations; the best of each is kept.
    tasks : tuple of str
        lm-eval tasks; :data:`~llmrank_graph.data.evaluation.LASTWORD_TASK` needs no download.
    task_limit : int or None
        Examples per task (None: all).
    task_batch_size : int
        lm-eval batch size.

    Example
    -------
    >>> EvaluationSetting(tasks=["wikipedia_lastword", "wikipedia_lastword"]).tasks
    ('wikipedia_lastword',)
    """

    texts: str | None = None
    n_samples: int = _default(perplexity, "n_samples")
    seq_len: int = _default(perplexity, "seq_len")
    batch_size: int = _default(perplexity, "batch_size")
    throughput_batch: int = 1
    throughput_rounds: int = _default(compare_throughput, "rounds")
    tasks: tuple[str, ...] = ()
    task_limit: int | None = None
    task_batch_size: int = _default(lm_eval, "batch_size")

    def __post_init__(self):
        _store_checked(self, _EVALUATION_CONSTRAINTS, "evaluation.")
        if self.throughput_batch > self.n_samples:
            raise fail("evaluation.throughput_batch", f"an int <= evaluation.n_samples ({self.n_samples})",
                       self.throughput_batch)

    @property
    def key(self) -> str:
        """Short hash of the setting (names the dense evaluation file)."""
        return _hash(asdict(self))[:10]


# ---------------------------------------------------------------------------- one run
@dataclass(frozen=True)
class RunConfig:
    """One point of a grid: everything that determines its result.

    Attributes
    ----------
    model : str or None
        Model path; None is the embedded default.
    method, amount, allocation, how, mode
        As in :func:`llmrank_graph.prune_model`.
    params : tuple of (str, value)
        Further keyword arguments of ``prune_model`` (scorer parameters, ``min_keep``,
        ``compensate``, ``target``...), sorted. Without ``compensate`` the run does not compensate
        (:attr:`compensate`); without ``target`` it prunes MLP neurons (:attr:`target`).
    calibration : CalibrationSetting
        Its ``second_moments`` None becomes whether this run needs them
        (:func:`second_moments_reason`), its ``attention`` None whether it prunes heads.
    evaluation : EvaluationSetting
    seed : int
        Seeds Python's, numpy's and torch's global generators before the run.

    Example
    -------
    >>> run = RunConfig(None, "random", 0.5, "local", "remove", "chained", params=(("seed", 1),))
    >>> run.label, RunConfig.from_dict(run.to_dict()).run_id == run.run_id
    ('random seed=1', True)
    >>> run.compensate, run.calibration.second_moments, run.target
    ('none', False, 'mlp')
    >>> heads = RunConfig(None, "random", 0.5, "local", "remove", "chained", params=(("target", "attention"),))
    >>> heads.target, heads.calibration.attention
    ('attention', True)
    """

    model: str | None
    method: str
    amount: float
    allocation: str
    how: str
    mode: str
    params: tuple[tuple[str, Any], ...] = ()
    calibration: CalibrationSetting = field(default_factory=CalibrationSetting)
    evaluation: EvaluationSetting = field(default_factory=EvaluationSetting)
    seed: int = 0

    def __post_init__(self):
        if self.calibration.second_moments is None:
            needed = second_moments_reason(self.method, self.mode, dict(self.params)) is not None
            object.__setattr__(self, "calibration", replace(self.calibration, second_moments=needed))
        if self.calibration.attention is None:
            object.__setattr__(self, "calibration", replace(self.calibration, attention=self.target != DEFAULT_TARGET))
        elif not self.calibration.attention and self.target != DEFAULT_TARGET:
            raise InvalidArgumentError(f"a run of target={self.target!r} prunes attention heads and needs the "
                                       "attention statistics: calibration.attention must not be false")

    @property
    def compensate(self) -> str:
        """How the run repairs down_proj: its ``compensate`` parameter, else :data:`NO_COMPENSATION`."""
        return dict(self.params).get("compensate", NO_COMPENSATION)

    @property
    def target(self) -> str:
        """What the run prunes: its ``target`` parameter, else :data:`DEFAULT_TARGET` (MLP neurons)."""
        return dict(self.params).get("target", DEFAULT_TARGET)

    def to_dict(self) -> dict:
        """JSON-able dict; :meth:`from_dict` inverts it."""
        return {"model": self.model, "method": self.method, "amount": self.amount, "allocation": self.allocation,
                "how": self.how, "mode": self.mode, "params": dict(self.params),
                "calibration": self.calibration.to_dict(),
                "evaluation": {**asdict(self.evaluation), "tasks": list(self.evaluation.tasks)}, "seed": self.seed}

    @classmethod
    def from_dict(cls, d: Mapping) -> RunConfig:
        """Inverse of :meth:`to_dict`."""
        ev = dict(d["evaluation"])
        ev["tasks"] = tuple(ev.get("tasks", ()))
        return cls(d["model"], d["method"], d["amount"], d["allocation"], d["how"], d["mode"],
                   tuple(sorted(dict(d["params"]).items())), CalibrationSetting(**d["calibration"]),
                   EvaluationSetting(**ev), d["seed"])

    @property
    def run_id(self) -> str:
        """12 hex digits of a hash of :meth:`to_dict`: equal configurations, equal ids."""
        return _hash(self.to_dict())[:12]

    @property
    def scorer_id(self) -> str:
        """Hash of what the scores depend on (not the amount, allocation or how); the target, when it is not MLP."""
        key = {"model": self.model, "method": self.method, "mode": self.mode, "seed": self.seed,
               "params": _scorer_only(self.method, dict(self.params)), "calibration": self.calibration.to_dict()}
        if self.target != DEFAULT_TARGET:  # scores of heads (and neurons): not those of the MLP-only runs
            key["target"] = self.target
        return f"{self.method}-{_hash(key)[:12]}"

    @property
    def label(self) -> str:
        """The method and its parameters, e.g. ``"pagerank alpha=0.5"`` (a line in the plots)."""
        return " ".join([self.method] + [f"{k}={v}" for k, v in self.params])

    @property
    def stem(self) -> str:
        """File name of the run's result, without the suffix."""
        return f"{self.method}-{self.allocation}-{self.how}-{self.mode}-{self.amount:g}-{self.run_id}"
