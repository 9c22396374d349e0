"""The graph directory on disk: Parquet written block by block, read lazily.

A graph directory (written by :meth:`MLPGraph.to_parquet <llmrank_graph.MLPGraph.to_parquet>`)
holds three files:

``edges.parquet``
    Columns ``src`` (int64), ``dst`` (int64), ``weight`` (float32), ``layer`` (int16). The
    edges of one block (one weight matrix: ``H_l -> I_l``, ``I_l -> H_{l+1}`` or a residual
    block) fill consecutive row groups of at most :data:`ROW_GROUP_ROWS` rows, and no row
    group holds edges of two blocks. Every block is written in row-major ``(dst, src)``
    order, which each row group declares (Parquet's ``sorting_columns``, :data:`ROW_ORDER`),
    so that reading a dense block back needs only its ``weight`` column.
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

A directory is checked as a model's weights are, before anything is computed from it:
``meta.json`` field by field (:func:`~llmrank_graph.graph.meta.check_fields`), the block table
against the file footers when the directory is read, and each block when it is read: weights
finite and non-negative, ids inside the block's partitions, no ``(src, dst)`` pair twice
(:func:`~llmrank_graph.graph.parts.check_edges`, which
:meth:`~llmrank_graph.MLPGraph.from_edgelist` uses too). A file rewritten by another tool (rows
sorted by weight, say) loses the declared row order, and its rows are then placed by their
ids: the same graph, read more slowly.

Graph directories written before the block table existed (no ``blocks`` key in
``meta.json``) are still read, whole and into memory.

Three modules below this one hold the rest of the format: :mod:`~llmrank_graph.graph.meta`
(file names, table schemas, ``meta.json`` and its checks), :mod:`~llmrank_graph.graph.scores`
(stored score columns, :func:`add_scores`) and :mod:`~llmrank_graph.graph.parts` (the
:class:`GraphParts` a directory is read into). This module does not import
:mod:`llmrank_graph.graph.mlpgraph`: :func:`llmrank_graph.read_graph` builds the
:class:`~llmrank_graph.MLPGraph` from the parts, and :func:`write_graph` writes any graph that
has the MLPGraph attributes it reads. The names of those modules that this one has always
offered (``add_scores``, ``KINDS``, ...) are still found here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .._version import __version__
from ..base.checks import fail, fail_type
from ..base.files import atomic_directory
from ..base.params import Boolean, Check, Optional, validated
from ..base.progress import progress as base_progress
from ..errors import GraphFormatError, InvalidArgumentError, MissingInputError
from .blocks import Block, Partition, SparseBlock, WeightBlock
from .meta import (
    EDGE_COLUMNS,
    EDGES_FILE,
    FORMAT_VERSION,
    GRAPH_FORMAT,
    GRAPH_PATH,
    KINDS,
    LAYOUT_KEYS,
    NODE_COLUMNS,
    NODES_FILE,
    check_fields,
    check_meta,
    read_format,
    read_node_table,
)
from .parts import GraphParts, check_edges, check_weights, parts_from_tables
from .scores import add_scores, column_name, score_column_name, scores_from_nodes, stored_scores

logger = logging.getLogger(__name__)

__all__ = ["ParquetBlock", "GraphParts", "write_graph", "read_parts", "add_scores", "stored_scores",
           "score_column_name", "column_name", "ROW_GROUP_ROWS", "LAZY_READ_BYTES", "FORMAT_VERSION", "EDGES_FILE",
           "NODES_FILE", "KINDS", "NODE_COLUMNS", "EDGE_COLUMNS", "WRITE_PARAMETERS", "READ_PARAMETERS",
           "with_progress", "ROW_ORDER"]

#: Most rows in one row group of ``edges.parquet`` (a block spans several row groups).
ROW_GROUP_ROWS = 1 << 20
#: ``read_graph(lazy=None)`` reads blocks on demand when ``edges.parquet`` is larger than this.
LAZY_READ_BYTES = 1 << 30
#: The order of the rows in every row group of ``edges.parquet``, declared in the file's metadata
#: (Parquet's ``sorting_columns``): a dense block so declared is read by position.
ROW_ORDER = ("dst", "src")


def with_progress(items, progress: bool, desc: str, unit: str = "block"):
    """``items``, behind a tqdm progress bar when ``progress`` is true.

    >>> with_progress([1, 2], False, "blocks")
    [1, 2]
    """
    return base_progress(items, progress, desc, unit)


# ---------------------------------------------------------------------------- write
#: What :func:`write_graph` (and :meth:`~llmrank_graph.MLPGraph.to_parquet`) check, once, at the call.
WRITE_PARAMETERS = {"overwrite": Boolean(), "force": Boolean()}

def _write_edges(file: Path, blocks: list[Block], progress: bool) -> tuple[list[list], int]:
    """Write every block's edges in its own row groups; returns the block table and the edge count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("src", pa.int64()), ("dst", pa.int64()), ("weight", pa.float32()), ("layer", pa.int16())])
    order = [pq.SortingColumn(schema.get_field_index(c)) for c in ROW_ORDER]
    table: list[list] = []
    n_edges = 0
    rg = 0
    with pq.ParquetWriter(file, schema, sorting_columns=order) as writer:
        for b in with_progress(blocks, progress, EDGES_FILE):
            with b.loaded() as blk:
                s, d, w = _in_row_order(*blk.coo(), b)
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
    got = pq.ParquetFile(file).metadata.num_row_groups
    if got != rg:  # internal: pyarrow split the blocks differently from what we recorded
        raise RuntimeError(f"edges.parquet has {got} row groups, expected {rg}")
    return table, n_edges


