"""Sizes and distributions: the graph's facts, partition sizes, and per-layer quantiles.

:func:`layer_stats` reads the graph one block (one weight matrix) at a time and selects the
quantiles in place, so it runs on graphs streamed from safetensors shards or read lazily from
Parquet with about one layer in memory.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from ..base.checks import fail, fail_type
from ..base.params import Boolean, Check, validated
from ..graph.export import export_options
from ..graph.mlpgraph import MLPGraph
from .common import GRAPH, progress_bar

__all__ = ["QUANTILES", "graph_info", "summary", "layer_stats", "collect_info", "partition_table",
           "compute_layer_stats",
           "quantile_column"]

#: Quantiles of :func:`layer_stats`.
QUANTILES: tuple[float, ...] = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)


# ---------------------------------------------------------------------------- summary
@validated({"graph": GRAPH})
def graph_info(graph: MLPGraph) -> dict:
    """Facts about the whole graph: model, export options, sizes, densities, stored scores.

    ``density`` is networkx's ``m / (n (n - 1))``; ``block_density`` is the fraction of the
    edges possible between the partitions that blocks join (1.0 for a dense export).

    Example
    -------
    >>> import torch, transformers
    >>> import llmrank_graph as lg
    >>> cfg = transformers.LlamaConfig(vocab_size=32, hidden_size=4, intermediate_size=6, num_hidden_layers=2,
    ...                                num_attention_heads=2, num_key_value_heads=2)
    >>> _ = torch.manual_seed(0)
    >>> info = graph_info(lg.export_graph(transformers.LlamaForCausalLM(cfg)))
    >>> info["n_nodes"], info["n_edges"], info["block_density"]
    (24, 96, 1.0)
    """
    return collect_info(graph)


def collect_info(graph: MLPGraph) -> dict:
    """:func:`graph_info` of a checked graph."""
    n, m = graph.n_nodes, graph.n_edges
    possible = sum(b.src.size * b.dst.size for b in graph.blocks)
    opts = export_options(graph)
    info = {"model": graph.meta.get("model"), "model_type": graph.meta.get("model_type"),
            **(opts.as_dict() if opts is not None else {}),
            "n_nodes": n, "n_edges": m, "n_partitions": len(graph.partitions), "n_blocks": len(graph.blocks),
            "n_layers": len({p.layer for p in graph.intermediate_partitions()}),
            "density": m / (n * (n - 1)) if n > 1 else 0.0,
            "block_density": m / possible if possible else 0.0,
            "has_activation": graph.has_activation, "stored_scores": list(graph.scores),
            "source": str(graph.source) if graph.source is not None else graph.meta.get("source"),
            "streamed": not graph.resident}
    if "layers" in graph.meta:
        info["layers"] = list(graph.meta["layers"])
    return info


@validated({"graph": GRAPH})
def summary(graph: MLPGraph) -> pd.DataFrame:
    """One row per partition: size and the edges entering and leaving it.

    Returns
    -------
    pandas.DataFrame
        Columns ``partition, name, layer, kind, size, in_edges, out_edges, in_blocks,
        out_blocks``; ``attrs["graph"]`` holds :func:`graph_info`.

    Example
    -------
    >>> import llmrank_graph as lg
    >>> g = lg.graph.toy_graph()             # H0 -> I0 (2 neurons) -> H1
    >>> s = summary(g)
    >>> s[["name", "size", "in_edges", "out_edges"]].values.tolist()
    [['H0', 1, 0, 2], ['I0', 2, 2, 2], ['H1', 1, 2, 0]]
    >>> s.attrs["graph"]["n_edges"] == int(s.out_edges.sum())
    True
    """
    return partition_table(graph)


def partition_table(graph: MLPGraph) -> pd.DataFrame:
    """:func:`summary` of a checked graph."""
    ins, outs = defaultdict(int), defaultdict(int)
    inb, outb = defaultdict(int), defaultdict(int)
    for b in graph.blocks:
        ins[b.dst.position] += b.nnz
        outs[b.src.position] += b.nnz
        inb[b.dst.position] += 1
        outb[b.src.position] += 1
    df = pd.DataFrame([{"partition": p.position, "name": p.name, "layer": p.layer, "kind": p.kind, "size": p.size,
                        "in_edges": ins[p.position], "out_edges": outs[p.position],
                        "in_blocks": inb[p.position], "out_blocks": outb[p.position]} for p in graph.partitions])
    df.attrs["graph"] = collect_info(graph)
    return df


# ---------------------------------------------------------------------------- layer statistics
def quantile_column(q: float) -> str:
    """The column of quantile ``q`` in :func:`layer_stats`: ``q0.5`` for the median."""
    return f"q{q:g}"


def _check_quantiles(arg: str, quantiles) -> tuple[float, ...]:
    if isinstance(quantiles, (str, bytes)) or not isinstance(quantiles, Iterable):
        raise fail_type(arg, "a sequence of floats in [0, 1]", quantiles)
    qs = tuple(quantiles)
    if not qs or any(isinstance(q, bool) or not isinstance(q, (int, float, np.floating)) or not 0 <= q <= 1
                     for q in qs):
        raise fail(arg, "a non-empty sequence of floats in [0, 1]", quantiles)
    return tuple(float(q) for q in qs)


def _quantiles(v: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """``np.quantile(v.astype(float64), qs)`` (linear method) without a float64 copy; ``v`` is reordered.

    The order statistics are selected in place (``np.partition``) in ``v``'s own dtype, which
    keeps their values exact, and interpolated in float64 as numpy does (``_lerp``).
    """
    n = v.size
    pos = np.asarray(qs, dtype=np.float64) * (n - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    v.partition(np.unique(np.r_[lo, hi]))
    a, b = v[lo].astype(np.float64), v[hi].astype(np.float64)
    t = pos - lo
    diff = b - a
    out = np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)
    return out.tolist()


def _stats_row(values: np.ndarray, total: float, qs: tuple[float, ...]) -> dict:
    """count, mean (from an exact float64 ``total``) and quantiles; reorders ``values``."""
    if values.size == 0:
        return {"count": 0, "mean": np.nan, **{quantile_column(q): np.nan for q in qs}}
    return {"count": int(values.size), "mean": float(total) / values.size,
            **dict(zip(map(quantile_column, qs), _quantiles(values, qs)))}


def _block_values(block) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The weights of every stored edge of a loaded block (float32, a fresh array) and its strengths.

    Returns ``(values, out_strength (src,), in_strength (dst,))``, strengths in float64. A dense
    block is read once (its chunks); its strengths are sums of those float32 values.
    """
    rows, cols = block.shape
    if block.nnz == rows * cols:  # dense: the chunks hold exactly the edges
        out = np.empty((rows, cols), dtype=np.float32)
        for r0, r1, c in block.chunks(torch.float32, "cpu"):
            out[r0:r1] = c.numpy()
        return out.reshape(-1), out.sum(axis=0, dtype=np.float64), out.sum(axis=1, dtype=np.float64)
    return (np.array(block.coo()[2], dtype=np.float32), block.out_strength(torch.float64).cpu().numpy(),
            block.in_strength(torch.float64).cpu().numpy())


