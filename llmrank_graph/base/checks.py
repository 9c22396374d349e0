"""The one set of argument checks, used by every public entry point.

One rule for the exception class: :class:`~llmrank_graph.errors.InvalidArgumentTypeError`
(a TypeError) when the argument has the wrong type, :class:`~llmrank_graph.errors.InvalidArgumentError`
(a ValueError) when the type is right and the value is not allowed. One message template::

    `alpha` must be a float in (0, 1); got 1.2

Each check returns the value normalised (a Python float, int or bool, a float64 array), so
callers store what was checked. This module sits below every stage; it imports only the
errors module.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import InvalidArgumentError, InvalidArgumentTypeError, MissingInputError

__all__ = ["fail", "fail_type", "check_choice", "check_bool", "check_int", "check_positive_int", "check_float",
           "check_unit", "check_finite_array", "check_keep", "check_residual", "is_real", "format_allowed"]


def format_allowed(allowed: Iterable) -> str:
    """``'a', 'b', 'c'``: the allowed values as every message lists them."""
    return ", ".join(repr(a) for a in allowed)


def fail(arg: str, what: str, value) -> InvalidArgumentError:
    """The error for a bad value: ```arg` must be WHAT; got VALUE``. Raise what it returns."""
    return InvalidArgumentError(f"`{arg}` must be {what}; got {_show(value)}")


def fail_type(arg: str, what: str, value) -> InvalidArgumentTypeError:
    """The error for a wrong type, same template. Raise what it returns."""
    return InvalidArgumentTypeError(f"`{arg}` must be {what}; got {_show(value)}")


def _show(value) -> str:
    """The value as a message shows it: arrays by shape, objects with a long repr by their class."""
    if isinstance(value, np.ndarray) or (hasattr(value, "shape") and hasattr(value, "dtype")):
        return f"an array of shape {tuple(value.shape)}"  # numpy, torch, cupy alike
    text = repr(value)
    if "\n" in text:  # a model or another object whose repr spans lines
        return f"a {type(value).__name__}"
    return text if len(text) <= 80 else text[:77] + "..."


def is_real(value) -> bool:
    """A real number that is not a bool (numpy scalars included)."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_choice(arg: str, value, allowed: Iterable):
    """``value`` if it is one of ``allowed``.

    TypeError when every allowed value is a str and ``value`` is not; ValueError otherwise.
    """
    allowed = tuple(allowed)
    what = f"one of {format_allowed(allowed)}"
    if allowed and all(isinstance(a, str) for a in allowed) and not isinstance(value, str):
        raise fail_type(arg, what, value)
    if isinstance(value, (bool, np.bool_)) and not any(isinstance(a, bool) for a in allowed):
        raise fail_type(arg, what, value)
    try:
        ok = value in allowed
    except TypeError:  # unhashable or uncomparable
        ok = False
    if not ok:
        raise fail(arg, what, value)
    return value


def check_bool(arg: str, value) -> bool:
    """``value`` as a bool; TypeError unless it is a bool (numpy bools included)."""
    if not isinstance(value, (bool, np.bool_)):
        raise fail_type(arg, "a bool", value)
    return bool(value)


def check_int(arg: str, value, minimum: int | None = None, maximum: int | None = None) -> int:
    """An int (not a bool) within ``[minimum, maximum]``."""
    what = "an int" + _range_text(minimum, maximum, ">=", "<=")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise fail_type(arg, what, value)
    v = int(value)
    if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
        raise fail(arg, what, value)
    return v


