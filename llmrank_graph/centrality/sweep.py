"""Exact PageRank on a DAG by forward substitution in topological order (DESIGN.md section 2).

With dangling mass sent along ``p``, ``x = y / sum(y)`` with ``y = (I - alpha P^T)^{-1} p``,
and ``y`` is one sweep over the partitions::

    y_v = p_v + alpha * sum_{u -> v} (w_uv / s_u) * y_u

Per block that is one matrix-vector product with the block's (lazily read) weights. When
dangling mass goes to another vector q, a second sweep with q and one scalar make it exact.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np
import torch

from ._result import CentralityResult
from .backends import Backend, cuda_available, register_backend

logger = logging.getLogger(__name__)


def _solve(graph, alpha: float, rhs: torch.Tensor, direction: str, strength: torch.Tensor) -> torch.Tensor:
    """``y = (I - alpha P^T)^{-1} rhs`` for the DAG, one pass over the blocks."""
    forward = direction == "forward"
    out_blocks = defaultdict(list)
    for b in graph.blocks:
        out_blocks[(b.src if forward else b.dst).position].append(b)
    y = rhs.clone()
    inv = torch.where(strength > 0, 1.0 / strength, torch.zeros_like(strength))
    order = graph.partitions if forward else graph.partitions[::-1]
    for part in order:
        blocks = out_blocks.get(part.position)
        if not blocks:
            continue
        yu = y[part.offset:part.stop] * inv[part.offset:part.stop]  # y_u / s_u, (|part|,)
        for b in blocks:
            if forward:
                y[b.dst.offset:b.dst.stop].add_(b.matvec(yu), alpha=alpha)
            else:
                y[b.src.offset:b.src.stop].add_(b.rmatvec(yu), alpha=alpha)
    return y


def pagerank_sweep(graph, alpha: float, p: np.ndarray, q: np.ndarray, direction: str = "forward",
                   device=None, dtype=torch.float64) -> np.ndarray:
    """Exact PageRank scores (sum 1) of a partition-ordered DAG; see the module docstring."""
    if not graph.is_dag_by_partition():
        raise ValueError("`backend='sweep'` needs a DAG whose edges go from earlier to later partitions; "
                         "use backend='scipy' for this graph")
    s = graph.strength(direction, dtype, device)
    pt = torch.as_tensor(p, dtype=dtype, device=device)
    yp = _solve(graph, alpha, pt, direction, s)
    dangling = s == 0
    if q is p or np.array_equal(q, p):
        y = yp
    else:
        yq = _solve(graph, alpha, torch.as_tensor(q, dtype=dtype, device=device), direction, s)
        # x = (1-alpha) y_p + alpha D y_q, with D the dangling mass of x itself.
        D = (1 - alpha) * yp[dangling].sum() / (1 - alpha * yq[dangling].sum())
        y = (1 - alpha) * yp + alpha * D * yq
    y = y / y.sum()
    return y.cpu().numpy()


class SweepBackend(Backend):
    name = "sweep"
    algorithms = ("pagerank",)
    description = "exact DAG solver: one matrix-free sweep over the weights (torch, CPU or CUDA)"

    def pagerank(self, graph, *, alpha, personalization, dangling, direction, device=None, **_):
        if device is None:
            device = "cuda" if cuda_available() else "cpu"
        x = pagerank_sweep(graph, alpha, personalization, dangling, direction, device=device)
        same = dangling is personalization or np.array_equal(dangling, personalization)
        return CentralityResult(x, True, 1 if same else 2, self.name)


register_backend(SweepBackend())
