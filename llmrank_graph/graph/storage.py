"""The graph directory on disk: Parquet written block by block, read lazily, with stored scores.

A graph directory (written by :meth:`MLPGraph.to_parquet <llmrank_graph.MLPGraph.to_parquet>`)
holds three files:

``edges.parquet``
    Columns ``src`` (int64), ``dst`` (int64), ``weight`` (float32), ``layer`` (int16). The
    edges of one block (one weight matrix: ``H_l -> I_l``, ``I_l -> H_{l+1}`` or a residual
    block) fill consecutive row groups of at most :data:`ROW_GROUP_ROWS` rows, and no row
    group holds edges of two blocks. A dense block is written in row-major ``(dst, src)``
    order, so that reading it back needs only its ``weight`` column.
the node table (``meta.json``'s ``nodes_file``; ``nodes.parquet`` when written)
    ``vertex, layer, kind, index, activation, partition``, then one typed column per stored
    score (:func:`add_scores`).
``meta.json``
    The model and export options, the partitions, the *block table* (per block: source and
    destination partition, layer, role, edge count, layout and row-group range), the stored
    score columns (name -> algorithm, parameters, dtype), and the size of every file.

Writing keeps about one block in memory; so does reading, because :func:`read_parts` reads
only the file footers and the node table up front. Each block is read from its row groups
when an operation needs it (:class:`ParquetBlock`, like the safetensors blocks of
:mod:`llmrank_graph.graph.streaming`), and ``layers=`` reads a subset of the layers.

Stored scores are added after the fact without rewriting the edges: the new node table is
written under a new name (``nodes.1.parquet``, ``nodes.2.parquet``, ...), then ``meta.json``
is replaced atomically to point at it (the one step that publishes the change), then the old
table is removed. A reader sees the old graph or the new one, never a mix; concurrent
writers are serialised by a lock file in the directory.

Graph directories written before the block table existed (no ``blocks`` key in
``meta.json``) are still read, whole and into memory.

This module sits below :mod:`llmrank_graph.graph.mlpgraph` and does not import it: it reads a directory
into :class:`GraphParts` (partitions, blocks, node activations, meta, stored scores), from which
:func:`llmrank_graph.read_graph` builds the :class:`~llmrank_graph.MLPGraph`, and it writes any
graph that has the MLPGraph attributes it reads. The node-table schema (:data:`NODE_COLUMNS`,
:data:`KINDS`), the edge-list columns and the checks of ``meta.json`` live here for that reason;
:mod:`llmrank_graph.graph.mlpgraph` re-exports them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..base.checks import check_bool, fail, fail_type
from ..base.files import atomic_directory, atomic_file, write_json_atomic
from .._version import __version__
from .blocks import Block, Partition, SparseBlock, WeightBlock
from ..base.result import CentralityResult
from ..errors import GraphFormatError, InvalidArgumentError, MissingInputError

logger = logging.getLogger(__name__)

__all__ = ["ParquetBlock", "GraphParts", "write_graph", "read_parts", "add_scores", "stored_scores",
           "score_column_name", "column_name", "ROW_GROUP_ROWS", "LAZY_READ_BYTES", "FORMAT_VERSION", "EDGES_FILE",
           "NODES_FILE", "KINDS", "NODE_COLUMNS", "EDGE_COLUMNS"]

#: Most rows in one row group of ``edges.parquet`` (a block spans several row groups).
ROW_GROUP_ROWS = 1 << 20
#: ``read_graph(lazy=None)`` reads blocks on demand when ``edges.parquet`` is larger than this.
LAZY_READ_BYTES = 1 << 30
#: Version of the directory layout written here (1: no block table).
FORMAT_VERSION = 2
EDGES_FILE = "edges.parquet"
NODES_FILE = "nodes.parquet"
#: Node kinds: the residual-stream features and the MLP's intermediate neurons.
KINDS = ("hidden", "intermediate")
#: Columns of the node table (stored score columns follow them).
NODE_COLUMNS = ("vertex", "layer", "kind", "index", "activation", "partition")
#: Columns of an edge list.
EDGE_COLUMNS = ("src", "dst", "weight")
#: ``meta.json``'s ``format``: what marks a directory as a graph written by llmrank_graph.
_FORMAT = "llmrank_graph.MLPGraph"
#: Keys every graph directory's meta.json has (written by :func:`write_graph`).
_REQUIRED_META = ("format", "n_nodes", "n_edges", "n_layers", "partitions")
#: Block layouts recorded in the block table.
LAYOUTS = ("dense", "coo")
_LOCK_FILE = ".llmrank_graph.lock"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]*$")
# Keys of meta.json that describe the directory, not the graph; not kept on a graph read back.
_LAYOUT_KEYS = ("files", "blocks", "nodes_file", "format_version", "row_group_rows")


@dataclass(frozen=True)
class GraphParts:
    """The pieces of an :class:`~llmrank_graph.MLPGraph`, as read from a graph directory or an edge list.

    :func:`llmrank_graph.read_graph` and :meth:`~llmrank_graph.MLPGraph.from_edgelist` build the
    graph from them (``MLPGraph(partitions, blocks, activation, meta, scores=..., score_info=...)``
    with ``source`` set).

    Attributes
    ----------
    partitions : list of Partition, in topological order.
    blocks : list of Block
    activation : numpy.ndarray (n_nodes,), float64; NaN without calibration statistics.
    meta : dict
    scores : dict of str -> numpy.ndarray (n_nodes,), the stored score columns.
    score_info : dict of str -> dict, what produced each stored score.
    source : Path or None, the graph directory read.
    """

    partitions: list[Partition]
    blocks: list[Block]
    activation: np.ndarray
    meta: dict
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    score_info: dict[str, dict] = field(default_factory=dict)
    source: Path | None = None


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


# ---------------------------------------------------------------------------- naming
def score_column_name(result) -> str:
    """The name under which a :class:`~llmrank_graph.CentralityResult` is stored in a graph.

    The method, then the parameters that change it: ``pagerank_reverse_a0.85`` (uniform
    teleport), ``pagerank_reverse_a0.85_activation``, ``katz_forward_a0.1``,
    ``hits_authorities``, ``eigenvector_undirected``, ``strength_in``, ``degree_total``.

    Example
    -------
    >>> from llmrank_graph.centrality import CentralityResult
    >>> r = CentralityResult(np.ones(3) / 3, True, 0, "sweep", "pagerank",
    ...                      {"direction": "reverse", "alpha": 0.85, "personalization": "uniform"})
    >>> score_column_name(r)
    'pagerank_reverse_a0.85'
    """
    return column_name(result.algorithm, result.params)


def column_name(algorithm: str, params: Mapping[str, Any]) -> str:
    """:func:`score_column_name` from an algorithm name and its parameters."""
    algo, p = algorithm, dict(params)
    if algo == "pagerank":
        name = f"pagerank_{p.get('direction', 'forward')}_a{float(p.get('alpha', 0.85)):g}"
        teleport = p.get("personalization", "uniform")
        return name if teleport == "uniform" else f"{name}_{teleport}"
    if algo == "katz":
        return f"katz_{p.get('direction', 'forward')}_a{float(p.get('alpha', 0.1)):g}"
    if algo in ("hubs", "authorities"):
        return f"hits_{algo}"
    if algo == "eigenvector":
        return "eigenvector_directed" if p.get("directed") else "eigenvector_undirected"
    for kind in ("strength", "degree"):
        if algo.endswith(f"_{kind}"):
            return f"{kind}_{algo[: -len(kind) - 1]}"
    return algo


def _check_name(name, base_columns) -> str:
    if not isinstance(name, str):
        raise fail_type("name", "a str", name)
    if not _NAME.match(name) or name in base_columns:
        raise fail("name", "a column name of letters, digits, '_', '.' and '-' starting with a letter, other than "
                           f"the node table's own columns ({', '.join(base_columns)})", name)
    return name


def _check_values(name: str, values, n: int) -> np.ndarray:
    v = values.scores if isinstance(values, CentralityResult) else values
    if torch.is_tensor(v):
        v = v.detach().cpu().numpy()
    try:
        arr = np.asarray(v)
    except (TypeError, ValueError):
        raise fail_type(f"scores[{name!r}]", f"an array of {n} numbers", values) from None
    if arr.dtype.kind not in "fiub" or arr.ndim != 1:
        raise fail_type(f"scores[{name!r}]", f"a 1-D array of {n} numbers", values)
    if arr.shape[0] != n:
        raise InvalidArgumentError(f"`scores[{name!r}]` must have one value per node: length {n}; got length "
                                   f"{arr.shape[0]}")
    if arr.dtype.kind == "f" and np.isinf(arr).any():
        raise InvalidArgumentError(f"`scores[{name!r}]` must not hold inf (NaN marks nodes without a score)")
    return arr


# ---------------------------------------------------------------------------- write
def write_graph(graph, path: str | os.PathLike, *, overwrite: bool = False, progress: bool = False,
                force: bool = False) -> Path:
    """Write ``graph`` to a graph directory, block by block and atomically.

    See :meth:`llmrank_graph.MLPGraph.to_parquet`, which calls this.
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

    schema = pa.schema([("src", pa.int64()), ("dst", pa.int64()), ("weight", pa.float32()), ("layer", pa.int16())])
    with atomic_directory(path, overwrite=overwrite, arg="path", check_existing=only_graphs) as tmp:
        nodes = graph.nodes
        nodes = nodes.assign(kind=nodes["kind"].astype(str))
        pq.write_table(pa.Table.from_pandas(nodes, preserve_index=False), tmp / NODES_FILE)
        table: list[list] = []
        n_edges = 0
        rg = 0
        with pq.ParquetWriter(tmp / EDGES_FILE, schema) as writer:
            for b in _progress(graph.blocks, progress, EDGES_FILE):
                with b.loaded() as blk:
                    s, d, w = blk.coo()
                k = len(s)
                rows, cols = b.shape
                dense = k == rows * cols and k > 0 and _row_major(s, d, b)
                if k:
                    writer.write_table(pa.table({"src": s, "dst": d, "weight": w,
                                                 "layer": np.full(k, b.layer, dtype=np.int16)}, schema=schema),
                                       row_group_size=ROW_GROUP_ROWS)
                n_rg = -(-k // ROW_GROUP_ROWS)
                table.append([b.src.position, b.dst.position, int(b.layer), b.role, int(k),
                              "dense" if dense else "coo", rg, rg + n_rg])
                rg += n_rg
                n_edges += k
                del s, d, w
        got = pq.ParquetFile(tmp / EDGES_FILE).metadata.num_row_groups
        if got != rg:  # internal: pyarrow split the blocks differently from what we recorded
            raise RuntimeError(f"edges.parquet has {got} row groups, expected {rg}")
        meta = {k: v for k, v in graph.meta.items() if k not in _LAYOUT_KEYS}
        meta.update(format=_FORMAT, format_version=FORMAT_VERSION, library_version=__version__,
                    n_nodes=graph.n_nodes, n_edges=n_edges, row_group_rows=ROW_GROUP_ROWS,
                    partitions=[[p.name, p.layer, p.kind, p.offset, p.size] for p in graph.partitions],
                    blocks=table, nodes_file=NODES_FILE,
                    scores={k: dict(v) for k, v in graph.score_info.items()},
                    files={f: (tmp / f).stat().st_size for f in (NODES_FILE, EDGES_FILE)})
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    return Path(path)


def _row_major(src: np.ndarray, dst: np.ndarray, b: Block) -> bool:
    """True when a full block's edges are in row-major (dst, src) order, as dense blocks write them."""
    rows, cols = b.shape
    return bool((dst.reshape(rows, cols)[:, 0] == np.arange(b.dst.offset, b.dst.stop)).all()
                and (dst.reshape(rows, cols) == dst.reshape(rows, cols)[:, :1]).all()
                and (src.reshape(rows, cols) == np.arange(b.src.offset, b.src.stop)[None, :]).all())


# ---------------------------------------------------------------------------- blocks read on demand
class ParquetBlock(Block):
    """A block read from its row groups of ``edges.parquet`` when an operation needs it.

    Nothing is kept in memory: every protocol call reads the row groups again, and
    :meth:`loaded` reads them once for several calls (as the sweep does). A dense block reads
    only its ``weight`` column and becomes a :class:`~llmrank_graph.graph.blocks.WeightBlock` over
    that (dst, src) matrix; a sparse one reads ``src, dst, weight`` and becomes a
    :class:`~llmrank_graph.graph.blocks.SparseBlock`.

    Parameters
    ----------
    src, dst : Partition
        The partitions in the graph that holds the block (renumbered for a layer subset).
    layer : int
    role : str
    file : Path
        The ``edges.parquet`` file.
    row_groups : (int, int)
        Its first row group and one past its last.
    nnz : int
        Number of edges.
    layout : {'dense', 'coo'}
    file_offsets : (int, int)
        Offsets of the source and destination partitions in the file's vertex ids.
    """

    resident = False

    def __init__(self, src: Partition, dst: Partition, layer: int, role: str, file: Path, row_groups: tuple[int, int],
                 nnz: int, layout: str, file_offsets: tuple[int, int]):
        super().__init__(src, dst, layer, role)
        self.file = Path(file)
        self.row_groups = (int(row_groups[0]), int(row_groups[1]))
        self._nnz = int(nnz)
        self.layout = layout
        self.file_offsets = (int(file_offsets[0]), int(file_offsets[1]))

    @property
    def nnz(self) -> int:
        return self._nnz

    def read(self) -> Block:
        """The block with its edges in memory (a WeightBlock when dense, else a SparseBlock)."""
        import pyarrow.parquet as pq

        rows, cols = self.shape
        groups = list(range(*self.row_groups))
        columns = ["weight"] if self.layout == "dense" else ["src", "dst", "weight"]
        try:
            pf = pq.ParquetFile(self.file)
            t = pf.read_row_groups(groups, columns=columns) if groups else None
        except Exception as e:  # pyarrow raises several types on damaged files
            raise GraphFormatError(f"{self.file}: cannot read the edges of layer {self.layer} "
                                   f"({self.src.name} -> {self.dst.name}): {e}") from None
        n = 0 if t is None else t.num_rows
        if n != self._nnz:
            raise GraphFormatError(f"{self.file}: the block {self.src.name} -> {self.dst.name} has {n} edges, "
                                   f"meta.json says {self._nnz}")
        w = np.zeros(0, np.float32) if t is None else t.column("weight").to_numpy()
        w = np.require(w.astype(np.float32, copy=False), requirements="W")  # torch wants writable memory
        if self.layout == "dense":
            return WeightBlock(self.src, self.dst, self.layer, self.role, [torch.from_numpy(w.reshape(rows, cols))])
        s = t.column("src").to_numpy() - self.file_offsets[0]
        d = t.column("dst").to_numpy() - self.file_offsets[1]
        if n and (s.min() < 0 or s.max() >= cols or d.min() < 0 or d.max() >= rows):
            raise GraphFormatError(f"{self.file}: the block {self.src.name} -> {self.dst.name} has edges outside "
                                   "its partitions")
        return SparseBlock(self.src, self.dst, self.layer, self.role, d, s, w)

    @contextlib.contextmanager
    def loaded(self, device=None) -> Iterator[Block]:
        blk = self.read()
        with blk.loaded(device) as b:
            yield b

    def version(self):
        st = self.file.stat()
        return (str(self.file), st.st_mtime_ns, st.st_size, self.row_groups)

    def out_strength(self, dtype=torch.float64, device=None):
        with self.loaded() as b:
            return b.out_strength(dtype, device)

    def in_strength(self, dtype=torch.float64, device=None):
        with self.loaded() as b:
            return b.in_strength(dtype, device)

    def matmul(self, v):
        with self.loaded(v.device) as b:
            return b.matmul(v)

    def rmatmul(self, v):
        with self.loaded(v.device) as b:
            return b.rmatmul(v)

    def chunks(self, dtype=torch.float64, device=None):
        with self.loaded() as b:
            yield from b.chunks(dtype, device)

    def coo(self):
        with self.loaded() as b:
            return b.coo()

    def out_degree(self):
        if self.layout == "dense":
            return np.full(self.src.size, float(self.dst.size))
        with self.loaded() as b:
            return b.out_degree()

    def in_degree(self):
        if self.layout == "dense":
            return np.full(self.dst.size, float(self.src.size))
        with self.loaded() as b:
            return b.in_degree()


# ---------------------------------------------------------------------------- read
def _read_meta(path: Path, where: str) -> dict:
    meta_file = path / "meta.json"
    try:
        meta = json.loads(meta_file.read_text())
    except FileNotFoundError:
        raise GraphFormatError(f"{where} is not a complete graph directory: meta.json is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GraphFormatError(f"{where}: meta.json is damaged ({e})") from None
    if not isinstance(meta, dict):
        raise GraphFormatError(f"{where}: meta.json must hold a JSON object; got {type(meta).__name__}")
    if meta.get("format") != _FORMAT:
        raise GraphFormatError(f"{where}: meta.json is not an llmrank_graph graph (format={meta.get('format')!r})")
    return meta


def _check_files(path: Path, meta: dict, where: str) -> None:
    files = meta.get("files", {})
    for f, size in (files.items() if isinstance(files, dict) else []):
        p = path / f
        if not p.is_file():
            raise GraphFormatError(f"{where} is partial: {f} is missing")
        if p.stat().st_size != size:
            raise GraphFormatError(f"{where} is damaged: {f} has {p.stat().st_size} bytes, meta.json says {size}")


def _check_meta(meta, where: str, activation: np.ndarray | None = None) -> None:
    """Check a graph directory's whole ``meta.json`` (and the activations it vouches for).

    ``meta`` must be an object with the :data:`_REQUIRED_META` keys; its partitions must be
    ``[name, layer, kind, offset, size]`` entries, contiguous from 0, summing to ``n_nodes``;
    ``n_layers`` must be the number of intermediate partitions; with ``has_stats`` true the
    ``activation`` column (when given) must be finite. Raises :class:`GraphFormatError`
    naming ``where`` and the key.
    """
    def bad(key: str, what: str, got) -> GraphFormatError:
        text = repr(got)
        return GraphFormatError(f"{where}: meta.json key '{key}' must be {what}; got "
                                f"{text if len(text) <= 80 else text[:77] + '...'}")

    if not isinstance(meta, dict):
        raise GraphFormatError(f"{where}: meta.json must hold a JSON object; got {type(meta).__name__}")
    missing = [k for k in _REQUIRED_META if k not in meta]
    if missing:
        raise GraphFormatError(f"{where}: meta.json lacks the required key(s) {', '.join(map(repr, missing))}")
    for key in ("n_nodes", "n_edges", "n_layers"):
        value = meta[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise bad(key, "an int >= 0", value)
    parts = meta["partitions"]
    if not isinstance(parts, list) or not parts:
        raise bad("partitions", "a non-empty list of [name, layer, kind, offset, size]", parts)
    offset = 0
    layers = []
    for i, p in enumerate(parts):
        ok = (isinstance(p, list) and len(p) == 5 and isinstance(p[0], str) and p[2] in KINDS
              and all(isinstance(v, int) and not isinstance(v, bool) for v in p[1:2] + p[3:]))
        if not ok or p[1] < 0 or p[4] < 1:
            raise bad(f"partitions[{i}]", "[name, layer >= 0, 'hidden' or 'intermediate', offset, size >= 1]", p)
        if p[3] != offset:
            raise bad(f"partitions[{i}]", f"contiguous with the previous ones (offset {offset})", p)
        offset += p[4]
        if p[2] == "intermediate":
            layers.append(p[1])
    if offset != meta["n_nodes"]:
        raise GraphFormatError(f"{where}: meta.json partitions cover {offset} nodes but 'n_nodes' is "
                               f"{meta['n_nodes']}")
    if len(set(layers)) != len(layers) or len(layers) != meta["n_layers"]:
        raise GraphFormatError(f"{where}: meta.json 'n_layers' is {meta['n_layers']} but the partitions hold "
                               f"{len(layers)} intermediate partitions (layers {_short(layers)})")
    if meta.get("has_stats") is True and activation is not None:
        act = np.asarray(activation, dtype=np.float64)
        if not np.isfinite(act).all():
            raise GraphFormatError(f"{where}: meta.json says the graph has calibration statistics ('has_stats'), "
                                   f"but {int((~np.isfinite(act)).sum())} node activations are NaN or inf")


def _read_nodes(path: Path, where: str, attempts: int = 2) -> tuple[dict, pd.DataFrame]:
    """meta.json and the node table it names (read again if :func:`add_scores` swapped them in between)."""
    import pyarrow.parquet as pq

    for attempt in range(attempts):
        meta = _read_meta(path, where)
        try:
            _check_files(path, meta, where)
            nodes = pq.read_table(path / meta.get("nodes_file", NODES_FILE)).to_pandas()
            return meta, nodes
        except (GraphFormatError, FileNotFoundError) as e:
            if attempt + 1 == attempts or _read_meta(path, where) == meta:
                if isinstance(e, FileNotFoundError):
                    raise GraphFormatError(f"{where} is partial: {e.filename} is missing") from None
                raise
        except Exception as e:  # pyarrow raises several types on corrupt files
            raise GraphFormatError(f"{where} is damaged: {e}") from None
    raise AssertionError("unreachable")  # pragma: no cover


def read_parts(path: str | os.PathLike, layers: Iterable[int] | None = None, *,
               lazy: bool | None = None) -> GraphParts:
    """Read a graph directory into the parts of its graph; :func:`llmrank_graph.read_graph` builds it.

    The parameters, checks and errors are those of :func:`llmrank_graph.read_graph`.
    """
    import pyarrow.parquet as pq

    if not isinstance(path, (str, os.PathLike)):
        raise fail_type("path", "a str or a path", path)
    if lazy is not None:
        check_bool("lazy", lazy)
    path = Path(path).expanduser()
    where = f"`path` {str(path)!r}"
    if not path.is_dir():
        raise MissingInputError(f"{where} is not a graph directory (it does not exist)")
    meta, nodes = _read_nodes(path, where)
    _check_meta(meta, where, nodes["activation"] if "activation" in nodes.columns else np.full(len(nodes), np.nan))
    try:
        n, e = int(meta["n_nodes"]), int(meta["n_edges"])
        parts = [Partition(i, str(nm), int(ly), str(k), int(o), int(s))
                 for i, (nm, ly, k, o, s) in enumerate(meta["partitions"])]
    except (KeyError, TypeError, ValueError) as exc:
        raise GraphFormatError(f"{where}: meta.json lacks or garbles a required key ({exc})") from None
    if "blocks" not in meta:  # written before the block table: read whole, as then
        if layers is not None:
            raise InvalidArgumentError(f"`layers` needs a graph directory with a block table; {where} was written by "
                                       "an older llmrank_graph: read it whole and write it again with to_parquet")
        try:
            edges = pq.read_table(path / EDGES_FILE, columns=list(EDGE_COLUMNS)).to_pandas()
        except Exception as exc:
            raise GraphFormatError(f"{where} is damaged: {exc}") from None
        if len(nodes) != n or len(edges) != e:
            raise GraphFormatError(f"{where}: expected {n} nodes and {e} edges (meta.json), "
                                   f"found {len(nodes)} and {len(edges)}")
        return replace(_tables_to_parts(nodes, edges, meta, where, GraphFormatError, parts), source=path)
    _check_node_table(nodes, parts, n, where)
    blocks = _block_table(path, meta, parts, n, e, where)
    scores, info = _scores_from_nodes(nodes, meta, where)
    act = nodes["activation"].to_numpy(np.float64) if "activation" in nodes.columns else np.full(n, np.nan)
    meta = {k: v for k, v in meta.items() if k not in _LAYOUT_KEYS}
    if layers is not None:
        parts, blocks, keep = _subset(parts, blocks, layers, meta)
        act = act[keep]
        scores = {k: v[keep] for k, v in scores.items()}
        meta = dict(meta, layers=sorted({b.layer for b in blocks}), n_nodes=int(keep.size),
                    n_edges=sum(b.nnz for b in blocks), n_layers=len({p.layer for p in parts
                                                                     if p.kind == "intermediate"}),
                    intermediate_sizes=[p.size for p in parts if p.kind == "intermediate"])
    if lazy is None:
        lazy = (path / EDGES_FILE).stat().st_size > LAZY_READ_BYTES
    if not lazy:
        blocks = [b.read() for b in blocks]
    logger.debug("read %s (%s)", path, "blocks on demand" if lazy else "in memory")
    return GraphParts(parts, blocks, act, meta, scores, info, path)


def _check_node_table(nodes: pd.DataFrame, parts: list[Partition], n: int, where: str) -> None:
    missing = [c for c in ("vertex", "layer", "kind", "index") if c not in nodes.columns]
    if missing:
        raise GraphFormatError(f"{where}: the nodes table lacks columns {missing}")
    if len(nodes) != n:
        raise GraphFormatError(f"{where}: expected {n} nodes (meta.json), found {len(nodes)}")
    if not np.array_equal(nodes["vertex"].to_numpy(), np.arange(n)):
        raise GraphFormatError(f"{where}: vertex ids are not contiguous from 0")
    if (parts[-1].stop if parts else 0) != n or any(p.offset != (parts[i - 1].stop if i else 0)
                                                     for i, p in enumerate(parts)):
        raise GraphFormatError(f"{where}: partitions are not contiguous or do not cover the {n} nodes")
    sizes = [p.size for p in parts]
    want_layer = np.repeat([p.layer for p in parts], sizes)
    want_kind = np.repeat([p.kind for p in parts], sizes)
    if not (np.array_equal(nodes["layer"].to_numpy(np.int64), want_layer)
            and np.array_equal(nodes["kind"].astype(str).to_numpy(), want_kind.astype(str))):
        raise GraphFormatError(f"{where}: the nodes table does not match the partitions of meta.json")


def _block_table(path: Path, meta: dict, parts: list[Partition], n: int, e: int, where: str) -> list[ParquetBlock]:
    """ParquetBlocks from meta.json's block table, checked against the file footer."""
    import pyarrow.parquet as pq

    file = path / EDGES_FILE
    try:
        md = pq.ParquetFile(file).metadata
    except Exception as exc:
        raise GraphFormatError(f"{where} is damaged: {exc}") from None
    names = [md.schema.column(i).name for i in range(md.num_columns)]
    if any(c not in names for c in EDGE_COLUMNS):
        lacking = [c for c in EDGE_COLUMNS if c not in names]
        raise GraphFormatError(f"{where}: edges.parquet lacks columns {lacking}")
    if md.num_rows != e:
        raise GraphFormatError(f"{where}: expected {e} edges (meta.json), found {md.num_rows}")
    col = {c: names.index(c) for c in ("src", "dst")}
    blocks: list[ParquetBlock] = []
    rg = 0
    try:
        for a, b, layer, role, nnz, layout, r0, r1 in meta["blocks"]:
            src, dst = parts[int(a)], parts[int(b)]
            if layout not in LAYOUTS or int(r0) != rg or int(r1) < int(r0) or int(r1) > md.num_row_groups:
                raise ValueError(f"block {src.name} -> {dst.name}: row groups [{r0}, {r1}) or layout {layout!r}")
            rows = sum(md.row_group(i).num_rows for i in range(int(r0), int(r1)))
            if rows != int(nnz) or (layout == "dense" and int(nnz) != src.size * dst.size):
                raise ValueError(f"block {src.name} -> {dst.name} has {rows} edges in its row groups, "
                                 f"the block table says {nnz}")
            for i in range(int(r0), int(r1)):  # the footer's statistics: every id inside the block's partitions
                for c, p in (("src", src), ("dst", dst)):
                    st = md.row_group(i).column(col[c]).statistics
                    if st is not None and st.has_min_max and (st.min < p.offset or st.max >= p.stop):
                        raise ValueError(f"row group {i} has {c} ids outside partition {p.name}")
            blocks.append(ParquetBlock(src, dst, int(layer), str(role), file, (int(r0), int(r1)), int(nnz), layout,
                                       (src.offset, dst.offset)))
            rg = int(r1)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise GraphFormatError(f"{where}: the block table of meta.json does not match edges.parquet "
                               f"({exc})") from None
    if rg != md.num_row_groups:
        raise GraphFormatError(f"{where}: edges.parquet has {md.num_row_groups} row groups, the block table "
                               f"covers {rg}")
    return blocks


def _scores_from_nodes(nodes: pd.DataFrame, meta: dict, where: str) -> tuple[dict, dict]:
    info = meta.get("scores") or {}
    if not isinstance(info, dict):
        raise GraphFormatError(f"{where}: meta.json's scores must be a mapping")
    scores = {}
    for name, entry in info.items():
        if name not in nodes.columns:
            raise GraphFormatError(f"{where}: meta.json lists the stored score {name!r} but the node table has "
                                   "no such column")
        col = nodes[name].to_numpy()
        if isinstance(entry, dict) and entry.get("dtype") and str(col.dtype) != entry["dtype"]:
            raise GraphFormatError(f"{where}: stored score {name!r} is {col.dtype}, meta.json says {entry['dtype']}")
        scores[name] = col
    return scores, {k: dict(v) if isinstance(v, dict) else {} for k, v in info.items()}


def _subset(parts: list[Partition], blocks: list[ParquetBlock], layers, meta: dict):
    """The blocks of the given layers, their partitions renumbered from 0, and the kept old vertex ids."""
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Iterable):
        raise fail_type("layers", "an iterable of layer numbers", layers)
    have = sorted({b.layer for b in blocks})
    want = []
    for l in layers:
        if isinstance(l, (bool, np.bool_)) or not isinstance(l, (int, np.integer)):
            raise fail_type("layers", "an iterable of layer numbers (ints)", layers)
        if int(l) not in have:
            raise fail("layers", f"layer numbers of this graph ({have[0]}..{have[-1]})" if have else "empty", l)
        want.append(int(l))
    if not want:
        raise fail("layers", "a non-empty list of layer numbers", list(layers))
    chosen = [b for b in blocks if b.layer in set(want)]
    used = sorted({b.src.position for b in chosen} | {b.dst.position for b in chosen})
    new: dict[int, Partition] = {}
    off = 0
    for i, pos in enumerate(used):
        p = parts[pos]
        new[pos] = Partition(i, p.name, p.layer, p.kind, off, p.size)
        off += p.size
    keep = np.concatenate([np.arange(parts[pos].offset, parts[pos].stop) for pos in used])
    out = [ParquetBlock(new[b.src.position], new[b.dst.position], b.layer, b.role, b.file, b.row_groups, b.nnz,
                        b.layout, b.file_offsets) for b in chosen]
    return [new[pos] for pos in used], out, keep


# ---------------------------------------------------------------------------- edge lists
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


def _tables_to_parts(nodes: pd.DataFrame, edges: pd.DataFrame, meta: dict, where: str, error,
                     parts: list[Partition] | None = None) -> GraphParts:
    """Blocks from a node table and an edge list (checked); the one path of read_graph and from_edgelist.

    Problems are raised as ``error`` (GraphFormatError when reading, InvalidArgumentError for
    :meth:`~llmrank_graph.MLPGraph.from_edgelist`), naming ``where``.
    """
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
    return GraphParts(parts, blocks, act, meta)


# ---------------------------------------------------------------------------- stored scores
@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on the graph directory, for read-modify-write of its node table."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        yield
        return
    with open(path / _LOCK_FILE, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _next_nodes_file(current: str) -> str:
    m = re.match(r"^nodes\.(\d+)\.parquet$", current)
    return f"nodes.{int(m.group(1)) + 1 if m else 1}.parquet"


def add_scores(path: str | os.PathLike, scores: Mapping[str, Any], info: Mapping[str, Mapping] | None = None, *,
               overwrite: bool = False) -> Path:
    """Append typed score columns to the node table of a graph directory, atomically.

    The edges are not rewritten. The new node table goes to a new file, ``meta.json`` is then
    replaced in one atomic step to name it and record the columns, and the old table is
    removed; concurrent writers take turns (a lock file in the directory).

    Parameters
    ----------
    path : str or path-like
        A graph directory written by :meth:`~llmrank_graph.MLPGraph.to_parquet`.
    scores : mapping of str -> array (n_nodes,) or CentralityResult
        Column name -> one number per node (float, int or bool; NaN marks nodes without a
        score). Names: letters, digits, ``_``, ``.`` and ``-`` (see :func:`score_column_name`).
    info : mapping of str -> dict, optional
        What produced each column (algorithm, parameters, backend); recorded in ``meta.json``.
        A :class:`~llmrank_graph.CentralityResult` given as the values brings its own.
    overwrite : bool
        Replace columns that are already stored.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    InvalidArgumentError
        A bad name, a wrong length, or a column already stored without ``overwrite``.
    GraphFormatError
        ``path`` is not a complete graph directory.

    Example
    -------
    >>> res = pagerank(read_graph("g"), direction="reverse")              # doctest: +SKIP
    >>> add_scores("g", {score_column_name(res): res})                     # doctest: +SKIP
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    check_bool("overwrite", overwrite)
    if not isinstance(path, (str, os.PathLike)):
        raise fail_type("path", "a str or a path", path)
    if not isinstance(scores, Mapping) or not scores:
        raise fail_type("scores", "a non-empty mapping of column name -> values", scores)
    path = Path(path).expanduser()
    where = f"`path` {str(path)!r}"
    if not path.is_dir():
        raise MissingInputError(f"{where} is not a graph directory (it does not exist)")
    with _locked(path):
        meta, nodes = _read_nodes(path, where, attempts=1)
        if "blocks" not in meta:
            raise InvalidArgumentError(f"{where} was written by an older llmrank_graph (no block table); read it and "
                                       "write it again with to_parquet before storing scores in it")
        n = int(meta["n_nodes"])
        stored = dict(meta.get("scores") or {})
        new_cols = {}
        for name, values in scores.items():
            _check_name(name, NODE_COLUMNS)
            if name in stored and not overwrite:
                raise InvalidArgumentError(f"`scores` {name!r} is already stored in {str(path)!r}; pass overwrite=True "
                                           "(--overwrite) to replace it")
            arr = _check_values(name, values, n)
            entry = _result_info(values)
            entry.update(dict((info or {}).get(name, {})))
            entry.update(dtype=str(arr.dtype), library_version=__version__)
            new_cols[name] = arr
            stored[name] = entry
        table = nodes.assign(**new_cols)
        old_file = meta.get("nodes_file", NODES_FILE)
        new_file = _next_nodes_file(old_file)
        with atomic_file(path / new_file, overwrite=True, arg="path") as tmp:
            pq.write_table(pa.Table.from_pandas(table, preserve_index=False), tmp)
        try:
            files = {k: v for k, v in meta["files"].items() if k != old_file}
            files[new_file] = (path / new_file).stat().st_size
            meta = dict(meta, nodes_file=new_file, scores=stored, files=files)
            write_json_atomic(path / "meta.json", meta, indent=1, overwrite=True, arg="path")
        except BaseException:
            with contextlib.suppress(OSError):
                (path / new_file).unlink()
            raise
        if old_file != new_file:
            with contextlib.suppress(OSError):
                (path / old_file).unlink()
    logger.info("stored %s in %s", ", ".join(new_cols), path)
    return path


def _result_info(values) -> dict:
    if isinstance(values, CentralityResult):
        return {"algorithm": values.algorithm, "params": _jsonable(values.params), "backend": values.backend}
    return {}


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def stored_scores(graph, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Stored score columns of ``graph`` by name (all of them when ``names`` is None).

    Raises
    ------
    InvalidArgumentError
        A name that is not stored; the message lists the stored ones and how to add one.
    """
    if names is None:
        return dict(graph.scores)
    out = {}
    for name in names:
        if name not in graph.scores:
            have = ", ".join(map(repr, graph.scores)) or "none"
            raise InvalidArgumentError(f"`stored` {name!r} is not a score stored with this graph (stored: {have}); "
                                       "add it with `llmrank-graph rank --graph DIR --add-to-graph` or "
                                       "llmrank_graph.graph.storage.add_scores")
        out[name] = np.asarray(graph.scores[name])
    return out
