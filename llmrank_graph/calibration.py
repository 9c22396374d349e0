"""Deprecated path: :mod:`llmrank_graph.data.calibration` holds this module now.

This thin re-export keeps ``llmrank_graph.calibration`` working for one release, with a
DeprecationWarning; import from ``llmrank_graph.data.calibration`` instead.
"""

import warnings

from .data.calibration import *  # noqa: F401,F403
from .data.calibration import __all__  # noqa: F401

warnings.warn("llmrank_graph.calibration is deprecated and will be removed in the next release; "
              "import from llmrank_graph.data.calibration", DeprecationWarning, stacklevel=2)
