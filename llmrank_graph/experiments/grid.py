"""Benchmark grids: the axes of a sweep, its settings, and the runs they expand into.

A :class:`Grid` names the axes (models, scorers, amounts, allocations, ways of applying the
mask, graph modes, compensations, scorer parameters) and the calibration and evaluation settings;
:meth:`Grid.runs` expands it into :class:`RunConfig` objects, each with a stable
:attr:`~RunConfig.run_id` (a hash of everything that determines its result). :func:`load_grid`
reads a grid from a TOML file. A grid is checked whole when it is made, before any work;
nothing here loads a model or touches a results directory.

Scorer parameters
-----------------
``params={"alpha": [0.5, 0.85]}`` is an axis for every method of the grid that has a
parameter ``alpha`` (a scorer parameter, or a keyword of :func:`~llmrank_graph.prune_model`
such as ``min_keep``); the other methods run once. ``method_params={"pagerank": {...}}``
applies to one method only. A parameter that no method of the grid has is an error.

>>> grid = Grid(methods=["pagerank", "activation"], amounts=[0.5], method_params={"pagerank": {"alpha": [0.5, 0.85]}})
>>> [run.label for run in grid.runs()]
['pagerank alpha=0.5 compensate=lstsq', 'pagerank alpha=0.85 compensate=lstsq', 'activation compensate=lstsq']

Compensation
------------
``compensates`` is an axis of every method, with ``llmrank-graph prune``'s default
(:data:`~llmrank_graph.compensation.RECOMMENDED_COMPENSATION`, a least-squares refit): a
sweep's default run is ``prune``'s. A ``compensate`` in ``params`` or ``method_params`` (how
grids set it before it was an axis) takes the axis's place for the methods it applies to. The
calibration collects the Gram matrices that a refit needs when a run of the grid needs them,
and not otherwise (``calibration.second_moments``, None by default). A run of ``'none'`` has
no ``compensate`` among its params, as runs of sweeps made before the axis: theirs keep their ids.

Targets
-------
``targets`` is an axis of every method, with :func:`~llmrank_graph.prune_model`'s default
``'mlp'``: MLP neurons; ``'attention'``: attention heads, each run's ``amount`` the fraction of
the query heads; ``'both'``: neurons and heads together, ``amount`` the fraction of the MLP +
attention parameters. A run of ``'mlp'`` has no ``target`` among its params, as runs of sweeps
made before the axis: theirs keep their ids. A run of heads is scored by its method's head
scorer (:func:`~llmrank_graph.scoring.heads.head_scorers`; a method without one is refused with
the list), and a parameter axis applies to it when its scorers have the parameter. The
calibration records the attention output projections when a run of the grid prunes heads
(``calibration.attention``, None by default), and not otherwise. ``mode`` does not change a
run of ``'attention'``.

>>> [run.label for run in Grid(methods=["activation"], targets=["mlp", "attention"], compensates=["none"]).runs()]
['activation', 'activation target=attention']
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..base.checks import check_bool, check_choice, fail, fail_type, format_allowed
from ..base.params import Boolean, Check, Interval, validated
from ..compensation.algebra import COMPENSATIONS, RECOMMENDED_COMPENSATION, check_ridge
from ..errors import (
    FileFormatError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    MissingDependencyError,
    MissingInputError,
)
from ..graph.mlpgraph import MODES
from ..pruning.masks import ALLOCATIONS, check_amount
from ..pruning.prune import TARGETS, check_target_options
from ..pruning.surgery import HOWS, prune_model
from ..scoring.heads import head_scorers
from ..scoring.registry import scorers
from .settings import (
    _A_PATH,
    _NOT_PARAMS,
    DEFAULT_TARGET,
    NO_COMPENSATION,
    CalibrationSetting,
    EvaluationSetting,
    RunConfig,
    _as_texts,
    _default,
    _store_checked,
    method_parameters,
    second_moments_reason,
)

__all__ = ["Grid", "load_grid"]

_JSON_SCALARS = (str, int, float, bool, type(None))


def _check_scalar(arg: str, value) -> Any:
    if not isinstance(value, _JSON_SCALARS) or (isinstance(value, float) and not math.isfinite(value)):
        raise fail_type(arg, "a str, int, finite float, bool or None", value)
    return value



def _unique(values) -> tuple:
    return tuple(dict.fromkeys(values))


def _as_list(arg: str, value, *, allow_scalar: bool = True) -> list:
    if isinstance(value, (str, bytes, os.PathLike)) or not isinstance(value, Iterable):
        if not allow_scalar:
            raise fail_type(arg, "a list", value)
        return [value]
    return list(value)


def _check_models(arg: str, value) -> tuple:
    return _unique(None if m is None else _as_texts(arg, m) for m in _as_list(arg, value)) or (None,)


def _check_amounts(arg: str, value) -> tuple:
    amounts = _unique(check_amount(a) for a in _as_list(arg, value))
    if not amounts:
        raise fail(arg, "at least one float in [0, 1)", [])
    return amounts


def _choices(allowed: tuple | Callable[[], tuple]) -> Check:
    """An axis of names, each one of ``allowed`` (a callable is read at each check: the scorer registry grows)."""
    def check(arg: str, value) -> tuple:
        names = allowed() if callable(allowed) else allowed
        values = _unique(_as_list(arg, value))
        if not values:
            raise fail(arg, f"at least one of {format_allowed(names)}", list(values))
        for v in values:
            check_choice(arg, v, names)
        return values

    return Check(check, "a list of names")


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


def _check_method_params(arg: str, value) -> dict[str, dict[str, tuple]]:
    if not isinstance(value, Mapping):
        raise fail_type(arg, "a mapping of method -> {parameter: values}", value)
    return {method: _check_params(f"{arg}[{method!r}]", params) for method, params in value.items()}


def _setting_from_dict(cls, arg: str, d: Mapping):
    allowed = [f.name for f in fields(cls)]
    unknown = [k for k in d if k not in allowed]
    if unknown:
        raise InvalidArgumentError(f"unknown `{arg}` key(s) {format_allowed(unknown)}; "
                                   f"allowed: {format_allowed(allowed)}")
    d = dict(d)
    if "tasks" in d:
        d["tasks"] = tuple(_as_list(f"{arg}.tasks", d["tasks"]))
    return cls(**d)


def _setting(cls) -> Check:
    """A setting, or a dict of its fields."""
    what = f"a {cls.__name__} or a dict of its fields"

    def check(arg: str, value):
        if isinstance(value, Mapping):
            return _setting_from_dict(cls, arg, value)
        if not isinstance(value, cls):
            raise fail_type(arg, what, value)
        return value

    return Check(check, what)


# In the order of the fields, which is the order the checks run in.
_GRID_CONSTRAINTS = {
    "models": Check(_check_models, "a list of model paths (None: the embedded default)"),
    "methods": _choices(scorers), "amounts": Check(_check_amounts, "a list of floats in [0, 1)"),
    "allocations": _choices(ALLOCATIONS), "hows": _choices(HOWS), "modes": _choices(MODES),
    "compensates": _choices(COMPENSATIONS), "targets": _choices(TARGETS),
    "params": Check(_check_params, "a mapping of parameter -> list of values"),
    "method_params": Check(_check_method_params, "a mapping of method -> {parameter: values}"),
    "calibration": _setting(CalibrationSetting), "evaluation": _setting(EvaluationSetting),
    "seed": Interval(int, 0), "save_scores": Boolean(), "save_masks": Boolean(),
}


def _check_head_scorers(methods: tuple, targets: tuple) -> None:
    """Every method has a head scorer when a target of the grid prunes heads."""
    heads = [t for t in targets if t != DEFAULT_TARGET]
    missing = [m for m in methods if m not in head_scorers()]
    if heads and missing:
        raise InvalidArgumentError(
            f"the grid's target(s) {format_allowed(heads)} prune attention heads, but method(s) "
            f"{format_allowed(missing)} have no head scorer; heads can be scored by {format_allowed(head_scorers())}: "
            "drop those methods, or keep targets=['mlp'] for them in a grid of their own")


def _parameters(method: str, targets: tuple) -> list[str]:
    """The parameters of ``method`` under any of ``targets``, in order."""
    return list(dict.fromkeys(p for t in targets for p in method_parameters(method, t)))


def _check_parameter_names(methods: tuple, params: Mapping, method_params: Mapping, targets: tuple) -> None:
    """Every parameter belongs to a method of the grid (the messages list the methods' parameters)."""
    under = "" if targets == (DEFAULT_TARGET,) else f" under the target(s) {format_allowed(targets)}"
    for method, own in method_params.items():
        if method not in methods:
            raise fail("method_params", f"keyed by methods of the grid ({format_allowed(methods)})", method)
        allowed = _parameters(method, targets)
        unknown = [k for k in own if k not in allowed]
        if unknown:
            raise InvalidArgumentTypeError(
                f"method {method!r}{under} has no parameter(s) {format_allowed(unknown)}; its parameters are "
                f"{format_allowed(allowed)}")
    if params:
        allowed = sorted({p for m in methods for p in _parameters(m, targets)})
        unknown = [k for k in params if k not in allowed]
        if unknown:
            raise InvalidArgumentTypeError(
                f"no method of the grid ({format_allowed(methods)}){under} has the parameter(s) "
                f"{format_allowed(unknown)}; their parameters are {format_allowed(allowed)}")


def _check_prune_options(combo: Mapping[str, Any]) -> None:
    """The prune_model options of a grid point that can be checked without a model."""
    target = combo.get("target", DEFAULT_TARGET)
    if target != DEFAULT_TARGET:  # sequential and the paper mode cannot prune heads: refused by name
        check_target_options(target, bool(combo.get("prune_hidden")), bool(combo.get("sequential")))
    if "compensate" in combo:
        check_choice("compensate", combo["compensate"], COMPENSATIONS)
    if "ridge" in combo:
        check_ridge(combo["ridge"])
    if "sequential" in combo:
        check_bool("sequential", combo["sequential"])


# ---------------------------------------------------------------------------- the grid
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
    compensates : tuple of str
        Its ``compensate`` (default: ``llmrank-graph prune``'s,
        :data:`~llmrank_graph.compensation.RECOMMENDED_COMPENSATION`); see the module's
        "Compensation".
    targets : tuple of str
        Its ``target``: ``'mlp'`` (the default), ``'attention'``, ``'both'``; see the module's
        "Targets".
    params : dict of str -> tuple
        Parameter -> values, for every method that has the parameter.
    method_params : dict of str -> dict of str -> tuple
        Method -> parameter -> values, for that method only.
    calibration : CalibrationSetting
        Its ``second_moments`` None (the default): collected when a run needs them; its
        ``attention`` None: recorded when a run prunes heads (:meth:`runs` gives every run the
        grid's choice).
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
    >>> run = grid.runs()[0]    # prune's defaults: a least-squares refit, on second moments
    >>> run.compensate, run.calibration.second_moments
    ('lstsq', True)
    >>> Grid(compensates=["none"]).runs()[0].calibration.second_moments
    False
    >>> Grid(methods=["activation"], params={"alpha": [0.5]})
    Traceback (most recent call last):
    ...
    llmrank_graph.errors.InvalidArgumentTypeError: no method of the grid ('activation') has the parameter(s) 'alpha'...
    """

    models: tuple[str | None, ...] = (None,)
    methods: tuple[str, ...] = (_default(prune_model, "method"),)
    amounts: tuple[float, ...] = (_default(prune_model, "amount"),)
    allocations: tuple[str, ...] = (_default(prune_model, "allocation"),)
    hows: tuple[str, ...] = (_default(prune_model, "how"),)
    modes: tuple[str, ...] = (_default(prune_model, "mode"),)
    compensates: tuple[str, ...] = (RECOMMENDED_COMPENSATION,)
    targets: tuple[str, ...] = (DEFAULT_TARGET,)
    params: Mapping[str, tuple] = field(default_factory=dict)
    method_params: Mapping[str, Mapping[str, tuple]] = field(default_factory=dict)
    calibration: CalibrationSetting = field(default_factory=CalibrationSetting)
    evaluation: EvaluationSetting = field(default_factory=EvaluationSetting)
    seed: int = 0
    save_scores: bool = False
    save_masks: bool = False

    def __post_init__(self):
        _store_checked(self, _GRID_CONSTRAINTS, "")
        _check_head_scorers(self.methods, self.targets)
        _check_parameter_names(self.methods, self.params, self.method_params, self.targets)
        needed = self._check_configurations()
        heads = any(t != DEFAULT_TARGET for t in self.targets)
        if heads and self.calibration.attention is False:
            raise InvalidArgumentError(f"the grid's targets {format_allowed(self.targets)} prune attention heads, "
                                       "which needs the attention statistics: calibration.attention must not be false")
        # The runs' one calibration setting: with the Gram matrices when a run needs them, with the
        # attention statistics when a run prunes heads. The grid keeps the setting as given (None:
        # as needed), so that options laid over a grid file later decide afresh.
        cal = self.calibration
        cal = replace(cal, second_moments=needed) if cal.second_moments is None else cal
        object.__setattr__(self, "_run_calibration",
                           replace(cal, attention=heads) if cal.attention is None else cal)

    def _check_configurations(self) -> bool:
        """Build every scorer configuration once, so that a bad value fails now, not in the middle of a sweep.

        Returns whether a run needs the Gram matrices of the down_proj inputs.
        """
        needed = False
        for method, target in itertools.product(self.methods, self.targets):
            for combo in self._combos(method, target):
                _check_prune_options(combo)
                if combo.get("prune_hidden") and "remove" in self.hows:
                    raise InvalidArgumentError(
                        f"method {method!r} with prune_hidden=True needs how='zero' (hidden channels cannot be "
                        f"removed); the grid has hows {format_allowed(self.hows)}")
                if combo.get("prune_hidden") and any(c != "none" for c in self.compensates):
                    raise InvalidArgumentError(
                        f"method {method!r} with prune_hidden=True zeroes down_proj rows, which a refit contradicts: "
                        f"it needs compensate 'none' (--compensate none); the grid has compensates "
                        f"{format_allowed(self.compensates)}")
                for mode in self.modes:
                    why = second_moments_reason(method, mode, combo)  # builds the scorers: checks their parameters
                    if why is not None and self.calibration.second_moments is False:
                        raise InvalidArgumentError(
                            f"{why} needs the Gram matrices of the down_proj inputs: set calibration.second_moments "
                            "to true (--second-moments)")
                    needed = needed or why is not None
        return needed

    def _combos(self, method: str, target: str = DEFAULT_TARGET) -> list[dict[str, Any]]:
        """The params of every run of ``method`` and ``target``: the product of the axes its scorers have."""
        allowed = method_parameters(method, target)
        axes = {k: v for k, v in self.params.items() if k in allowed}
        axes.update({k: v for k, v in self.method_params.get(method, {}).items() if k in allowed})
        by_axis = "compensate" not in axes  # else params set it, as grids did before `compensates`
        if by_axis:
            axes["compensate"] = self.compensates
        keys = sorted(axes)
        combos = [dict(zip(keys, combo)) for combo in itertools.product(*(axes[k] for k in keys))]
        for combo in combos:
            if by_axis and combo["compensate"] == NO_COMPENSATION:
                del combo["compensate"]  # recorded as runs without compensation always were: their ids stay
            if target != DEFAULT_TARGET:  # and runs of MLP neurons as before the targets
                combo["target"] = target
        return combos

    def runs(self) -> list[RunConfig]:
        """Every run of the grid, models outermost and amounts innermost.

        Every run has the same calibration setting; a ``second_moments`` left None is true when
        a run of the grid needs the Gram matrices, false otherwise.
        """
        out = []
        for model in self.models:
            for method, target in itertools.product(self.methods, self.targets):
                for combo in self._combos(method, target):
                    for mode, how, allocation, amount in itertools.product(self.modes, self.hows, self.allocations,
                                                                            self.amounts):
                        out.append(RunConfig(model, method, amount, allocation, how, mode,
                                             tuple(sorted(combo.items())), self._run_calibration, self.evaluation,
                                             self.seed))
        return out

    def to_dict(self) -> dict:
        """JSON-able dict; ``Grid.from_dict`` inverts it."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d.update({k: list(v) for k, v in d.items() if isinstance(v, tuple)})
        d["params"] = {k: list(v) for k, v in self.params.items()}
        d["method_params"] = {m: {k: list(v) for k, v in p.items()} for m, p in self.method_params.items()}
        d["calibration"] = self.calibration.to_dict()
        d["evaluation"] = {**asdict(self.evaluation), "tasks": list(self.evaluation.tasks)}
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> Grid:
        """A grid from a mapping (a parsed TOML file, ``grid.json``).

        Keys: the fields of :class:`Grid` (``how`` is accepted for ``hows``, ``compensate`` for
        ``compensates``, ``target`` for ``targets``). In ``params``, a
        value that is itself a table is a method's own parameters (``params.pagerank.alpha``).

        Raises
        ------
        InvalidArgumentError
            An unknown key (the message lists the allowed ones), or any invalid value.

        Example
        -------
        >>> Grid.from_dict({"methods": ["pagerank"], "how": "zero", "params": {"pagerank": {"alpha": [0.5]}}}).hows
        ('zero',)
        """
        if not isinstance(d, Mapping):
            raise fail_type("grid", "a mapping", d)
        d = dict(d)
        for one, axis in (("how", "hows"), ("compensate", "compensates"), ("target", "targets")):  # the CLI's names
            if one in d:
                if axis in d:
                    raise InvalidArgumentError(f"the grid gives both `{one}` and `{axis}`; give one")
                d[axis] = d.pop(one)
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


# The keys of a grid file: the fields of Grid, in order.
_GRID_KEYS: tuple[str, ...] = tuple(f.name for f in fields(Grid))


def _toml():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError as e:
            raise MissingDependencyError("reading a TOML grid on Python 3.10 needs tomli: pip install tomli") from e
    return tomllib


@validated({"path": _A_PATH})
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

    Example
    -------
    >>> import pathlib, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = pathlib.Path(tmp) / "grid.toml"
    ...     _ = path.write_text('methods = ["pagerank", "activation"]\\namounts = [0.1, 0.3]\\n'
    ...                         '[params.pagerank]\\nalpha = [0.5, 0.85]\\n')
    ...     grid = load_grid(path)
    >>> grid.method_params, len(grid.runs())
    ({'pagerank': {'alpha': (0.5, 0.85)}}, 6)
    """
    tomllib = _toml()
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingInputError(f"grid file {str(path)!r} does not exist")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise FileFormatError(f"grid file {str(path)!r} is not valid TOML: {e}") from None
    return Grid.from_dict(data)
