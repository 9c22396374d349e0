"""Benchmark grids: run every combination of models, methods and settings, record everything, resume.

A :class:`Grid` names the axes (models, scorers, amounts, allocations, ways of applying the
mask, graph modes, scorer parameters) and the calibration and evaluation settings;
:meth:`Grid.runs` expands it into :class:`RunConfig` objects, each with a stable
:attr:`~RunConfig.run_id` (a hash of everything that determines its result).
:func:`run_sweep` runs the grid into a results directory::

    DIR/
      grid.json                       the grid(s) this directory holds
      calibration/<model>-<key>.safetensors   one per model and calibration setting
      dense/<model>-<key>.json        the dense model's evaluation, one per model and setting
      runs/<stem>-<run_id>.json       one result per run (written last: its presence = done)
      runs/<...>.mask.safetensors     optional (``save_masks``)
      scores/<scorer>.safetensors     optional (``save_scores``), one per scorer configuration
      tasks/<key>/                    the offline lm-eval task, when asked for
      results.csv, results.parquet    every run, one row each (:func:`read_results`)

Resuming
--------
Every file is written atomically (:mod:`llmrank_graph.base.files`): it is complete or absent. A run's
JSON is written after everything else of the run, so a rerun of the same grid skips every run
whose JSON is there and redoes only the rest; the model is not even loaded when all its runs
are done. Calibration is read back from its safetensors file. A damaged or truncated result
file is named in a warning and its run is redone. A directory written by a different grid is
refused unless ``extend=True``, which adds the new grid's runs to it.

Scorer parameters
-----------------
``params={"alpha": [0.5, 0.85]}`` is an axis for every method of the grid that has a
parameter ``alpha`` (a scorer parameter, or a keyword of :func:`~llmrank_graph.prune_model`
such as ``min_keep``); the other methods run once. ``method_params={"pagerank": {...}}``
applies to one method only. A parameter that no method of the grid has is an error.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import hashlib
import inspect
import itertools
import json
import logging
import math
import os
import platform
import random
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..base.checks import check_bool, check_choice, check_int, check_positive_int, fail, fail_type, format_allowed
from ..base.files import atomic_file, save_safetensors_atomic, write_json_atomic, write_text_atomic
from ..data.calibration import ActivationStats, calibrate
from ..compensation.algebra import COMPENSATIONS, check_ridge, needs_second_moments
from ..errors import (FileFormatError, InvalidArgumentError, InvalidArgumentTypeError, LLMRankGraphError,
                     MissingDependencyError, MissingInputError, OutputExistsError)
from ..data.evaluation import (LASTWORD_TASK, check_lm_eval, compare_throughput, count_parameters, lastword_examples,
                         lm_eval, perplexity, prepare_tasks, task_metrics, write_lastword_task)
from ..graph.mlpgraph import MODES
from ..pruning.masks import ALLOCATIONS, check_amount
from ..pruning.surgery import HOWS, prune_model

logger = logging.getLogger(__name__)

__all__ = ["CalibrationSetting", "EvaluationSetting", "RunConfig", "Grid", "SweepSummary", "load_grid",
           "method_parameters", "run_sweep", "scan_results", "read_results", "flatten_record",
           "GRID_FILE", "RESULTS_CSV", "RESULTS_PARQUET", "RUN_STATUSES"]

#: ``format`` of ``grid.json`` and of each run's JSON.
SWEEP_FORMAT = "llmrank_graph.sweep"
RUN_FORMAT = "llmrank_graph.sweep.run"
DENSE_FORMAT = "llmrank_graph.sweep.dense"
#: File and folder names inside a results directory.
GRID_FILE = "grid.json"
RESULTS_CSV = "results.csv"
RESULTS_PARQUET = "results.parquet"
RUNS_DIR, CALIBRATION_DIR, DENSE_DIR, SCORES_DIR, TASKS_DIR = "runs", "calibration", "dense", "scores", "tasks"
#: A run ends ``complete`` or ``failed`` (the library refused or could not do the work, e.g. a
#: centrality that did not converge; the error is recorded and the run is not retried unless asked).
RUN_STATUSES: tuple[str, ...] = ("complete", "failed")
#: Quantiles of each layer's scores kept in every run's JSON (for the score-distribution plot).
SCORE_QUANTILES: tuple[float, ...] = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)

# prune_model arguments that are grid axes or inputs, never ``params``. The sweep passes the
# calibration tokens as ``input_ids`` to runs with ``sequential=True``, and its own ``device``.
_NOT_PARAMS = frozenset({"model", "stats", "method", "amount", "allocation", "how", "mode", "graph", "input_ids",
                         "device"})


def _default(fn, name: str):
    """Default of parameter ``name`` of the library callable ``fn``: defaults live in one place."""
    return inspect.signature(fn).parameters[name].default


# ---------------------------------------------------------------------------- parameters of a method
def _prune_keywords() -> list[str]:
    """Keywords of :func:`prune_model` besides the axes (e.g. ``prune_hidden``, ``min_keep``)."""
    sig = inspect.signature(prune_model)
    return [p.name for p in sig.parameters.values()
            if p.name not in _NOT_PARAMS and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def method_parameters(method: str) -> list[str]:
    """Parameters a grid may vary for ``method``: its scorer's, and prune_model's keywords.

    ``mode`` is an axis of its own (``modes``), so it is not among them.

    Raises
    ------
    InvalidArgumentError
        Unknown ``method`` (the message lists the registry).

    Example
    -------
    >>> "alpha" in method_parameters("pagerank") and "min_keep" in method_parameters("pagerank")
    True
    """
    from ..scoring.registry import scorer_class

    names = [n for n in scorer_class(method).param_names() if n not in _NOT_PARAMS]
    return names + [k for k in _prune_keywords() if k not in names]


def _scorer_only(method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    from ..scoring.registry import scorer_class

    names = set(scorer_class(method).param_names())
    return {k: v for k, v in params.items() if k in names}


# ---------------------------------------------------------------------------- settings
_JSON_SCALARS = (str, int, float, bool, type(None))


def _check_scalar(arg: str, value) -> Any:
    if not isinstance(value, _JSON_SCALARS) or (isinstance(value, float) and not math.isfinite(value)):
        raise fail_type(arg, "a str, int, finite float, bool or None", value)
    return value


def _as_texts(arg: str, value) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise fail_type(arg, "None (the embedded corpus), a file path or a datasets name", value)
    return os.fspath(value)


@dataclass(frozen=True)
class CalibrationSetting:
    """How calibration statistics are collected (:func:`llmrank_graph.calibrate`).

    Defaults are :func:`~llmrank_graph.calibrate`'s. ``texts`` None means the embedded
    Wikipedia calibration articles. ``second_moments`` also collects the Gram matrices of the
    down_proj inputs, which least-squares compensation and the ``flap``/``obs`` scorers need.
    """

    texts: str | None = None
    n_samples: int = _default(calibrate, "n_samples")
    seq_len: int = _default(calibrate, "seq_len")
    batch_size: int = _default(calibrate, "batch_size")
    second_moments: bool = _default(calibrate, "second_moments")

    def __post_init__(self):
        object.__setattr__(self, "texts", _as_texts("calibration.texts", self.texts))
        for name in ("n_samples", "seq_len", "batch_size"):
            object.__setattr__(self, name, check_positive_int(f"calibration.{name}", getattr(self, name)))
        object.__setattr__(self, "second_moments", check_bool("calibration.second_moments", self.second_moments))

    @property
    def key(self) -> str:
        """Short hash of the setting (names its calibration file)."""
        return _hash(asdict(self))[:10]


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
        object.__setattr__(self, "texts", _as_texts("evaluation.texts", self.texts))
        for name in ("n_samples", "seq_len", "batch_size", "throughput_batch", "throughput_rounds", "task_batch_size"):
            object.__setattr__(self, name, check_positive_int(f"evaluation.{name}", getattr(self, name)))
        if self.throughput_batch > self.n_samples:
            raise fail("evaluation.throughput_batch", f"an int <= evaluation.n_samples ({self.n_samples})",
                       self.throughput_batch)
        tasks = self.tasks
        if isinstance(tasks, str) or not isinstance(tasks, Iterable) or not all(isinstance(t, str) for t in tasks):
            raise fail_type("evaluation.tasks", "a list of lm-eval task names", tasks)
        object.__setattr__(self, "tasks", tuple(dict.fromkeys(tasks)))
        if self.task_limit is not None:
            object.__setattr__(self, "task_limit", check_positive_int("evaluation.task_limit", self.task_limit))

    @property
    def key(self) -> str:
        """Short hash of the setting (names the dense evaluation file)."""
        return _hash(asdict(self))[:10]


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _model_key(model: str | None) -> str:
    """File-name-safe name of a model: its last path component and a hash of the whole path."""
    if model is None:
        return "default"
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(model).name or "model")[:40]
    return f"{stem}-{_hash(model)[:8]}"


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
        Further keyword arguments of ``prune_model`` (scorer parameters, ``min_keep``...), sorted.
    calibration : CalibrationSetting
    evaluation : EvaluationSetting
    seed : int
        Seeds Python's, numpy's and torch's global generators before the run.
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

    def to_dict(self) -> dict:
        """JSON-able dict; :meth:`from_dict` inverts it."""
        return {"model": self.model, "method": self.method, "amount": self.amount, "allocation": self.allocation,
                "how": self.how, "mode": self.mode, "params": dict(self.params),
                "calibration": asdict(self.calibration),
                "evaluation": {**asdict(self.evaluation), "tasks": list(self.evaluation.tasks)}, "seed": self.seed}

    @classmethod
    def from_dict(cls, d: Mapping) -> "RunConfig":
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
        """Hash of what the scores depend on (not the amount, allocation or how)."""
        key = {"model": self.model, "method": self.method, "mode": self.mode, "seed": self.seed,
               "params": _scorer_only(self.method, dict(self.params)), "calibration": asdict(self.calibration)}
        return f"{self.method}-{_hash(key)[:12]}"

    @property
    def label(self) -> str:
        """The method and its parameters, e.g. ``"pagerank alpha=0.5"`` (a line in the plots)."""
        return " ".join([self.method] + [f"{k}={v}" for k, v in self.params])

    @property
    def stem(self) -> str:
        """File name of the run's result, without the suffix."""
        return f"{self.method}-{self.allocation}-{self.how}-{self.mode}-{self.amount:g}-{self.run_id}"