@validated(WRITE_PARAMETERS)
def write_graph(graph, path: str | os.PathLike, *, overwrite: bool = False, progress: bool = False,
                force: bool = False) -> Path:
    """Write ``graph`` to a graph directory, block by block and atomically.

    See :meth:`llmrank_graph.MLPGraph.to_parquet`, which calls this.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    def only_graphs(existing: Path) -> None:
        if not force and read_format(existing) != GRAPH_FORMAT:
            raise InvalidArgumentError(f"`path` {str(existing)!r} exists and is not a graph written by "
                                       "llmrank_graph (no meta.json saying so); refusing to replace it "
                                       "without force=True")

    meta = {k: v for k, v in graph.meta.items() if k not in LAYOUT_KEYS}
    check_fields(meta, "", None, source="`graph.meta`")  # never write what read_graph refuses
    with atomic_directory(path, overwrite=overwrite, arg="path", check_existing=only_graphs) as tmp:
        nodes = graph.nodes
        nodes = nodes.assign(kind=nodes["kind"].astype(str))
        pq.write_table(pa.Table.from_pandas(nodes, preserve_index=False), tmp / NODES_FILE)
        table, n_edges = _write_edges(tmp / EDGES_FILE, graph.blocks, progress)
        meta.update(format=GRAPH_FORMAT, format_version=FORMAT_VERSION, library_version=__version__,
                    n_nodes=graph.n_nodes, n_edges=n_edges, row_group_rows=ROW_GROUP_ROWS,
                    partitions=[[p.name, p.layer, p.kind, p.offset, p.size] for p in graph.partitions],
                    blocks=table, nodes_file=NODES_FILE,
                    scores={k: dict(v) for k, v in graph.score_info.items()},
                    files={f: (tmp / f).stat().st_size for f in (NODES_FILE, EDGES_FILE)})
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    return Path(path)


def _in_row_order(src: np.ndarray, dst: np.ndarray, w: np.ndarray, b: Block):
    """A block's edges sorted by (dst, src), the order the file declares (blocks give it already: no copy)."""
    pos = dst - b.dst.offset  # one temporary of the block's size: (dst - offset) * cols + (src - offset)
    pos *= b.shape[1]
    pos += src
    pos -= b.src.offset
    if (pos[1:] >= pos[:-1]).all():
        return src, dst, w
    order = np.argsort(pos, kind="stable")
    return src[order], dst[order], w[order]


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
    :meth:`loaded` reads them once for several calls (as the sweep does). A dense block becomes
    a :class:`~llmrank_graph.graph.blocks.WeightBlock` over its (dst, src) matrix, a sparse one
    a :class:`~llmrank_graph.graph.blocks.SparseBlock`.

    Every read is checked before the block is used, as :meth:`MLPGraph.from_edgelist
    <llmrank_graph.MLPGraph.from_edgelist>` checks a table (:func:`~llmrank_graph.graph.parts.check_edges`):
    weights finite and non-negative, ids inside the block's partitions, no ``(src, dst)`` pair
    twice. Rows are placed by their ids, except in a dense block whose row groups declare
    (Parquet ``sorting_columns``, as :func:`write_graph` writes them) the row-major
    :data:`ROW_ORDER`: that block is read by position, from its ``weight`` column alone. A
    file that another tool has rewritten does not carry the declaration, so its rows are read
    by their ids, in whatever order it holds them.

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
    row_order : bool
        The row groups declare :data:`ROW_ORDER` (a dense block is then read by position).
    first_row : int
        The block's first row in the file (messages name rows of the file).

    Raises
    ------
    GraphFormatError
        From every read of a damaged block, naming the file, the block and the column.
    """

    resident = False

    def __init__(self, src: Partition, dst: Partition, layer: int, role: str, file: Path, row_groups: tuple[int, int],
                 nnz: int, layout: str, file_offsets: tuple[int, int], row_order: bool = False, first_row: int = 0):
        super().__init__(src, dst, layer, role)
        self.file = Path(file)
        self.row_groups = (int(row_groups[0]), int(row_groups[1]))
        self._nnz = int(nnz)
        self.layout = layout
        self.file_offsets = (int(file_offsets[0]), int(file_offsets[1]))
        self.row_order = bool(row_order)
        self.first_row = int(first_row)
        self._checked = None  # the file version whose weights passed the check (read again, not checked again)

    @property
    def nnz(self) -> int:
        return self._nnz

    @property
    def where(self) -> str:
        """The file and the block, for messages."""
        return f"{self.file}, block {self.src.name} -> {self.dst.name} (layer {self.layer}, {self.role})"

    def _columns(self, columns: list[str]):
        """The block's rows of ``columns``: a pyarrow Table, None when it has no row groups."""
        import pyarrow.parquet as pq

        groups = list(range(*self.row_groups))
        try:
            t = pq.ParquetFile(self.file).read_row_groups(groups, columns=columns) if groups else None
        except Exception as e:  # pyarrow raises several types on damaged files
            raise GraphFormatError(f"{self.where}: cannot read the edges: {e}") from None
        n = 0 if t is None else t.num_rows
        if n != self._nnz:
            raise GraphFormatError(f"{self.where}: {n} edges in its row groups, meta.json says {self._nnz}")
        return t

    def read(self) -> Block:
        """The block with its edges in memory (a WeightBlock when dense, else a SparseBlock), checked."""
        rows, cols = self.shape
        by_position = self.layout == "dense" and self.row_order
        t = self._columns(["weight"] if by_position else ["src", "dst", "weight"])
        w = np.zeros(0, np.float32) if t is None else t.column("weight").to_numpy().astype(np.float32, copy=False)
        if by_position:
            version = self.version()
            if version != self._checked:  # a file changed on disk since is checked again
                check_weights(w, self.where, GraphFormatError, self.first_row)
                self._checked = version
            w = np.require(w, requirements="W")  # torch wants writable memory
            return WeightBlock(self.src, self.dst, self.layer, self.role, [torch.from_numpy(w.reshape(rows, cols))])
        s = np.zeros(0, np.int64) if t is None else t.column("src").to_numpy() - self.file_offsets[0]
        d = np.zeros(0, np.int64) if t is None else t.column("dst").to_numpy() - self.file_offsets[1]
        pos, ordered = check_edges(s, d, w, (rows, cols), self.where, GraphFormatError, offsets=self.file_offsets,
                                   first_row=self.first_row)
        if self.layout == "dense":  # every (dst, src) once (nnz = rows * cols, no pair twice): place them by id
            if ordered:
                w = np.require(w, requirements="W")
            else:
                placed = np.empty(rows * cols, np.float32)
                placed[pos] = w
                w = placed
            return WeightBlock(self.src, self.dst, self.layer, self.role, [torch.from_numpy(w.reshape(rows, cols))])
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
def _check_layers(arg: str, layers) -> list[int]:
    """``layers`` as a non-empty list of ints (whether the graph has them is checked when it is read)."""
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Iterable):
        raise fail_type(arg, "an iterable of layer numbers", layers)
    want = list(layers)
    for l in want:
        if isinstance(l, (bool, np.bool_)) or not isinstance(l, (int, np.integer)):
            raise fail_type(arg, "an iterable of layer numbers (ints)", layers)
    if not want:
        raise fail(arg, "a non-empty list of layer numbers", want)
    return [int(l) for l in want]


