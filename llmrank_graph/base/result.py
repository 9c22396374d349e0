"""The one result type of every centrality backend (below the graph, so storage and viewers can take it)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import InvalidArgumentError


@dataclass(frozen=True)
class CentralityResult:
    """What every centrality backend returns; the fields mean the same for every backend.

    Attributes
    ----------
    scores : numpy.ndarray
        float64, indexed by vertex id. PageRank scores sum to 1.
    converged : bool
        True when the result meets the requested tolerance: after a converged power
        iteration, or always for an exact solution (a backend that does not converge raises
        ConvergenceError instead of returning).
    iterations : int or None
        Power iterations run. 0 for exact solutions (the DAG sweep, strengths, degrees),
        which do not iterate; None when the library that ran them does not report it (cuGraph).
    backend : str
        Name of the backend that ran.
    algorithm : str
        Name of the centrality.
    params : dict
        The parameters it ran with.
    exact : bool
        True when the scores are exact up to floating-point rounding (no iteration, no tolerance).
    """

    scores: np.ndarray
    converged: bool
    iterations: int | None
    backend: str
    algorithm: str = "pagerank"
    params: dict = field(default_factory=dict)
    exact: bool = False

    def to_frame(self, graph=None, name: str | None = None) -> pd.DataFrame:
        """Scores as a column named after the algorithm, joined to ``graph.nodes`` if given."""
        col = name or self.algorithm
        if graph is None:
            return pd.DataFrame({"vertex": np.arange(len(self.scores)), col: self.scores})
        if len(self.scores) != graph.n_nodes:
            raise InvalidArgumentError(f"`graph` has {graph.n_nodes} nodes but the result has "
                                       f"{len(self.scores)} scores")
        return graph.nodes.assign(**{col: self.scores})

    def top(self, k: int = 10) -> np.ndarray:
        """Vertex ids of the k highest scores, best first."""
        return np.argsort(-self.scores, kind="stable")[:k]

    def with_meta(self, algorithm: str, params: dict) -> "CentralityResult":
        """The same result, labelled with the public algorithm name and its parameters."""
        return CentralityResult(self.scores, self.converged, self.iterations, self.backend, algorithm, params,
                                self.exact)


def exact_result(scores, backend: str, algorithm: str) -> CentralityResult:
    """The result of an exact, non-iterative computation."""
    return CentralityResult(np.asarray(scores, dtype=np.float64), True, 0, backend, algorithm, exact=True)


def iterated_result(scores, iterations: int | None, backend: str, algorithm: str) -> CentralityResult:
    """The result of a converged power iteration (``iterations`` None when not reported)."""
    return CentralityResult(np.asarray(scores, dtype=np.float64), True, iterations, backend, algorithm)