# ---------------------------------------------------------------------------- the grid
_GRID_KEYS = ("models", "methods", "amounts", "allocations", "hows", "modes", "params", "method_params",
              "calibration", "evaluation", "seed", "save_scores", "save_masks")


def _unique(values) -> tuple:
    return tuple(dict.fromkeys(values))


def _as_list(arg: str, value, *, allow_scalar: bool = True) -> list:
    if isinstance(value, (str, bytes, os.PathLike)) or not isinstance(value, Iterable):
        if not allow_scalar:
            raise fail_type(arg, "a list", value)
        return [value]
    return list(value)


@dataclass(frozen=True)
class Grid:
    """A benchmark grid: the product of its axes, with scorer parameters as further axes.

    Every field is validated when the grid is made, before any work: an unknown method (the
    message lists the registry), a parameter that no method of the grid has (the message
    lists theirs), an invalid amount, allocation, ``how`` or mode, a parameter value the
    scorer refuses. Lists may be given for the tuples; duplicates are dropped.

    Attributes
    ----------
    models : tuple of str or None
        Model paths; None (the default) is the embedded SmolLM2-135M.
    methods : tuple of str
        Scorers (:func:`llmrank_graph.scoring.registry`).
    amounts : tuple of float
        Fractions of intermediate neurons to prune, each in [0, 1).
    allocations, hows, modes : tuple of str
        Axes of :func:`~llmrank_graph.prune_model` (defaults: its defaults).
    params : dict of str -> tuple
        Parameter -> values, for every method that has the parameter.
    method_params : dict of str -> dict of str -> tuple
        Method -> parameter -> values, for that method only.
    calibration : CalibrationSetting
    evaluation : EvaluationSetting
    seed : int
    save_scores : bool
        Save each scorer configuration's scores (``scores/``, safetensors); needed for the
        report's rank correlations. Not part of a run's identity.
    save_masks : bool
        Save each run's :class:`~llmrank_graph.NeuronMask` beside its JSON.

    Example
    -------
    >>> grid = Grid(methods=["pagerank", "activation"], amounts=[0.1, 0.3], params={"alpha": [0.5, 0.85]})
    >>> len(grid.runs())        # pagerank: 2 alphas x 2 amounts; activation has no alpha: 2 amounts
    6
    """

    models: tuple[str | None, ...] = (None,)
    methods: tuple[str, ...] = (_default(prune_model, "method"),)
    amounts: tuple[float, ...] = (_default(prune_model, "amount"),)
    allocations: tuple[str, ...] = (_default(prune_model, "allocation"),)
    hows: tuple[str, ...] = (_default(prune_model, "how"),)
    modes: tuple[str, ...] = (_default(prune_model, "mode"),)
    params: Mapping[str, tuple] = field(default_factory=dict)
    method_params: Mapping[str, Mapping[str, tuple]] = field(default_factory=dict)
    calibration: CalibrationSetting = field(default_factory=CalibrationSetting)
    evaluation: EvaluationSetting = field(default_factory=EvaluationSetting)
    seed: int = 0
    save_scores: bool = False
    save_masks: bool = False

    def __post_init__(self):
        from ..scoring.registry import get_scorer, scorers

        def setf(name, value):
            object.__setattr__(self, name, value)

        models = _unique(None if m is None else os.fspath(_as_texts("models", m))
                         for m in _as_list("models", self.models))
        setf("models", models or (None,))
        methods = _unique(_as_list("methods", self.methods))
        if not methods:
            raise fail("methods", f"at least one of {format_allowed(scorers())}", list(methods))
        for m in methods:
            check_choice("methods", m, scorers())
        setf("methods", methods)
        amounts = _unique(check_amount(a) for a in _as_list("amounts", self.amounts))
        if not amounts:
            raise fail("amounts", "at least one float in [0, 1)", [])
        setf("amounts", amounts)
        for name, allowed in (("allocations", ALLOCATIONS), ("hows", HOWS), ("modes", MODES)):
            values = _unique(_as_list(name, getattr(self, name)))
            if not values:
                raise fail(name, f"at least one of {format_allowed(allowed)}", [])
            for v in values:
                check_choice(name, v, allowed)
            setf(name, values)
        setf("params", self._check_params("params", self.params))
        if not isinstance(self.method_params, Mapping):
            raise fail_type("method_params", "a mapping of method -> {parameter: values}", self.method_params)
        mp = {}
        for method, params in self.method_params.items():
            if method not in methods:
                raise fail("method_params", f"keyed by methods of the grid ({format_allowed(methods)})", method)
            mp[method] = self._check_params(f"method_params[{method!r}]", params)
            allowed = method_parameters(method)
            unknown = [k for k in mp[method] if k not in allowed]
            if unknown:
                raise InvalidArgumentTypeError(
                    f"method {method!r} has no parameter(s) {format_allowed(unknown)}; its parameters are "
                    f"{format_allowed(allowed)}")
        setf("method_params", mp)
        if self.params:
            allowed = sorted({p for m in methods for p in method_parameters(m)})
            unknown = [k for k in self.params if k not in allowed]
            if unknown:
                raise InvalidArgumentTypeError(
                    f"no method of the grid ({format_allowed(methods)}) has the parameter(s) "
                    f"{format_allowed(unknown)}; their parameters are {format_allowed(allowed)}")
        for name, cls in (("calibration", CalibrationSetting), ("evaluation", EvaluationSetting)):
            value = getattr(self, name)
            if isinstance(value, Mapping):
                value = _setting_from_dict(cls, name, value)
            elif not isinstance(value, cls):
                raise fail_type(name, f"a {cls.__name__} or a dict of its fields", value)
            setf(name, value)
        setf("seed", check_int("seed", self.seed, minimum=0))
        setf("save_scores", check_bool("save_scores", self.save_scores))
        setf("save_masks", check_bool("save_masks", self.save_masks))
        # Every scorer configuration is built once here, so that a bad value fails now.
        for method in methods:
            for combo in self._combos(method):
                _check_prune_options(combo)
                if combo.get("prune_hidden") and "remove" in self.hows:
                    raise InvalidArgumentError(
                        f"method {method!r} with prune_hidden=True needs how='zero' (hidden channels cannot be "
                        f"removed); the grid has hows {format_allowed(self.hows)}")
                for mode in self.modes:
                    scorer = get_scorer(method, mode=mode, **_scorer_only(method, combo))
                    gram = scorer.needs_second_moments() or needs_second_moments(combo.get("compensate", "none"))
                    if gram and not self.calibration.second_moments:
                        what = (f"compensate={combo['compensate']!r}" if needs_second_moments(
                            combo.get("compensate", "none")) else f"method {method!r}")
                        raise InvalidArgumentError(
                            f"{what} needs the Gram matrices of the down_proj inputs: set calibration.second_moments "
                            "to true (--second-moments)")

    @staticmethod
    def _check_params(arg: str, params) -> dict[str, tuple]:
        if not isinstance(params, Mapping):
            raise fail_type(arg, "a mapping of parameter -> list of values", params)
        out = {}
        for key, values in params.items():
            if not isinstance(key, str):
                raise fail_type(f"{arg} key", "a str", key)
            if key in _NOT_PARAMS:
                raise InvalidArgumentError(f"`{arg}` must not set {key!r}: it is an axis of the grid "
                                           f"(use {'hows' if key == 'how' else key + 's'})")
            vals = _unique(_check_scalar(f"{arg}[{key!r}]", v) for v in _as_list(f"{arg}[{key!r}]", values))
            if not vals:
                raise fail(f"{arg}[{key!r}]", "at least one value", [])
            out[key] = vals
        return out

    def _combos(self, method: str) -> list[dict[str, Any]]:
        allowed = method_parameters(method)
        axes = {k: v for k, v in self.params.items() if k in allowed}
        axes.update(self.method_params.get(method, {}))
        keys = sorted(axes)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(axes[k] for k in keys))]

    def runs(self) -> list[RunConfig]:
        """Every run of the grid, models outermost and amounts innermost."""
        out = []
        for model in self.models:
            for method in self.methods:
                for combo in self._combos(method):
                    for mode, how, allocation, amount in itertools.product(self.modes, self.hows, self.allocations,
                                                                            self.amounts):
                        out.append(RunConfig(model, method, amount, allocation, how, mode,
                                             tuple(sorted(combo.items())), self.calibration, self.evaluation,
                                             self.seed))
        return out

    def to_dict(self) -> dict:
        """JSON-able dict; ``Grid.from_dict`` inverts it."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d.update({k: list(v) for k, v in d.items() if isinstance(v, tuple)})
        d["params"] = {k: list(v) for k, v in self.params.items()}
        d["method_params"] = {m: {k: list(v) for k, v in p.items()} for m, p in self.method_params.items()}
        d["calibration"] = asdict(self.calibration)
        d["evaluation"] = {**asdict(self.evaluation), "tasks": list(self.evaluation.tasks)}
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "Grid":
        """A grid from a mapping (a parsed TOML file, ``grid.json``).

        Keys: the fields of :class:`Grid` (``how`` is accepted for ``hows``). In ``params``, a
        value that is itself a table is a method's own parameters (``params.pagerank.alpha``).

        Raises
        ------
        InvalidArgumentError
            An unknown key (the message lists the allowed ones), or any invalid value.
        """
        if not isinstance(d, Mapping):
            raise fail_type("grid", "a mapping", d)
        d = dict(d)
        if "how" in d:
            if "hows" in d:
                raise InvalidArgumentError("the grid gives both `how` and `hows`; give one")
            d["hows"] = d.pop("how")
        unknown = [k for k in d if k not in _GRID_KEYS]
        if unknown:
            raise InvalidArgumentError(f"unknown grid key(s) {format_allowed(unknown)}; allowed: "
                                       f"{format_allowed(_GRID_KEYS)}")
        params = d.get("params", {})
        if isinstance(params, Mapping):
            d["params"] = {k: v for k, v in params.items() if not isinstance(v, Mapping)}
            nested = {k: v for k, v in params.items() if isinstance(v, Mapping)}
            if nested:
                d["method_params"] = {**nested, **dict(d.get("method_params", {}))}
        if "models" in d and d["models"] is not None:
            d["models"] = _as_list("models", d["models"]) or [None]
        elif "models" in d:
            d["models"] = [None]
        return cls(**d)


def _check_prune_options(combo: Mapping[str, Any]) -> None:
    """The prune_model options of a grid point that can be checked without a model."""
    if "compensate" in combo:
        check_choice("compensate", combo["compensate"], COMPENSATIONS)
    if "ridge" in combo:
        check_ridge(combo["ridge"])
    if "sequential" in combo:
        check_bool("sequential", combo["sequential"])


def _setting_from_dict(cls, arg: str, d: Mapping):
    allowed = [f.name for f in fields(cls)]
    unknown = [k for k in d if k not in allowed]
    if unknown:
        raise InvalidArgumentError(f"unknown `{arg}` key(s) {format_allowed(unknown)}; allowed: {format_allowed(allowed)}")
    d = dict(d)
    if "tasks" in d:
        d["tasks"] = tuple(_as_list(f"{arg}.tasks", d["tasks"]))
    return cls(**d)


def load_grid(path: str | os.PathLike) -> Grid:
    """Read a grid from a TOML file.

    Example file::

        methods = ["pagerank", "activation", "wanda-sp"]
        amounts = [0.1, 0.2, 0.3, 0.5]
        allocations = ["local", "global"]
        [params.pagerank]
        alpha = [0.5, 0.85]
        [calibration]
        n_samples = 32
        [evaluation]
        tasks = ["wikipedia_lastword"]

    Raises
    ------
    MissingInputError
        ``path`` does not exist.
    FileFormatError
        Not valid TOML (the message has the line).
    InvalidArgumentError
        An unknown key or an invalid value (see :class:`Grid`).
    """
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError as e:
            raise MissingDependencyError("reading a TOML grid on Python 3.10 needs tomli: pip install tomli") from e
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingInputError(f"grid file {str(path)!r} does not exist")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise FileFormatError(f"grid file {str(path)!r} is not valid TOML: {e}") from None
    return Grid.from_dict(data)


# ---------------------------------------------------------------------------- results
@dataclass
class SweepSummary:
    """What :func:`run_sweep` did.

    Attributes
    ----------
    directory : pathlib.Path
    runs : list of str
        Run ids of the grid, in order.
    computed : list of str
        Runs computed by this call.
    skipped : list of str
        Runs found complete (or failed) and not redone.
    failed : list of str
        Runs of the grid whose result is ``failed`` (computed now or before).
    damaged : list of pathlib.Path
        Result files that could not be read (each was named in a warning).
    """

    directory: Path
    runs: list[str]
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    damaged: list[Path] = field(default_factory=list)


def _read_record(path: Path) -> dict:
    """A run's JSON, checked; FileFormatError when it is damaged, truncated or inconsistent."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FileFormatError(f"{type(e).__name__}: {e}") from None
    if not isinstance(record, dict) or record.get("format") != RUN_FORMAT:
        raise FileFormatError(f"not a sweep result (format {record.get('format') if isinstance(record, dict) else None!r})")
    if record.get("status") not in RUN_STATUSES:
        raise FileFormatError(f"unknown status {record.get('status')!r}")
    try:
        config = RunConfig.from_dict(record["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise FileFormatError(f"its config is damaged: {e}") from None
    if config.run_id != record.get("run_id") or not path.name.endswith(f"{config.run_id}.json"):
        raise FileFormatError("its run id does not match its config")
    return record


def scan_results(directory: str | os.PathLike) -> tuple[dict[str, tuple[Path, dict]], list[Path]]:
    """The run results in a results directory: ``({run_id: (path, record)}, damaged paths)``.

    Each damaged or truncated file is named in a warning (logging).
    """
    runs_dir = Path(directory) / RUNS_DIR
    found: dict[str, tuple[Path, dict]] = {}
    damaged: list[Path] = []
    if not runs_dir.is_dir():
        return found, damaged
    for path in sorted(runs_dir.glob("*.json")):
        if path.name.startswith("."):
            continue  # a writer's temporary
        try:
            record = _read_record(path)
        except FileFormatError as e:
            logger.warning("result file %s is damaged or truncated (%s); its run will be redone", path, e)
            damaged.append(path)
            continue
        found[record["run_id"]] = (path, record)
    return found, damaged


def flatten_record(record: Mapping) -> dict[str, Any]:
    """One row of ``results.csv`` from a run's JSON.

    Columns: ``run_id, status, model, method, label, amount, allocation, how, mode, seed,
    params`` (JSON), ``param.<name>`` per parameter, ``perplexity, dense_perplexity,
    perplexity_ratio``, ``params_total_dense/pruned``, ``params_mlp_dense/pruned``,
    ``neurons_total, neurons_pruned, fraction_pruned``, ``dense_tokens_per_s,
    pruned_tokens_per_s, speedup``, ``<task>.<metric>`` and ``dense.<task>.<metric>``,
    ``time.<stage>``, ``calibration.<field>``, ``evaluation.<field>``, ``version.<package>``,
    ``error``.
    """
    cfg = record["config"]
    run = RunConfig.from_dict(cfg)
    row: dict[str, Any] = {
        "run_id": record["run_id"], "status": record["status"], "model": cfg["model"] or "default",
        "method": cfg["method"], "label": run.label, "amount": cfg["amount"], "allocation": cfg["allocation"],
        "how": cfg["how"], "mode": cfg["mode"], "seed": cfg["seed"],
        "params": json.dumps(cfg["params"], sort_keys=True),
    }
    for k, v in sorted(cfg["params"].items()):
        row[f"param.{k}"] = v
    row["perplexity"] = record.get("perplexity")
    row["dense_perplexity"] = record.get("dense_perplexity")
    p, d = row["perplexity"], row["dense_perplexity"]
    row["perplexity_ratio"] = p / d if isinstance(p, (int, float)) and isinstance(d, (int, float)) and d else None
    params = record.get("parameters") or {}
    for which in ("dense", "pruned"):
        for kind in ("total", "mlp"):
            row[f"params_{kind}_{which}"] = (params.get(which) or {}).get(kind)
    neurons = record.get("neurons") or {}
    row["neurons_total"] = neurons.get("total")
    row["neurons_pruned"] = neurons.get("pruned")
    row["fraction_pruned"] = neurons.get("fraction")
    tp = record.get("throughput") or {}
    for k in ("dense_tokens_per_s", "pruned_tokens_per_s", "speedup"):
        row[k] = tp.get(k)
    for prefix, tasks in (("", record.get("tasks") or {}), ("dense.", record.get("dense_tasks") or {})):
        for task, metrics in sorted(tasks.items()):
            for metric, value in sorted(metrics.items()):
                row[f"{prefix}{task}.{metric}"] = value
    for stage, seconds in (record.get("times") or {}).items():
        row[f"time.{stage}"] = seconds
    for stage, seconds in (record.get("shared_times") or {}).items():
        row[f"time.{stage}"] = seconds
    for k, v in cfg["calibration"].items():
        row[f"calibration.{k}"] = v
    for k, v in cfg["evaluation"].items():
        row[f"evaluation.{k}"] = " ".join(v) if k == "tasks" else v
    for k, v in (record.get("environment") or {}).items():
        row[f"version.{k}"] = v
    row["error"] = record.get("error")
    return row


_ORDER = ["model", "method", "label", "mode", "how", "allocation", "amount"]


def read_results(directory: str | os.PathLike):
    """Every run result of a results directory as a pandas DataFrame (the rows of ``results.csv``).

    Rows are sorted by model, method, label, mode, how, allocation and amount. Damaged
    files are skipped with a warning.

    Raises
    ------
    MissingInputError
        ``directory`` is not a results directory (no ``grid.json``).
    """
    import pandas as pd

    directory = Path(directory)
    if not (directory / GRID_FILE).is_file():
        raise MissingInputError(f"{str(directory)!r} is not a sweep results directory (no {GRID_FILE}); "
                                "make one with `llmrank-graph sweep --out DIR`")
    found, _ = scan_results(directory)
    rows = [flatten_record(rec) for _, rec in found.values()]
    df = pd.DataFrame(rows)
    if len(df):
        # Parameter columns right after `params`; then the others in the order they first appear.
        cols = list(df.columns)
        params = sorted(c for c in cols if c.startswith("param."))
        rest = [c for c in cols if not c.startswith("param.")]
        at = rest.index("params") + 1
        df = df[rest[:at] + params + rest[at:]]
        df = df.sort_values(_ORDER, kind="stable").reset_index(drop=True)
        # Counts stay integers where a failed run leaves holes (pandas would make them floats).
        for col in df.columns:
            if df[col].dtype == float and df[col].dropna().map(float.is_integer).all() and (
                    col.startswith("params_") or col.startswith("neurons_")):
                df[col] = df[col].astype("Int64")
    return df


def _write_tables(directory: Path) -> None:
    """Rewrite ``results.csv`` and ``results.parquet`` from the run JSONs, atomically."""
    df = read_results(directory)
    write_text_atomic(directory / RESULTS_CSV, df.to_csv(index=False), overwrite=True)
    pq = df.copy()
    for col in pq.columns:  # Parquet wants one type per column: a mixed column becomes text
        if pq[col].dtype == object:
            kinds = {type(v) for v in pq[col] if v is not None and not (isinstance(v, float) and math.isnan(v))}
            if len(kinds) > 1:
                pq[col] = pq[col].map(lambda v: None if v is None else str(v))
    with atomic_file(directory / RESULTS_PARQUET, overwrite=True, arg="results.parquet") as tmp:
        pq.to_parquet(tmp, index=False)


# ---------------------------------------------------------------------------- the directory
def _grid_entry(grid: Grid) -> dict:
    return {"grid": grid.to_dict(), "runs": [r.run_id for r in grid.runs()]}


def _differences(new: dict, old: dict) -> str:
    diffs = [f"{k}: {new.get(k)!r} here, {old.get(k)!r} there" for k in _GRID_KEYS
             if k not in ("save_scores", "save_masks") and new.get(k) != old.get(k)]
    return "; ".join(diffs) or "the same settings, other runs"


def _open_directory(directory: Path, grid: Grid, extend: bool) -> tuple[dict, bool]:
    """Check ``directory`` for this grid; return (grid.json content to write, whether it changed).

    Nothing is written here: the caller writes once every check has passed.
    """
    entry = _grid_entry(grid)
    fresh = {"format": SWEEP_FORMAT, "version": _version(), "grids": [entry]}
    if not directory.exists():
        return fresh, True
    if not directory.is_dir():
        raise OutputExistsError(f"results directory {str(directory)!r} exists and is not a directory")
    grid_file = directory / GRID_FILE
    if not grid_file.is_file():
        if any(p for p in directory.iterdir() if not p.name.startswith(".")):
            raise OutputExistsError(f"results directory {str(directory)!r} is not empty and holds no {GRID_FILE}: it is "
                                    "not a sweep results directory; choose another directory")
        return fresh, True
    try:
        stored = json.loads(grid_file.read_text(encoding="utf-8"))
        grids = stored["grids"]
        if stored.get("format") != SWEEP_FORMAT or not isinstance(grids, list):
            raise ValueError("not a sweep grid file")
        run_sets = [set(g["runs"]) for g in grids]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise FileFormatError(f"{str(grid_file)!r} is damaged ({e}); move the directory aside or repair the file") from None
    mine = set(entry["runs"])
    if any(mine == s for s in run_sets):
        return stored, False
    if not extend:
        raise InvalidArgumentError(
            f"results directory {str(directory)!r} holds results of a different grid "
            f"({_differences(entry['grid'], grids[-1]['grid'])}); "
            "pass --extend (extend=True) to add this grid's runs to it, or choose another directory")
    stored["grids"] = grids + [entry]
    return stored, True


def _version() -> str:
    from .._version import __version__

    return __version__


def _environment(model) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    import transformers

    env = {"llmrank_graph": _version(), "torch": torch.__version__, "transformers": transformers.__version__,
           "python": platform.python_version(), "device": str(next(model.parameters()).device),
           "threads": torch.get_num_threads()}
    try:
        env["lm_eval"] = version("lm_eval")
    except PackageNotFoundError:
        pass
    return env


# ---------------------------------------------------------------------------- running
@dataclass
class _ModelContext:
    """What the runs of one model share: loaded once, calibrated once, evaluated dense once."""

    model: Any
    tokenizer: Any
    load_seconds: float
    stats: ActivationStats | None = None
    calibrate_seconds: float = 0.0
    calibration_reused: bool = False
    eval_ids: torch.Tensor | None = None
    calibration_ids: torch.Tensor | None = None
    dense: dict | None = None


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _calibration(ctx: _ModelContext, directory: Path, run: RunConfig) -> None:
    cal = run.calibration
    path = directory / CALIBRATION_DIR / f"{_model_key(run.model)}-{cal.key}.safetensors"
    if path.is_file():
        try:
            stats = ActivationStats.load(path)
            stats.check_model(ctx.model)
        except (FileFormatError, InvalidArgumentError) as e:
            logger.warning("calibration file %s is damaged or does not fit the model (%s); calibrating again", path, e)
        else:
            ctx.stats, ctx.calibration_reused = stats, True
            ctx.calibrate_seconds = float(stats.meta.get("seconds", 0.0))
            logger.info("reusing the calibration statistics in %s", path)
            return
    t = time.perf_counter()
    stats = calibrate(ctx.model, ctx.tokenizer, texts=cal.texts, n_samples=cal.n_samples, seq_len=cal.seq_len,
                      batch_size=cal.batch_size, second_moments=cal.second_moments)
    seconds = time.perf_counter() - t
    stats.meta.update({"model": run.model, "setting": asdict(cal), "seconds": seconds})
    try:
        stats.save(path, overwrite=path.exists())
    except OutputExistsError:  # another sweep on this directory saved it first: same statistics
        pass
    ctx.stats, ctx.calibrate_seconds, ctx.calibration_reused = stats, seconds, False
    logger.info("calibrated in %.1f s (%d tokens); saved %s", seconds, stats.n_tokens, path)


def _calibration_ids(ctx: _ModelContext, cal: CalibrationSetting) -> torch.Tensor:
    """The calibration tokens (for sequential pruning), cut as :func:`~llmrank_graph.calibrate` cuts them."""
    if ctx.calibration_ids is None:
        from ..data.texts import load_texts, token_blocks

        ctx.calibration_ids = token_blocks(ctx.tokenizer, load_texts(cal.texts, split="calibration"), cal.n_samples,
                                           cal.seq_len)
    return ctx.calibration_ids


def _tasks_manager(directory: Path, grid: Grid):
    """Write the offline task if asked for, and check every task and its data: before any work."""
    ev = grid.evaluation
    check_lm_eval(ev.tasks)
    include = None
    if LASTWORD_TASK in ev.tasks:
        # Rewritten each time (it is deterministic): its YAML names the data by absolute path,
        # which changes when the results directory is moved.
        include = directory / TASKS_DIR / ev.key
        write_lastword_task(include, lastword_examples(ev.texts), overwrite=include.exists())
    return prepare_tasks(ev.tasks, include)


def _evaluate(model, ctx: _ModelContext, ev: EvaluationSetting, manager) -> tuple[float, dict, float, float]:
    """(perplexity, task metrics, seconds of perplexity, seconds of tasks)."""
    t = time.perf_counter()
    ppl = perplexity(model, input_ids=ctx.eval_ids, batch_size=ev.batch_size)
    t_ppl = time.perf_counter() - t
    metrics: dict = {}
    t = time.perf_counter()
    if ev.tasks:
        results = lm_eval(model, ctx.tokenizer, list(ev.tasks), batch_size=ev.task_batch_size, limit=ev.task_limit,
                          task_manager=manager)
        metrics = task_metrics(results)
    return ppl, metrics, t_ppl, time.perf_counter() - t


def _dense(ctx: _ModelContext, directory: Path, run: RunConfig, manager) -> dict:
    ev = run.evaluation
    path = directory / DENSE_DIR / f"{_model_key(run.model)}-{ev.key}.json"
    if path.is_file():
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            if record.get("format") != DENSE_FORMAT or record.get("evaluation") != run.to_dict()["evaluation"]:
                raise ValueError("not the dense evaluation of this setting")
            return record
        except (OSError, ValueError) as e:
            logger.warning("dense evaluation file %s is damaged (%s); evaluating the dense model again", path, e)
    ppl, metrics, t_ppl, t_tasks = _evaluate(ctx.model, ctx, ev, manager)
    record = {"format": DENSE_FORMAT, "model": run.model, "evaluation": run.to_dict()["evaluation"],
              "perplexity": ppl, "tasks": metrics, "parameters": count_parameters(ctx.model),
              "seconds": t_ppl + t_tasks}
    write_json_atomic(path, record, overwrite=True)
    logger.info("dense model: perplexity %.2f%s", ppl, "".join(f", {t} {m}" for t, m in metrics.items()))
    return record


def _quantiles(scores) -> dict[str, list]:
    layers = {}
    for layer, s in sorted(scores.intermediate.items()):
        s = s.double()
        scale = float(s.abs().mean())
        v = s / scale if scale > 0 else s
        layers[str(layer)] = torch.quantile(v, torch.tensor(SCORE_QUANTILES, dtype=torch.float64)).tolist()
    return {"q": list(SCORE_QUANTILES), "normalised_by": "mean absolute score of the layer", "layers": layers}


def _save_scores(scores, path: Path, run: RunConfig) -> None:
    if path.is_file():
        return
    tensors = {f"intermediate.{l}": s.contiguous() for l, s in scores.intermediate.items()}
    for l, s in (scores.hidden or {}).items():
        tensors[f"hidden.{l}"] = s.contiguous()
    meta = {"format": "llmrank_graph.NeuronScores", "method": run.method, "label": run.label,
            "params": json.dumps(dict(run.params)), "mode": run.mode, "model": json.dumps(run.model)}
    try:
        save_safetensors_atomic(tensors, path, meta)
    except OutputExistsError:  # written meanwhile by another sweep on this directory
        pass


def _execute(run: RunConfig, ctx: _ModelContext, directory: Path, grid: Grid, manager, device) -> dict:
    """Prune a copy of the dense model, evaluate it, and return the run's record (not yet written)."""
    ev = run.evaluation
    _seed_everything(run.seed)
    record: dict[str, Any] = {
        "format": RUN_FORMAT, "run_id": run.run_id, "status": "complete", "error": None, "config": run.to_dict(),
        "dense_perplexity": ctx.dense["perplexity"], "dense_tasks": ctx.dense["tasks"],
        "shared_times": {"load": ctx.load_seconds, "calibrate": ctx.calibrate_seconds,
                         "dense_evaluation": ctx.dense["seconds"]},
        "calibration_reused": ctx.calibration_reused, "seed": run.seed, "environment": _environment(ctx.model),
    }
    times: dict[str, float] = {}
    t = time.perf_counter()
    model = copy.deepcopy(ctx.model)
    extra = {}
    if dict(run.params).get("sequential"):  # layer by layer, on the calibration tokens
        extra = {"input_ids": _calibration_ids(ctx, run.calibration), "device": device}
    try:
        res = prune_model(model, ctx.stats, method=run.method, amount=run.amount, allocation=run.allocation,
                          how=run.how, mode=run.mode, **dict(run.params), **extra)
    except LLMRankGraphError as e:  # refused or failed by the library (no convergence, empty layer...)
        logger.warning("run %s (%s, %s, %g) failed: %s", run.run_id, run.label, run.allocation, run.amount, e)
        record.update(status="failed", error=f"{type(e).__name__}: {e}", times={"prune": time.perf_counter() - t},
                      finished_at=_now())
        return record
    times["prune"] = time.perf_counter() - t
    pruned = res.model
    ppl, metrics, times["perplexity"], times["tasks"] = _evaluate(pruned, ctx, ev, manager)
    t = time.perf_counter()
    tp = compare_throughput(ctx.model, pruned, ctx.eval_ids[:ev.throughput_batch], rounds=ev.throughput_rounds)
    times["throughput"] = time.perf_counter() - t
    t = time.perf_counter()
    files: dict[str, str | None] = {"scores": None, "mask": None}
    if grid.save_scores:
        rel = Path(SCORES_DIR) / f"{run.scorer_id}.safetensors"
        _save_scores(res.scores, directory / rel, run)
        files["scores"] = rel.as_posix()
    if grid.save_masks:
        rel = Path(RUNS_DIR) / f"{run.stem}.mask.safetensors"
        res.masks.save(directory / rel, overwrite=True)
        files["mask"] = rel.as_posix()
    times["save"] = time.perf_counter() - t
    masks = res.masks
    record.update({
        "parameters": {"dense": ctx.dense["parameters"], "pruned": count_parameters(pruned)},
        "neurons": {"total": masks.n_total(), "pruned": masks.n_pruned(), "fraction": masks.fraction,
                    "layers": masks.layers, "layer_total": [int(k.numel()) for k in masks.intermediate.values()],
                    "layer_kept": masks.sizes(), "hidden_pruned": masks.n_hidden_pruned()},
        "perplexity": ppl, "tasks": metrics,
        "throughput": {**tp, "tokens": int(ctx.eval_ids[:ev.throughput_batch].numel()),
                       "rounds": ev.throughput_rounds},
        "times": times, "score_quantiles": _quantiles(res.scores), "files": files, "finished_at": _now(),
    })
    return record


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _load_model(model_path: str | None, device):
    from ..models.loading import load_model

    t = time.perf_counter()
    model, tok = load_model(model_path, device=device)
    if tok is None:
        raise MissingInputError(f"model {model_path or 'default'!r} has no tokenizer; a sweep needs one to read text")
    model.requires_grad_(False)
    return model, tok, time.perf_counter() - t


def _check_inputs(grid: Grid, todo: Sequence[RunConfig]) -> None:
    """Models and texts exist: checked before any work."""
    from ..data.texts import load_texts

    for m in {r.model for r in todo}:
        if m is not None and not Path(m).expanduser().exists():
            raise MissingInputError(f"model {m!r} does not exist")
    if any(r.model is None for r in todo):
        from ..models.loading import default_model_file

        default_model_file()
    if todo:
        load_texts(grid.calibration.texts, split="calibration")
        load_texts(grid.evaluation.texts, split="evaluation")


def run_sweep(grid: Grid, directory: str | os.PathLike, *, extend: bool = False, retry_failed: bool = False,
              device: str | None = None, progress: bool = False) -> SweepSummary:
    """Run every missing run of ``grid`` into ``directory`` and update ``results.csv``/``.parquet``.

    Everything that can be checked is checked before any work: the directory (a different
    grid is refused unless ``extend``), the models and texts, lm-eval and its task data.
    Then, model by model: the model is loaded once (not at all if all its runs are done), the
    calibration statistics are read from ``directory`` or computed once and saved there, the
    dense model is evaluated once, and each missing run prunes a copy, measures perplexity,
    the tasks, and tokens/s of dense and pruned side by side, and writes its JSON.

    Parameters
    ----------
    grid : Grid
    directory : str or path-like
        The results directory (created if missing).
    extend : bool
        Allow a directory that holds another grid's results; this grid's runs are added.
    retry_failed : bool
        Redo runs recorded as ``failed``.
    device : str, optional
        Where the models run (e.g. ``"cuda"``); default CPU. Not part of a run's identity.
    progress : bool
        Show a progress bar over the grid, with the time left.

    Returns
    -------
    SweepSummary

    Raises
    ------
    InvalidArgumentError
        ``directory`` holds another grid and ``extend`` is False (the message says how they differ).
    OutputExistsError
        ``directory`` is a file, or a non-empty directory that is not a results directory.
    MissingInputError, MissingDependencyError
        A model, text, lm-eval or a task's data is missing (before any work).

    Example
    -------
    >>> grid = Grid(methods=["pagerank", "activation"], amounts=[0.1, 0.3])       # doctest: +SKIP
    >>> summary = run_sweep(grid, "results/smollm2")                               # doctest: +SKIP
    >>> read_results("results/smollm2")[["label", "amount", "perplexity"]]         # doctest: +SKIP
    """
    if not isinstance(grid, Grid):
        raise fail_type("grid", "a Grid", grid)
    if not isinstance(directory, (str, os.PathLike)):
        raise fail_type("directory", "a str or a path", directory)
    check_bool("extend", extend)
    check_bool("retry_failed", retry_failed)
    check_bool("progress", progress)
    directory = Path(directory).expanduser()
    grid_json, changed = _open_directory(directory, grid, extend)
    runs = grid.runs()
    found, damaged = scan_results(directory)
    summary = SweepSummary(directory, [r.run_id for r in runs], damaged=damaged)
    damaged_ids = {p.stem.rsplit("-", 1)[-1] for p in damaged}

    def done(r: RunConfig) -> bool:
        rec = found.get(r.run_id)
        return rec is not None and (rec[1]["status"] == "complete" or not retry_failed)

    todo = [r for r in runs if not done(r)]
    _check_inputs(grid, todo)
    manager = _tasks_manager(directory, grid) if todo and grid.evaluation.tasks else None
    if changed:
        write_json_atomic(directory / GRID_FILE, grid_json, overwrite=(directory / GRID_FILE).exists())
    summary.skipped = [r.run_id for r in runs if done(r)]
    logger.info("%d runs in the grid: %d done, %d to run", len(runs), len(runs) - len(todo), len(todo))
    bar = None
    with contextlib.ExitStack() as stack:
        if progress:
            from tqdm.auto import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            stack.enter_context(logging_redirect_tqdm())  # log lines above the bar, not through it
            bar = stack.enter_context(tqdm(total=len(runs), initial=len(runs) - len(todo), desc="sweep", unit="run",
                                           dynamic_ncols=True))
        for model_path in grid.models:
            mine = [r for r in todo if r.model == model_path]
            if not mine:
                continue
            model, tok, load_s = _load_model(model_path, device)
            ctx = _ModelContext(model, tok, load_s)
            logger.info("loaded %s in %.1f s", model_path or "the embedded default model", load_s)
            from ..data.texts import load_texts, token_blocks

            ev = grid.evaluation
            ctx.eval_ids = token_blocks(tok, load_texts(ev.texts, split="evaluation"), ev.n_samples, ev.seq_len)
            _calibration(ctx, directory, mine[0])
            ctx.dense = _dense(ctx, directory, mine[0], manager)
            for run in mine:
                if bar is not None:
                    bar.set_postfix_str(f"{run.label} {run.allocation} {run.amount:g}", refresh=True)
                t = time.perf_counter()
                record = _execute(run, ctx, directory, grid, manager, device)
                path = directory / RUNS_DIR / f"{run.stem}.json"
                try:
                    write_json_atomic(path, record, overwrite=run.run_id in damaged_ids or run.run_id in found)
                except OutputExistsError:
                    logger.info("run %s was completed meanwhile by another sweep on %s", run.run_id, directory)
                summary.computed.append(run.run_id)
                if record["status"] == "complete":
                    logger.info("%s %s %s %s %g: perplexity %.2f (dense %.2f), %.2fx tokens/s, %.0f s",
                                run.label, run.allocation, run.how, run.mode, run.amount, record["perplexity"],
                                record["dense_perplexity"], record["throughput"]["speedup"],
                                time.perf_counter() - t)
                _write_tables(directory)
                if bar is not None:
                    bar.update(1)
            del ctx, model
    _write_tables(directory)
    found, _ = scan_results(directory)
    summary.failed = [r.run_id for r in runs if r.run_id in found and found[r.run_id][1]["status"] == "failed"]
    return summary
