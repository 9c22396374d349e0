"""Exact PageRank and Katz on a DAG by forward substitution in topological order (docs/design.md section 2).

With dangling mass sent along ``p``, PageRank is ``x = y / sum(y)`` with
``y = (I - alpha P^T)^{-1} p``, and ``y`` is one sweep over the partitions::

    y_v = p_v + alpha * sum_{u -> v} (w_uv / s_u) * y_u

Katz (``x = alpha A^T x + beta``) is the same sweep without the ``1 / s_u``. When dangling
mass goes to another vector q, the sweep carries ``[p, q]`` as two columns and one scalar
makes it exact. Path influence (:func:`influence_sweep`) is the PageRank sweep with
``alpha = 1``, from a seed and without the restart: ``(I - P^T)^{-1} seed``.

The sweep uses only the block protocol (:class:`llmrank_graph.graph.blocks.Block`): for each
partition in topological order, its out-blocks' strengths give ``s_u`` (cached on the graph
when the weights live in memory) and one product per block pushes ``y_u / s_u`` forward.
The products are set up once per graph, direction and device (``Block.product``, cached on
the graph with everything else derived from the weights), so between two blocks only the
kernel call and two vector operations run; streamed blocks are loaded (one read from disk)
at their step instead. Products with model weights go through the fused |W| kernels, which
read each weight once at its stored dtype (:func:`llmrank_graph.kernels.options` chooses the
kernel and its threads; a plan is kept per options). On the CPU the vectors are numpy
arrays: torch's per-operation dispatch, run with caches the previous product has just
flushed, cost a third of the sweep (``benchmarks/bench_pagerank.py``).
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict

import numpy as np
import torch

from ..base.optional import cuda_available
from ..base.result import exact_result, iterated_result
from ..errors import InvalidArgumentError
from ..graph.blocks import Block
from ..kernels import current_options
from ._kernels import perron_vector
from .backends import Backend, register_backend

logger = logging.getLogger(__name__)

__all__ = ["SweepBackend", "pagerank_sweep", "katz_sweep", "influence_sweep", "resolve_device"]


def resolve_device(device=None) -> torch.device:
    """``None`` -> CUDA when torch sees a GPU, else CPU; otherwise validate ``device``."""
    if device is None:
        return torch.device("cuda" if cuda_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InvalidArgumentError(f"`device` must be None, 'cpu', 'cuda' or 'cuda:N' (a torch device); "
                                   f"got {device!r}") from None
    if dev.type == "cuda" and not cuda_available():
        raise InvalidArgumentError(f"`device` is {device!r} but torch sees no CUDA GPU")
    if dev.type not in ("cpu", "cuda"):
        raise InvalidArgumentError(f"`device` must be a CPU or CUDA device; got {device!r}")
    return dev


def _strength(block: Block, forward: bool, dtype, device) -> torch.Tensor:
    """The block's share of the out-strength of the partition the sweep leaves from."""
    return (block.out_strength if forward else block.in_strength)(dtype, device)


def _plan(graph, forward: bool, device) -> list[tuple[int, int, list[tuple[Block, object]], bool]]:
    """The sweep's steps: ``(offset, stop, [(block, product or None)], all set up)`` per source partition.

    Products are set up once per graph, direction and device (cached on the graph, so they are
    set up again after the weights change); a block whose numbers are not in memory on the
    device has None, and is loaded at its step.
    """
    def build():
        out_blocks: dict[int, list[Block]] = defaultdict(list)
        for b in graph.blocks:
            out_blocks[(b.src if forward else b.dst).position].append(b)
        steps = []
        for part in (graph.partitions if forward else graph.partitions[::-1]):
            blocks = out_blocks.get(part.position)
            if blocks:
                products = [(b, b.product(forward, device)) for b in blocks]
                steps.append((part.offset, part.stop, products, all(add is not None for _, add in products)))
        return steps

    # The kernel options and thread count are fixed when the products are set up: new options
    # (llmrank_graph.kernels.options) or a new torch setting, a new plan.
    key = ("sweep plan", forward, str(device), current_options(), torch.get_num_threads())
    return graph.cached(key, build)


