"""The whole MLP stack of a decoder LLM as one weighted multipartite DAG.

Partitions in topological order (``mode="chained"``)::

    H_0 -> I_0 -> H_1 -> I_1 -> ... -> I_{L-1} -> H_L

``H_l`` are the d residual-stream features entering the MLP of layer l, ``I_l`` its m
intermediate neurons. Edge ``H_l,i -> I_l,j`` weighs ``|W_up[j, i]|`` and ``I_l,j -> H_{l+1},i``
weighs ``|W_down[i, j]|``. In ``mode="isolated"`` each MLP is its own ``H_l_in -> I_l -> H_l_out``
component. See DESIGN.md section 1.

The graph is stored as *blocks*: one non-negative matrix (dst partition x src partition)
per pair of connected partitions. Blocks exported from a model read the model's weights
lazily, so the matrix-free sweep never builds an edge list; the edge list (``graph.edges``)
is built only when someone asks for it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ._checks import check_choice, check_keep, check_residual
from ._version import __version__
from .architectures import MLPModules, mlp_layers

logger = logging.getLogger(__name__)

__all__ = ["MLPGraph", "Partition", "ExportOptions", "DEFAULT_EXPORT", "export_graph", "read_graph", "GraphFormatError", "MODES", "GATES", "WEIGHTINGS"]

MODES = ("chained", "isolated")
GATES = ("up", "gate", "sum", "max")
WEIGHTINGS = ("abs", "abs_x_input", "activation_share")
#: Weightings that need calibration statistics.
ACTIVATION_WEIGHTINGS = ("abs_x_input", "activation_share")
NODE_COLUMNS = ("vertex", "layer", "kind", "index", "activation", "partition")
EDGE_COLUMNS = ("src", "dst", "weight")
_FORMAT = "llmrank_graph.MLPGraph"
_CHUNK_ELEMS = 1 << 18  # elements per row chunk: a float64 chunk (2 MiB) stays in cache


class GraphFormatError(ValueError):
    """A graph directory is damaged, partial, or not an llmrank_graph graph."""


def _choice(arg: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"`{arg}` must be one of {', '.join(map(repr, allowed))}; got {value!r}")


@dataclass(frozen=True)
class ExportOptions:
    """How the whole-MLP graph is built from a model: the options of :func:`export_graph`.

    One frozen, validated value shared by :func:`export_graph`, the graph scorers and the CLI
    (whose defaults are read from the instances below).

    Attributes
    ----------
    mode : {'chained', 'isolated'}
        One graph through all layers, or one 3-partite component per MLP.
    gate : {'up', 'gate', 'sum', 'max'}
        Input edges of a gated MLP: ``|W_up|`` (the paper), ``|W_gate|``, their sum or max.
    residual : float >= 0
        Weight of the skip edges ``H_l,i -> H_{l+1},i`` (0: none).
    weighting : {'abs', 'abs_x_input', 'activation_share'}
        See :func:`export_graph`.
    keep : None, int >= 1 or float in (0, 1]
        Sparsification: top-k in-edges per node, or a global weight quantile.

    Example
    -------
    >>> ExportOptions(weighting="activation_share").needs_stats
    True
    """

    mode: str = "chained"
    gate: str = "up"
    residual: float = 0.0
    weighting: str = "abs"
    keep: int | float | None = None

    def __post_init__(self):
        check_choice("mode", self.mode, MODES)
        check_choice("gate", self.gate, GATES)
        object.__setattr__(self, "residual", check_residual(self.residual))
        check_choice("weighting", self.weighting, WEIGHTINGS)
        object.__setattr__(self, "keep", check_keep(self.keep))

    @property
    def needs_stats(self) -> bool:
        """True when the weighting uses calibration activation norms."""
        return self.weighting in ACTIVATION_WEIGHTINGS

    def as_dict(self) -> dict:
        """The options as a plain dict (the keys of ``meta.json``)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def replace(self, **changes) -> "ExportOptions":
        """A copy with some options changed (validated again)."""
        return replace(self, **changes)


#: The options of a plain export (``export_graph(model)``): the paper's graph.
DEFAULT_EXPORT = ExportOptions()


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


