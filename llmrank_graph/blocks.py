"""Deprecated path: :mod:`llmrank_graph.graph.blocks` holds this module now.

This thin re-export keeps ``llmrank_graph.blocks`` working for one release, with a
DeprecationWarning; import from ``llmrank_graph.graph.blocks`` instead.
"""

import warnings

from .graph.blocks import *  # noqa: F401,F403
from .graph.blocks import __all__  # noqa: F401

warnings.warn("llmrank_graph.blocks is deprecated and will be removed in the next release; "
              "import from llmrank_graph.graph.blocks", DeprecationWarning, stacklevel=2)
