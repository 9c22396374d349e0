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

import json
import logging
import os
from collections.abc import Callable, Hashable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ._checks import check_bool, check_choice, check_keep, check_residual, fail_type
from ._io import atomic_directory
from ._optional import require_cudf
from ._version import __version__
from .architectures import MLPModules, check_finite_weights, mlp_layers
from .blocks import Block, DiagonalBlock, Partition, SparseBlock, WeightBlock
from .errors import FileFormatError, InvalidArgumentError

logger = logging.getLogger(__name__)

__all__ = ["MLPGraph", "Partition", "Block", "ExportOptions", "DEFAULT_EXPORT", "export_graph", "read_graph",
           "GraphFormatError", "MODES", "GATES", "WEIGHTINGS", "KINDS"]

MODES = ("chained", "isolated")
GATES = ("up", "gate", "sum", "max")
WEIGHTINGS = ("abs", "abs_x_input", "activation_share")
#: Weightings that need calibration statistics.
ACTIVATION_WEIGHTINGS = ("abs_x_input", "activation_share")
KINDS = ("hidden", "intermediate")
NODE_COLUMNS = ("vertex", "layer", "kind", "index", "activation", "partition")
EDGE_COLUMNS = ("src", "dst", "weight")
_FORMAT = "llmrank_graph.MLPGraph"


class GraphFormatError(FileFormatError):
    """A graph directory is damaged, partial, or not an llmrank_graph graph."""


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