def check_positive_int(arg: str, value) -> int:
    """An int >= 1."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise fail_type(arg, "a positive int", value)
    if int(value) < 1:
        raise fail(arg, "a positive int", value)
    return int(value)


def _range_text(lo, hi, lo_op, hi_op) -> str:
    if lo is not None and hi is not None:
        return f" {lo_op} {lo} and {hi_op} {hi}"
    if lo is not None:
        return f" {lo_op} {lo:g}" if isinstance(lo, float) else f" {lo_op} {lo}"
    if hi is not None:
        return f" {hi_op} {hi:g}" if isinstance(hi, float) else f" {hi_op} {hi}"
    return ""


def check_float(arg: str, value, minimum: float | None = None, maximum: float | None = None, *,
                min_open: bool = False, max_open: bool = False, finite: bool = True) -> float:
    """A real number (ints accepted, bools not) within the given bounds, as a float."""
    if minimum is not None and maximum is not None:
        what = f"a float in {'(' if min_open else '['}{minimum:g}, {maximum:g}{')' if max_open else ']'}"
    else:
        what = ("a finite float" if finite else "a float") + _range_text(
            minimum, maximum, ">" if min_open else ">=", "<" if max_open else "<=")
        if minimum == 0 and min_open and maximum is None:
            what = "a positive finite float" if finite else "a positive float"
    if not is_real(value):
        raise fail_type(arg, what, value)
    v = float(value)
    bad = (finite and not math.isfinite(v)) or math.isnan(v)
    if minimum is not None:
        bad = bad or (v <= minimum if min_open else v < minimum)
    if maximum is not None:
        bad = bad or (v >= maximum if max_open else v > maximum)
    if bad:
        raise fail(arg, what, value)
    return v


def check_unit(arg: str, value, *, open_: bool = False) -> float:
    """A float in [0, 1], or in (0, 1) when ``open_``."""
    return check_float(arg, value, 0.0, 1.0, min_open=open_, max_open=open_)


def check_finite_array(arg: str, value, length: int | None = None, *, nonnegative: bool = False,
                       positive_sum: bool = False, what: str | None = None) -> np.ndarray:
    """A finite float64 1-D array (of ``length`` values when given).

    ``nonnegative`` refuses negative entries, ``positive_sum`` an all-zero array.
    """
    desc = what or (f"an array of {length} " if length is not None else "an array of ") + (
        "non-negative values" if nonnegative else "finite values")
    if isinstance(value, (str, bytes, dict)) or value is None:
        raise fail_type(arg, desc, value)
    try:
        v = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise fail_type(arg, desc, value) from None
    v = v.reshape(-1)
    if length is not None and v.shape != (length,):
        raise InvalidArgumentError(f"`{arg}` must have one value per node: length {length}; got length {v.size}")
    if not np.isfinite(v).all():
        raise InvalidArgumentError(f"`{arg}` must be finite; got NaN or inf")
    if nonnegative and (v < 0).any():
        raise InvalidArgumentError(f"`{arg}` must be non-negative; got a minimum of {v.min():.3g}")
    if positive_sum and not v.sum() > 0:
        raise InvalidArgumentError(f"`{arg}` must not be all zero")
    return v


def check_keep(keep):
    """Sparsification: None, an int k >= 1 (top-k in-edges per node) or a float q in (0, 1]."""
    what = "None, an int >= 1 (top-k in-edges per node) or a float in (0, 1] (fraction of edges kept)"
    if keep is None:
        return None
    if not is_real(keep):
        raise fail_type("keep", what, keep)
    if isinstance(keep, numbers.Integral):
        if int(keep) < 1:
            raise fail("keep", what, keep)
        return int(keep)
    if not 0 < float(keep) <= 1:
        raise fail("keep", what, keep)
    return float(keep)


#: The largest residual edge weight: edge weights are stored as float32.
RESIDUAL_MAX = float(np.finfo(np.float32).max)


def check_residual(residual, arg: str = "residual") -> float:
    """Weight of the residual edges: a float >= 0 that float32 edge weights can hold."""
    if is_real(residual) and math.isfinite(float(residual)) and float(residual) > RESIDUAL_MAX:
        raise fail(arg, f"a float in [0, {RESIDUAL_MAX:.4g}] (edge weights are float32)", residual)
    return check_float(arg, residual, 0.0)


def check_input_file(arg: str, path) -> Path:
    """``path`` (a str or path-like, ``~`` expanded) of a file that exists, as a Path.

    Raises
    ------
    InvalidArgumentTypeError
        ``path`` is not a str or a path.
    MissingInputError
        No file there (a FileNotFoundError).

    >>> check_input_file("path", "/no/such/file")
    Traceback (most recent call last):
    ...
    llmrank_graph.errors.MissingInputError: `path` '/no/such/file' does not exist
    """
    if not isinstance(path, (str, os.PathLike)):
        raise fail_type(arg, "a str or a path", path)
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingInputError(f"`{arg}` {str(path)!r} does not exist")
    return path
