"""Blocks: the one representation of the whole-MLP graph's edges.

A graph is a list of partitions (contiguous vertex ids) and a list of blocks. A block holds the
edges from one partition ``src`` to another ``dst`` as a non-negative matrix ``B`` of shape
``(dst.size, src.size)``: ``B[j, i]`` is the weight of the edge ``src_i -> dst_j``.

Every kind of block implements the same small protocol (:class:`Block`), and every kernel
(the exact sweep, the edge list, the Parquet writer, the strengths and degrees) uses only
that protocol:

=================  =====================================================================
``out_strength``   column sums of ``B``: each source node's share of its out-strength
``in_strength``    row sums of ``B``: each destination node's share of its in-strength
``matmul(v)``      ``B @ v`` for ``v`` of shape (src.size, k)
``rmatmul(v)``     ``B.T @ v`` for ``v`` of shape (dst.size, k)
``product()``      either product set up once for many calls: ``add(vt, out, alpha)``
``chunks()``       row chunks of the dense matrix, for code that needs the values
``coo()``          (src ids, dst ids, float32 weights) of every stored edge
``out_degree``     number of stored out-edges of each source node (``in_degree`` alike)
``version()``      a value that changes when the weights behind the block change
``loaded()``       a block whose weights are in memory (one read for streamed blocks)
``resident``       False when the weights are read from disk on each use
=================  =====================================================================

Kinds: :class:`WeightBlock` (weights of a model, read lazily), ``SafetensorsBlock``
(:mod:`llmrank_graph.graph.streaming`, weights read from disk on demand), :class:`SparseBlock`
(explicit edges: a graph read from Parquet, built from an edge list, or sparsified) and
:class:`DiagonalBlock` (residual edges ``H_l,i -> H_{l+1},i``).

The edge-weight rule of weight blocks (``|W|``, the gate combination, the activation column
scale, all in float32 so that every backend sees the same numbers) lives in one place,
:mod:`llmrank_graph.kernels`, whose products read each weight once, at its stored dtype, where
a kernel runs (the ``kernel`` and ``threads`` options choose: :func:`llmrank_graph.kernels.options`).

>>> import torch
>>> from llmrank_graph.graph.blocks import Partition, WeightBlock
>>> h = Partition(0, "h0", 0, "hidden", 0, 2)
>>> m = Partition(1, "m0", 0, "intermediate", 2, 3)
>>> up = WeightBlock(h, m, 0, "up", [torch.tensor([[1.0, -2.0], [0.0, 3.0], [-1.0, 1.0]])])
>>> up.out_strength()  # column sums of |W|: what each hidden node sends
tensor([2., 6.], dtype=torch.float64)
>>> up.matmul(torch.ones(2, 1, dtype=torch.float64)).ravel()
tensor([3., 3., 2.], dtype=torch.float64)
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Hashable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..kernels import CHUNK_ELEMS, COMBINES, Product, abs_matmul, abs_rows, abs_sums, prepare_matmul

__all__ = ["Partition", "Block", "WeightBlock", "DiagonalBlock", "SparseBlock", "COMBINES"]


@dataclass(frozen=True)
class Partition:
    """One partition of nodes: contiguous vertex ids ``offset .. offset+size-1``."""

    position: int
    name: str
    layer: int
    kind: str  # 'hidden' | 'intermediate'
    offset: int
    size: int

    @property
    def stop(self) -> int:
        return self.offset + self.size


class Block(abc.ABC):
    """Edges from partition ``src`` to partition ``dst`` as a (dst.size, src.size) matrix.

    See the module docstring for the protocol. ``layer`` is the MLP the edges belong to and
    ``role`` says which weight they come from (``'up'``, ``'gate'``, ``'gate_sum_up'``,
    ``'down'``, ``'residual'``).
    """

    #: False for blocks whose weights are read from disk on each use (see :meth:`loaded`).
    resident: bool = True

    def __init__(self, src: Partition, dst: Partition, layer: int, role: str):
        self.src, self.dst, self.layer, self.role = src, dst, layer, role

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.src.name} -> {self.dst.name}, role={self.role!r}, nnz={self.nnz:,})"

    @property
    def shape(self) -> tuple[int, int]:
        return (self.dst.size, self.src.size)

    @property
    def nnz(self) -> int:
        """Number of stored edges."""
        return self.shape[0] * self.shape[1]

    # -- the protocol ----------------------------------------------------------------
    @abc.abstractmethod
    def out_strength(self, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
        """Column sums of ``B``, shape (src.size,)."""

    @abc.abstractmethod
    def in_strength(self, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
        """Row sums of ``B``, shape (dst.size,)."""

    @abc.abstractmethod
    def matmul(self, v: torch.Tensor) -> torch.Tensor:
        """``B @ v``: ``v`` is (src.size, k); the result is (dst.size, k), in ``v``'s dtype and device."""

    @abc.abstractmethod
    def rmatmul(self, v: torch.Tensor) -> torch.Tensor:
        """``B.T @ v``: ``v`` is (dst.size, k); the result is (src.size, k), in ``v``'s dtype and device."""

    @abc.abstractmethod
    def chunks(self, dtype: torch.dtype = torch.float64, device=None) -> Iterator[tuple[int, int, torch.Tensor]]:
        """Yield ``(r0, r1, rows r0:r1 of B)`` as dense tensors."""

    @abc.abstractmethod
    def coo(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(src ids, dst ids, float32 weights)`` of every stored edge, global vertex ids."""

    @abc.abstractmethod
    def out_degree(self) -> np.ndarray:
        """Number of stored out-edges of each source node, (src.size,) float64."""

    @abc.abstractmethod
    def in_degree(self) -> np.ndarray:
        """Number of stored in-edges of each destination node, (dst.size,) float64."""

    def version(self) -> Hashable:
        """Changes whenever the numbers behind the block change (caches compare it)."""
        return 0

    def product(self, forward: bool = True, device=None) -> Product | None:
        """``matmul`` (``forward``) or ``rmatmul`` set up once, for a sweep that calls it many times.

        Returns ``add(vt, out, alpha)``, which adds ``alpha * (B @ v)`` (or ``alpha * (B.T @ v)``)
        to ``out`` in place. Vectors travel as rows: ``vt`` is ``v.T``, (k, src.size) forward
        or (k, dst.size) backward, float64 and contiguous; ``out`` is a (k, dst.size) -- or
        (k, src.size) -- float64 view to add into. On the CPU both are numpy arrays: there
        the sweep runs in numpy, because torch's per-operation dispatch, run between two
        blocks with caches the previous product has just flushed, cost more than the
        products' own Python (``benchmarks/bench_pagerank.py``); on a GPU, torch tensors.

        None when the block's numbers are not in memory on ``device`` (streamed blocks,
        weights elsewhere): ask the block :meth:`loaded` yields instead. Kinds whose products
        can skip per-call work override it.
        """
        if not self.resident:
            return None
        mul = self.matmul if forward else self.rmatmul

        def add(vt, out, alpha):
            if isinstance(vt, np.ndarray):
                out += alpha * mul(torch.from_numpy(vt).t()).numpy().T
            else:
                out.add_(mul(vt.t()).t(), alpha=alpha)

        return add

    @contextlib.contextmanager
    def loaded(self, device=None) -> Iterator["Block"]:
        """This block with its weights in memory on ``device`` for the duration.

        Blocks that already live in memory yield themselves; streamed blocks read their
        weights once, so that several operations (a strength and a product) share one read.
        """
        yield self

    # -- derived ---------------------------------------------------------------------
    def dense(self, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
        """The whole matrix ``B`` (dst.size, src.size)."""
        return torch.cat([c for _, _, c in self.chunks(dtype, device)], dim=0)

    def write_coo(self, src: np.ndarray, dst: np.ndarray, w: np.ndarray) -> int:
        """Write this block's edges into the given output slices; returns the count."""
        s, d, x = self.coo()
        k = len(s)
        src[:k], dst[:k], w[:k] = s, d, x
        return k


