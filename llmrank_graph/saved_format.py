"""Deprecated path: :mod:`llmrank_graph.models.saved_format` holds this module now.

This thin re-export keeps ``llmrank_graph.saved_format`` working for one release, with a
DeprecationWarning; import from ``llmrank_graph.models.saved_format`` instead.
"""

import warnings

from .models.saved_format import *  # noqa: F401,F403
from .models.saved_format import __all__  # noqa: F401

warnings.warn("llmrank_graph.saved_format is deprecated and will be removed in the next release; "
              "import from llmrank_graph.models.saved_format", DeprecationWarning, stacklevel=2)
