"""Deprecated path: :mod:`llmrank_graph.data.evaluation` holds this module now.

This thin re-export keeps ``llmrank_graph.evaluation`` working for one release, with a
DeprecationWarning; import from ``llmrank_graph.data.evaluation`` instead.
"""

import warnings

from .data.evaluation import *  # noqa: F401,F403
from .data.evaluation import __all__  # noqa: F401

warnings.warn("llmrank_graph.evaluation is deprecated and will be removed in the next release; "
              "import from llmrank_graph.data.evaluation", DeprecationWarning, stacklevel=2)