#: What :func:`read_parts` (and :func:`llmrank_graph.read_graph`) check, once, at the call.
READ_PARAMETERS = {"path": GRAPH_PATH, "layers": Optional(Check(_check_layers, "an iterable of layer numbers")),
                   "lazy": Optional(Boolean())}


def _read_without_block_table(path: Path, meta: dict, nodes: pd.DataFrame, parts: list[Partition], where: str,
                              layers) -> GraphParts:
    """A directory written before the block table: read whole, as then."""
    import pyarrow.parquet as pq

    if layers is not None:
        raise InvalidArgumentError(f"`layers` needs a graph directory with a block table; {where} was written by "
                                   "an older llmrank_graph: read it whole and write it again with to_parquet")
    try:
        edges = pq.read_table(path / EDGES_FILE, columns=list(EDGE_COLUMNS)).to_pandas()
    except Exception as exc:
        raise GraphFormatError(f"{where} is damaged: {exc}") from None
    n, e = int(meta["n_nodes"]), int(meta["n_edges"])
    if len(nodes) != n or len(edges) != e:
        raise GraphFormatError(f"{where}: expected {n} nodes and {e} edges (meta.json), "
                               f"found {len(nodes)} and {len(edges)}")
    return replace(parts_from_tables(nodes, edges, meta, where, GraphFormatError, parts), source=path)


