"""Deprecated path: :mod:`llmrank_graph.pruning.masks` holds this module now.

This thin re-export keeps ``llmrank_graph.masks`` working for one release, with a
DeprecationWarning; import from ``llmrank_graph.pruning.masks`` instead.
"""

import warnings

from .pruning.masks import *  # noqa: F401,F403
from .pruning.masks import __all__  # noqa: F401

warnings.warn("llmrank_graph.masks is deprecated and will be removed in the next release; "
              "import from llmrank_graph.pruning.masks", DeprecationWarning, stacklevel=2)