class MLPGraph:
    """The whole-MLP graph: partitions, blocks (the one representation of the edges), node table.

    Everything derived from the blocks (the edge list, strengths, the matrices of the
    edge-list backends) is cached on the graph with :meth:`cached`, and the cache is dropped
    as soon as the weights behind any block change (an in-place edit of the model, such as
    ``apply_mask(model, mask, how="zero")``).

    Attributes
    ----------
    partitions : list of Partition, in topological order.
    blocks : list of Block, sorted by source partition.
    activation : numpy.ndarray (n_nodes,), float64
        Calibration activation norm of every node; NaN without calibration statistics.
    meta : dict, the options and model facts written to ``meta.json``.
    """

    def __init__(self, partitions: list[Partition], blocks: list[Block], activation: np.ndarray, meta: dict):
        self.partitions = list(partitions)
        self.blocks = sorted(blocks, key=lambda b: (b.src.position, b.dst.position))
        self.activation = np.asarray(activation, dtype=np.float64)
        self.meta = meta
        self._cache: dict = {}
        self._cache_version = None

    def __repr__(self) -> str:
        return (f"MLPGraph(model={self.meta.get('model')!r}, mode={self.meta.get('mode')!r}, "
                f"n_nodes={self.n_nodes:,}, n_edges={self.n_edges:,})")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_edgelist(cls, nodes: pd.DataFrame, edges: pd.DataFrame, meta: dict | None = None) -> "MLPGraph":
        """A graph built elsewhere, from a node table and an edge list.

        Parameters
        ----------
        nodes : pandas.DataFrame
            One row per vertex, ids contiguous from 0 in topological order, with columns
            ``vertex, layer, kind ('hidden' | 'intermediate')`` and optionally ``partition``
            (consecutive runs of equal ``(layer, kind)`` form a partition otherwise) and
            ``activation``.
        edges : pandas.DataFrame
            Columns ``src, dst, weight`` (finite, non-negative). Edges may join any two
            partitions; the exact sweep needs them to go from earlier to later ones.
        meta : dict, optional
            Extra facts to record (``model``, ``mode``, ...).

        Returns
        -------
        MLPGraph

        Raises
        ------
        ValueError
            Missing columns, ids that are not contiguous, edges naming unknown vertices, or
            weights that are negative or not finite.

        Example
        -------
        >>> g = export_graph(model)                                             # doctest: +SKIP
        >>> e = g.edges[g.edges.weight > 0.01]                                  # doctest: +SKIP
        >>> h = MLPGraph.from_edgelist(g.nodes, e, meta=g.meta)                  # doctest: +SKIP
        """
        return _from_tables(nodes, edges, dict(meta or {}), "`nodes`/`edges`", InvalidArgumentError)

    # ------------------------------------------------------------------ sizes
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

    @property
    def resident(self) -> bool:
        """True when every block's weights are in memory (False for graphs streamed from disk)."""
        return all(b.resident for b in self.blocks)

    def intermediate_partitions(self) -> list[Partition]:
        return [p for p in self.partitions if p.kind == "intermediate"]

    def is_dag_by_partition(self) -> bool:
        """True when every edge goes from an earlier partition to a later one."""
        return all(b.src.position < b.dst.position for b in self.blocks)

    # ------------------------------------------------------------------ cache
    def weights_version(self) -> tuple:
        """A value that changes whenever the numbers behind any block change."""
        return tuple(b.version() for b in self.blocks)

    def cached(self, key: Hashable, build: Callable[[], Any]) -> Any:
        """``build()`` computed once per graph and key, recomputed after the weights change.

        This is where everything derived from the blocks is kept (strengths, the edge list,
        the CSR matrices of the edge-list backends); no other object stores state on a graph.
        """
        version = self.weights_version()
        if version != self._cache_version:
            if self._cache:
                logger.debug("weights of %r changed: dropping %d cached values", self, len(self._cache))
            self._cache = {}
            self._cache_version = version
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def clear_cache(self) -> None:
        """Drop every cached value (they are rebuilt on demand)."""
        self._cache = {}

    # ------------------------------------------------------------------ tables
    @property
    def nodes(self) -> pd.DataFrame:
        """Node table: ``vertex, layer, kind, index, activation, partition``."""
        return self.cached("nodes", self._node_table)

    def _node_table(self) -> pd.DataFrame:
        parts = self.partitions
        sizes = [p.size for p in parts]
        return pd.DataFrame({
            "vertex": np.arange(self.n_nodes, dtype=np.int64),
            "layer": np.repeat([p.layer for p in parts], sizes).astype(np.int32),
            "kind": pd.Categorical(np.repeat([p.kind for p in parts], sizes), categories=list(KINDS)),
            "index": np.concatenate([np.arange(p.size, dtype=np.int64) for p in parts]) if parts else
            np.zeros(0, dtype=np.int64),
            "activation": self.activation.astype(np.float64),
            "partition": np.repeat([p.position for p in parts], sizes).astype(np.int32),
        })

    @property
    def edges(self) -> pd.DataFrame:
        """Edge list ``src, dst, weight`` (int64, int64, float32), built from the blocks on first access."""
        return self.cached("edges", self.edge_table)

    def edge_table(self, layer: bool = False, progress: bool = False) -> pd.DataFrame:
        """Build the edge list from the blocks; ``layer=True`` adds the layer of each edge's MLP."""
        n = self.n_edges
        src = np.empty(n, dtype=np.int64)
        dst = np.empty(n, dtype=np.int64)
        w = np.empty(n, dtype=np.float32)
        lay = np.empty(n, dtype=np.int16) if layer else None
        i = 0
        for b in _progress(self.blocks, progress, "edge list"):
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
        cudf = require_cudf()
        nodes = self.nodes.assign(kind=self.nodes["kind"].astype(str))
        return cudf.from_pandas(nodes), cudf.from_pandas(self.edges)

    # ------------------------------------------------------------------ strengths
    def strength(self, direction: str = "forward", dtype=torch.float64, device=None) -> torch.Tensor:
        """Out-strength of every node in the given direction (cached), (n_nodes,).

        ``forward``: sum of out-edge weights; ``reverse``: sum of in-edge weights (the
        out-strength once every edge is reversed).
        """
        check_choice("direction", direction, ("forward", "reverse"))

        def build():
            s = torch.zeros(self.n_nodes, dtype=torch.float64)
            for b in self.blocks:
                with b.loaded() as blk:
                    if direction == "forward":
                        s[b.src.offset:b.src.stop] += blk.out_strength().cpu()
                    else:
                        s[b.dst.offset:b.dst.stop] += blk.in_strength().cpu()
            return s

        s = self.cached(("strength", direction), build)
        return s.to(device=device, dtype=dtype)

    def degree(self, direction: str = "out") -> np.ndarray:
        """Number of stored in- or out-edges of every node (the block layout), float64 (n_nodes,)."""
        check_choice("direction", direction, ("in", "out"))
        d = np.zeros(self.n_nodes)
        for b in self.blocks:
            if direction == "out":
                d[b.src.offset:b.src.stop] += b.out_degree()
            else:
                d[b.dst.offset:b.dst.stop] += b.in_degree()
        return d

    # ------------------------------------------------------------------ checks
    def check_model(self, model) -> None:
        """Raise ValueError unless this graph was exported from a model of ``model``'s shape."""
        layers = mlp_layers(model)
        sizes = [m.intermediate_size for m in layers]
        d = layers[0].hidden_size if layers else 0
        want = (self.meta.get("n_layers"), self.meta.get("hidden_size"), self.meta.get("intermediate_sizes"))
        got = (len(layers), d, sizes)
        if tuple(want) != got:
            raise InvalidArgumentError(
                "`graph` does not match `model`: the graph has (layers, hidden, intermediate sizes) = "
                f"{want[0]}, {want[1]}, {_short(want[2])} but the model has {got[0]}, {got[1]}, {_short(got[2])}"
            )

    # ------------------------------------------------------------------ parquet
    def to_parquet(self, path: str | os.PathLike, overwrite: bool = False, progress: bool = False,
                   force: bool = False) -> Path:
        """Write ``nodes.parquet``, ``edges.parquet`` and ``meta.json`` to a directory, atomically.

        Edges are written block by block (one row group per block, with its ``layer``), so
        memory stays about one block. The files are written to a temporary sibling directory
        that is renamed into place at the end (:func:`llmrank_graph._io.atomic_directory`): an
        interrupted write leaves nothing behind, and a concurrent writer never replaces it.

        Parameters
        ----------
        path : str or path-like
        overwrite : bool
            Replace an existing graph directory. A file is never replaced.
        progress : bool
            Show a progress bar over the blocks.
        force : bool
            With ``overwrite``, also replace a directory that this library did not write.

        Raises
        ------
        FileExistsError
            ``path`` exists and ``overwrite`` is False, or it is a file.
        ValueError
            ``overwrite`` would replace a directory that is not a graph, without ``force``.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        check_bool("overwrite", overwrite)
        check_bool("force", force)

        def only_graphs(existing: Path) -> None:
            if not force and _read_format(existing) != _FORMAT:
                raise InvalidArgumentError(f"`path` {str(existing)!r} exists and is not a graph written by "
                                           "llmrank_graph (no meta.json saying so); refusing to replace it "
                                           "without force=True")

        with atomic_directory(path, overwrite=overwrite, arg="path", check_existing=only_graphs) as tmp:
            nodes = self.nodes.assign(kind=self.nodes["kind"].astype(str))
            pq.write_table(pa.Table.from_pandas(nodes, preserve_index=False), tmp / "nodes.parquet")
            schema = pa.schema([("src", pa.int64()), ("dst", pa.int64()), ("weight", pa.float32()),
                                ("layer", pa.int16())])
            n_edges = 0
            with pq.ParquetWriter(tmp / "edges.parquet", schema) as writer:
                for b in _progress(self.blocks, progress, "edges.parquet"):
                    s, d, w = b.coo()
                    n_edges += len(s)
                    writer.write_table(pa.table({"src": s, "dst": d, "weight": w,
                                                 "layer": np.full(len(s), b.layer, dtype=np.int16)}, schema=schema))
            meta = dict(self.meta, format=_FORMAT, library_version=__version__, n_nodes=self.n_nodes,
                        n_edges=n_edges,
                        partitions=[[p.name, p.layer, p.kind, p.offset, p.size] for p in self.partitions],
                        files={f: (tmp / f).stat().st_size for f in ("nodes.parquet", "edges.parquet")})
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        return Path(path)


def _read_format(directory: Path) -> str | None:
    """The ``format`` recorded in a directory's meta.json, None when there is none."""
    try:
        meta = json.loads((directory / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta.get("format") if isinstance(meta, dict) else None


def _progress(items, progress: bool, desc: str):
    if not progress:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="block")


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


def _sparsify(blocks: list[Block], keep) -> list[Block]:
    """Top-k in-edges per node within each weight block, or one global weight quantile.

    Residual (diagonal) blocks are kept whole: they are not weights of the model.
    """
    out: list[Block] = []
    weight_blocks = [b for b in blocks if b.role != "residual"]
    threshold = None
    if isinstance(keep, float):
        allw = np.concatenate([b.dense(torch.float32, "cpu").numpy().ravel() for b in weight_blocks])
        threshold = np.quantile(allw, 1.0 - keep, method="higher") if keep < 1 else -np.inf
        del allw
    for b in blocks:
        if b.role == "residual":
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


def export_graph(model, stats=None, mode: str | None = None, gate: str | None = None, residual: float | None = None,
                 weighting: str | None = None, keep: int | float | None = None, *,
                 options: ExportOptions | None = None) -> MLPGraph:
    """Export the MLP stack of ``model`` as one weighted multipartite DAG.

    Parameters
    ----------
    model : transformers model of a registered architecture (see ``llmrank_graph.architectures``).
    stats : ActivationStats, optional
        Calibration statistics; fill the node ``activation`` column and are needed for the
        activation weightings and activation personalization.
    mode : {'chained', 'isolated'}, default 'chained'
        One graph through all layers, or one disconnected 3-partite component per layer.
    gate : {'up', 'gate', 'sum', 'max'}, default 'up'
        Input edges of a gated MLP: ``|W_up|`` (the paper), ``|W_gate|``, their sum or max.
    residual : float, default 0
        Weight of the skip edges ``H_l,i -> H_{l+1},i`` (0: none).
    weighting : {'abs', 'abs_x_input', 'activation_share'}, default 'abs'
        ``|W|``; ``|W|`` times the source node's calibration activation norm (Wanda-like, the
        signal an edge carries); or ``activation_share``: the source's activation norm split
        over its out-edges in the block in proportion to ``|W|``
        (``a_u * |W_vu| / sum_v' |W_v'u|``), so every node sends exactly its activation.
    keep : int or float, optional
        Sparsify: an int k keeps the k largest in-edges of every node in each weight block; a
        float q in (0, 1] keeps the edges at or above the global (1 - q) weight quantile.
    options : ExportOptions, optional
        All of the above in one value (the keywords given explicitly override it). Defaults:
        :data:`DEFAULT_EXPORT`.

    Returns
    -------
    MLPGraph

    Raises
    ------
    ValueError
        Unknown ``mode``/``gate``/``weighting``, bad ``residual``/``keep``, stats of another
        model, or an activation weighting without stats.

    Example
    -------
    >>> graph = export_graph(model, stats)                 # doctest: +SKIP
    >>> graph.n_nodes, graph.n_edges                       # doctest: +SKIP
    (63936, 53084160)
    """
    if options is not None and not isinstance(options, ExportOptions):
        raise fail_type("options", "an ExportOptions or None", options)
    given = {k: v for k, v in dict(mode=mode, gate=gate, residual=residual, weighting=weighting, keep=keep).items()
             if v is not None}
    opts = (options or DEFAULT_EXPORT).replace(**given) if given else (options or DEFAULT_EXPORT)
    if opts.needs_stats and stats is None:
        raise InvalidArgumentError(f"`weighting={opts.weighting!r}` needs calibration `stats` (llmrank_graph.calibrate)")
    if stats is not None:
        stats.check_model(model)
    layers: list[MLPModules] = mlp_layers(model)
    L = len(layers)
    d = layers[0].hidden_size
    sizes = [m.intermediate_size for m in layers]
    check_finite_weights(layers)
    parts = _partitions(L, d, sizes, opts.mode)
    per_layer = 3 if opts.mode == "isolated" else 2
    act = np.full(parts[-1].stop, np.nan)
    blocks: list[Block] = []
    weighted = opts.weighting in ACTIVATION_WEIGHTINGS
    for l, m in enumerate(layers):
        h_in = parts[per_layer * l]
        inter = parts[per_layer * l + 1]
        h_out = parts[per_layer * l + 2]
        a_in = a_mid = None
        if stats is not None:
            a_in = stats.input_norm(m.up_name).to(torch.float64)
            a_mid = stats.input_norm(m.down_name).to(torch.float64)
            act[h_in.offset:h_in.stop] = a_in.numpy()
            act[inter.offset:inter.stop] = a_mid.numpy()
            if opts.mode == "isolated" or l == L - 1:
                act[h_out.offset:h_out.stop] = stats.output_norm(m.down_name).to(torch.float64).numpy()
        scale_in = a_in if weighted else None
        scale_mid = a_mid if weighted else None
        if m.gate is None or opts.gate == "up":
            up = WeightBlock(h_in, inter, l, "up", [m.weight("up").detach()], "single", scale_in)
        elif opts.gate == "gate":
            up = WeightBlock(h_in, inter, l, "gate", [m.weight("gate").detach()], "single", scale_in)
        else:
            up = WeightBlock(h_in, inter, l, f"gate_{opts.gate}_up", [m.weight("up").detach(), m.weight("gate").detach()],
                             opts.gate, scale_in)
        down = WeightBlock(inter, h_out, l, "down", [m.weight("down").detach()], "single", scale_mid)
        if opts.weighting == "activation_share":
            # Each source sends its activation norm, split over its out-edges in proportion to
            # |W|: scale column u by a_u / sum_v |W_vu| (one read of the block, at export).
            for b in (up, down):
                col = b.col_scale
                b.col_scale = None
                total = b.out_strength(torch.float64)
                b.col_scale = torch.where(total > 0, col / total, torch.zeros_like(col))
        blocks += [up, down]
        if opts.residual > 0:
            blocks.append(DiagonalBlock(h_in, h_out, l, opts.residual, scale_in))
    if opts.keep is not None:
        blocks = _sparsify(blocks, opts.keep)
    cfg = getattr(model, "config", None)
    meta = {
        "model": getattr(cfg, "_name_or_path", "") or type(model).__name__,
        "model_type": getattr(cfg, "model_type", None),
        **opts.as_dict(), "n_layers": L, "hidden_size": d, "intermediate_sizes": sizes,
        "has_stats": stats is not None,
    }
    g = MLPGraph(parts, blocks, act, meta)
    logger.debug("exported %r", g)
    return g


def export_options(graph: MLPGraph) -> ExportOptions | None:
    """The :class:`ExportOptions` recorded in a graph's ``meta``, or None for a graph built elsewhere."""
    try:
        return ExportOptions(**{f.name: graph.meta[f.name] for f in fields(ExportOptions)})
    except (KeyError, ValueError, TypeError):
        return None


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
    where = f"`path` {str(path)!r}"
    if not path.is_dir():
        raise FileNotFoundError(f"{where} is not a graph directory (it does not exist)")
    meta_file = path / "meta.json"
    try:
        meta = json.loads(meta_file.read_text())
    except FileNotFoundError:
        raise GraphFormatError(f"{where} is not a complete graph directory: meta.json is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GraphFormatError(f"{where}: meta.json is damaged ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        fmt = meta.get("format") if isinstance(meta, dict) else None
        raise GraphFormatError(f"{where}: meta.json is not an llmrank_graph graph (format={fmt!r})")
    files = meta.get("files", {})
    for f, size in (files.items() if isinstance(files, dict) else []):
        p = path / f
        if not p.is_file():
            raise GraphFormatError(f"{where} is partial: {f} is missing")
        if p.stat().st_size != size:
            raise GraphFormatError(f"{where} is damaged: {f} has {p.stat().st_size} bytes, meta.json says {size}")
    try:
        nodes = pq.read_table(path / "nodes.parquet").to_pandas()
        edges = pq.read_table(path / "edges.parquet", columns=list(EDGE_COLUMNS)).to_pandas()
    except Exception as e:  # pyarrow raises several types on corrupt files
        raise GraphFormatError(f"{where} is damaged: {e}") from None
    try:
        n, e = int(meta["n_nodes"]), int(meta["n_edges"])
        parts = [Partition(i, str(nm), int(ly), str(k), int(o), int(s))
                 for i, (nm, ly, k, o, s) in enumerate(meta["partitions"])]
    except (KeyError, TypeError, ValueError) as exc:
        raise GraphFormatError(f"{where}: meta.json lacks or garbles a required key ({exc})") from None
    if len(nodes) != n or len(edges) != e:
        raise GraphFormatError(f"{where}: expected {n} nodes and {e} edges (meta.json), "
                               f"found {len(nodes)} and {len(edges)}")
    return _from_tables(nodes, edges, meta, where, GraphFormatError, parts)


def _partitions_from_nodes(nodes: pd.DataFrame, where: str, error) -> list[Partition]:
    """Partitions as runs of equal ``partition`` ids (or of equal ``(layer, kind)``)."""
    if "partition" in nodes.columns:
        key = nodes["partition"].to_numpy(np.int64)
    else:
        lk = nodes["layer"].astype(np.int64).astype(str) + "/" + nodes["kind"].astype(str)
        key = pd.factorize(lk)[0]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, dtype=np.int64)
    stops = np.r_[starts[1:], len(key)]
    parts = []
    for pos, (a, b) in enumerate(zip(starts, stops)):
        layer, kind = int(nodes["layer"].iat[a]), str(nodes["kind"].iat[a])
        if kind not in KINDS:
            raise error(f"{where}: node kind must be one of {', '.join(map(repr, KINDS))}; got {kind!r}")
        name = f"{'H' if kind == 'hidden' else 'I'}{layer}"
        parts.append(Partition(pos, name, layer, kind, int(a), int(b - a)))
    if len({p.name for p in parts}) != len(parts):  # isolated-style graphs repeat H_l: name them by position
        parts = [Partition(p.position, f"{p.name}_{p.position}", p.layer, p.kind, p.offset, p.size) for p in parts]
    return parts


def _from_tables(nodes: pd.DataFrame, edges: pd.DataFrame, meta: dict, where: str, error,
                 parts: list[Partition] | None = None) -> MLPGraph:
    """Blocks from a node table and an edge list (checked); the one path of read_graph and from_edgelist."""
    for name, df, cols in (("nodes", nodes, ("vertex", "layer", "kind")), ("edges", edges, EDGE_COLUMNS)):
        if not isinstance(df, pd.DataFrame):
            raise fail_type(name, "a pandas DataFrame", df)
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise error(f"{where}: the {name} table lacks columns {missing}")
    n = len(nodes)
    if not np.array_equal(nodes["vertex"].to_numpy(), np.arange(n)):
        raise error(f"{where}: vertex ids are not contiguous from 0")
    if parts is None:
        parts = _partitions_from_nodes(nodes, where, error)
    if (parts[-1].stop if parts else 0) != n or any(p.offset != (parts[i - 1].stop if i else 0)
                                                     for i, p in enumerate(parts)):
        raise error(f"{where}: partitions are not contiguous or do not cover the {n} nodes")
    src = edges["src"].to_numpy(np.int64)
    dst = edges["dst"].to_numpy(np.int64)
    if len(src) and (src.min() < 0 or dst.min() < 0 or src.max() >= n or dst.max() >= n):
        raise error(f"{where}: edges name vertices outside 0..{n - 1}")
    w = edges["weight"].to_numpy(np.float32)
    if not np.isfinite(w).all() or (w < 0).any():
        raise error(f"{where}: edge weights must be finite and non-negative")
    offsets = np.array([p.offset for p in parts])
    ps = np.searchsorted(offsets, src, side="right") - 1
    pd_ = np.searchsorted(offsets, dst, side="right") - 1
    key = ps * len(parts) + pd_
    order = np.argsort(key, kind="stable")
    bounds = np.flatnonzero(np.diff(key[order])) + 1
    blocks: list[Block] = []
    for grp in np.split(order, bounds) if len(order) else []:
        a, b = parts[ps[grp[0]]], parts[pd_[grp[0]]]
        layer = a.layer  # H_l -> I_l, I_l -> H_{l+1} and H_l -> H_{l+1} all belong to MLP l
        role = "up" if b.kind == "intermediate" else ("down" if a.kind == "intermediate" else "residual")
        blocks.append(SparseBlock(a, b, layer, role, dst[grp] - b.offset, src[grp] - a.offset, w[grp]))
    if "activation" in nodes.columns:
        act = nodes["activation"].to_numpy(np.float64)
    else:
        act = np.full(n, np.nan)
    meta = dict(meta)
    meta.setdefault("n_layers", len({p.layer for p in parts if p.kind == "intermediate"}))
    return MLPGraph(parts, blocks, act, meta)