def _partitions_of(meta: dict, where: str) -> list[Partition]:
    try:
        return [Partition(i, str(nm), int(ly), str(k), int(o), int(s))
                for i, (nm, ly, k, o, s) in enumerate(meta["partitions"])]
    except (KeyError, TypeError, ValueError) as exc:
        raise GraphFormatError(f"{where}: meta.json lacks or garbles a required key ({exc})") from None


@validated(READ_PARAMETERS)
def read_parts(path: str | os.PathLike, layers: Iterable[int] | None = None, *,
               lazy: bool | None = None) -> GraphParts:
    """Read a graph directory into the parts of its graph; :func:`llmrank_graph.read_graph` builds it.

    The parameters, checks and errors are those of :func:`llmrank_graph.read_graph`.
    """
    path = Path(path).expanduser()
    where = f"`path` {str(path)!r}"
    if not path.is_dir():
        raise MissingInputError(f"{where} is not a graph directory (it does not exist)")
    meta, nodes = read_node_table(path, where)
    check_meta(meta, where, nodes["activation"] if "activation" in nodes.columns else np.full(len(nodes), np.nan))
    parts = _partitions_of(meta, where)
    if "blocks" not in meta:
        return _read_without_block_table(path, meta, nodes, parts, where, layers)
    n, e = int(meta["n_nodes"]), int(meta["n_edges"])
    _check_node_table(nodes, parts, n, where)
    blocks = _block_table(path, meta, parts, e, where)
    scores, info = scores_from_nodes(nodes, meta, where)
    act = nodes["activation"].to_numpy(np.float64) if "activation" in nodes.columns else np.full(n, np.nan)
    meta = {k: v for k, v in meta.items() if k not in LAYOUT_KEYS}
    if layers is not None:
        parts, blocks, keep = _subset(parts, blocks, layers)
        act = act[keep]
        scores = {k: v[keep] for k, v in scores.items()}
        meta = dict(meta, layers=sorted({b.layer for b in blocks}), n_nodes=int(keep.size),
                    n_edges=sum(b.nnz for b in blocks), n_layers=len({p.layer for p in parts
                                                                     if p.kind == "intermediate"}),
                    intermediate_sizes=[p.size for p in parts if p.kind == "intermediate"])
        _subset_heads(meta)
    if lazy is None:
        lazy = (path / EDGES_FILE).stat().st_size > LAZY_READ_BYTES
    if not lazy:
        blocks = [b.read() for b in blocks]
    logger.debug("read %s (%s)", path, "blocks on demand" if lazy else "in memory")
    return GraphParts(parts, blocks, act, meta, scores, info, path)


def _subset_heads(meta: dict) -> None:
    """The per-layer head counts of ``meta`` cut to its ``layers`` (a graph read with ``layers=``)."""
    for key in ("num_heads", "num_key_value_heads"):
        if isinstance(meta.get(key), list):
            meta[key] = [meta[key][l] for l in meta["layers"] if l < len(meta[key])]


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


