"""Score columns stored with a graph: their names, their checks, and adding them to a graph directory.

A stored score is one typed column of the node table (float, int or bool; NaN marks nodes
without a score) with an entry in ``meta.json``'s ``scores`` (algorithm, parameters, dtype).
:func:`add_scores` appends columns to a graph directory without rewriting the edges: the new
node table is written under a new name (``nodes.1.parquet``, ``nodes.2.parquet``, ...), then
``meta.json`` is replaced atomically to point at it (the one step that publishes the change),
then the old table is removed. A reader sees the old graph or the new one, never a mix;
concurrent writers are serialised by a lock file in the directory.

>>> import pandas as pd
>>> import llmrank_graph as lg
>>> nodes = pd.DataFrame({"vertex": [0, 1, 2], "layer": [0, 0, 1],
...                       "kind": ["hidden", "intermediate", "hidden"]})
>>> edges = pd.DataFrame({"src": [0, 1], "dst": [1, 2], "weight": [0.5, 2.0]})
>>> g = lg.MLPGraph.from_edgelist(nodes, edges)
>>> g.add_scores("pr", np.array([0.2, 0.3, 0.5]))
>>> stored_scores(g, ["pr"])
{'pr': array([0.2, 0.3, 0.5])}
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .._version import __version__
from ..base.checks import fail, fail_type
from ..base.files import atomic_file, write_json_atomic
from ..base.params import Boolean, Check, InstanceOf, Optional, validated
from ..base.result import CentralityResult
from ..errors import GraphFormatError, InvalidArgumentError, MissingInputError
from .meta import GRAPH_PATH, NODE_COLUMNS, NODES_FILE, read_node_table

logger = logging.getLogger(__name__)

__all__ = ["score_column_name", "column_name", "check_score_name", "check_score_values", "score_info", "jsonable",
           "scores_from_nodes", "add_scores", "stored_scores"]

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]*$")
_LOCK_FILE = ".llmrank_graph.lock"


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
    """:func:`score_column_name` from an algorithm name and its parameters.

    >>> column_name("pagerank", {"direction": "forward", "alpha": 0.9, "personalization": "activation"})
    'pagerank_forward_a0.9_activation'
    >>> column_name("in_strength", {})
    'strength_in'
    """
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


def check_score_name(name) -> str:
    """``name`` if it can name a stored score column: letters, digits, ``_ . -``, not a node-table column.

    >>> check_score_name("vertex")
    Traceback (most recent call last):
    ...
    llmrank_graph.errors.InvalidArgumentError: `name` must be a column name of letters, digits, '_', '.' and '-' \
starting with a letter, other than the node table's own columns (vertex, layer, kind, index, activation, partition); \
got 'vertex'
    """
    if not isinstance(name, str):
        raise fail_type("name", "a str", name)
    if not _NAME.match(name) or name in NODE_COLUMNS:
        raise fail("name", "a column name of letters, digits, '_', '.' and '-' starting with a letter, other than "
                           f"the node table's own columns ({', '.join(NODE_COLUMNS)})", name)
    return name


def check_score_values(name: str, values, n: int) -> np.ndarray:
    """The values of score column ``name`` as a 1-D numpy array of ``n`` numbers (no inf).

    ``values`` is an array, a tensor or a :class:`~llmrank_graph.CentralityResult`; NaN
    marks nodes without a score.

    >>> check_score_values("s", [1, 2], 3)
    Traceback (most recent call last):
    ...
    llmrank_graph.errors.InvalidArgumentError: `scores['s']` must have one value per node: length 3; got length 2
    """
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


def score_info(values) -> dict:
    """What produced ``values``: algorithm, parameters and backend of a CentralityResult, else ``{}``."""
    if isinstance(values, CentralityResult):
        return {"algorithm": values.algorithm, "params": jsonable(values.params), "backend": values.backend}
    return {}


def jsonable(obj):
    """``obj`` with numpy numbers made Python numbers, tuples made lists and anything else a str, for JSON.

    >>> jsonable({"k": (np.int64(3), np.float32(0.5)), 1: None})
    {'k': [3, 0.5], '1': None}
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


# ---------------------------------------------------------------------------- reading
def scores_from_nodes(nodes: pd.DataFrame, meta: dict, where: str) -> tuple[dict, dict]:
    """The stored score columns that ``meta.json`` lists, from the node table, with what produced them.

    Raises
    ------
    GraphFormatError
        A listed column missing from the table, or of another dtype than recorded.
    """
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


# ---------------------------------------------------------------------------- adding to a directory
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


def _check_scores(arg: str, scores) -> Mapping:
    if not isinstance(scores, Mapping) or not scores:
        raise fail_type(arg, "a non-empty mapping of column name -> values", scores)
    return scores


def _new_columns(path: Path, meta: dict, scores: Mapping, info: Mapping | None,
                 overwrite: bool) -> tuple[dict, dict]:
    """The checked new columns and meta.json's updated ``scores`` entries."""
    n = int(meta["n_nodes"])
    stored = dict(meta.get("scores") or {})
    new_cols = {}
    for name, values in scores.items():
        check_score_name(name)
        if name in stored and not overwrite:
            raise InvalidArgumentError(f"`scores` {name!r} is already stored in {str(path)!r}; pass overwrite=True "
                                       "(--overwrite) to replace it")
        arr = check_score_values(name, values, n)
        entry = score_info(values)
        entry.update(dict((info or {}).get(name, {})))
        entry.update(dtype=str(arr.dtype), library_version=__version__)
        new_cols[name] = arr
        stored[name] = entry
    return new_cols, stored


def _publish_nodes(path: Path, meta: dict, table: pd.DataFrame, stored: dict) -> None:
    """Write the new node table, point meta.json at it (the atomic step), then remove the old one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

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


@validated({"path": GRAPH_PATH, "scores": Check(_check_scores, "a non-empty mapping of column name -> values"),
            "info": Optional(InstanceOf(Mapping, "a mapping of column name -> dict")), "overwrite": Boolean()})
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
    >>> import tempfile, pandas as pd, llmrank_graph as lg
    >>> nodes = pd.DataFrame({"vertex": [0, 1, 2], "layer": [0, 0, 1],
    ...                       "kind": ["hidden", "intermediate", "hidden"]})
    >>> edges = pd.DataFrame({"src": [0, 1], "dst": [1, 2], "weight": [0.5, 2.0]})
    >>> g = lg.MLPGraph.from_edgelist(nodes, edges)
    >>> res = lg.pagerank(g, direction="reverse")
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = add_scores(g.to_parquet(f"{tmp}/g"), {score_column_name(res): res})
    ...     print(list(lg.read_graph(path).scores))
    ['pagerank_reverse_a0.85']
    """
    path = Path(path).expanduser()
    where = f"`path` {str(path)!r}"
    if not path.is_dir():
        raise MissingInputError(f"{where} is not a graph directory (it does not exist)")
    with _locked(path):
        meta, nodes = read_node_table(path, where, attempts=1)
        if "blocks" not in meta:
            raise InvalidArgumentError(f"{where} was written by an older llmrank_graph (no block table); read it and "
                                       "write it again with to_parquet before storing scores in it")
        new_cols, stored = _new_columns(path, meta, scores, info, overwrite)
        _publish_nodes(path, meta, nodes.assign(**new_cols), stored)
    logger.info("stored %s in %s", ", ".join(new_cols), path)
    return path
