"""Deprecated path: :mod:`llmrank_graph.experiments.report` holds this module now.

This thin re-export keeps ``llmrank_graph.report`` working for one release, with a
DeprecationWarning; import from ``llmrank_graph.experiments.report`` instead.
"""

import warnings

from .experiments.report import *  # noqa: F401,F403
from .experiments.report import __all__  # noqa: F401

warnings.warn("llmrank_graph.report is deprecated and will be removed in the next release; "
              "import from llmrank_graph.experiments.report", DeprecationWarning, stacklevel=2)