def _block_table(path: Path, meta: dict, parts: list[Partition], e: int, where: str) -> list[ParquetBlock]:
    """ParquetBlocks from meta.json's block table (its types checked by check_fields), checked against the footer."""
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
    order = [(names.index(c), False) for c in ROW_ORDER]
    blocks: list[ParquetBlock] = []
    rg = first_row = 0
    for i, (a, b, layer, role, nnz, layout, r0, r1) in enumerate(meta["blocks"]):
        if max(a, b) >= len(parts):
            raise GraphFormatError(f"{where}: meta.json key 'blocks[{i}]' names partition {max(a, b)}; the graph has "
                                   f"{len(parts)} partitions")
        src, dst = parts[a], parts[b]
        name = f"block {src.name} -> {dst.name}"
        if r0 != rg or r1 < r0 or r1 > md.num_row_groups:
            raise GraphFormatError(f"{where}: the block table of meta.json does not match edges.parquet ({name} "
                                   f"spans row groups [{r0}, {r1}); the previous block ends at row group {rg} and "
                                   f"edges.parquet has {md.num_row_groups})")
        rows = sum(md.row_group(j).num_rows for j in range(r0, r1))
        if rows != nnz:
            raise GraphFormatError(f"{where}: the block table of meta.json does not match edges.parquet ({name} has "
                                   f"{rows} edges in its row groups, the block table says {nnz})")
        if layout == "dense" and nnz != src.size * dst.size:
            raise GraphFormatError(f"{where}: meta.json key 'blocks[{i}]' says that {name} is dense, but it has {nnz} "
                                   f"edges; a dense block has one per (dst, src) pair: {dst.size} x {src.size} = "
                                   f"{dst.size * src.size}")
        _check_statistics(md, names, range(r0, r1), src, dst, where, name)
        declared = all([(c.column_index, c.descending) for c in md.row_group(j).sorting_columns] == order
                       for j in range(r0, r1))
        blocks.append(ParquetBlock(src, dst, layer, role, file, (r0, r1), nnz, layout, (src.offset, dst.offset),
                                   row_order=declared, first_row=first_row))
        rg, first_row = r1, first_row + nnz
    if any(md.row_group(j).num_rows for j in range(rg, md.num_row_groups)):  # empty row groups hold no edges
        raise GraphFormatError(f"{where}: edges.parquet has {md.num_row_groups} row groups, the block table "
                               f"covers {rg}")
    if any(b.layout == "dense" and not b.row_order for b in blocks):
        logger.info("%s: edges.parquet does not declare the row order of its dense blocks (written by another tool, "
                    "or before llmrank_graph declared it): their rows are placed by their ids, which reads several "
                    "times slower; write the graph again with to_parquet to read them by position", where)
    return blocks


def _check_statistics(md, names: list[str], groups: range, src: Partition, dst: Partition, where: str,
                      name: str) -> None:
    """The footer's statistics, where the writer left them: every id of the row groups inside the block's partitions."""
    for j in groups:
        for c, p in (("src", src), ("dst", dst)):
            st = md.row_group(j).column(names.index(c)).statistics
            if st is not None and st.has_min_max and (st.min < p.offset or st.max >= p.stop):
                raise GraphFormatError(f"{where}: the block table of meta.json does not match edges.parquet ({name}: "
                                       f"row group {j} has {c} ids outside partition {p.name})")


def _subset(parts: list[Partition], blocks: list[ParquetBlock], layers: list[int]):
    """The blocks of the given layers, their partitions renumbered from 0, and the kept old vertex ids."""
    have = sorted({b.layer for b in blocks})
    for l in layers:
        if l not in have:
            raise fail("layers", f"layer numbers of this graph ({have[0]}..{have[-1]})" if have else "empty", l)
    chosen = [b for b in blocks if b.layer in set(layers)]
    used = sorted({b.src.position for b in chosen} | {b.dst.position for b in chosen})
    new: dict[int, Partition] = {}
    off = 0
    for i, pos in enumerate(used):
        p = parts[pos]
        new[pos] = Partition(i, p.name, p.layer, p.kind, off, p.size)
        off += p.size
    keep = np.concatenate([np.arange(parts[pos].offset, parts[pos].stop) for pos in used])
    out = [ParquetBlock(new[b.src.position], new[b.dst.position], b.layer, b.role, b.file, b.row_groups, b.nnz,
                        b.layout, b.file_offsets, b.row_order, b.first_row) for b in chosen]
    return [new[pos] for pos in used], out, keep
