"""Deprecated path: :mod:`llmrank_graph.pruning.sequential` holds this module now.

This thin re-export keeps ``llmrank_graph.sequential`` working for one release, with a
DeprecationWarning; import from ``llmrank_graph.pruning.sequential`` instead.
"""

import warnings

from .pruning.sequential import *  # noqa: F401,F403
from .pruning.sequential import __all__  # noqa: F401

warnings.warn("llmrank_graph.sequential is deprecated and will be removed in the next release; "
              "import from llmrank_graph.pruning.sequential", DeprecationWarning, stacklevel=2)
