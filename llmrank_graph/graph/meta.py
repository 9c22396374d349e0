"""The graph directory's format: its file names, its table schemas and its ``meta.json``.

``meta.json`` is what marks a directory as a graph written by llmrank_graph (its ``format`` is
:data:`GRAPH_FORMAT`) and what every reader trusts: the partitions, the block table, the
stored score columns and the size of every file. This module says what a sound ``meta.json``
is (:func:`check_meta`) and reads it with the node table it names (:func:`read_node_table`);
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

from ..base.params import InstanceOf
from ..errors import GraphFormatError

__all__ = ["GRAPH_FORMAT", "FORMAT_VERSION", "EDGES_FILE", "NODES_FILE", "KINDS", "NODE_COLUMNS", "EDGE_COLUMNS",
           "LAYOUTS", "REQUIRED_META", "LAYOUT_KEYS", "read_format", "read_meta", "check_meta", "check_files",
           "read_node_table", "short_list", "GRAPH_PATH"]

#: ``meta.json``'s ``format``: what marks a directory as a graph written by llmrank_graph.
GRAPH_FORMAT = "llmrank_graph.MLPGraph"
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
#: Block layouts recorded in the block table.
LAYOUTS = ("dense", "coo")
#: Keys every graph directory's meta.json has (written by :func:`llmrank_graph.graph.storage.write_graph`).
REQUIRED_META = ("format", "n_nodes", "n_edges", "n_layers", "partitions")
#: Keys of meta.json that describe the directory, not the graph; not kept on a graph read back.
LAYOUT_KEYS = ("files", "blocks", "nodes_file", "format_version", "row_group_rows")
#: The declared constraint (:mod:`llmrank_graph.base.params`) of a graph directory argument.
GRAPH_PATH = InstanceOf((str, os.PathLike), "a str or a path")


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


def _bad(where: str, key: str, what: str, got) -> GraphFormatError:
    text = repr(got)
    return GraphFormatError(f"{where}: meta.json key '{key}' must be {what}; got "
                            f"{text if len(text) <= 80 else text[:77] + '...'}")


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
            raise _bad(where, f"partitions[{i}]", "[name, layer >= 0, 'hidden' or 'intermediate', offset, size >= 1]",
                       p)
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

    ``meta`` must be an object with the :data:`REQUIRED_META` keys; its partitions must be
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
    for key in ("n_nodes", "n_edges", "n_layers"):
        value = meta[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise _bad(where, key, "an int >= 0", value)
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
