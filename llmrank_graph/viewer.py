"""Deprecated path: :mod:`llmrank_graph.graph.viewer` holds this module now.

This thin re-export keeps ``llmrank_graph.viewer`` working for one release, with a
DeprecationWarning; import from ``llmrank_graph.graph.viewer`` instead.
"""

import warnings

from .graph.viewer import *  # noqa: F401,F403
from .graph.viewer import __all__  # noqa: F401

warnings.warn("llmrank_graph.viewer is deprecated and will be removed in the next release; "
              "import from llmrank_graph.graph.viewer", DeprecationWarning, stacklevel=2)
