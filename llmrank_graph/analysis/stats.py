"""Sizes and distributions: the graph's facts, partition sizes, and per-layer quantiles.

:func:`layer_stats` reads each block (one weight matrix) once, a chunk of rows at a time, into a
log-bucket quantile sketch (:mod:`~llmrank_graph.analysis.sketch`: quantiles within 0.39%
relative error; exact ones with ``exact=True``), so it runs on graphs streamed from safetensors
shards or read lazily from Parquet with about one chunk in memory (one block with ``exact``).
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
from .sketch import RELATIVE_ERROR, QuantileSketch

__all__ = ["QUANTILES", "graph_info", "summary", "layer_stats", "collect_info", "partition_table",
           "compute_layer_stats", "scan_block", "quantile_column"]

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


def _weight_row(sk: QuantileSketch, values: np.ndarray | None, qs: tuple[float, ...]) -> dict:
    """The exact count, sum, mean, min and max of a block's weights, and their quantiles.

    Exact quantiles when ``values`` (the weights, float32) are given, else the sketch's.
    """
    n = sk.count
    qv = sk.exact_quantiles(values, qs) if values is not None else sk.quantiles(qs)
    return {"count": n, "sum": sk.total, "mean": sk.total / n if n else np.nan, "min": sk.minimum,
            "max": sk.maximum, "quantile_error": 0.0 if values is not None else RELATIVE_ERROR,
            **dict(zip(map(quantile_column, qs), qv.tolist()))}


def _strength_row(x: np.ndarray, qs: tuple[float, ...]) -> dict:
    """The same columns for node strengths (float64, in memory): quantiles always exact."""
    total = float(x.sum())
    return {"count": int(x.size), "sum": total, "mean": total / x.size, "min": float(x.min()),
            "max": float(x.max()), "quantile_error": 0.0,
            **dict(zip(map(quantile_column, qs), np.quantile(x, qs).tolist()))}


def scan_block(block, keep: bool = False) -> tuple[QuantileSketch, np.ndarray | None, np.ndarray, np.ndarray]:
    """One read of a loaded block: the sketch of its edge weights and its strengths.

    Returns ``(sketch, values, out_strength (src,), in_strength (dst,))``: strengths in float64
    (sums of the float32 weights), ``values`` the weights as a fresh float32 array when
    ``keep`` (for exact quantiles), else None. A dense block is read chunk by chunk, each chunk
    once, by the sketch's kernel, which sums its rows and columns in the same pass; with
    ``keep`` the chunks are also copied into one array of the block's size.
    """
    rows, cols = block.shape
    if block.nnz == rows * cols:  # dense: the chunks hold exactly the edges
        sk = QuantileSketch()
        s_out, s_in = np.zeros(cols), np.empty(rows)
        values = np.empty((rows, cols), dtype=np.float32) if keep else None
        for r0, r1, c in block.chunks(torch.float32, "cpu"):
            a = c.numpy()
            s_in[r0:r1] = sk.add(a, s_out)
            if values is not None:
                values[r0:r1] = a
        return sk, (values.reshape(-1) if keep else None), s_out, s_in
    w = np.asarray(block.coo()[2], dtype=np.float32)
    return (QuantileSketch.of(w), w if keep else None, block.out_strength(torch.float64).cpu().numpy(),
            block.in_strength(torch.float64).cpu().numpy())


@validated({"graph": GRAPH, "quantiles": Check(_check_quantiles, "a non-empty sequence of floats in [0, 1]"),
            "exact": Boolean(), "progress": Boolean()})
def layer_stats(graph: MLPGraph, quantiles: Sequence[float] = QUANTILES, *, exact: bool = False,
                progress: bool = False) -> pd.DataFrame:
    """Count, sum, mean, min, max and quantiles of the edge weights of every block and of the node strengths.

    One read of each block, one chunk of it in memory at a time (with ``exact``, one block).
    Counts, sums, means, minima and maxima are exact. The quantiles of the edge weights are
    numpy's (``np.quantile``, linear interpolation, of the float32 weights taken as float64):
    by default estimated by a log-bucket sketch (:class:`~llmrank_graph.analysis.sketch.QuantileSketch`)
    within a relative error of :data:`~llmrank_graph.analysis.sketch.RELATIVE_ERROR` = 1/257
    (0.39%) each (2^-134 absolute for weights below 1.2e-38), exact with ``exact=True``. The
    quantiles of the node strengths (one number per node, in memory) are always exact.

    Parameters
    ----------
    graph : MLPGraph
    quantiles : sequence of float in [0, 1]
    exact : bool
        Exact quantiles of the edge weights: each block's weights are kept in memory as
        float32 and the order statistics selected from them (about one block of memory more,
        and a few more passes over it).
    progress : bool
        Show a progress bar over the blocks.

    Returns
    -------
    pandas.DataFrame
        One row per block (``quantity='weight'``, ``of`` = ``'H0->I0'``, ``role`` = its weight)
        and per partition with in-edges (``quantity='in_strength'``) or out-edges
        (``'out_strength'``), with ``layer, kind, count, sum, mean, min, max``,
        ``quantile_error`` (the bound on the relative error of the row's quantiles: 0 when
        exact) and one column per quantile (``q0``, ``q0.5``, ``q1`` ...).

    Example
    -------
    >>> import llmrank_graph as lg
    >>> g = lg.graph.toy_graph()             # H0 -> I0 (2 neurons) -> H1
    >>> st = layer_stats(g, quantiles=(0.0, 0.5, 1.0), exact=True)
    >>> st[["quantity", "of", "count", "q0", "q0.5", "q1"]].values.tolist()[:2]
    [['weight', 'H0->I0', 2, 1.0, 1.5, 2.0], ['weight', 'I0->H1', 2, 1.0, 1.0, 1.0]]
    >>> sk = layer_stats(g, quantiles=(0.0, 0.5, 1.0))   # the sketch: within 1/257 of those
    >>> sk[["q0", "q0.5", "q1", "quantile_error"]].round(4).values.tolist()[0]
    [1.0, 1.5, 2.0, 0.0039]
    """
    return compute_layer_stats(graph, quantiles, progress, exact)


def compute_layer_stats(graph: MLPGraph, qs: tuple[float, ...] = QUANTILES, progress: bool = False,
                        exact: bool = False) -> pd.DataFrame:
    """:func:`layer_stats` on checked arguments."""
    n = graph.n_nodes
    s_out, s_in = np.zeros(n), np.zeros(n)
    has_out, has_in = set(), set()
    rows = []
    for b in progress_bar(graph.blocks, progress, "layer statistics"):
        with b.loaded() as blk:
            sk, values, so, si = scan_block(blk, keep=exact)
        s_out[b.src.offset:b.src.stop] += so
        s_in[b.dst.offset:b.dst.stop] += si
        has_out.add(b.src.position)
        has_in.add(b.dst.position)
        rows.append({"quantity": "weight", "layer": b.layer, "of": f"{b.src.name}->{b.dst.name}", "role": b.role,
                     "kind": None, **_weight_row(sk, values, qs)})
        del values
    for p in graph.partitions:
        for quantity, s, have in (("in_strength", s_in, has_in), ("out_strength", s_out, has_out)):
            if p.position in have:
                rows.append({"quantity": quantity, "layer": p.layer, "of": p.name, "role": None, "kind": p.kind,
                             **_strength_row(s[p.offset:p.stop], qs)})
    return pd.DataFrame(rows)
