"""Export and read back at scale: a Llama-3.2-1B-shaped graph streamed from safetensors shards,
written to Parquet block by block, read back lazily, and ranked with PageRank.

Writes random bf16 shards (16 layers, d=2048, m=8192: 537M edges) to a temporary directory,
then times, side by side in one run:

* one pass that reads every weight from the shards once (the floor);
* ``to_parquet`` of the streamed graph (one block in memory; file size printed);
* ``read_graph`` (lazy: meta.json, the node table and the Parquet footers only);
* ``pagerank(backend="sweep")`` on the streamed shards and on the lazily read Parquet graph
  (each block read from its row groups when the sweep needs it), and the L1 distance
  between the two results;
* ``read_graph(layers=[0])`` and PageRank on that one layer;
* every block of the Parquet graph read once as the reader did before it checked blocks
  (pyarrow and numpy only), then with :meth:`ParquetBlock.read
  <llmrank_graph.graph.storage.ParquetBlock.read>`, which checks each block (finite,
  non-negative weights; rows by their ids unless the file declares their order); each
  block's best of seven each way, and their ratio (the checks' budget is +10%), with the
  time of the weight check alone (the one pass that the checked read adds); and, for
  comparison, the same blocks read by their ids, as a file rewritten by another tool is.

Each step prints its time, its ratio to the read-once pass and its peak extra resident
memory, next to one layer's weights as float32.

    python benchmarks/bench_parquet.py --quick     # 4 layers, d=512, m=2048 (8.4M edges), < 2 min
    python benchmarks/bench_parquet.py             # Llama-3.2-1B: 16 layers, d=2048, m=8192 (537M edges)
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _memory import peak_memory  # noqa: E402
from bench_inspect import read_once  # noqa: E402
from gpu_bench import write_shards  # noqa: E402

from llmrank_graph import pagerank, read_graph  # noqa: E402
from llmrank_graph.errors import GraphFormatError  # noqa: E402
from llmrank_graph.graph.blocks import SparseBlock, WeightBlock  # noqa: E402
from llmrank_graph.graph.parts import check_weights  # noqa: E402
from llmrank_graph.graph.storage import ParquetBlock  # noqa: E402
from llmrank_graph.graph.streaming import export_graph_from_safetensors  # noqa: E402

SHAPES = {"quick": (4, 512, 2048), "1b": (16, 2048, 8192)}


def read_unchecked(b: ParquetBlock):
    """One block read as the reader did before the checks: its columns, by position, trusted."""
    rows, cols = b.shape
    t = pq.ParquetFile(b.file).read_row_groups(list(range(*b.row_groups)),
                                               columns=["weight"] if b.layout == "dense" else ["src", "dst", "weight"])
    w = np.require(t.column("weight").to_numpy().astype(np.float32, copy=False), requirements="W")
    if b.layout == "dense":
        return WeightBlock(b.src, b.dst, b.layer, b.role, [torch.from_numpy(w.reshape(rows, cols))])
    s = t.column("src").to_numpy() - b.file_offsets[0]
    d = t.column("dst").to_numpy() - b.file_offsets[1]
    return SparseBlock(b.src, b.dst, b.layer, b.role, d, s, w)


def compare_reads(path: Path, repeat: int = 7) -> dict[str, float]:
    """Seconds to read every block once: unchecked, checked, checked by ids, and the check of the weights alone.

    Each block is read by the three ways in turn, ``repeat`` times, and its best time per way
    is summed: interleaved, so that every way sees the same page cache and machine load (the
    order rotates, so that no way always follows the big allocations of reading by ids), and
    best-of, because other work on the machine only ever adds time.
    """
    graph = read_graph(path, lazy=True)
    by_ids = read_graph(path, lazy=True)
    for b in by_ids.blocks:
        b.row_order = False  # as if another tool had rewritten the file: rows placed by their ids
    ways = {"unchecked (before)": read_unchecked, "checked (now)": ParquetBlock.read,
            "checked, rows by ids": ParquetBlock.read}
    total = dict.fromkeys(ways, 0.0)
    for plain, ided in zip(graph.blocks, by_ids.blocks):
        best = dict.fromkeys(ways, float("inf"))
        for r in range(repeat):
            names = list(ways)[r % 3:] + list(ways)[:r % 3]
            for name in names:
                fn = ways[name]
                t = time.perf_counter()
                fn(ided if name == "checked, rows by ids" else plain)
                best[name] = min(best[name], time.perf_counter() - t)
        for name in ways:
            total[name] += best[name]
        if plain.layout == "dense":  # what the checked read adds to the unchecked one: one pass over the weights
            w = read_unchecked(plain).weights[0].numpy().ravel()
            check = float("inf")
            for _ in range(repeat):
                t = time.perf_counter()
                check_weights(w, "bench", GraphFormatError)
                check = min(check, time.perf_counter() - t)
            total["the weight check alone"] = total.get("the weight check alone", 0.0) + check
    return total


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a 4-layer graph (< 2 min)")
    ap.add_argument("--dir", default=None, help="where to write the shards and the graph (default: a temporary dir)")
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    L, d, m = SHAPES["quick" if args.quick else "1b"]
    layer_f32 = 2 * d * m * 4
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        nbytes = write_shards(tmp / "shards", L, d, m)
        streamed = export_graph_from_safetensors(tmp / "shards")
        print(f"{streamed!r}: {nbytes / 2**30:.2f} GiB of bf16 shards written in {time.perf_counter() - t:.0f} s; "
              f"one layer as float32 = {layer_f32 / 2**20:.0f} MiB; torch threads {torch.get_num_threads()}")
        read_once(streamed)  # warm-up: file cache, imports, the fused kernels' compilation
        out = {}
        steps = [
            ("read every weight once", lambda: read_once(streamed)),
            ("to_parquet (streamed graph)", lambda: streamed.to_parquet(tmp / "graph")),
            ("read_graph (lazy)", lambda: read_graph(tmp / "graph", lazy=True)),
            ("pagerank sweep, shards", lambda: pagerank(streamed, backend="sweep", device="cpu")),
            ("pagerank sweep, parquet", lambda: pagerank(out["read_graph (lazy)"], backend="sweep", device="cpu")),
            ("read_graph(layers=[0]) + pagerank", lambda: pagerank(read_graph(tmp / "graph", layers=[0], lazy=True),
                                                                   backend="sweep", device="cpu")),
        ]
        rows = []
        for name, fn in steps:
            gc.collect()
            with peak_memory() as mem:
                t = time.perf_counter()
                out[name] = fn()
                dt = time.perf_counter() - t
            rows.append((name, dt, mem["peak_extra"]))
            print(f"  {name}: {dt:.1f} s", flush=True)
        reads = compare_reads(tmp / "graph")
        size = sum(p.stat().st_size for p in (tmp / "graph").iterdir())
        edges_size = (tmp / "graph" / "edges.parquet").stat().st_size
        l1 = float(np.abs(out["pagerank sweep, shards"].scores - out["pagerank sweep, parquet"].scores).sum())
    base = rows[0][1]
    print(f"\n{'step':36}{'seconds':>9}{'x read-once':>13}{'peak extra RSS':>16}{'x one layer':>13}")
    for name, dt, peak in rows:
        print(f"{name:36}{dt:>9.1f}{dt / base:>13.2f}{peak / 2**20:>12.0f} MiB{peak / layer_f32:>13.2f}")
    n = streamed.n_edges
    print(f"\ngraph directory: {size / 2**30:.2f} GiB ({edges_size / n:.2f} bytes per edge in edges.parquet, "
          f"{n:,} edges); written at {n / rows[1][1] / 1e6:.1f} M edges/s; "
          f"L1(PageRank from shards - from Parquet) = {l1:.1e}")
    before = reads["unchecked (before)"]
    print("\nevery block of edges.parquet read once (each block's best of 7):")
    for name, dt in reads.items():
        print(f"  {name:24}{dt:>8.3f} s{dt / before:>8.3f} x unchecked")
    print(f"checks' cost on the read: {reads['checked (now)'] / before - 1:+.1%} end to end, "
          f"{reads['the weight check alone'] / before:+.1%} for the check alone (budget +10%)")


if __name__ == "__main__":
    main()