def _solve(graph, alpha: float, rhs: np.ndarray, direction: str, normalize: bool, device,
           dtype=torch.float64) -> tuple[np.ndarray, np.ndarray | None]:
    """``y = (I - alpha M)^{-1} rhs`` for the DAG in one pass; rhs is (n, k) float64 numpy.

    ``M = P^T`` (``normalize=True``, PageRank) or ``A^T`` (Katz), with edges reversed when
    ``direction='reverse'``. Returns ``(y, s)`` as float64 numpy arrays: ``y`` is (n, k) and
    ``s`` the out-strength of every node in this direction (None for Katz).

    The vectors travel as rows of a (k, n) array, so that each partition's slice of each is
    contiguous and goes to the products (:meth:`Block.product`) without a copy. On the CPU
    it is a numpy array and every vector operation is numpy's: a torch operation on a
    vector of the graph's size wakes torch's OpenMP threads, which then spin on the cores
    the kernels' threads need (measured: 20% of the sweep).
    """
    forward = direction == "forward"
    on_cpu = device.type == "cpu"
    # Weights in memory: the strengths are cached on the graph (one extra read, once per
    # graph and weights). Streamed weights: computed from the blocks loaded for the product.
    cached = graph.strength(direction, dtype, device) if normalize and graph.resident else None
    if on_cpu:
        y = np.array(rhs.T, dtype=torch.empty(0, dtype=dtype).numpy().dtype, order="C")  # (k, n), a copy
        strength = cached.numpy() if cached is not None else (np.zeros(graph.n_nodes) if normalize else None)
    else:
        y = torch.tensor(rhs.T, dtype=dtype, device=device).contiguous()  # a copy
        strength = cached if cached is not None else (torch.zeros(graph.n_nodes, dtype=dtype, device=device)
                                                      if normalize else None)
    inv = None if cached is None else _inverse(strength)

    def step(a, b, steps):
        if not normalize:
            v = y[:, a:b].copy() if on_cpu else y[:, a:b].contiguous()
        elif inv is not None:
            v = y[:, a:b] * inv[a:b]
        else:
            s = sum(_strength(blk, forward, dtype, device) for blk, _ in steps)
            strength[a:b] = s.numpy() if on_cpu else s
            v = y[:, a:b] * _inverse(strength[a:b])
        for blk, add in steps:
            tgt = blk.dst if forward else blk.src
            add(v, y[:, tgt.offset:tgt.stop], alpha)

    for a, b, steps, ready in _plan(graph, forward, device):
        if ready:
            step(a, b, steps)
            continue
        with contextlib.ExitStack() as stack:  # one partition's weights in memory at a time
            loaded = [stack.enter_context(blk.loaded(device)) for blk, _ in steps]
            step(a, b, [(blk, blk.product(forward, device)) for blk in loaded])
    if not on_cpu:
        y, strength = y.double().cpu().numpy(), None if strength is None else strength.double().cpu().numpy()
    return y.T, strength


def _inverse(s):
    """``1 / s`` (numpy array or tensor), 0 where ``s`` is 0: dangling nodes send nothing along edges."""
    if isinstance(s, np.ndarray):
        out = np.zeros_like(s)
        return np.divide(1.0, s, out=out, where=s > 0)
    return torch.where(s > 0, 1.0 / s, torch.zeros_like(s))


def block_operator(graph, device):
    """``S = A + A^T`` (the undirected graph) as a scipy LinearOperator over the blocks.

    Each product reads every block once (``B @ x_src`` into the destination, ``B.T @ x_dst``
    into the source), so Lanczos runs on a graph streamed from disk with one block in memory.
    """
    from scipy.sparse.linalg import LinearOperator

    n = graph.n_nodes

    def matvec(x):
        xt = torch.as_tensor(np.asarray(x, dtype=np.float64).reshape(n, -1), device=device)
        y = torch.zeros_like(xt)
        for b in graph.blocks:
            with b.loaded(device) as blk:
                y[b.dst.offset:b.dst.stop] += blk.matmul(xt[b.src.offset:b.src.stop])
                y[b.src.offset:b.src.stop] += blk.rmatmul(xt[b.dst.offset:b.dst.stop])
        return y.cpu().numpy().reshape(np.shape(x))

    return LinearOperator((n, n), matvec=matvec, rmatvec=matvec, dtype=np.float64)


