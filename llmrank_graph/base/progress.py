"""Progress bars: the one place the library draws them.

The library takes ``progress=False`` everywhere and the CLI passes True; tqdm is imported only
when a bar is drawn. Bars go to stderr.

>>> from llmrank_graph.base.progress import counter, progress
>>> progress([1, 2, 3], False, "items")
[1, 2, 3]
>>> with counter(False, 3, "passes", "pass") as bar:
...     bar is None
True
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

__all__ = ["progress", "counter"]


def progress(items: Iterable, enabled: bool, desc: str, unit: str = "item", total: int | None = None):
    """``items``, behind a tqdm bar when ``enabled``; ``items`` itself otherwise."""
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit=unit, total=total)


def counter(enabled: bool, total: int, desc: str, unit: str):
    """A context manager giving a tqdm bar of ``total`` steps to ``update``, or None when not ``enabled``."""
    if not enabled:
        return contextlib.nullcontext()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit)
