from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class CentralityResult:
    """What every centrality backend returns.

    Attributes
    ----------
    scores : numpy.ndarray
        float64, indexed by vertex id. PageRank scores sum to 1.
    converged : bool
        True when the tolerance was met (always True for exact solvers).
    iterations : int
        Power iterations run; exact sweeps report the number of sweeps.
    backend : str
        Name of the backend that ran.
    algorithm : str
        Name of the centrality.
    params : dict
        The parameters it ran with.
    """

    scores: np.ndarray
    converged: bool
    iterations: int
    backend: str
    algorithm: str = "pagerank"
    params: dict = field(default_factory=dict)

    def to_frame(self, graph=None, name: str | None = None) -> pd.DataFrame:
        """Scores as a column named after the algorithm, joined to ``graph.nodes`` if given."""
        col = name or self.algorithm
        if graph is None:
            return pd.DataFrame({"vertex": np.arange(len(self.scores)), col: self.scores})
        if len(self.scores) != graph.n_nodes:
            raise ValueError(f"`graph` has {graph.n_nodes} nodes but the result has {len(self.scores)} scores")
        return graph.nodes.assign(**{col: self.scores})

    def top(self, k: int = 10) -> np.ndarray:
        """Vertex ids of the k highest scores, best first."""
        return np.argsort(-self.scores, kind="stable")[:k]
