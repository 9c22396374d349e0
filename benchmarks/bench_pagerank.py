"""PageRank on the whole-MLP graph of SmolLM2-135M: exact sweep vs scipy power iteration.

Everything is measured side by side in one run and printed as ratios:

* reading the MLP weights once (the physical floor for any method that uses them all);
* the ``sweep`` backend, cold (first call, computes out-strengths) and warm;
* the ``scipy`` backend: CSR build, then power iterations (warm = CSR cached);
* building the edge list (edges/s);
* peak extra resident memory of each.

Run:  python benchmarks/bench_pagerank.py [--model PATH] [--repeats 3] [--tol 1e-10]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from _memory import peak_memory  # noqa: E402

import llmrank_graph as lg  # noqa: E402
from llmrank_graph.architectures import mlp_layers  # noqa: E402


def timed(fn, repeats=1):
    best, out = float("inf"), None
    for _ in range(repeats):
        gc.collect()
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model directory (default: embedded SmolLM2-135M)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tol", type=float, default=1e-10)
    ap.add_argument("--direction", default="forward", choices=["forward", "reverse"])
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    model, _ = lg.load_model(args.model)
    weights = [m.weight(w).detach() for m in mlp_layers(model) for w in ("up", "down")]
    graph = lg.export_graph(model)
    print(f"{graph!r}; torch threads: {torch.get_num_threads()}")
    rows = []

    def read_once():
        return sum(float(w.sum()) for w in weights)

    t_read, _ = timed(read_once, args.repeats)
    rows.append(("read MLP weights once", t_read, 0))

    with peak_memory() as mem:
        t_cold, _ = timed(lambda: lg.pagerank(graph, backend="sweep", direction=args.direction))
    rows.append(("sweep, cold (+ out-strengths)", t_cold, mem["peak_extra"]))
    with peak_memory() as mem:
        t_sweep, r_sweep = timed(lambda: lg.pagerank(graph, backend="sweep", direction=args.direction), args.repeats)
    rows.append(("sweep, warm", t_sweep, mem["peak_extra"]))

    with peak_memory() as mem:
        t_edges, edges = timed(lambda: graph.edges)  # built once from the blocks, then cached by the graph
    rows.append((f"edge list ({len(edges) / t_edges / 1e6:.1f} M edges/s)", t_edges, mem["peak_extra"]))
    with peak_memory() as mem:
        t_scipy_cold, _ = timed(lambda: lg.pagerank(graph, backend="scipy", direction=args.direction, tol=args.tol))
    rows.append(("scipy, cold (CSR build + iterations)", t_scipy_cold, mem["peak_extra"]))
    with peak_memory() as mem:
        t_scipy, r_scipy = timed(lambda: lg.pagerank(graph, backend="scipy", direction=args.direction, tol=args.tol),
                                 args.repeats)
    rows.append((f"scipy, warm ({r_scipy.iterations} iterations)", t_scipy, mem["peak_extra"]))

    tight = lg.pagerank(graph, backend="scipy", direction=args.direction, tol=args.tol / 1000)
    print(f"\n{'step':42}{'seconds':>10}{'peak extra RSS':>16}")
    for name, t, m in rows:
        print(f"{name:42}{t:>10.3f}{m / 2**20:>13.0f} MiB")
    l1 = np.abs(r_sweep.scores - r_scipy.scores).sum()
    print("\nratios (same run):")
    print(f"  scipy warm / sweep warm            = {t_scipy / t_sweep:8.1f}x   (target >= 20x)")
    print(f"  scipy cold / sweep cold            = {t_scipy_cold / t_cold:8.1f}x")
    print(f"  sweep warm / read weights once     = {t_sweep / t_read:8.2f}x   (target <= 3x)")
    print(f"  edge list rate                     = {len(edges) / t_edges / 1e6:8.1f} M edges/s (target >= 10)")
    print(f"  L1(sweep - scipy) at tol={args.tol:g}     = {l1:.2e}   (target <= 1e-6)")
    print(f"  L1(sweep - scipy) at tol={args.tol / 1000:g}     = {np.abs(r_sweep.scores - tight.scores).sum():.2e}"
          f"   (scipy {tight.iterations} iterations: the gap above is scipy's n * tol stopping rule)")


if __name__ == "__main__":
    main()