class WeightBlock(Block):
    """A block read straight from model weights: ``combine(|W0|, |W1|) * col_scale``.

    Parameters
    ----------
    src, dst : Partition
    layer : int
    role : str
    weights : list of torch.Tensor
        One or two weights of shape (dst.size, src.size) (views of the model's parameters:
        nothing is copied, so the graph sees later in-place changes, and its caches notice).
    combine : {'single', 'sum', 'max'}
    col_scale : torch.Tensor, optional
        (src.size,) scale of each column (the source node's activation share), float64.
    """

    def __init__(self, src, dst, layer, role, weights: list[torch.Tensor] | None = None, combine: str = "single",
                 col_scale: torch.Tensor | None = None):
        super().__init__(src, dst, layer, role)
        if combine not in COMBINES:  # internal: export_graph validated the user's gate option
            raise ValueError(f"`combine` must be one of {', '.join(map(repr, COMBINES))}; got {combine!r}")
        self.weights = weights
        self.combine = combine
        self.col_scale = col_scale

    def raw_weights(self, device=None) -> list[torch.Tensor]:
        """The stored weights, (dst.size, src.size) each, on ``device`` (no copy when already there)."""
        ts = self.weights
        if device is None:
            return list(ts)
        dev = torch.device(device)
        return [t if t.device == dev else t.to(dev) for t in ts]

    def version(self) -> Hashable:
        # A tensor's version counter is shared with the parameter it views and counts in-place
        # writes (apply_mask(how="zero") does those); data_ptr changes when it is replaced.
        v = tuple((t._version, t.data_ptr()) for t in self.weights)
        if self.col_scale is not None:
            v += ((self.col_scale._version, self.col_scale.data_ptr()),)
        return v

    def _rule(self, device=None):
        return self.raw_weights(device), self.combine, self.col_scale

    def out_strength(self, dtype=torch.float64, device=None):
        ws, combine, scale = self._rule(device)
        return abs_sums(ws, combine, scale)[0].to(dtype)

    def in_strength(self, dtype=torch.float64, device=None):
        ws, combine, scale = self._rule(device)
        return abs_sums(ws, combine, scale)[1].to(dtype)

    def matmul(self, v):
        ws, combine, scale = self._rule(v.device)
        # Accumulated in float64 whatever v's dtype: the kernels' exact sums.
        return abs_matmul(ws, combine, scale, v.to(torch.float64), transpose=False).to(v.dtype)

    def rmatmul(self, v):
        ws, combine, scale = self._rule(v.device)
        return abs_matmul(ws, combine, scale, v.to(torch.float64), transpose=True).to(v.dtype)

    def product(self, forward=True, device=None):
        if not self.resident:
            return None  # streamed (a subclass): loaded(device) reads them
        dev = torch.device(device) if device is not None else self.weights[0].device
        if any(w.device != dev for w in self.weights):
            return None  # loaded(device) moves them
        return prepare_matmul(self.weights, self.combine, self.col_scale, transpose=not forward)

    def chunks(self, dtype=torch.float64, device=None):
        ws, combine, scale = self._rule(device)
        rows, cols = self.shape
        step = rows if ws[0].device.type == "cuda" else max(1, CHUNK_ELEMS // max(cols, 1))
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            yield r0, r1, abs_rows(ws, combine, scale, r0, r1).to(dtype)

    def coo(self):
        rows, cols = self.shape
        src = np.empty(rows * cols, dtype=np.int64)
        dst = np.empty(rows * cols, dtype=np.int64)
        w = np.empty(rows * cols, dtype=np.float32)
        self.write_coo(src, dst, w)
        return src, dst, w

    def write_coo(self, src, dst, w):
        # Row-major (dst, src) order written in place: no temporaries of edge-list size.
        rows, cols = self.shape
        k = rows * cols
        dst[:k].reshape(rows, cols)[:] = np.arange(self.dst.offset, self.dst.stop, dtype=np.int64)[:, None]
        src[:k].reshape(rows, cols)[:] = np.arange(self.src.offset, self.src.stop, dtype=np.int64)[None, :]
        out = torch.from_numpy(w[:k].reshape(rows, cols))
        for r0, r1, c in self.chunks(torch.float32, "cpu"):
            out[r0:r1] = c
        return k

    def out_degree(self):
        return np.full(self.src.size, float(self.dst.size))

    def in_degree(self):
        return np.full(self.dst.size, float(self.src.size))

    @contextlib.contextmanager
    def loaded(self, device=None):
        ws = self.raw_weights(device)
        if all(a is b for a, b in zip(ws, self.weights)):
            yield self
        else:  # weights moved to another device once, for several operations
            yield WeightBlock(self.src, self.dst, self.layer, self.role, ws, self.combine, self.col_scale)


class DiagonalBlock(Block):
    """Residual edges ``H_l,i -> H_{l+1},i`` with weight ``value * scale_i``."""

    def __init__(self, src, dst, layer, value: float, col_scale: torch.Tensor | None = None):
        super().__init__(src, dst, layer, "residual")
        if src.size != dst.size:
            raise ValueError(f"a residual block joins partitions of equal size; got {src.size} and {dst.size}")
        diag = torch.full((src.size,), float(value), dtype=torch.float32)  # float32, as the edge list
        if col_scale is not None:
            diag = diag * col_scale.to(torch.float32)
        self.diag = diag.to(torch.float64)

    @property
    def nnz(self) -> int:
        return self.src.size

    def out_strength(self, dtype=torch.float64, device=None):
        return self.diag.to(device=device, dtype=dtype).clone()

    in_strength = out_strength

    def matmul(self, v):
        return self.diag.to(v)[:, None] * v

    rmatmul = matmul

    def product(self, forward=True, device=None):
        diag = self.diag.to(device=device)
        diag_np = diag.numpy() if diag.is_cpu else None

        def add(vt, out, alpha):
            if isinstance(vt, np.ndarray):
                out += alpha * diag_np * vt
            else:
                out.addcmul_(vt, diag, value=alpha)

        return add

    def chunks(self, dtype=torch.float64, device=None):
        yield 0, self.shape[0], torch.diag(self.diag.to(device=device, dtype=dtype))

    def coo(self):
        idx = np.arange(self.src.size, dtype=np.int64)
        return idx + self.src.offset, idx + self.dst.offset, self.diag.numpy().astype(np.float32)

    def out_degree(self):
        return np.ones(self.src.size)

    in_degree = out_degree


class SparseBlock(Block):
    """A block given by explicit edges (a graph read from Parquet, built from an edge list, or sparsified).

    ``rows``/``cols`` are positions inside the block (dst and src partition), ``vals`` the
    float32 weights. Duplicate edges are summed.
    """

    def __init__(self, src, dst, layer, role, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray):
        super().__init__(src, dst, layer, role)
        import scipy.sparse as sp

        self.csr = sp.csr_matrix((np.asarray(vals, dtype=np.float32).astype(np.float64), (rows, cols)),
                                 shape=(dst.size, src.size))
        self.csr.sum_duplicates()
        self._torch: dict = {}  # (dtype, device) -> torch sparse CSR, for products on a GPU

    @property
    def nnz(self) -> int:
        return int(self.csr.nnz)

    def _t(self, dtype, device):
        key = (dtype, str(device))
        if key not in self._torch:
            c = self.csr
            self._torch[key] = torch.sparse_csr_tensor(
                torch.from_numpy(c.indptr.astype(np.int64)), torch.from_numpy(c.indices.astype(np.int64)),
                torch.from_numpy(c.data), size=c.shape).to(device=device, dtype=dtype)
        return self._torch[key]

    def out_strength(self, dtype=torch.float64, device=None):
        return torch.from_numpy(np.asarray(self.csr.sum(0)).ravel()).to(device=device, dtype=dtype)

    def in_strength(self, dtype=torch.float64, device=None):
        return torch.from_numpy(np.asarray(self.csr.sum(1)).ravel()).to(device=device, dtype=dtype)

    def matmul(self, v):
        if v.device.type == "cpu":
            return torch.from_numpy(np.asarray(self.csr @ v.double().numpy())).to(v.dtype)
        return self._t(v.dtype, v.device) @ v

    def rmatmul(self, v):
        if v.device.type == "cpu":
            return torch.from_numpy(np.asarray(self.csr.T @ v.double().numpy())).to(v.dtype)
        return self._t(v.dtype, v.device).t() @ v

    def chunks(self, dtype=torch.float64, device=None):
        yield 0, self.shape[0], torch.from_numpy(self.csr.toarray()).to(device=device, dtype=dtype)

    def coo(self):
        c = self.csr.tocoo()
        return (c.col.astype(np.int64) + self.src.offset, c.row.astype(np.int64) + self.dst.offset,
                c.data.astype(np.float32))

    def out_degree(self):
        return self.csr.getnnz(axis=0).astype(np.float64)

    def in_degree(self):
        return self.csr.getnnz(axis=1).astype(np.float64)
