"""`inspect` at the scale of a real model: statistics, PageRank and heaviest paths on a graph
streamed from safetensors shards, one layer in memory.

Writes random bf16 Llama-shaped shards (up and down projections, one file per layer) to a
temporary directory, builds the graph with ``export_graph_from_safetensors`` (only the file
headers are read) and times, side by side in one run:

* one pass that reads every weight once (the floor: out-strengths of every block);
* ``analysis.layer_stats`` (exact quantiles of every block's weights and of the node strengths);
* ``pagerank(backend="sweep")`` (exact, one pass);
* ``analysis.heaviest_paths(k=10)`` (one (max, x) pass with top-10 lists).

Each step prints its time, its ratio to the read-once pass and its peak extra resident memory,
next to the size of one layer's weights as float32 (what "about one layer" means).

    python benchmarks/bench_inspect.py --quick     # 4 layers, d=1024, m=2752 (23M edges), < 2 min
    python benchmarks/bench_inspect.py             # Llama-2-7B: 32 layers, d=4096, m=11008 (2.9B edges)
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _memory import peak_memory  # noqa: E402
from gpu_bench import write_shards  # noqa: E402  (random Llama-style bf16 shards + config.json)

from llmrank_graph import (
    analysis,
    pagerank,  # noqa: E402
)
from llmrank_graph.graph.streaming import export_graph_from_safetensors  # noqa: E402

SHAPES = {"quick": (4, 1024, 2752), "7b": (32, 4096, 11008)}


def read_once(graph) -> float:
    """One pass over every block: the out-strengths (each weight read once)."""
    total = 0.0
    for b in graph.blocks:
        with b.loaded() as blk:
            total += float(blk.out_strength().sum())
    return total


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a 4-layer graph with 7B's aspect ratio (< 2 min)")
    ap.add_argument("--paths", type=int, default=10, help="heaviest paths to find (default %(default)s)")
    ap.add_argument("--dir", default=None, help="where to write the shards (default: a temporary directory)")
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    L, d, m = SHAPES["quick" if args.quick else "7b"]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        t = time.perf_counter()
        nbytes = write_shards(Path(tmp) / "shards", L, d, m)
        t_write = time.perf_counter() - t
        graph = export_graph_from_safetensors(Path(tmp) / "shards")
        layer_f32 = 2 * d * m * 4
        print(f"{graph!r}: {nbytes / 2**30:.2f} GiB of bf16 shards written in {t_write:.0f} s; one layer of weights "
              f"as float32 = {layer_f32 / 2**20:.0f} MiB; torch threads {torch.get_num_threads()}")
        steps = [("read every weight once", lambda: read_once(graph)),
                 ("layer_stats (exact quantiles)", lambda: analysis.layer_stats(graph)),
                 ("pagerank, sweep (exact)", lambda: pagerank(graph, backend="sweep", device="cpu")),
                 (f"heaviest_paths(k={args.paths})", lambda: analysis.heaviest_paths(graph, k=args.paths,
                                                                                     device="cpu"))]
        read_once(graph)  # warm-up: file cache, lazy imports and the fused kernels' compilation
        rows, results = [], {}
        for name, fn in steps:
            gc.collect()
            with peak_memory() as mem:
                t = time.perf_counter()
                results[name] = fn()
                dt = time.perf_counter() - t
            rows.append((name, dt, mem["peak_extra"]))
            print(f"  {name}: {dt:.1f} s", flush=True)
    base = rows[0][1]
    print(f"\n{'step':34}{'seconds':>9}{'x read-once':>13}{'peak extra RSS':>16}{'x one layer':>13}")
    for name, dt, peak in rows:
        print(f"{name:34}{dt:>9.1f}{dt / base:>13.2f}{peak / 2**20:>12.0f} MiB{peak / layer_f32:>13.2f}")
    paths = results[steps[3][0]]
    print(f"\nheaviest path: score {paths.score.iloc[0]:.3g} over {paths.length.iloc[0]} edges; "
          f"edges {graph.n_edges:,}; PageRank mass on intermediate nodes "
          f"{sum(results[steps[2][0]].scores[p.offset:p.stop].sum() for p in graph.intermediate_partitions()):.3f}")


if __name__ == "__main__":
    main()
