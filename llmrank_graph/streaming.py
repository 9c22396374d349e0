"""Deprecated path: :mod:`llmrank_graph.graph.streaming` holds this module now.

This thin re-export keeps ``llmrank_graph.streaming`` working for one release, with a
DeprecationWarning; import from ``llmrank_graph.graph.streaming`` instead.
"""

import warnings

from .graph.streaming import *  # noqa: F401,F403
from .graph.streaming import __all__  # noqa: F401

warnings.warn("llmrank_graph.streaming is deprecated and will be removed in the next release; "
              "import from llmrank_graph.graph.streaming", DeprecationWarning, stacklevel=2)
