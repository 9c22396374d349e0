"""The graph directory's format: its file names, its table schemas and its ``meta.json``.

``meta.json`` is what marks a directory as a graph written by llmrank_graph (its ``format`` is
:data:`GRAPH_FORMAT`) and what every reader trusts: the partitions, the block table, the
stored score columns and the size of every file. This module says what a sound ``meta.json``
is (:func:`check_meta`; the type of every field is declared once, in :data:`META_FIELDS`, with
the constraints of :mod:`llmrank_graph.base.params`, and a file name may not lead out of the
directory) and reads it with the node table it names (:func:`read_node_table`);
:mod:`llmrank_graph.graph.storage` writes and reads the rest of the directory, and the command
line checks ``--graph`` with the same functions before it loads anything.

>>> from llmrank_graph.graph.meta import check_meta
>>> check_meta({"format": GRAPH_FORMAT, "n_nodes": 3, "n_edges": 2, "n_layers": 1,
...             "partitions": [["H0", 0, "hidden", 0, 2], ["I0", 0, "intermediate", 2, 1]]}, "here")
>>> check_meta({"format": GRAPH_FORMAT, "n_nodes": 3}, "here")
Traceback (most recent call last):
...
llmrank_graph.errors.GraphFormatError: here: meta.json lacks the required key(s) 'n_edges', 'n_layers', 'partitions'
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..base.checks import check_float, check_keep, fail, fail_type
from ..base.params import Boolean, Check, Constraint, InstanceOf, Interval, Optional
from ..errors import GraphFormatError, InvalidArgumentError, InvalidArgumentTypeError

__all__ = ["GRAPH_FORMAT", "FORMAT_VERSION", "EDGES_FILE", "NODES_FILE", "KINDS", "NODE_COLUMNS", "EDGE_COLUMNS",
           "LAYOUTS", "REQUIRED_META", "MLP_KINDS", "LAYOUT_KEYS", "META_FIELDS", "read_format", "read_meta",
           "check_meta", "check_fields", "check_files", "read_node_table", "short_list", "GRAPH_PATH"]

#: ``meta.json``'s ``format``: what marks a directory as a graph written by llmrank_graph.
GRAPH_FORMAT = "llmrank_graph.MLPGraph"
#: Version of the directory layout written here (1: no block table).
FORMAT_VERSION = 2
EDGES_FILE = "edges.parquet"
NODES_FILE = "nodes.parquet"
#: Node kinds: the residual-stream features, the MLP's intermediate neurons and (in graphs
#: exported with ``attention=True``) the attention heads.
KINDS = ("hidden", "intermediate", "head")
#: The node kinds of a graph without heads (the categories of its node table's ``kind``).
MLP_KINDS = KINDS[:2]
#: Columns of the node table (stored score columns follow them).
NODE_COLUMNS = ("vertex", "layer", "kind", "index", "activation", "partition")
#: Columns of an edge list.
EDGE_COLUMNS = ("src", "dst", "weight")
#: Block layouts recorded in the block table.
LAYOUTS = ("dense", "coo")
#: Keys every graph directory's meta.json has (written by :func:`llmrank_graph.graph.storage.write_graph`).
REQUIRED_META = ("format", "n_nodes", "n_edges", "n_layers", "partitions")
#: Keys of meta.json that describe the directory, not the graph; not kept on a graph read back.
LAYOUT_KEYS = ("files", "blocks", "nodes_file", "format_version", "row_group_rows")
#: The declared constraint (:mod:`llmrank_graph.base.params`) of a graph directory argument.
GRAPH_PATH = InstanceOf((str, os.PathLike), "a str or a path")


# ---------------------------------------------------------------------------- meta.json's fields
def _file_name(arg: str, value) -> str:
    """A plain file name: the reader joins it to the graph directory, so it may not lead out of it."""
    what = FILE_NAME.what
    if not isinstance(value, str):
        raise fail_type(arg, what, value)
    if value in ("", ".", "..") or Path(value).name != value or "\\" in value or "\0" in value:
        raise fail(arg, what, value)
    return value


def _int_list(arg: str, value) -> list[int]:
    if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in value):
        raise fail_type(arg, "a list of ints >= 0", value)
    return value


def _nonnegative_float(arg: str, value) -> float:
    return check_float(arg, value, 0.0)


def _keep(arg: str, value):
    return check_keep(value)


def _block_entry(arg: str, value) -> list:
    """``[src partition, dst partition, layer, role, edges, layout, first row group, end row group]``."""
    ints = (0, 1, 2, 4, 6, 7)
    ok = (isinstance(value, list) and len(value) == 8 and isinstance(value[3], str) and value[5] in LAYOUTS
          and all(isinstance(value[i], int) and not isinstance(value[i], bool) and value[i] >= 0 for i in ints))
    if not ok:
        raise fail(arg, BLOCK_ENTRY.what, value)
    return value


_STR = InstanceOf(str, "a str")
#: A file name in meta.json (``nodes_file``, the keys of ``files``): inside the graph directory.
FILE_NAME = Check(_file_name, "a file name inside the graph directory (no '/' or '..')")
#: One row of the block table (``blocks``).
BLOCK_ENTRY = Check(_block_entry, "[src partition, dst partition, layer, role, edges, 'dense' or 'coo', "
                                  "first row group, end row group] with ints >= 0")
#: The type of every meta.json field that a reader uses (:mod:`llmrank_graph.base.params` constraints).
#: Other keys (facts recorded by ``from_edgelist(meta=...)``) are kept as they are. ``format`` is
#: checked by value (:func:`read_meta`); ``partitions`` entry by entry (:func:`check_meta`).
META_FIELDS: dict[str, Constraint] = {
    "format_version": Interval(int, 1),
    "library_version": _STR,
    "n_nodes": Interval(int, 0),
    "n_edges": Interval(int, 0),
    "n_layers": Interval(int, 0),
    "row_group_rows": Interval(int, 1),
    "partitions": InstanceOf(list, "a non-empty list of [name, layer, kind, offset, size]"),
    "blocks": InstanceOf(list, "a list of block table rows"),
    "nodes_file": FILE_NAME,
    "files": InstanceOf(dict, "a mapping of file name -> size in bytes"),
    "scores": Optional(InstanceOf(dict, "a mapping of column name -> what produced it")),
    "has_stats": Boolean(),
    "model": Optional(_STR),
    "model_type": Optional(_STR),
    "source": Optional(_STR),
    "mode": Optional(_STR),
    "gate": Optional(_STR),
    "weighting": Optional(_STR),
    "residual": Optional(Check(_nonnegative_float, "a finite float >= 0")),
    "keep": Optional(Check(_keep, "an int >= 1 or a float in (0, 1]")),
    "hidden_size": Optional(Interval(int, 1)),
    "intermediate_sizes": Optional(Check(_int_list, "a list of ints >= 0")),
    "layers": Check(_int_list, "a list of layer numbers (ints >= 0)"),
    "attention": Boolean(),
    "num_heads": Optional(Check(_int_list, "a list of ints >= 0")),
    "num_key_value_heads": Optional(Check(_int_list, "a list of ints >= 0")),
    "head_dim": Optional(Interval(int, 1)),
}
#: Constraints of the entries of meta.json's collections.
_FILE_SIZE = Interval(int, 0)


def short_list(x):
    """A list of one repeated value as ``[v]*n`` (for messages); anything else as it is.

    >>> short_list([4, 4, 4, 4, 4]), short_list([1, 2])
    ('[4]*5', [1, 2])
    """
    if isinstance(x, list) and len(x) > 4 and len(set(x)) == 1:
        return f"[{x[0]}]*{len(x)}"
    return x


def read_format(directory: Path) -> str | None:
    """The ``format`` recorded in a directory's meta.json, None when there is none (or it is unreadable).

    A writer asks this before it replaces a directory: it replaces only its own kind.

    >>> read_format(Path("/nonexistent")) is None
    True
    """
    try:
        meta = json.loads((directory / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta.get("format") if isinstance(meta, dict) else None


def read_meta(path: Path, where: str) -> dict:
    """``path``'s meta.json, which must mark a graph directory; :class:`GraphFormatError` naming ``where`` if not.

    Only the ``format`` is checked here; :func:`check_meta` checks the rest.
    """
    meta_file = path / "meta.json"
    try:
        meta = json.loads(meta_file.read_text())
    except FileNotFoundError:
        raise GraphFormatError(f"{where} is not a complete graph directory: meta.json is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GraphFormatError(f"{where}: meta.json is damaged ({e})") from None
    if not isinstance(meta, dict):
        raise GraphFormatError(f"{where}: meta.json must hold a JSON object; got {type(meta).__name__}")
    if meta.get("format") != GRAPH_FORMAT:
        raise GraphFormatError(f"{where}: meta.json is not an llmrank_graph graph (format={meta.get('format')!r})")
    return meta


def check_files(path: Path, meta: dict, where: str) -> None:
    """Every file that ``meta['files']`` lists is there, with the size it records (a partial copy is refused)."""
    files = meta.get("files", {})
    for f, size in (files.items() if isinstance(files, dict) else []):
        p = path / f
        if not p.is_file():
            raise GraphFormatError(f"{where} is partial: {f} is missing")
        if p.stat().st_size != size:
            raise GraphFormatError(f"{where} is damaged: {f} has {p.stat().st_size} bytes, meta.json says {size}")


def _bad(where: str, key: str, what: str, got, error=GraphFormatError, source: str = "meta.json") -> Exception:
    text = repr(got)
    return error(f"{f'{where}: ' if where else ''}{source} key '{key}' must be {what}; got "
                 f"{text if len(text) <= 80 else text[:77] + '...'}")


def _check_field(where: str, key: str, constraint: Constraint, value, error, source: str) -> None:
    try:
        constraint.check(key, value)
    except (InvalidArgumentError, InvalidArgumentTypeError) as exc:
        raise _bad(where, key, constraint.what, value, error or type(exc), source) from None


def check_fields(meta: dict, where: str, error=GraphFormatError, source: str = "meta.json") -> None:
    """Check the type of every :data:`META_FIELDS` key that ``meta`` has, and the entries of ``files`` and ``blocks``.

    The readers call this before they use any field (a ``nodes_file`` is checked before it is
    opened); :meth:`~llmrank_graph.MLPGraph.from_edgelist` and the writer call it on a graph's
    ``meta`` (``where=""``, ``source`` naming the argument and ``error=None``: the
    constraint's own TypeError or ValueError), so that nothing is written that the reader
    would refuse.

    Raises
    ------
    GraphFormatError (or ``error``)
        Naming ``where``, the key and what it must be.

    Example
    -------
    >>> check_fields({"has_stats": "yes"}, "here")
    Traceback (most recent call last):
    ...
    llmrank_graph.errors.GraphFormatError: here: meta.json key 'has_stats' must be a bool; got 'yes'
    >>> check_fields({"nodes_file": "../../etc/passwd"}, "here")
    Traceback (most recent call last):
    ...
    llmrank_graph.errors.GraphFormatError: here: meta.json key 'nodes_file' must be a file name inside the graph \
directory (no '/' or '..'); got '../../etc/passwd'
    """
    for key, constraint in META_FIELDS.items():
        if key in meta:
            _check_field(where, key, constraint, meta[key], error, source)
    for name, size in meta.get("files", {}).items():
        _check_field(where, f"files[{name!r}]", FILE_NAME, name, error, source)
        _check_field(where, f"files[{name!r}]", _FILE_SIZE, size, error, source)
    for i, entry in enumerate(meta.get("blocks", [])):
        _check_field(where, f"blocks[{i}]", BLOCK_ENTRY, entry, error, source)


def _check_partitions(meta: dict, where: str) -> None:
    """``[name, layer, kind, offset, size]`` entries, contiguous from 0, covering ``n_nodes``, one per layer."""
    parts = meta["partitions"]
    if not isinstance(parts, list) or not parts:
        raise _bad(where, "partitions", "a non-empty list of [name, layer, kind, offset, size]", parts)
    offset = 0
    layers = []
    for i, p in enumerate(parts):
        ok = (isinstance(p, list) and len(p) == 5 and isinstance(p[0], str) and p[2] in KINDS
              and all(isinstance(v, int) and not isinstance(v, bool) for v in p[1:2] + p[3:]))
        if not ok or p[1] < 0 or p[4] < 1:
            raise _bad(where, f"partitions[{i}]", "[name, layer >= 0, 'hidden', 'intermediate' or 'head', offset, "
                       "size >= 1]", p)
        if p[3] != offset:
            raise _bad(where, f"partitions[{i}]", f"contiguous with the previous ones (offset {offset})", p)
        offset += p[4]
        if p[2] == "intermediate":
            layers.append(p[1])
    if offset != meta["n_nodes"]:
        raise GraphFormatError(f"{where}: meta.json partitions cover {offset} nodes but 'n_nodes' is "
                               f"{meta['n_nodes']}")
    if len(set(layers)) != len(layers) or len(layers) != meta["n_layers"]:
        raise GraphFormatError(f"{where}: meta.json 'n_layers' is {meta['n_layers']} but the partitions hold "
                               f"{len(layers)} intermediate partitions (layers {short_list(layers)})")


def check_meta(meta, where: str, activation: np.ndarray | None = None) -> None:
    """Check a graph directory's whole ``meta.json`` (and the activations it vouches for).

    ``meta`` must be an object with the :data:`REQUIRED_META` keys and the types of
    :data:`META_FIELDS` (:func:`check_fields`); its partitions must be
    ``[name, layer, kind, offset, size]`` entries, contiguous from 0, summing to ``n_nodes``;
    ``n_layers`` must be the number of intermediate partitions; with ``has_stats`` true the
    ``activation`` column (when given) must be finite.

    Raises
    ------
    GraphFormatError
        Naming ``where`` and the key.
    """
    if not isinstance(meta, dict):
        raise GraphFormatError(f"{where}: meta.json must hold a JSON object; got {type(meta).__name__}")
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise GraphFormatError(f"{where}: meta.json lacks the required key(s) {', '.join(map(repr, missing))}")
    check_fields(meta, where)
    _check_partitions(meta, where)
    if meta.get("has_stats") is True and activation is not None:
        act = np.asarray(activation, dtype=np.float64)
        if not np.isfinite(act).all():
            raise GraphFormatError(f"{where}: meta.json says the graph has calibration statistics ('has_stats'), "
                                   f"but {int((~np.isfinite(act)).sum())} node activations are NaN or inf")


def read_node_table(path: Path, where: str, attempts: int = 2) -> tuple[dict, pd.DataFrame]:
    """``meta.json`` and the node table it names, with every listed file checked.

    :func:`llmrank_graph.graph.storage.add_scores` swaps in a new node table and then a new
    ``meta.json``; a reader that met the old meta.json and a removed table reads both again
    (up to ``attempts`` times) and so sees one graph or the other, never a mix.

    Raises
    ------
    GraphFormatError
        A file missing, of the wrong size, or unreadable.
    """
    import pyarrow.parquet as pq

    for attempt in range(attempts):
        meta = read_meta(path, where)
        check_fields(meta, where)  # before any file it names is opened
        try:
            check_files(path, meta, where)
            nodes = pq.read_table(path / meta.get("nodes_file", NODES_FILE)).to_pandas()
            return meta, nodes
        except (GraphFormatError, FileNotFoundError) as e:
            if attempt + 1 == attempts or read_meta(path, where) == meta:
                if isinstance(e, FileNotFoundError):
                    raise GraphFormatError(f"{where} is partial: {e.filename} is missing") from None
                raise
        except Exception as e:  # pyarrow raises several types on corrupt files
            raise GraphFormatError(f"{where} is damaged: {e}") from None
    raise AssertionError("unreachable")  # pragma: no cover
