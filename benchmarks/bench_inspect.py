"""`inspect` at the scale of a real model: statistics, PageRank and heaviest paths on a graph
streamed from safetensors shards, one layer in memory.

Writes random bf16 Llama-shaped shards (up and down projections, one file per layer) to a
temporary directory, builds the graph with ``export_graph_from_safetensors`` (only the file
headers are read) and times, side by side in one run:

* one pass that reads every weight once (the floor: out-strengths of every block);
* ``analysis.layer_stats`` (the default: exact counts, sums, means, min and max, edge-weight
  quantiles from the log-bucket sketch, within 0.39% relative error);
* ``analysis.layer_stats(exact=True)`` (exact quantiles: each block kept in memory);
* ``pagerank(backend="sweep")`` (exact, one pass);
* ``analysis.heaviest_paths(k=10)`` (one (max, x) pass with top-10 lists).

The first three run interleaved, ``--repeat`` rounds of (read, sketch, exact), and each round
prints its ratios to its own read with the 1-minute load average: on a shared machine read the
ratios of the quiet rounds. The table gives the medians over the rounds. Each step prints its
peak extra resident memory next to the size of one layer's weights as float32 (what "about one
layer" means), and the largest difference between the sketch's quantiles and the exact ones.

    python benchmarks/bench_inspect.py --quick     # 4 layers, d=1024, m=2752 (23M edges), < 1 min
    python benchmarks/bench_inspect.py             # Llama-2-7B: 32 layers, d=4096, m=11008 (2.9B edges)
    python benchmarks/bench_inspect.py --layers 2  # two 7B-sized layers (180M edges): the 7B blocks, quickly
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _memory import peak_memory  # noqa: E402
from gpu_bench import write_shards  # noqa: E402  (random Llama-style bf16 shards + config.json)

from llmrank_graph import (
    analysis,
    pagerank,  # noqa: E402
)
from llmrank_graph.analysis.sketch import RELATIVE_ERROR  # noqa: E402
from llmrank_graph.graph.examples import toy_graph  # noqa: E402
from llmrank_graph.graph.streaming import export_graph_from_safetensors  # noqa: E402

SHAPES = {"quick": (4, 1024, 2752), "7b": (32, 4096, 11008)}


def read_once(graph) -> float:
    """One pass over every block: the out-strengths (each weight read once)."""
    total = 0.0
    for b in graph.blocks:
        with b.loaded() as blk:
            total += float(blk.out_strength().sum())
    return total


def timed(fn):
    """``(result, seconds, peak extra RSS in bytes)`` of one call."""
    gc.collect()
    with peak_memory() as mem:
        t = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t
    return out, dt, mem["peak_extra"]


def load() -> float:
    return os.getloadavg()[0]


def worst_sketch_error(sketch, exact) -> float:
    """The largest relative difference between the sketch's weight quantiles and the exact ones."""
    cols = [c for c in exact.columns if c.startswith("q") and c not in ("quantity", "quantile_error")]
    a = sketch[sketch.quantity == "weight"][cols].to_numpy(float)
    b = exact[exact.quantity == "weight"][cols].to_numpy(float)
    return float(np.max(np.abs(a - b) / np.where(b != 0, np.abs(b), 1.0)))


