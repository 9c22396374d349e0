"""The whole MLP stack of a decoder LLM as one weighted multipartite DAG.

Partitions in topological order (``mode="chained"``)::

    H_0 -> I_0 -> H_1 -> I_1 -> ... -> I_{L-1} -> H_L

``H_l`` are the d residual-stream features entering the MLP of layer l, ``I_l`` its m
intermediate neurons. Edge ``H_l,i -> I_l,j`` weighs ``|W_up[j, i]|`` and ``I_l,j -> H_{l+1},i``
weighs ``|W_down[i, j]|``. In ``mode="isolated"`` each MLP is its own ``H_l_in -> I_l -> H_l_out``
component. See docs/design.md section 1.

The graph is stored as *blocks*: one non-negative matrix (dst partition x src partition)
per pair of connected partitions. Blocks exported from a model read the model's weights
lazily, so the matrix-free sweep never builds an edge list; the edge list (``graph.edges``)
is built only when someone asks for it.

This module holds :class:`MLPGraph` and the entry points that make one: :func:`export_graph`
(from a model, the work in :mod:`llmrank_graph.graph.export`), :func:`read_graph` (from a
graph directory, :mod:`llmrank_graph.graph.storage`) and :meth:`MLPGraph.from_edgelist`.
Each checks its arguments once, and the modules below trust what they get.

>>> import pandas as pd
>>> nodes = pd.DataFrame({"vertex": [0, 1, 2, 3], "layer": [0, 0, 0, 1],
...                       "kind": ["hidden", "hidden", "intermediate", "hidden"]})
>>> edges = pd.DataFrame({"src": [0, 1, 2], "dst": [2, 2, 3], "weight": [0.5, 1.5, 2.0]})
>>> g = MLPGraph.from_edgelist(nodes, edges)
>>> g.n_nodes, g.n_edges, [p.name for p in g.partitions]
(4, 3, ['H0', 'I0', 'H1'])
>>> g.strength("forward").tolist()
[0.5, 1.5, 2.0, 0.0]
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..base.optional import require_cudf, require_dask_cudf
from ..base.params import Boolean, Check, InstanceOf, OneOf, Optional, validated
from ..errors import GraphFormatError, InvalidArgumentError
from ..models.architectures import MODEL, check_finite_weights, mlp_layers
from ..models.attention import attention_layers, head_counts
from .blocks import Block, Partition
from .export import (
    DEFAULT_EXPORT,
    EXPORT_FORMATS,
    GATES,
    MODES,
    WEIGHTINGS,
    ExportOptions,
    default_export,
    export_options,
    export_parts,
)
from .heads import check_finite_attention
from .meta import EDGE_COLUMNS, EDGES_FILE, KINDS, MLP_KINDS, check_fields, short_list
from .parts import GraphParts, parts_from_tables
from .scores import check_score_name, check_score_values, score_info
from .storage import READ_PARAMETERS, WRITE_PARAMETERS, read_parts, with_progress, write_graph
from .viewer import VIEW_EDGE_LIMIT, VIEW_TOP_NODES
from .viewer import to_networkx as _to_networkx

logger = logging.getLogger(__name__)

__all__ = ["MLPGraph", "Partition", "Block", "ExportOptions", "DEFAULT_EXPORT", "export_graph", "read_graph",
           "GraphFormatError", "MODES", "GATES", "WEIGHTINGS", "KINDS", "EXPORT_FORMATS", "export_options"]

_TABLE = InstanceOf(pd.DataFrame, "a pandas DataFrame")


def _score_name(arg: str, name) -> str:
    return check_score_name(name)


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

    def __init__(self, partitions: list[Partition], blocks: list[Block], activation: np.ndarray, meta: dict, *,
                 scores: dict[str, np.ndarray] | None = None, score_info: dict[str, dict] | None = None):
        self.partitions = list(partitions)
        self.blocks = sorted(blocks, key=lambda b: (b.src.position, b.dst.position))
        self.activation = np.asarray(activation, dtype=np.float64)
        self.meta = meta
        #: Stored score columns (name -> one value per node), appended to :attr:`nodes`.
        self.scores: dict[str, np.ndarray] = dict(scores or {})
        #: What produced each stored score (algorithm, parameters, dtype), as in ``meta.json``.
        self.score_info: dict[str, dict] = {k: dict((score_info or {}).get(k, {})) for k in self.scores}
        #: The graph directory this graph was read from (None for a graph built in memory).
        self.source: Path | None = None
        self._cache: dict = {}
        self._cache_version = None

    def __repr__(self) -> str:
        return (f"MLPGraph(model={self.meta.get('model')!r}, mode={self.meta.get('mode')!r}, "
                f"n_nodes={self.n_nodes:,}, n_edges={self.n_edges:,})")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_parts(cls, parts: GraphParts) -> MLPGraph:
        """The graph of ``parts``, as :func:`export_graph`, :func:`read_graph` and :meth:`from_edgelist` make them."""
        g = cls(parts.partitions, parts.blocks, parts.activation, parts.meta, scores=parts.scores,
                score_info=parts.score_info)
        g.source = parts.source
        return g

    @classmethod
    @validated({"nodes": _TABLE, "edges": _TABLE, "meta": Optional(InstanceOf(dict, "a dict"))})
    def from_edgelist(cls, nodes: pd.DataFrame, edges: pd.DataFrame, meta: dict | None = None) -> MLPGraph:
        """A graph built elsewhere, from a node table and an edge list.

        Parameters
        ----------
        nodes : pandas.DataFrame
            One row per vertex, ids contiguous from 0 in topological order, with columns
            ``vertex, layer, kind ('hidden' | 'intermediate')`` and optionally ``partition``
            (consecutive runs of equal ``(layer, kind)`` form a partition otherwise) and
            ``activation``.
        edges : pandas.DataFrame
            Columns ``src, dst, weight`` (finite, non-negative), each ``(src, dst)`` pair at
            most once (sum duplicates first: ``edges.groupby(["src", "dst"], as_index=False).sum()``).
            Edges may join any two partitions; the exact sweep needs them to go from earlier
            to later ones. These are the checks :func:`read_graph` makes on every block it
            reads (:func:`llmrank_graph.graph.parts.check_edges`).
        meta : dict, optional
            Extra facts to record (``model``, ``mode``, ...). The keys that ``meta.json`` gives a
            meaning to must have its types (:data:`llmrank_graph.graph.meta.META_FIELDS`).

        Returns
        -------
        MLPGraph

        Raises
        ------
        ValueError
            Missing columns, ids that are not contiguous, edges naming unknown vertices, a
            ``(src, dst)`` pair given twice, weights that are negative or not finite, or a
            ``meta`` key of the wrong type.

        Example
        -------
        >>> g = MLPGraph.from_edgelist(pd.DataFrame({"vertex": [0, 1, 2], "layer": [0, 0, 1],
        ...                                          "kind": ["hidden", "intermediate", "hidden"]}),
        ...                            pd.DataFrame({"src": [0, 1], "dst": [1, 2], "weight": [0.5, 0.01]}))
        >>> h = MLPGraph.from_edgelist(g.nodes, g.edges[g.edges.weight > 0.1], meta=g.meta)
        >>> h.n_edges, h.is_dag_by_partition()
        (1, True)
        """
        meta = dict(meta or {})
        check_fields(meta, "", None, source="`meta`")  # what a graph directory's meta.json may hold
        return cls.from_parts(parts_from_tables(nodes, edges, meta, "`nodes`/`edges`", InvalidArgumentError))

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

    def head_partitions(self) -> list[Partition]:
        """The partitions of attention heads (``A{l}``), empty for a graph without them."""
        return [p for p in self.partitions if p.kind == "head"]

    @property
    def has_heads(self) -> bool:
        """True for a graph with attention-head nodes (``export_graph(..., attention=True)``)."""
        return any(p.kind == "head" for p in self.partitions)

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
        """Node table: ``vertex, layer, kind, index, activation, partition``, then the stored scores."""
        table = self.cached("nodes", self._node_table)
        return table.assign(**self.scores) if self.scores else table

    @validated({"name": Check(_score_name, "a score column name"), "overwrite": Boolean()})
    def add_scores(self, name: str, values, info: dict | None = None, *, overwrite: bool = False) -> None:
        """Store a score column with the graph (in memory; :meth:`to_parquet` writes it).

        To add a column to a graph directory on disk, use
        :func:`llmrank_graph.graph.storage.add_scores` (or ``llmrank-graph rank --add-to-graph``).

        Parameters
        ----------
        name : str
            Column name (see :func:`llmrank_graph.graph.storage.score_column_name`).
        values : array (n_nodes,) or CentralityResult
        info : dict, optional
            What produced it (algorithm, parameters), recorded in ``meta.json``.
        overwrite : bool
            Replace a column of the same name.

        Raises
        ------
        InvalidArgumentError
            A bad name or length, or a column already stored without ``overwrite``.
        """
        if name in self.scores and not overwrite:
            raise InvalidArgumentError(f"`name` {name!r} is already stored with this graph; pass overwrite=True")
        arr = check_score_values(name, values, self.n_nodes)
        entry = score_info(values)
        entry.update(dict(info or {}))
        entry["dtype"] = str(arr.dtype)
        self.scores[name] = arr
        self.score_info[name] = entry

    def _node_table(self) -> pd.DataFrame:
        parts = self.partitions
        sizes = [p.size for p in parts]
        return pd.DataFrame({
            "vertex": np.arange(self.n_nodes, dtype=np.int64),
            "layer": np.repeat([p.layer for p in parts], sizes).astype(np.int32),
            "kind": pd.Categorical(np.repeat([p.kind for p in parts], sizes),
                                   categories=list(KINDS if self.has_heads else MLP_KINDS)),
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
        for b in with_progress(self.blocks, progress, "edge list"):
            k = b.write_coo(src[i:], dst[i:], w[i:])
            if layer:
                lay[i:i + k] = b.layer
            i += k
        cols = {"src": src[:i], "dst": dst[:i], "weight": w[:i]}
        if layer:
            cols["layer"] = lay[:i]
        return pd.DataFrame(cols, copy=False)

    @validated({"partitioned": Boolean()})
    def to_cudf(self, partitioned: bool = False):
        """``(nodes, edges)`` as cuDF frames (needs the ``gpu`` extra and a GPU).

        Parameters
        ----------
        partitioned : bool
            Give the edges as a ``dask_cudf`` DataFrame read straight from the graph
            directory's ``edges.parquet`` with ``dask_cudf.read_parquet`` (one partition per
            row group or more), for graphs bigger than one GPU; the node table is a cuDF frame.
            Needs a graph read whole with :func:`read_graph` (not a ``layers=`` subset, whose
            vertex ids are renumbered). Otherwise the edge list is built in host memory and
            copied to the GPU.

        Returns
        -------
        (cudf.DataFrame, cudf.DataFrame or dask_cudf.DataFrame)

        Raises
        ------
        BackendUnavailableError
            cuDF (or dask_cudf) is not installed, or no GPU is visible.
        InvalidArgumentError
            ``partitioned=True`` for a graph that was not read from a directory, or a subset.

        Example
        -------
        >>> nodes, edges = read_graph("llama-7b-graph").to_cudf(partitioned=True)   # doctest: +SKIP
        >>> G = cugraph.Graph(directed=True)                                        # doctest: +SKIP
        >>> G.from_dask_cudf_edgelist(edges, "src", "dst", "weight", renumber=False)  # doctest: +SKIP
        """
        if partitioned and (self.source is None or "layers" in self.meta):
            raise InvalidArgumentError("`partitioned=True` reads edges.parquet of the directory the graph was read "
                                       "from, whole: read it with read_graph(path) without `layers`, or write it with "
                                       "to_parquet first")
        cudf = require_cudf()
        nodes = self.nodes.assign(kind=self.nodes["kind"].astype(str))
        if not partitioned:
            return cudf.from_pandas(nodes), cudf.from_pandas(self.edges)
        dask_cudf = require_dask_cudf()
        edges = dask_cudf.read_parquet(str(self.source / EDGES_FILE), columns=list(EDGE_COLUMNS))
        return cudf.from_pandas(nodes), edges

    # ------------------------------------------------------------------ viewers
    def to_networkx(self, *, top_nodes: int | None = VIEW_TOP_NODES, top_edges: int | str | None = "auto",
                    min_quantile: float | None = None, min_weight: float | None = None, score=None,
                    max_edges: int = VIEW_EDGE_LIMIT, force: bool = False):
        """A thresholded subgraph as a ``networkx.DiGraph``, for viewers (Gephi, Cytoscape).

        The top nodes of each partition, then the heaviest edges between them; see
        :func:`llmrank_graph.graph.viewer.to_networkx` for the parameters. Parquet
        (:meth:`to_parquet`) stays the full-fidelity format; write GraphML or GEXF with
        :func:`llmrank_graph.graph.viewer.write_viewer` or ``llmrank-graph export --format``.

        Example
        -------
        >>> g = MLPGraph.from_edgelist(pd.DataFrame({"vertex": [0, 1, 2], "layer": [0, 0, 1],
        ...                                          "kind": ["hidden", "intermediate", "hidden"]}),
        ...                            pd.DataFrame({"src": [0, 1], "dst": [1, 2], "weight": [0.5, 2.0]}))
        >>> G = g.to_networkx(top_nodes=1, top_edges=1)
        >>> G.number_of_nodes(), G.number_of_edges()
        (3, 2)
        """
        return _to_networkx(self, top_nodes=top_nodes, top_edges=top_edges, min_quantile=min_quantile,
                            min_weight=min_weight, score=score, max_edges=max_edges, force=force)

    # ------------------------------------------------------------------ strengths
    @validated({"direction": OneOf("forward", "reverse")})
    def strength(self, direction: str = "forward", dtype=torch.float64, device=None) -> torch.Tensor:
        """Out-strength of every node in the given direction (cached), (n_nodes,).

        ``forward``: sum of out-edge weights; ``reverse``: sum of in-edge weights (the
        out-strength once every edge is reversed).
        """
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

    @validated({"direction": OneOf("in", "out")})
    def degree(self, direction: str = "out") -> np.ndarray:
        """Number of stored in- or out-edges of every node (the block layout), float64 (n_nodes,)."""
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
        if self.has_heads and tuple(want) == got and self.meta.get("num_heads") != [n for n, _ in head_counts(model)]:
            raise InvalidArgumentError(f"`graph` does not match `model`: the graph has {self.meta.get('num_heads')} "
                                       f"heads per layer but the model has {[n for n, _ in head_counts(model)]}")
        if tuple(want) != got:
            raise InvalidArgumentError(
                "`graph` does not match `model`: the graph has (layers, hidden, intermediate sizes) = "
                f"{want[0]}, {want[1]}, {short_list(want[2])} but the model has {got[0]}, {got[1]}, "
                f"{short_list(got[2])}"
            )

    # ------------------------------------------------------------------ parquet
    @validated(WRITE_PARAMETERS)
    def to_parquet(self, path: str | os.PathLike, overwrite: bool = False, progress: bool = False,
                   force: bool = False) -> Path:
        """Write ``nodes.parquet``, ``edges.parquet`` and ``meta.json`` to a directory, atomically.

        Edges are written block by block (each block in its own row groups, with its
        ``layer``), so memory stays about one block; ``meta.json`` records the block table that
        lets :func:`read_graph` read the blocks back one at a time (layout:
        :mod:`llmrank_graph.graph.storage`). Stored score columns go into the node table. The files are
        written to a temporary sibling directory that is renamed into place at the end
        (:func:`llmrank_graph.base.files.atomic_directory`): an interrupted write leaves nothing behind,
        and a concurrent writer never replaces it.

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
        # Checked above: write_graph's own check (for its direct callers) is skipped.
        return write_graph.__wrapped__(self, path, overwrite=overwrite, progress=progress, force=force)


