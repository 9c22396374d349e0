"""Declared parameter constraints: one table per public function or scorer, checked once at the entry.

In the spirit of scikit-learn's ``_parameter_constraints``: a public entry point declares a
table ``{name: constraint}``; :func:`validate` checks the values against it and returns them
normalised (Python ints, floats, bools), and the code behind the entry trusts what it gets.
The same table serves early checks elsewhere (the command line checks a scorer's
``--param`` values against its class's table before it loads a model).

Each constraint reuses :mod:`llmrank_graph.base.checks`, so messages keep the one template::

    `alpha` must be a float in (0, 1); got 1.2

>>> from llmrank_graph.base.params import Interval, OneOf, validate
>>> table = {"alpha": Interval(float, 0, 1, closed="neither"), "direction": OneOf("forward", "reverse")}
>>> validate(table, {"alpha": 0.85, "direction": "reverse"})
{'alpha': 0.85, 'direction': 'reverse'}
>>> validate(table, {"alpha": 1.2})
Traceback (most recent call last):
...
llmrank_graph.errors.InvalidArgumentError: `alpha` must be a float in (0, 1); got 1.2
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from types import MappingProxyType

from ..errors import InvalidArgumentError
from .checks import check_bool, check_choice, check_float, check_int, check_positive_int, fail_type, format_allowed

__all__ = ["Constraint", "Interval", "OneOf", "Boolean", "InstanceOf", "Optional", "Check", "validate",
           "validated", "describe"]


class Constraint:
    """One parameter's constraint: :meth:`check` returns the value normalised or raises."""

    what: str = "a value"

    def check(self, arg: str, value):
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.what}>"


class Interval(Constraint):
    """An int or float within bounds; ``closed`` is "both", "left", "right" or "neither"."""

    def __init__(self, kind: type, lo=None, hi=None, *, closed: str = "both", finite: bool = True):
        if kind not in (int, float):
            raise TypeError("Interval kind must be int or float")
        check_choice("closed", closed, ("both", "left", "right", "neither"))
        self.kind, self.lo, self.hi, self.closed, self.finite = kind, lo, hi, closed, finite
        self.what = self._what()

    def _what(self) -> str:
        if self.kind is int:
            lo = self.lo if self.lo is None or self.closed in ("both", "left") else self.lo + 1
            hi = self.hi if self.hi is None or self.closed in ("both", "right") else self.hi - 1
            if lo == 1 and hi is None:
                return "a positive int"
            return "an int" + ("" if lo is None else f" >= {lo}") + ("" if hi is None else f" <= {hi}")
        if self.lo is not None and self.hi is not None:
            left = "[" if self.closed in ("both", "left") else "("
            right = "]" if self.closed in ("both", "right") else ")"
            return f"a float in {left}{self.lo:g}, {self.hi:g}{right}"
        return "a float"

    def check(self, arg, value):
        if self.kind is int:
            lo = self.lo if self.lo is None or self.closed in ("both", "left") else self.lo + 1
            hi = self.hi if self.hi is None or self.closed in ("both", "right") else self.hi - 1
            if lo == 1 and hi is None:
                return check_positive_int(arg, value)
            return check_int(arg, value, lo, hi)
        return check_float(arg, value, self.lo, self.hi, min_open=self.closed in ("right", "neither"),
                           max_open=self.closed in ("left", "neither"), finite=self.finite)


class OneOf(Constraint):
    """One of a fixed set of values."""

    def __init__(self, *allowed):
        self.allowed = tuple(allowed)
        self.what = f"one of {format_allowed(self.allowed)}"

    def check(self, arg, value):
        return check_choice(arg, value, self.allowed)


class Boolean(Constraint):
    """A bool (numpy bools included), returned as a Python bool."""

    what = "a bool"

    def check(self, arg, value):
        return check_bool(arg, value)


class InstanceOf(Constraint):
    """An instance of one of ``types``; ``what`` names them in the user's words."""

    def __init__(self, types, what: str):
        self.types, self.what = types, what

    def check(self, arg, value):
        if not isinstance(value, self.types) or isinstance(value, bool) and bool not in _tuple(self.types):
            raise fail_type(arg, self.what, value)
        return value


class Optional(Constraint):
    """None, or a value that ``inner`` accepts."""

    def __init__(self, inner: Constraint):
        self.inner = inner
        self.what = f"None or {inner.what}"

    def check(self, arg, value):
        return None if value is None else self.inner.check(arg, value)


class Check(Constraint):
    """A check function ``fn(arg, value) -> normalised value`` that raises with the house template."""

    def __init__(self, fn: Callable, what: str):
        self.fn, self.what = fn, what

    def check(self, arg, value):
        return self.fn(arg, value)


def _tuple(types) -> tuple:
    return types if isinstance(types, tuple) else (types,)


def validate(constraints: Mapping[str, Constraint], values: Mapping, *, prefix: str = "") -> dict:
    """Check ``values`` against ``constraints``; returns them normalised, in the order given.

    A name without a constraint is refused, listing the known names; ``prefix`` is put before
    every name in messages (e.g. ``"param "`` for the command line's ``--param``).
    """
    out = {}
    for name, value in values.items():
        if name not in constraints:
            raise InvalidArgumentError(f"unknown parameter `{prefix}{name}`; known: "
                                       f"{format_allowed(constraints) or 'none'}")
        out[name] = constraints[name].check(f"{prefix}{name}", value)
    return out


def describe(constraints: Mapping[str, Constraint]) -> dict[str, str]:
    """``name -> what it accepts``, for help texts and docs."""
    return {name: c.what for name, c in constraints.items()}


def validated(constraints: Mapping[str, Constraint]):
    """Decorator: check the arguments named in ``constraints`` once, at the call, and pass them on normalised.

    >>> @validated({"k": Interval(int, 1)})
    ... def top(k=3):
    ...     return k
    >>> top(k=2.0)
    Traceback (most recent call last):
    ...
    llmrank_graph.errors.InvalidArgumentTypeError: `k` must be a positive int; got 2.0
    """
    def wrap(fn):
        sig = inspect.signature(fn)
        missing = set(constraints) - set(sig.parameters)
        if missing:
            raise TypeError(f"{fn.__qualname__} declares constraints for unknown parameters {sorted(missing)}")

        @functools.wraps(fn)
        def call(*args, **kwargs):
            bound = sig.bind(*args, **kwargs)
            for name, value in list(bound.arguments.items()):
                if name in constraints:
                    bound.arguments[name] = constraints[name].check(name, value)
            return fn(*bound.args, **bound.kwargs)

        call.parameter_constraints = MappingProxyType(dict(constraints))
        return call

    return wrap