def _check_dag(graph, what: str) -> None:
    if not graph.is_dag_by_partition():
        raise InvalidArgumentError(f"`backend='sweep'` needs a DAG whose edges go from earlier to later partitions "
                                   f"({what}); use backend='scipy' for this graph")


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
        Working precision of the accumulation (float64 by default).

    Returns
    -------
    numpy.ndarray (n_nodes,), float64, summing to 1.

    Examples
    --------
    A chain ``0 -> 1 -> 2``, whose last node sends its mass back along ``p``:

    >>> import numpy as np, pandas as pd, llmrank_graph as lg
    >>> nodes = pd.DataFrame({"vertex": [0, 1, 2], "layer": [0, 0, 1], "index": [0, 0, 0],
    ...                       "kind": ["hidden", "intermediate", "hidden"]})
    >>> g = lg.MLPGraph.from_edgelist(nodes, pd.DataFrame({"src": [0, 1], "dst": [1, 2], "weight": [1.0, 1.0]}))
    >>> p = np.full(3, 1 / 3)
    >>> pagerank_sweep(g, 0.5, p, p, device="cpu").round(4)  # y = (1/3, 1/2, 7/12), normalised
    array([0.2353, 0.3529, 0.4118])
    """
    _check_dag(graph, "PageRank")
    device = resolve_device(device)
    same = q is p or np.array_equal(q, p)
    rhs = np.stack([p] if same else [p, q], axis=1).astype(np.float64, copy=False)
    y, s = _solve(graph, alpha, rhs, direction, True, device, dtype)
    if same:
        y = y[:, 0]
    else:
        dangling = s == 0
        yp, yq = y[:, 0], y[:, 1]
        # x = (1-alpha) y_p + alpha D y_q, with D the dangling mass of x itself.
        D = (1 - alpha) * yp[dangling].sum() / (1 - alpha * yq[dangling].sum())
        y = (1 - alpha) * yp + alpha * D * yq
    return y / y.sum()


def katz_sweep(graph, alpha: float, beta: np.ndarray, direction: str = "forward", normalized: bool = True,
               device=None, dtype=torch.float64) -> np.ndarray:
    """Exact Katz centrality ``x = alpha A^T x + beta`` of a partition-ordered DAG.

    ``normalized`` divides by the Euclidean norm (networkx). Returns float64 (n_nodes,).

    Examples
    --------
    >>> import numpy as np, pandas as pd, llmrank_graph as lg
    >>> nodes = pd.DataFrame({"vertex": [0, 1], "layer": [0, 0], "kind": ["hidden", "intermediate"], "index": [0, 0]})
    >>> g = lg.MLPGraph.from_edgelist(nodes, pd.DataFrame({"src": [0], "dst": [1], "weight": [2.0]}))
    >>> katz_sweep(g, 0.5, np.ones(2), normalized=False, device="cpu")  # x1 = 1 + 0.5 * 2 * x0
    array([1., 2.])
    """
    _check_dag(graph, "Katz")
    device = resolve_device(device)
    rhs = np.asarray(beta, dtype=np.float64).reshape(-1, 1)
    y = np.ascontiguousarray(_solve(graph, alpha, rhs, direction, False, device, dtype)[0][:, 0])
    if normalized:
        norm = np.linalg.norm(y)
        if norm > 0:
            y = y / norm
    return y


def influence_sweep(graph, seed: np.ndarray, direction: str = "reverse", device=None,
                    dtype=torch.float64) -> np.ndarray:
    """Path influence ``y = (I - P^T)^{-1} seed`` of a partition-ordered DAG, in one sweep.

    ``y_v = seed_v + sum_{u -> v} (w_uv / s_u) y_u`` in topological order (``'forward'``), or
    with every edge reversed (``'reverse'``: ``y_u = seed_u + sum_{u -> v} (w_uv / s_in(v)) y_v``,
    each node's in-edges sharing its influence in proportion to their weights). The sum over
    paths is finite on a DAG, so no damping is needed. Returns float64 (n_nodes,), not normalised.

    Examples
    --------
    >>> import numpy as np, pandas as pd, llmrank_graph as lg
    >>> nodes = pd.DataFrame({"vertex": [0, 1, 2], "layer": [0, 0, 1], "kind": ["hidden", "intermediate", "hidden"],
    ...                       "index": [0, 0, 0]})
    >>> edges = pd.DataFrame({"src": [0, 0, 1], "dst": [1, 2, 2], "weight": [1.0, 1.0, 3.0]})
    >>> g = lg.MLPGraph.from_edgelist(nodes, edges)
    >>> influence_sweep(g, np.array([0.0, 0.0, 1.0]), device="cpu")  # node 2 gets 1/4 from 0, 3/4 from 1
    array([1.  , 0.75, 1.  ])
    """
    _check_dag(graph, "path influence")
    rhs = np.asarray(seed, dtype=np.float64).reshape(-1, 1)
    y = _solve(graph, 1.0, rhs, direction, True, resolve_device(device), dtype)[0]
    return np.ascontiguousarray(y[:, 0])


class SweepBackend(Backend):
    """Matrix-free torch backend: exact sweeps over the blocks (CPU or CUDA), no edge list.

    The results are exact (``exact=True``, ``iterations=0``): the tolerance, iteration limit
    and starting vector of the power-iteration backends are accepted and have nothing to act on.
    """

    name = "sweep"
    algorithms = ("pagerank", "katz", "eigenvector", "strength", "degree")
    description = ("exact DAG solver: one matrix-free sweep over the weights (torch, CPU or CUDA); "
                   "matrix-free Lanczos for eigenvector centrality")

    def can_run(self, graph, algorithm, **params):
        why = super().can_run(graph, algorithm, **params)
        if why is None and algorithm in ("pagerank", "katz") and not graph.is_dag_by_partition():
            return ("graph is not a partition-ordered DAG: the exact sweep needs a DAG whose edges go from earlier "
                    "to later partitions; use backend='scipy'")
        return why

    def should_run(self, graph, algorithm, **params):
        # Lanczos needs tens of products: on a graph in memory the cached CSR of 'scipy' is faster;
        # on a streamed one, reading the blocks beats building its edge list.
        if algorithm == "eigenvector" and graph.resident:
            return "the graph is in memory: the scipy CSR is faster for the tens of Lanczos products"
        return None

    def pagerank(self, graph, *, alpha, personalization, dangling, direction, tol, max_iter, nstart, device=None):
        # tol, max_iter, nstart: the solution is exact, there is no iteration for them to steer.
        dev = resolve_device(device)
        logger.debug("sweep pagerank on %s", dev)
        x = pagerank_sweep(graph, alpha, personalization, dangling, direction, device=dev)
        return exact_result(x, self.name, "pagerank")

    def katz(self, graph, *, alpha, beta, direction, tol, max_iter, nstart, normalized, device=None):
        x = katz_sweep(graph, alpha, beta, direction, normalized, device=resolve_device(device))
        return exact_result(x, self.name, "katz")

    def eigenvector(self, graph, *, tol, max_iter, nstart, device=None):
        # Lanczos on S = A + A^T as a LinearOperator whose product reads every block once.
        x = perron_vector(block_operator(graph, resolve_device(device)), tol, max_iter, nstart)
        return iterated_result(x, None, self.name, "eigenvector")

    def strength(self, graph, *, direction, device=None):
        # Out-strength is the forward strength; in-strength the reverse one (cached on the graph).
        s = graph.strength("forward" if direction == "out" else "reverse", torch.float64, resolve_device(device))
        return exact_result(s.cpu().numpy(), self.name, f"{direction}_strength")

    def degree(self, graph, *, direction):
        return exact_result(graph.degree(direction), self.name, f"{direction}_degree")


register_backend(SweepBackend())
