"""PageRank on the whole-MLP graph of SmolLM2-135M: exact sweep vs one read of the weights vs scipy.

Everything is measured side by side in one run and printed as ratios:

* reading the MLP weights once (the physical floor for any method that uses them all);
* the ``sweep`` backend, cold (first call, computes and caches out-strengths) and warm, on the
  plain graph (``|W|``) and on the pagerank scorer's default graph (activation-share edges:
  a column scale on every block), with the fused |W| kernels and with the torch fallback;
* the ``scipy`` backend: CSR build, then power iterations (warm = CSR cached);
* building the edge list (edges/s);
* peak extra resident memory of each;
* the L1 distance between the sweep and scipy at two tolerances.

Run:  python benchmarks/bench_pagerank.py [--model PATH] [--repeats 5] [--tol 1e-10] [--quick]
(``--quick`` skips scipy and the edge list: about 30 s.)
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
import llmrank_graph.kernels as kernels  # noqa: E402
from llmrank_graph.data.calibration import ActivationStats  # noqa: E402
from llmrank_graph.models.architectures import mlp_layers  # noqa: E402
from llmrank_graph.scoring import PAGERANK_EXPORT  # noqa: E402


def timed(fn, repeats=1):
    best, out = float("inf"), None
    for _ in range(repeats):
        gc.collect()
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def synthetic_stats(model) -> ActivationStats:
    """Activation norms of the right shapes (the timing does not depend on their values)."""
    g = torch.Generator().manual_seed(0)
    norms = {}
    for m in mlp_layers(model):
        for name in m.named_modules():
            w = m.weight({m.up_name: "up", m.down_name: "down", m.gate_name: "gate"}[name])
            norms[name] = (torch.rand(w.shape[1], generator=g) + 0.1, torch.rand(w.shape[0], generator=g) + 0.1)
    return ActivationStats.from_norms(norms)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model directory (default: embedded SmolLM2-135M)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tol", type=float, default=1e-10)
    ap.add_argument("--direction", default="forward", choices=["forward", "reverse"])
    ap.add_argument("--quick", action="store_true", help="skip scipy and the edge list")
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    model, _ = lg.load_model(args.model)
    weights = [m.weight(w).detach() for m in mlp_layers(model) for w in ("up", "down")]
    graph = lg.export_graph(model)
    scorer_graph = lg.export_graph(model, synthetic_stats(model), options=PAGERANK_EXPORT)
    why = kernels.fused_available()
    print(f"{graph!r}; torch threads: {torch.get_num_threads()}; fused kernels: {why or 'available'}")
    rows = []

    def read_once():
        return sum(float(w.sum()) for w in weights)

    t_read, _ = timed(read_once, args.repeats)
    rows.append(("read MLP weights once", t_read, 0))

    def sweep(g):
        return lg.pagerank(g, backend="sweep", direction=args.direction)

    with peak_memory() as mem:
        t_cold, _ = timed(lambda: sweep(graph))
    rows.append(("sweep, cold (+ out-strengths)", t_cold, mem["peak_extra"]))
    with peak_memory() as mem:
        t_sweep, r_sweep = timed(lambda: sweep(graph), args.repeats)
    rows.append(("sweep, warm", t_sweep, mem["peak_extra"]))
    sweep(scorer_graph)
    t_scorer, _ = timed(lambda: sweep(scorer_graph), args.repeats)
    rows.append(("sweep, warm, scorer's default graph", t_scorer, 0))
    with kernels.options(kernel="torch"):  # the torch path, for comparison in the same run
        t_fallback, r_fallback = timed(lambda: sweep(graph), args.repeats)
        t_fallback_scorer, _ = timed(lambda: sweep(scorer_graph), args.repeats)
    rows.append(("sweep, warm, torch fallback", t_fallback, 0))
    rows.append(("sweep, warm, torch fallback, scorer's graph", t_fallback_scorer, 0))

    if not args.quick:
        with peak_memory() as mem:
            t_edges, edges = timed(lambda: graph.edges)  # built once from the blocks, then cached by the graph
        rows.append((f"edge list ({len(edges) / t_edges / 1e6:.1f} M edges/s)", t_edges, mem["peak_extra"]))
        with peak_memory() as mem:
            t_scipy_cold, _ = timed(lambda: lg.pagerank(graph, backend="scipy", direction=args.direction,
                                                        tol=args.tol))
        rows.append(("scipy, cold (CSR build + iterations)", t_scipy_cold, mem["peak_extra"]))
        with peak_memory() as mem:
            t_scipy, r_scipy = timed(lambda: lg.pagerank(graph, backend="scipy", direction=args.direction,
                                                         tol=args.tol), args.repeats)
        rows.append((f"scipy, warm ({r_scipy.iterations} iterations)", t_scipy, mem["peak_extra"]))
        tight = lg.pagerank(graph, backend="scipy", direction=args.direction, tol=1e-13)

    print(f"\n{'step':46}{'seconds':>10}{'peak extra RSS':>16}")
    for name, t, m in rows:
        print(f"{name:46}{t:>10.4f}{m / 2**20:>13.0f} MiB")
    print("\nratios (same run):")
    print(f"  sweep warm / read weights once            = {t_sweep / t_read:8.2f}x   (target <= 2x)")
    print(f"  scorer's graph: sweep warm / read once    = {t_scorer / t_read:8.2f}x   (target <= 2x)")
    print(f"  torch fallback / fused, plain graph       = {t_fallback / t_sweep:8.2f}x")
    print(f"  torch fallback / fused, scorer's graph    = {t_fallback_scorer / t_scorer:8.2f}x")
    print(f"  L1(fused - fallback)                      = {np.abs(r_sweep.scores - r_fallback.scores).sum():.2e}")
    if not args.quick:
        print(f"  scipy warm / sweep warm                   = {t_scipy / t_sweep:8.1f}x")
        print(f"  scipy cold / sweep cold                   = {t_scipy_cold / t_cold:8.1f}x")
        print(f"  edge list rate                            = {len(edges) / t_edges / 1e6:8.1f} M edges/s")
        l1 = np.abs(r_sweep.scores - r_scipy.scores).sum()
        print(f"  L1(sweep - scipy) at tol={args.tol:g}            = {l1:.2e}   (scipy's n * tol stopping rule)")
        print(f"  L1(sweep - scipy) at tol=1e-13            = {np.abs(r_sweep.scores - tight.scores).sum():.2e}"
              f"   (target <= 1e-8; scipy {tight.iterations} iterations)")


if __name__ == "__main__":
    main()
