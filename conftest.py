"""Root conftest: what pytest collects from the package itself (its docstring examples).

The README's test command runs ``--doctest-modules`` over ``llmrank_graph/`` as well as
``tests/``; every docstring example runs on a tiny graph or model. The deprecated flat module
paths (thin re-exports that warn on import) and ``__main__`` hold no examples and are not
collected.
"""

from pathlib import Path

_PACKAGE = Path(__file__).parent / "llmrank_graph"
_DEPRECATED = ("architectures", "saved_format", "calibration", "evaluation", "blocks", "storage", "streaming",
               "viewer", "masks", "sequential", "report")

collect_ignore = [str(_PACKAGE / f"{name}.py") for name in _DEPRECATED] + [str(_PACKAGE / "__main__.py")]