class Block:
    """Edges from partition ``src`` to partition ``dst`` as a (dst.size, src.size) matrix.

    Subclasses implement :meth:`chunks` (row chunks of the non-negative matrix). The
    reductions used by the centrality kernels are built on it, so a block is read once per
    operation and never materialised as a whole unless asked.
    """

    def __init__(self, src: Partition, dst: Partition, layer: int, role: str):
        self.src, self.dst, self.layer, self.role = src, dst, layer, role

    @property
    def shape(self) -> tuple[int, int]:
        return (self.dst.size, self.src.size)

    @property
    def nnz(self) -> int:
        return self.shape[0] * self.shape[1]

    def chunks(self, dtype=torch.float64, device=None, reuse: bool = False) -> Iterator[tuple[int, int, torch.Tensor]]:
        """Yield ``(r0, r1, rows r0:r1 of the matrix)``. With ``reuse=True`` every chunk may share
        one buffer, so a caller must consume a chunk before asking for the next."""
        raise NotImplementedError

    def dense(self, dtype=torch.float64, device=None) -> torch.Tensor:
        return torch.cat([c for _, _, c in self.chunks(dtype, device)], dim=0)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``B @ v``: v is (src.size,), result (dst.size,)."""
        out = torch.empty(self.shape[0], dtype=v.dtype, device=v.device)
        for r0, r1, c in self.chunks(v.dtype, v.device, reuse=True):
            torch.mv(c, v, out=out[r0:r1])
        return out

    def rmatvec(self, v: torch.Tensor) -> torch.Tensor:
        """``B.T @ v``: v is (dst.size,), result (src.size,)."""
        out = torch.zeros(self.shape[1], dtype=v.dtype, device=v.device)
        for r0, r1, c in self.chunks(v.dtype, v.device, reuse=True):
            out.addmv_(c.t(), v[r0:r1])
        return out

    def colsum(self, dtype=torch.float64, device=None) -> torch.Tensor:
        """Out-strength contribution of each source node, (src.size,)."""
        out = torch.zeros(self.shape[1], dtype=dtype, device=device)
        for _, _, c in self.chunks(dtype, device, reuse=True):
            out += c.sum(0)
        return out

    def rowsum(self, dtype=torch.float64, device=None) -> torch.Tensor:
        """In-strength contribution of each destination node, (dst.size,)."""
        out = torch.empty(self.shape[0], dtype=dtype, device=device)
        for r0, r1, c in self.chunks(dtype, device, reuse=True):
            torch.sum(c, dim=1, out=out[r0:r1])
        return out

    def coo(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(src ids, dst ids, float32 weights) of every edge, global vertex ids."""
        w = self.dense(torch.float32, "cpu").numpy()  # (dst, src)
        rows, cols = self.shape
        dst = np.repeat(np.arange(self.dst.offset, self.dst.stop, dtype=np.int64), cols)
        src = np.tile(np.arange(self.src.offset, self.src.stop, dtype=np.int64), rows)
        return src, dst, w.reshape(-1)


    def write_coo(self, src: np.ndarray, dst: np.ndarray, w: np.ndarray) -> int:
        """Write this block's edges into the given output slices; returns the count."""
        s, d, x = self.coo()
        k = len(s)
        src[:k], dst[:k], w[:k] = s, d, x
        return k