@validated({"graph": GRAPH, "quantiles": Check(_check_quantiles, "a non-empty sequence of floats in [0, 1]"),
            "progress": Boolean()})
def layer_stats(graph: MLPGraph, quantiles: Sequence[float] = QUANTILES, *, progress: bool = False) -> pd.DataFrame:
    """Quantiles of the edge weights of every block and of the node strengths of every partition.

    One pass over the blocks, one block in memory at a time. Quantiles are numpy's
    (``np.quantile``, linear interpolation) of the float32 weights taken as float64; they are
    selected in place, without a float64 copy of the block.

    Parameters
    ----------
    graph : MLPGraph
    quantiles : sequence of float in [0, 1]
    progress : bool
        Show a progress bar over the blocks.

    Returns
    -------
    pandas.DataFrame
        One row per block (``quantity='weight'``, ``of`` = ``'H0->I0'``, ``role`` = its weight)
        and per partition with in-edges (``quantity='in_strength'``) or out-edges
        (``'out_strength'``), with ``layer, kind, count, mean`` and one column per
        quantile (``q0``, ``q0.5``, ``q1`` ...).

    Example
    -------
    >>> import llmrank_graph as lg
    >>> g = lg.graph.toy_graph()             # H0 -> I0 (2 neurons) -> H1
    >>> st = layer_stats(g, quantiles=(0.0, 0.5, 1.0))
    >>> st[["quantity", "of", "count", "q0", "q0.5", "q1"]].values.tolist()[:2]
    [['weight', 'H0->I0', 2, 1.0, 1.5, 2.0], ['weight', 'I0->H1', 2, 1.0, 1.0, 1.0]]
    """
    return compute_layer_stats(graph, quantiles, progress)


def compute_layer_stats(graph: MLPGraph, qs: tuple[float, ...] = QUANTILES, progress: bool = False) -> pd.DataFrame:
    """:func:`layer_stats` on checked arguments."""
    n = graph.n_nodes
    s_out, s_in = np.zeros(n), np.zeros(n)
    has_out, has_in = set(), set()
    rows = []
    for b in progress_bar(graph.blocks, progress, "layer statistics"):
        with b.loaded() as blk:
            values, so, si = _block_values(blk)
        s_out[b.src.offset:b.src.stop] += so
        s_in[b.dst.offset:b.dst.stop] += si
        has_out.add(b.src.position)
        has_in.add(b.dst.position)
        rows.append({"quantity": "weight", "layer": b.layer, "of": f"{b.src.name}->{b.dst.name}", "role": b.role,
                     "kind": None, **_stats_row(values, float(so.sum()), qs)})
        del values
    for p in graph.partitions:
        for quantity, s, have in (("in_strength", s_in, has_in), ("out_strength", s_out, has_out)):
            if p.position in have:
                x = s[p.offset:p.stop].copy()
                rows.append({"quantity": quantity, "layer": p.layer, "of": p.name, "role": None, "kind": p.kind,
                             **_stats_row(x, float(x.sum()), qs)})
    return pd.DataFrame(rows)

