"""Deprecated path: :mod:`llmrank_graph.graph.storage` holds this module now.

This thin re-export keeps ``llmrank_graph.storage`` working for one release, with a
DeprecationWarning; import from ``llmrank_graph.graph.storage`` instead.
"""

import warnings

from .graph.storage import *  # noqa: F401,F403
from .graph.storage import __all__  # noqa: F401

warnings.warn("llmrank_graph.storage is deprecated and will be removed in the next release; "
              "import from llmrank_graph.graph.storage", DeprecationWarning, stacklevel=2)
