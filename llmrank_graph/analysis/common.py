"""What the analysis modules share: the graph constraint, sequences of names, progress bars.

The public functions of :mod:`llmrank_graph.analysis` declare their parameters with
:mod:`llmrank_graph.base.params` and check them once, at the entry; the helpers below them
take checked values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..base.checks import check_choice, fail_type, format_allowed
from ..base.params import Check, InstanceOf
from ..base.progress import progress as base_progress
from ..graph.mlpgraph import MLPGraph

__all__ = ["GRAPH", "names_in", "progress_bar"]

#: The ``graph`` argument of every analysis.
GRAPH = InstanceOf(MLPGraph, "an MLPGraph")


def names_in(allowed: Callable[[], Iterable[str]], label: str | None = None) -> Check:
    """A constraint: a sequence (not a str) of names of ``allowed()``, returned as a list.

    ``allowed`` is read at each check, so names registered later count. Messages name the
    argument ``label`` when given (``baseline_scores(names=...)`` speaks of ``baselines``).

    >>> from llmrank_graph.base.params import validate
    >>> validate({"baselines": names_in(lambda: ("magnitude", "activation"))}, {"baselines": ("activation",)})
    {'baselines': ['activation']}
    >>> validate({"baselines": names_in(lambda: ("magnitude", "activation"))}, {"baselines": ["norm"]})
    Traceback (most recent call last):
    ...
    llmrank_graph.errors.InvalidArgumentError: `baselines` must be one of 'magnitude', 'activation'; got 'norm'
    """
    def check(arg: str, value) -> list[str]:
        arg = label or arg
        names = tuple(allowed())
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            raise fail_type(arg, f"a sequence of {format_allowed(names)}", value)
        items = list(value)
        for item in items:
            check_choice(arg, item, names)
        return items

    return Check(check, "a sequence of names")


def progress_bar(items, progress: bool, desc: str, unit: str = "block", total: int | None = None):
    """``items``, wrapped in a tqdm progress bar when ``progress`` (the CLI asks for one)."""
    return base_progress(items, progress, desc, unit, total)