# ---------------------------------------------------------------------- entry points
@validated({"model": MODEL, "options": InstanceOf((ExportOptions, type(None)), "an ExportOptions or None")})
def export_graph(model, stats=None, mode: str | None = None, gate: str | None = None, residual: float | None = None,
                 weighting: str | None = None, keep: int | float | None = None, *,
                 options: ExportOptions | None = None, attention: bool | None = None) -> MLPGraph:
    """Export the MLP stack of ``model`` (and with ``attention=True`` its heads) as one weighted multipartite DAG.

    Parameters
    ----------
    model : transformers model of a registered architecture (see ``llmrank_graph.models.architectures``).
    stats : ActivationStats, optional
        Calibration statistics; fill the node ``activation`` column and are needed for the
        activation weightings and activation personalization.
    mode : {'chained', 'isolated'}, default 'chained'
        One graph through all layers, or one disconnected 3-partite component per layer.
    gate : {'up', 'gate', 'sum', 'max'}, default 'up'
        Input edges of a gated MLP: ``|W_up|`` (the paper), ``|W_gate|``, their sum or max.
    residual : float, default 0
        Weight of the skip edges ``H_l,i -> H_{l+1},i`` (0: none).
    weighting : {'abs', 'abs_x_input', 'activation_share'}, optional
        ``|W|``; ``|W|`` times the source node's calibration activation norm (Wanda-like, the
        signal an edge carries); or ``activation_share``: the source's activation norm split
        over its out-edges in the block in proportion to ``|W|``
        (``a_u * |W_vu| / sum_v' |W_v'u|``), so every node sends exactly its activation.
        Default: ``'activation_share'`` with ``stats`` (the ``pagerank`` scorer's graph), else
        ``'abs'``.
    keep : int or float, optional
        Sparsify: an int k keeps the k largest in-edges of every node in each weight block; a
        float q in (0, 1] keeps the edges at or above the global (1 - q) weight quantile.
    attention : bool, default False
        Add one node per attention head (kind ``'head'``): each layer becomes
        ``R{l} -> A{l} -> H{l} -> I{l} -> R{l+1}``, with value and output edges from the heads'
        OV path (:mod:`llmrank_graph.graph.heads`; docs/design.md section 1). Chained mode
        only; with ``stats`` they must hold the attention's statistics
        (``calibrate(..., attention=True)``).
    options : ExportOptions, optional
        All of the above in one value (the keywords given explicitly override it). Default:
        :func:`~llmrank_graph.graph.export.default_export` (:data:`~llmrank_graph.graph.export.CALIBRATED_EXPORT` with
        ``stats``, :data:`DEFAULT_EXPORT` without).

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
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16,
    ...                                      num_hidden_layers=2, num_attention_heads=2))
    >>> graph = export_graph(model)
    >>> graph.n_nodes, graph.n_edges
    (56, 512)
    >>> [p.name for p in graph.partitions]
    ['H0', 'I0', 'H1', 'I1', 'H2']
    >>> import torch, llmrank_graph as lg     # with calibration statistics: the pagerank scorer's edges
    >>> stats = lg.calibrate(model, input_ids=torch.randint(0, 32, (2, 8)))
    >>> export_graph(model, stats).meta["weighting"], export_graph(model, stats, weighting="abs").meta["weighting"]
    ('activation_share', 'abs')
    """
    given = {k: v for k, v in dict(mode=mode, gate=gate, residual=residual, weighting=weighting, keep=keep,
                                   attention=attention).items() if v is not None}
    opts = options or default_export(stats is not None)
    if given:
        opts = opts.replace(**given)  # the one check of the graph options
    if opts.needs_stats and stats is None:
        raise InvalidArgumentError(f"`weighting={opts.weighting!r}` needs calibration `stats` "
                                   "(llmrank_graph.calibrate)")
    if stats is not None:
        stats.check_model(model)
    check_finite_weights(mlp_layers(model))  # the one scan of this call
    if opts.attention:
        check_finite_attention(attention_layers(model))
    g = MLPGraph.from_parts(export_parts(model, stats, opts))
    logger.debug("exported %r", g)
    return g