# long: one benchmark run, printed as it goes: the interleaved rounds, then the other steps and the table
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a 4-layer graph with 7B's aspect ratio (< 1 min)")
    ap.add_argument("--layers", type=int, default=None, help="layers of the 7B shape (default 32; --quick: 4 small)")
    ap.add_argument("--repeat", type=int, default=None,
                    help="interleaved rounds of read / layer_stats / layer_stats(exact) (default 5, 1 for 7B)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch's intra-op threads for the run (default: torch's); 1 on a shared, loaded machine, "
                         "where torch's threads wait for each other on every small operation")
    ap.add_argument("--paths", type=int, default=10, help="heaviest paths to find (default %(default)s)")
    ap.add_argument("--dir", default=None, help="where to write the shards (default: a temporary directory)")
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    if args.threads is not None:
        torch.set_num_threads(args.threads)  # this script's process only
    L, d, m = SHAPES["quick" if args.quick else "7b"]
    L = args.layers or L
    repeat = args.repeat or (5 if args.quick or L <= 4 else 1)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        t = time.perf_counter()
        nbytes = write_shards(Path(tmp) / "shards", L, d, m)
        t_write = time.perf_counter() - t
        graph = export_graph_from_safetensors(Path(tmp) / "shards")
        layer_f32 = 2 * d * m * 4
        print(f"{graph!r}: {nbytes / 2**30:.2f} GiB of bf16 shards written in {t_write:.0f} s; one layer of weights "
              f"as float32 = {layer_f32 / 2**20:.0f} MiB; torch threads {torch.get_num_threads()}, "
              f"{os.cpu_count()} CPUs")
        read_once(graph)  # warm-up: file cache, lazy imports and the kernels' compilation
        analysis.layer_stats(toy_graph())  # the sketch's kernel: compiled, or loaded from numba's cache
        interleaved = {"read every weight once": lambda: read_once(graph),
                       "layer_stats (sketch, default)": lambda: analysis.layer_stats(graph),
                       "layer_stats (exact=True)": lambda: analysis.layer_stats(graph, exact=True)}
        times = {k: [] for k in interleaved}
        peaks = dict.fromkeys(interleaved, 0)
        results = {}
        print(f"\n{'round':>5}{'read s':>9}{'sketch s':>10}{'exact s':>9}{'sketch/read':>13}{'exact/read':>12}"
              f"{'load 1 min':>12}")
        for r in range(repeat):
            for name, fn in interleaved.items():
                results[name], dt, peak = timed(fn)
                times[name].append(dt)
                peaks[name] = max(peaks[name], peak)
            rd, sk, ex = (times[k][-1] for k in interleaved)
            print(f"{r + 1:>5}{rd:>9.2f}{sk:>10.2f}{ex:>9.2f}{sk / rd:>13.2f}{ex / rd:>12.2f}{load():>12.2f}",
                  flush=True)
        rows = [(name, statistics.median(ts), statistics.median(t / rd for t, rd in
                                                                 zip(ts, times["read every weight once"])),
                 peaks[name]) for name, ts in times.items()]
        base = rows[0][1]
        others = [("pagerank, sweep (exact)", lambda: pagerank(graph, backend="sweep", device="cpu")),
                  (f"heaviest_paths(k={args.paths})", lambda: analysis.heaviest_paths(graph, k=args.paths,
                                                                                      device="cpu"))]
        for name, fn in others:
            results[name], dt, peak = timed(fn)
            rows.append((name, dt, dt / base, peak))
            print(f"  {name}: {dt:.1f} s (load {load():.2f})", flush=True)
    print(f"\n{'step':34}{'seconds':>9}{'x read-once':>13}{'peak extra RSS':>16}{'x one layer':>13}")
    for name, dt, ratio, peak in rows:
        print(f"{name:34}{dt:>9.2f}{ratio:>13.2f}{peak / 2**20:>12.0f} MiB{peak / layer_f32:>13.2f}")
    print("(layer_stats and the read: medians over the rounds, each ratio to its round's read; the others: to the "
          "median read)")
    sk, ex = results["layer_stats (sketch, default)"], results["layer_stats (exact=True)"]
    print(f"\nsketch vs exact weight quantiles: largest relative difference {worst_sketch_error(sk, ex):.2e} "
          f"(bound {RELATIVE_ERROR:.2e}); counts, sums, min, max equal: "
          f"{sk[['count', 'min', 'max']].equals(ex[['count', 'min', 'max']])}")
    paths = results[others[1][0]]
    print(f"heaviest path: score {paths.score.iloc[0]:.3g} over {paths.length.iloc[0]} edges; "
          f"edges {graph.n_edges:,}; PageRank mass on intermediate nodes "
          f"{sum(results[others[0][0]].scores[p.offset:p.stop].sum() for p in graph.intermediate_partitions()):.3f}")


if __name__ == "__main__":
    main()