class WeightBlock(Block):
    """A block read straight from model weights: ``|W| (* |W2|) * column scale``."""

    def __init__(self, src, dst, layer, role, weights: list[torch.Tensor], combine: str = "single",
                 col_scale: torch.Tensor | None = None):
        super().__init__(src, dst, layer, role)
        self.weights = weights  # each (dst.size, src.size), a view of the model's parameter
        self.combine = combine  # 'single' | 'sum' | 'max'
        self.col_scale = col_scale  # (src.size,) float64 or None

    def chunks(self, dtype=torch.float64, device=None, reuse: bool = False):
        # Edge weights are defined in float32 (the edge list's dtype), so every backend sees the
        # same numbers: |W|, the gate combination and the activation scale are applied in
        # float32, and only then widened to ``dtype`` for accumulation.
        rows, cols = self.shape
        w0 = self.weights[0]
        device = torch.device(device) if device is not None else w0.device
        step = max(1, _CHUNK_ELEMS // max(cols, 1))
        if device.type == "cuda":
            step = rows  # one kernel per block: no cache to stay in, launches cost more
        f32 = torch.float32
        scale = None if self.col_scale is None else self.col_scale.to(device=device, dtype=f32)
        n = min(step, rows) * cols
        simple = self.combine == "single" and scale is None and w0.dtype == f32
        buf = torch.empty(n, dtype=f32, device=device) if reuse and not (simple and dtype != f32) else None
        wide = torch.empty(n, dtype=dtype, device=device) if reuse and dtype != f32 else None
        with torch.no_grad():
            for r0 in range(0, rows, step):
                r1 = min(rows, r0 + step)
                if simple and wide is not None:
                    # |W| is exact in any wider dtype: convert while copying, one pass less.
                    c = wide[: (r1 - r0) * cols].view(r1 - r0, cols)
                    c.copy_(w0[r0:r1]).abs_()
                    yield r0, r1, c
                    continue
                if buf is not None:
                    c = buf[: (r1 - r0) * cols].view(r1 - r0, cols)
                    c.copy_(w0[r0:r1])
                else:
                    c = w0[r0:r1].to(device=device, dtype=f32, copy=True)
                c.abs_()
                if self.combine == "sum":
                    c += self.weights[1][r0:r1].to(device=device, dtype=f32).abs()
                elif self.combine == "max":
                    torch.maximum(c, self.weights[1][r0:r1].to(device=device, dtype=f32).abs(), out=c)
                if scale is not None:
                    c *= scale
                if dtype != f32:
                    if wide is not None:
                        c = wide[: (r1 - r0) * cols].view(r1 - r0, cols).copy_(c)
                    else:
                        c = c.to(dtype)
                yield r0, r1, c

    def write_coo(self, src, dst, w):
        # Row-major (dst, src) order written in place: no temporaries of edge-list size.
        rows, cols = self.shape
        k = rows * cols
        dst[:k].reshape(rows, cols)[:] = np.arange(self.dst.offset, self.dst.stop, dtype=np.int64)[:, None]
        src[:k].reshape(rows, cols)[:] = np.arange(self.src.offset, self.src.stop, dtype=np.int64)[None, :]
        out = torch.from_numpy(w[:k].reshape(rows, cols))
        for r0, r1, c in self.chunks(torch.float32, "cpu", reuse=True):
            out[r0:r1] = c
        return k


class DiagonalBlock(Block):
    """Residual edges ``H_l,i -> H_{l+1},i`` with weight ``value * scale_i``."""

    def __init__(self, src, dst, layer, value: float, col_scale: torch.Tensor | None = None):
        super().__init__(src, dst, layer, "residual")
        diag = torch.full((src.size,), float(value), dtype=torch.float32)  # float32, as the edge list
        if col_scale is not None:
            diag = diag * col_scale.to(torch.float32)
        self.diag = diag.to(torch.float64)

    @property
    def nnz(self) -> int:
        return self.src.size

    def chunks(self, dtype=torch.float64, device=None, reuse: bool = False):
        yield 0, self.shape[0], torch.diag(self.diag.to(device=device, dtype=dtype))

    def matvec(self, v):
        return self.diag.to(v) * v

    rmatvec = matvec

    def colsum(self, dtype=torch.float64, device=None):
        return self.diag.to(device=device, dtype=dtype).clone()

    rowsum = colsum

    def coo(self):
        idx = np.arange(self.src.size, dtype=np.int64)
        return idx + self.src.offset, idx + self.dst.offset, self.diag.numpy().astype(np.float32)


class SparseBlock(Block):
    """A block given by explicit edges (a graph read from Parquet, or sparsified)."""

    def __init__(self, src, dst, layer, role, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray):
        super().__init__(src, dst, layer, role)
        import scipy.sparse as sp

        self.csr = sp.csr_matrix((vals.astype(np.float64), (rows, cols)), shape=(dst.size, src.size))
        self.csr.sum_duplicates()
        self._torch: dict = {}

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

    def chunks(self, dtype=torch.float64, device=None, reuse: bool = False):
        yield 0, self.shape[0], torch.from_numpy(self.csr.toarray()).to(device=device, dtype=dtype)

    def matvec(self, v):
        return self._t(v.dtype, v.device) @ v

    def rmatvec(self, v):
        if v.device.type == "cpu":
            return torch.from_numpy(self.csr.T @ v.numpy()).to(v.dtype)
        return self._t(v.dtype, v.device).t() @ v

    def colsum(self, dtype=torch.float64, device=None):
        return torch.from_numpy(np.asarray(self.csr.sum(0)).ravel()).to(device=device, dtype=dtype)

    def rowsum(self, dtype=torch.float64, device=None):
        return torch.from_numpy(np.asarray(self.csr.sum(1)).ravel()).to(device=device, dtype=dtype)

    def coo(self):
        c = self.csr.tocoo()
        return (c.col.astype(np.int64) + self.src.offset, c.row.astype(np.int64) + self.dst.offset,
                c.data.astype(np.float32))


class MLPGraph:
    """The exported graph: partitions, lazily-read blocks, node table, edge list on demand.

    Attributes
    ----------
    partitions : list of Partition, in topological order.
    blocks : list of Block, sorted by source partition.
    meta : dict, the options and model facts written to ``meta.json``.
    """

    def __init__(self, partitions: list[Partition], blocks: list[Block], activation: np.ndarray, meta: dict,
                 edges: pd.DataFrame | None = None):
        self.partitions = partitions
        self.blocks = sorted(blocks, key=lambda b: (b.src.position, b.dst.position))
        self.activation = activation  # (n_nodes,) float64, NaN without stats
        self.meta = meta
        self._edges = edges
        self._nodes: pd.DataFrame | None = None
        self._strength: dict = {}

    def __repr__(self) -> str:
        return (f"MLPGraph(model={self.meta.get('model')!r}, mode={self.meta.get('mode')!r}, "
                f"n_nodes={self.n_nodes:,}, n_edges={self.n_edges:,})")

    @property
    def n_nodes(self) -> int:
        return self.partitions[-1].stop if self.partitions else 0

    @property
    def n_edges(self) -> int:
        return sum(b.nnz for b in self.blocks)

    @property
    def n_layers(self) -> int:
        return int(self.meta["n_layers"])

    @property
    def has_activation(self) -> bool:
        return bool(np.isfinite(self.activation).all()) and self.n_nodes > 0

    def intermediate_partitions(self) -> list[Partition]:
        return [p for p in self.partitions if p.kind == "intermediate"]

    # ------------------------------------------------------------------ tables
    @property
    def nodes(self) -> pd.DataFrame:
        """Node table: ``vertex, layer, kind, index, activation, partition``."""
        if self._nodes is None:
            parts = self.partitions
            sizes = [p.size for p in parts]
            self._nodes = pd.DataFrame({
                "vertex": np.arange(self.n_nodes, dtype=np.int64),
                "layer": np.repeat([p.layer for p in parts], sizes).astype(np.int32),
                "kind": pd.Categorical(np.repeat([p.kind for p in parts], sizes),
                                       categories=["hidden", "intermediate"]),
                "index": np.concatenate([np.arange(p.size, dtype=np.int64) for p in parts]),
                "activation": self.activation.astype(np.float64),
                "partition": np.repeat([p.position for p in parts], sizes).astype(np.int32),
            })
        return self._nodes

    @property
    def edges(self) -> pd.DataFrame:
        """Edge list ``src, dst, weight`` (int64, int64, float32), built on first access."""
        if self._edges is None:
            self._edges = self.edge_table()
        return self._edges

    def edge_table(self, layer: bool = False, progress: bool = False) -> pd.DataFrame:
        """Build the edge list; ``layer=True`` adds the layer of each edge's MLP."""
        if self._edges is not None and not layer:
            return self._edges
        n = self.n_edges
        src = np.empty(n, dtype=np.int64)
        dst = np.empty(n, dtype=np.int64)
        w = np.empty(n, dtype=np.float32)
        lay = np.empty(n, dtype=np.int16) if layer else None
        blocks = self.blocks
        if progress:
            from tqdm.auto import tqdm

            blocks = tqdm(blocks, desc="edge list", unit="block")
        i = 0
        for b in blocks:
            k = b.write_coo(src[i:], dst[i:], w[i:])
            if layer:
                lay[i:i + k] = b.layer
            i += k
        cols = {"src": src[:i], "dst": dst[:i], "weight": w[:i]}
        if layer:
            cols["layer"] = lay[:i]
        return pd.DataFrame(cols, copy=False)

    def to_cudf(self):
        """``(nodes, edges)`` as cuDF frames (needs the ``gpu`` extra and a GPU)."""
        from .centrality.backends import require_cudf

        cudf = require_cudf()
        nodes = self.nodes.assign(kind=self.nodes["kind"].astype(str))
        return cudf.from_pandas(nodes), cudf.from_pandas(self.edges)

    # ------------------------------------------------------------- strengths
    def strength(self, direction: str = "forward", dtype=torch.float64, device=None) -> torch.Tensor:
        """Out-strength of every node in the given direction (cached), (n_nodes,).

        ``forward``: sum of out-edge weights; ``reverse``: sum of in-edge weights.
        """
        key = (direction, dtype, str(device))
        if key not in self._strength:
            s = torch.zeros(self.n_nodes, dtype=dtype, device=device)
            for b in self.blocks:
                if direction == "forward":
                    s[b.src.offset:b.src.stop] += b.colsum(dtype, device)
                else:
                    s[b.dst.offset:b.dst.stop] += b.rowsum(dtype, device)
            self._strength[key] = s
        return self._strength[key]

    def is_dag_by_partition(self) -> bool:
        return all(b.src.position < b.dst.position for b in self.blocks)

    # ------------------------------------------------------------- checks
    def check_model(self, model) -> None:
        """Raise ValueError unless this graph was exported from a model of ``model``'s shape."""
        layers = mlp_layers(model)
        sizes = [m.intermediate_size for m in layers]
        d = layers[0].hidden_size if layers else 0
        want = (self.meta.get("n_layers"), self.meta.get("hidden_size"), self.meta.get("intermediate_sizes"))
        got = (len(layers), d, sizes)
        if tuple(want) != got:
            raise ValueError(
                "`graph` does not match `model`: the graph has (layers, hidden, intermediate sizes) = "
                f"{want[0]}, {want[1]}, {_short(want[2])} but the model has {got[0]}, {got[1]}, {_short(got[2])}"
            )

    # ------------------------------------------------------------- parquet
    def to_parquet(self, path: str | os.PathLike, overwrite: bool = False, progress: bool = False) -> Path:
        """Write ``nodes.parquet``, ``edges.parquet`` and ``meta.json`` to a directory, atomically.

        The files are written to a temporary sibling directory which is renamed into place at
        the end, so an interrupted write leaves nothing half-written.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"`path` {str(path)!r} exists; pass overwrite=True to replace it")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            nodes = self.nodes.assign(kind=self.nodes["kind"].astype(str))
            pq.write_table(pa.Table.from_pandas(nodes, preserve_index=False), tmp / "nodes.parquet")
            edges = self.edge_table(layer=True, progress=progress)
            pq.write_table(pa.Table.from_pandas(edges, preserve_index=False), tmp / "edges.parquet",
                           row_group_size=1 << 22)
            meta = dict(self.meta, format=_FORMAT, library_version=__version__, n_nodes=self.n_nodes,
                        n_edges=len(edges),
                        partitions=[[p.name, p.layer, p.kind, p.offset, p.size] for p in self.partitions],
                        files={f: (tmp / f).stat().st_size for f in ("nodes.parquet", "edges.parquet")})
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
            if path.exists():
                old = path.with_name(f".{path.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path


def _short(x):
    if isinstance(x, list) and len(x) > 4 and len(set(x)) == 1:
        return f"[{x[0]}]*{len(x)}"
    return x


# ---------------------------------------------------------------------- export
def _partitions(n_layers: int, d: int, sizes: list[int], mode: str) -> list[Partition]:
    parts: list[Partition] = []
    off = 0

    def add(name, layer, kind, size):
        nonlocal off
        parts.append(Partition(len(parts), name, layer, kind, off, size))
        off += size

    if mode == "chained":
        for l in range(n_layers):
            add(f"H{l}", l, "hidden", d)
            add(f"I{l}", l, "intermediate", sizes[l])
        add(f"H{n_layers}", n_layers, "hidden", d)
    else:
        for l in range(n_layers):
            add(f"H{l}_in", l, "hidden", d)
            add(f"I{l}", l, "intermediate", sizes[l])
            add(f"H{l}_out", l, "hidden", d)
    return parts


def _validate_keep(keep):
    if keep is None:
        return
    if isinstance(keep, bool) or not isinstance(keep, (int, float, np.integer, np.floating)):
        raise ValueError(f"`keep` must be None, an int >= 1 (top-k in-edges per node) or a float in (0, 1] "
                         f"(fraction of edges kept); got {keep!r}")
    if isinstance(keep, (int, np.integer)) and keep < 1:
        raise ValueError(f"`keep` must be an int >= 1 or a float in (0, 1]; got {keep!r}")
    if isinstance(keep, (float, np.floating)) and not 0 < keep <= 1:
        raise ValueError(f"`keep` must be an int >= 1 or a float in (0, 1]; got {keep!r}")


def _sparsify(blocks: list[Block], keep) -> list[Block]:
    """Top-k in-edges per node within each weight block, or one global weight quantile."""
    out: list[Block] = []
    threshold = None
    if isinstance(keep, (float, np.floating)):
        allw = np.concatenate([b.dense(torch.float32, "cpu").numpy().ravel() for b in blocks if isinstance(b, WeightBlock)])
        threshold = np.quantile(allw, 1.0 - float(keep), method="higher") if keep < 1 else -np.inf
        del allw
    for b in blocks:
        if not isinstance(b, WeightBlock):
            out.append(b)
            continue
        dense = b.dense(torch.float32, "cpu")
        if threshold is not None:
            rows, cols = np.nonzero((dense >= threshold).numpy())
        else:
            k = min(int(keep), dense.shape[1])
            cols = torch.topk(dense, k, dim=1).indices.numpy().ravel()
            rows = np.repeat(np.arange(dense.shape[0]), k)
        vals = dense.numpy()[rows, cols]
        out.append(SparseBlock(b.src, b.dst, b.layer, b.role, rows, cols, vals))
    return out


def export_graph(model, stats=None, mode: str = "chained", gate: str = "up", residual: float = 0.0,
                 weighting: str = "abs", keep: int | float | None = None) -> MLPGraph:
    """Export the MLP stack of ``model`` as one weighted multipartite DAG.

    Parameters
    ----------
    model : transformers model of a registered architecture (see ``llmrank_graph.architectures``).
    stats : ActivationStats, optional
        Calibration statistics; fill the node ``activation`` column and are needed for
        ``weighting="abs_x_input"`` and activation personalization.
    mode : {'chained', 'isolated'}
        One graph through all layers, or one disconnected 3-partite component per layer.
    gate : {'up', 'gate', 'sum', 'max'}
        Input edges of a gated MLP: ``|W_up|`` (the paper), ``|W_gate|``, their sum or max.
    residual : float
        Weight of the skip edges ``H_l,i -> H_{l+1},i`` (0: none).
    weighting : {'abs', 'abs_x_input', 'activation_share'}
        ``|W|``; ``|W|`` times the source node's calibration activation norm (Wanda-like, the
        signal an edge carries); or ``activation_share``: the source's activation norm split
        over its out-edges in the block in proportion to ``|W|``
        (``a_u * |W_vu| / sum_v' |W_v'u|``), so every node sends exactly its activation.
    keep : int or float, optional
        Sparsify: an int k keeps the k largest in-edges of every node in each weight block; a
        float q in (0, 1] keeps the edges at or above the global (1 - q) weight quantile.

    Returns
    -------
    MLPGraph

    Raises
    ------
    ValueError
        Unknown ``mode``/``gate``/``weighting``, bad ``residual``/``keep``, stats of another
        model, or ``abs_x_input`` without stats.

    Example
    -------
    >>> graph = export_graph(model, stats)                 # doctest: +SKIP
    >>> graph.n_nodes, graph.n_edges                       # doctest: +SKIP
    (63936, 53084160)
    """
    _choice("mode", mode, MODES)
    _choice("gate", gate, GATES)
    _choice("weighting", weighting, WEIGHTINGS)
    if isinstance(residual, bool) or not isinstance(residual, (int, float)) or not np.isfinite(residual) or residual < 0:
        raise ValueError(f"`residual` must be a finite float >= 0; got {residual!r}")
    _validate_keep(keep)
    if weighting in ACTIVATION_WEIGHTINGS and stats is None:
        raise ValueError(f"`weighting={weighting!r}` needs calibration `stats` (llmrank_graph.calibrate)")
    if stats is not None:
        stats.check_model(model)
    layers: list[MLPModules] = mlp_layers(model)
    L = len(layers)
    d = layers[0].hidden_size
    sizes = [m.intermediate_size for m in layers]
    for m in layers:
        for which in (["gate"] if m.gate is not None else []) + ["up", "down"]:
            if not torch.isfinite(m.weight(which)).all():
                raise ValueError(f"`model` has NaN or inf in the {which} weight of layer {m.layer}")
    parts = _partitions(L, d, sizes, mode)
    per_layer = 3 if mode == "isolated" else 2
    act = np.full(parts[-1].stop, np.nan)
    blocks: list[Block] = []
    for l, m in enumerate(layers):
        h_in = parts[per_layer * l]
        inter = parts[per_layer * l + 1]
        h_out = parts[per_layer * l + 2]
        a_in = a_mid = a_out = None
        if stats is not None:
            a_in = stats.input_norm(m.up_name).to(torch.float64)
            a_mid = stats.input_norm(m.down_name).to(torch.float64)
            a_out = stats.output_norm(m.down_name).to(torch.float64)
            act[h_in.offset:h_in.stop] = a_in.numpy()
            act[inter.offset:inter.stop] = a_mid.numpy()
            if mode == "isolated" or l == L - 1:
                act[h_out.offset:h_out.stop] = a_out.numpy()
        scale_in = a_in if weighting in ACTIVATION_WEIGHTINGS else None
        scale_mid = a_mid if weighting in ACTIVATION_WEIGHTINGS else None
        if m.gate is None or gate == "up":
            wb = WeightBlock(h_in, inter, l, "up", [m.weight("up").detach()], "single", scale_in)
        elif gate == "gate":
            wb = WeightBlock(h_in, inter, l, "gate", [m.weight("gate").detach()], "single", scale_in)
        else:
            wb = WeightBlock(h_in, inter, l, f"gate_{gate}_up", [m.weight("up").detach(), m.weight("gate").detach()],
                             gate, scale_in)
        down = WeightBlock(inter, h_out, l, "down", [m.weight("down").detach()], "single", scale_mid)
        if weighting == "activation_share":
            # Each source sends its activation norm, split over its out-edges in proportion to
            # |W|: scale column u by a_u / sum_v |W_vu| (one read of the block, at export).
            for b in (wb, down):
                col = b.col_scale
                b.col_scale = None
                total = b.colsum(torch.float64)
                b.col_scale = torch.where(total > 0, col / total, torch.zeros_like(col))
        blocks += [wb, down]
        if residual > 0:
            blocks.append(DiagonalBlock(h_in, h_out, l, residual, scale_in))
    if keep is not None:
        blocks = _sparsify(blocks, keep)
    cfg = getattr(model, "config", None)
    meta = {
        "model": getattr(cfg, "_name_or_path", "") or type(model).__name__,
        "model_type": getattr(cfg, "model_type", None),
        "mode": mode, "gate": gate, "residual": float(residual), "weighting": weighting,
        "keep": keep, "n_layers": L, "hidden_size": d, "intermediate_sizes": sizes,
        "has_stats": stats is not None,
    }
    g = MLPGraph(parts, blocks, act, meta)
    logger.debug("exported %r", g)
    return g


# ---------------------------------------------------------------------- read
def read_graph(path: str | os.PathLike) -> MLPGraph:
    """Read a graph written by :meth:`MLPGraph.to_parquet`.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    GraphFormatError
        A file is missing, truncated or inconsistent with ``meta.json``.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"`path` {str(path)!r} is not a graph directory (it does not exist)")
    meta_file = path / "meta.json"
    try:
        meta = json.loads(meta_file.read_text())
    except FileNotFoundError:
        raise GraphFormatError(f"`path` {str(path)!r} is not a complete graph directory: meta.json is missing") from None
    except json.JSONDecodeError as e:
        raise GraphFormatError(f"`path` {str(path)!r}: meta.json is damaged ({e})") from None
    if meta.get("format") != _FORMAT:
        raise GraphFormatError(f"`path` {str(path)!r}: meta.json is not an llmrank_graph graph (format={meta.get('format')!r})")
    for f, size in meta.get("files", {}).items():
        p = path / f
        if not p.is_file():
            raise GraphFormatError(f"`path` {str(path)!r} is partial: {f} is missing")
        if p.stat().st_size != size:
            raise GraphFormatError(f"`path` {str(path)!r} is damaged: {f} has {p.stat().st_size} bytes, "
                                   f"meta.json says {size}")
    try:
        nodes = pq.read_table(path / "nodes.parquet").to_pandas()
        edges = pq.read_table(path / "edges.parquet").to_pandas()
    except Exception as e:  # pyarrow raises several types on corrupt files
        raise GraphFormatError(f"`path` {str(path)!r} is damaged: {e}") from None
    for name, df, cols in (("nodes", nodes, NODE_COLUMNS), ("edges", edges, EDGE_COLUMNS)):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise GraphFormatError(f"`path` {str(path)!r}: {name}.parquet lacks columns {missing}")
    n, e = meta["n_nodes"], meta["n_edges"]
    if len(nodes) != n or len(edges) != e:
        raise GraphFormatError(f"`path` {str(path)!r}: expected {n} nodes and {e} edges (meta.json), "
                               f"found {len(nodes)} and {len(edges)}")
    if not np.array_equal(nodes["vertex"].to_numpy(), np.arange(n)):
        raise GraphFormatError(f"`path` {str(path)!r}: vertex ids are not contiguous from 0")
    src = edges["src"].to_numpy(np.int64)
    dst = edges["dst"].to_numpy(np.int64)
    if e and (src.min() < 0 or dst.min() < 0 or src.max() >= n or dst.max() >= n):
        raise GraphFormatError(f"`path` {str(path)!r}: edges name vertices outside 0..{n - 1}")
    w = edges["weight"].to_numpy(np.float32)
    if not np.isfinite(w).all() or (w < 0).any():
        raise GraphFormatError(f"`path` {str(path)!r}: edge weights must be finite and non-negative")
    parts = [Partition(i, nm, int(ly), k, int(o), int(s)) for i, (nm, ly, k, o, s) in enumerate(meta["partitions"])]
    offsets = np.array([p.offset for p in parts])
    ps, pd_ = np.searchsorted(offsets, src, side="right") - 1, np.searchsorted(offsets, dst, side="right") - 1
    key = ps * len(parts) + pd_
    order = np.argsort(key, kind="stable")
    key_sorted = key[order]
    bounds = np.flatnonzero(np.diff(key_sorted)) + 1
    blocks: list[Block] = []
    for grp in np.split(order, bounds) if len(order) else []:
        a, b = parts[ps[grp[0]]], parts[pd_[grp[0]]]
        layer = a.layer  # H_l -> I_l, I_l -> H_{l+1} and H_l -> H_{l+1} all belong to MLP l
        role = "up" if b.kind == "intermediate" else ("down" if a.kind == "intermediate" else "residual")
        blocks.append(SparseBlock(a, b, layer, role, dst[grp] - b.offset, src[grp] - a.offset, w[grp]))
    g = MLPGraph(parts, blocks, nodes["activation"].to_numpy(np.float64), meta,
                 edges=edges[list(EDGE_COLUMNS)])
    return g