@validated(READ_PARAMETERS)
def read_graph(path: str | os.PathLike, layers=None, *, lazy: bool | None = None) -> MLPGraph:
    """Read a graph written by :meth:`MLPGraph.to_parquet`.

    Only ``meta.json``, the node table and the Parquet footers are read up front; the edges of
    each block are read when an operation needs them (``lazy``), so PageRank, the analyses of
    :mod:`llmrank_graph.analysis.core` and a new export keep about one block in memory.

    Parameters
    ----------
    path : str or path-like
        A graph directory.
    layers : iterable of int, optional
        Read only the blocks of these MLP layers (and the partitions they join). Vertex ids
        are renumbered from 0; ``layer``, ``kind`` and ``index`` still name the neurons.
    lazy : bool, optional
        True: read each block from disk when it is used (nothing kept in memory). False: read
        every block now. Default: lazy when ``edges.parquet`` is larger than
        :data:`llmrank_graph.graph.storage.LAZY_READ_BYTES` (1 GiB).

    Returns
    -------
    MLPGraph
        With the stored score columns (:attr:`MLPGraph.scores`) loaded.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    GraphFormatError
        A file is missing, truncated or inconsistent with ``meta.json``.
    InvalidArgumentError
        ``layers`` names a layer the graph does not have.

    Example
    -------
    >>> import tempfile
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16,
    ...                                      num_hidden_layers=3, num_attention_heads=2))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     g = read_graph(export_graph(model).to_parquet(f"{tmp}/g"), layers=[0, 1])
    ...     print(g.n_layers, g.n_nodes, g.resident)
    2 56 True
    """
    # The arguments are checked above: read_parts' own check (for callers of read_parts) is skipped.
    g = MLPGraph.from_parts(read_parts.__wrapped__(path, layers, lazy=lazy))
    logger.debug("read %r from %s (%s)", g, path, "in memory" if g.resident else "blocks on demand")
    return g
