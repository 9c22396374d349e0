"""Exact PageRank and Katz on a DAG by forward substitution in topological order (DESIGN.md section 2).

With dangling mass sent along ``p``, PageRank is ``x = y / sum(y)`` with
``y = (I - alpha P^T)^{-1} p``, and ``y`` is one sweep over the partitions::

    y_v = p_v + alpha * sum_{u -> v} (w_uv / s_u) * y_u

Katz (``x = alpha A^T x + beta``) is the same sweep without the ``1 / s_u``. When dangling
mass goes to another vector q, the sweep carries ``[p, q]`` as two columns and one scalar
makes it exact.

Each block is read once: all out-blocks of a partition are materialised as ``|W|`` on the
target device (one layer at a time), their column sums give ``s_u``, and one matrix product
per block pushes ``y_u / s_u`` forward. Weights already on that device are not copied; blocks
streamed from safetensors (:mod:`llmrank_graph.streaming`) are read from disk here, so peak
memory is about one layer.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np
import torch

from ._result import CentralityResult
from .backends import Backend, cuda_available, register_backend

logger = logging.getLogger(__name__)

__all__ = ["SweepBackend", "pagerank_sweep", "katz_sweep", "resolve_device", "block_operator"]


def resolve_device(device=None) -> torch.device:
    """``None`` -> CUDA when torch sees a GPU, else CPU; otherwise validate ``device``."""
    if device is None:
        return torch.device("cuda" if cuda_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"`device` must be None, 'cpu', 'cuda' or 'cuda:N' (a torch device); got {device!r}") from None
    if dev.type == "cuda" and not cuda_available():
        raise ValueError(f"`device` is {device!r} but torch sees no CUDA GPU")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"`device` must be a CPU or CUDA device; got {device!r}")
    return dev


class _Dense:
    """``|W|`` of one block, materialised on the device as (dst.size, src.size)."""

    def __init__(self, mat: torch.Tensor):
        self.mat = mat

    def out_strength(self, forward: bool) -> torch.Tensor:
        return self.mat.sum(0) if forward else self.mat.sum(1)

    def in_strength(self, forward: bool) -> torch.Tensor:
        return self.out_strength(not forward)

    def apply(self, v: torch.Tensor, forward: bool) -> torch.Tensor:  # v: (src, k) or (dst, k)
        return self.mat @ v if forward else self.mat.t() @ v


class _Wrapped:
    """A block with its own sparse/diagonal kernels (SparseBlock, DiagonalBlock)."""

    def __init__(self, block, dtype, device):
        self.b, self.dtype, self.device = block, dtype, device

    def out_strength(self, forward: bool) -> torch.Tensor:
        return (self.b.colsum if forward else self.b.rowsum)(self.dtype, self.device)

    def in_strength(self, forward: bool) -> torch.Tensor:
        return self.out_strength(not forward)

    def apply(self, v: torch.Tensor, forward: bool) -> torch.Tensor:
        f = self.b.matvec if forward else self.b.rmatvec
        return torch.stack([f(v[:, j].contiguous()) for j in range(v.shape[1])], dim=1)


def _abs_weights(block, dtype, device) -> torch.Tensor:
    """``|W| (+|W2| or max) * col_scale`` of a weight block, in one piece on ``device``.

    Computed in float32 (the edge list's dtype, so every backend sees the same edge weights),
    then widened to ``dtype``.
    """
    ws = block.raw_weights(device) if hasattr(block, "raw_weights") else block.weights
    f32 = torch.float32
    with torch.no_grad():
        # .abs() (not abs_) on the first: .to() returns the model's own tensor when nothing changes.
        c = ws[0].to(device=device, dtype=f32).abs()
        if block.combine == "sum":
            c += ws[1].to(device=device, dtype=f32).abs()
        elif block.combine == "max":
            torch.maximum(c, ws[1].to(device=device, dtype=f32).abs(), out=c)
        if block.col_scale is not None:
            c *= block.col_scale.to(device=device, dtype=f32)
    return c.to(dtype)


def block_operator(block, dtype=torch.float64, device=None):
    """An operator with ``out_strength``, ``in_strength`` and ``apply`` for one block.

    On CUDA a weight block becomes one dense ``|W|`` (one kernel per operation). On the CPU
    the block's own cache-sized row chunks are used instead: materialising a float64 copy
    of a whole layer costs more than the product itself there.
    """
    is_weight = hasattr(block, "combine") and (hasattr(block, "weights") or hasattr(block, "raw_weights"))
    on_cpu = torch.device(device or "cpu").type == "cpu"
    if is_weight and not (on_cpu and hasattr(block, "chunks") and not hasattr(block, "raw_weights")):
        return _Dense(_abs_weights(block, dtype, device))
    if is_weight or hasattr(block, "csr") or type(block).__name__ == "DiagonalBlock":
        return _Wrapped(block, dtype, device)
    return _Dense(block.dense(dtype, device))


def _solve(graph, alpha: float, rhs: torch.Tensor, direction: str, normalize: bool) -> torch.Tensor:
    """``y = (I - alpha M)^{-1} rhs`` for the DAG in one pass; rhs is (n, k).

    ``M = P^T`` (``normalize=True``, PageRank) or ``A^T`` (Katz), with edges reversed when
    ``direction='reverse'``.
    """
    forward = direction == "forward"
    out_blocks = defaultdict(list)
    for b in graph.blocks:
        out_blocks[(b.src if forward else b.dst).position].append(b)
    y = rhs.clone()
    # On the CPU the out-strengths are cached on the graph (one extra read, once per graph);
    # on CUDA they come from the |W| blocks materialised below anyway.
    in_memory = not any(hasattr(b, "raw_weights") for b in graph.blocks)  # streamed blocks: read once
    cached = graph.strength(direction, y.dtype, y.device) if normalize and in_memory and y.device.type == "cpu" else None
    order = graph.partitions if forward else graph.partitions[::-1]
    for part in order:
        blocks = out_blocks.pop(part.position, None)
        if not blocks:
            continue
        ops = [block_operator(b, y.dtype, y.device) for b in blocks]  # one layer in memory
        yu = y[part.offset:part.stop]  # (|part|, k)
        if normalize:
            if cached is not None:
                s = cached[part.offset:part.stop]
            else:
                s = ops[0].out_strength(forward)
                for op in ops[1:]:
                    s = s + op.out_strength(forward)
            inv = torch.where(s > 0, 1.0 / s, torch.zeros_like(s))
            yu = yu * inv[:, None]
        for b, op in zip(blocks, ops):
            tgt = b.dst if forward else b.src
            y[tgt.offset:tgt.stop].add_(op.apply(yu, forward), alpha=alpha)
        del ops
    return y


def _check_dag(graph, what: str) -> None:
    if not graph.is_dag_by_partition():
        raise ValueError(f"`backend='sweep'` needs a DAG whose edges go from earlier to later partitions ({what}); "
                         "use backend='scipy' for this graph")


def pagerank_sweep(graph, alpha: float, p: np.ndarray, q: np.ndarray, direction: str = "forward",
                   device=None, dtype=torch.float64) -> np.ndarray:
    """Exact PageRank scores (sum 1) of a partition-ordered DAG; see the module docstring.

    Parameters
    ----------
    graph : MLPGraph
    alpha : float in (0, 1)
    p, q : numpy.ndarray (n_nodes,)
        Normalised teleport and dangling distributions.
    direction : {'forward', 'reverse'}
    device : torch device, optional
        Where the weights are multiplied (default: CUDA when available).
    dtype : torch dtype
        Working precision (float64 by default; float32 halves the traffic).

    Returns
    -------
    numpy.ndarray (n_nodes,), float64, summing to 1.
    """
    _check_dag(graph, "PageRank")
    device = resolve_device(device)
    same = q is p or np.array_equal(q, p)
    cols = [p] if same else [p, q]
    rhs = torch.as_tensor(np.stack(cols, axis=1), dtype=dtype, device=device)
    y = _solve(graph, alpha, rhs, direction, normalize=True)
    if same:
        y = y[:, 0]
    else:
        s = _strength(graph, "out" if direction == "forward" else "in", dtype, device)
        dangling = s == 0
        yp, yq = y[:, 0], y[:, 1]
        # x = (1-alpha) y_p + alpha D y_q, with D the dangling mass of x itself.
        D = (1 - alpha) * yp[dangling].sum() / (1 - alpha * yq[dangling].sum())
        y = (1 - alpha) * yp + alpha * D * yq
    y = y / y.sum()
    return y.double().cpu().numpy()


def katz_sweep(graph, alpha: float, beta: np.ndarray, direction: str = "forward", normalized: bool = True,
               device=None, dtype=torch.float64) -> np.ndarray:
    """Exact Katz centrality ``x = alpha A^T x + beta`` of a partition-ordered DAG.

    ``normalized`` divides by the Euclidean norm (networkx). Returns float64 (n_nodes,).
    """
    _check_dag(graph, "Katz")
    device = resolve_device(device)
    rhs = torch.as_tensor(np.asarray(beta, dtype=np.float64).reshape(-1, 1), dtype=dtype, device=device)
    y = _solve(graph, alpha, rhs, direction, normalize=False)[:, 0].double()
    if normalized:
        norm = torch.linalg.vector_norm(y)
        if norm > 0:
            y = y / norm
    return y.cpu().numpy()


def _strength(graph, direction: str, dtype=torch.float64, device=None) -> torch.Tensor:
    """In- or out-strength of every node, reading each block once."""
    s = torch.zeros(graph.n_nodes, dtype=dtype, device=device)
    for b in graph.blocks:
        op = block_operator(b, dtype, device)
        if direction == "out":
            s[b.src.offset:b.src.stop] += op.out_strength(True)
        else:
            s[b.dst.offset:b.dst.stop] += op.in_strength(True)
        del op
    return s


def _degree(graph, direction: str) -> np.ndarray:
    """Structural degree from the block layout (dense blocks: every entry is an edge)."""
    d = np.zeros(graph.n_nodes)
    for b in graph.blocks:
        axis_out = direction == "out"
        if hasattr(b, "csr"):
            cnt = b.csr.getnnz(axis=0 if axis_out else 1)
        elif type(b).__name__ == "DiagonalBlock":
            cnt = np.ones(b.src.size)
        else:
            cnt = np.full(b.src.size if axis_out else b.dst.size, b.dst.size if axis_out else b.src.size)
        part = b.src if axis_out else b.dst
        d[part.offset:part.stop] += cnt
    return d


class SweepBackend(Backend):
    """Matrix-free torch backend: exact sweeps on the blocks (CPU or CUDA), no edge list."""

    name = "sweep"
    algorithms = ("pagerank", "katz", "strength", "degree")
    description = "exact DAG solver: one matrix-free sweep over the weights (torch, CPU or CUDA)"
    accepts_device = True

    def pagerank(self, graph, *, alpha, personalization, dangling, direction, device=None, **_):
        dev = resolve_device(device)
        logger.debug("sweep pagerank on %s", dev)
        x = pagerank_sweep(graph, alpha, personalization, dangling, direction, device=dev)
        same = dangling is personalization or np.array_equal(dangling, personalization)
        return CentralityResult(x, True, 1 if same else 2, self.name)

    def katz(self, graph, *, alpha, beta, direction, normalized, nstart=None, device=None, **_):
        # nstart only seeds power iterations; the sweep is exact and starts from nothing.
        x = katz_sweep(graph, alpha, beta, direction, normalized, device=resolve_device(device))
        return CentralityResult(x, True, 1, self.name, "katz")

    def strength(self, graph, *, direction, device=None, **_):
        x = _strength(graph, direction, torch.float64, resolve_device(device)).cpu().numpy()
        return CentralityResult(x, True, 0, self.name, f"{direction}_strength")

    def degree(self, graph, *, direction, **_):
        return CentralityResult(_degree(graph, direction), True, 0, self.name, f"{direction}_degree")


register_backend(SweepBackend())
