"""Deprecated path: :mod:`llmrank_graph.models.architectures` holds this module now.

This thin re-export keeps ``llmrank_graph.architectures`` working for one release, with a
DeprecationWarning; import from ``llmrank_graph.models.architectures`` instead.
"""

import warnings

from .models.architectures import *  # noqa: F401,F403
from .models.architectures import __all__  # noqa: F401

warnings.warn("llmrank_graph.architectures is deprecated and will be removed in the next release; "
              "import from llmrank_graph.models.architectures", DeprecationWarning, stacklevel=2)
