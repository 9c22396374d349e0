"""PageRank on the whole-MLP graph of SmolLM2-135M: exact sweep vs one read of the weights vs scipy.

The target: the warm sweep takes at most 2x one read of the weights. Both are measured in one
run as interleaved pairs (read, sweep), each pair's ratio kept; the median ratio over the pairs
is the figure, printed with its spread and the 1-minute load average before and after (on a
busy machine the pairs disturb both alike; on a quiet one the spread is small).

* one read: every weight of the graph's blocks read once at its stored dtype, by a numba
  reduction (fp32 summed as fp32, 16-bit weights as their raw bits) on as many threads as the
  kernels use (``torch.get_num_threads()``), the rows of each weight split between them:
  the physical floor for any method that uses every weight. ``torch .sum()`` of each weight,
  the read the README quoted before, is printed beside it;
* the ``sweep`` backend, warm, on the plain graph (``|W|``) and on the pagerank scorer's
  default graph (activation-share edges: a column scale on every block), each against a read;
  cold (first call: products set up, out-strengths computed); with the torch path instead of
  the fused kernels;
* the ``scipy`` backend: CSR build, then power iterations (warm = CSR cached);
* building the edge list (edges/s);
* peak extra resident memory of each;
* the L1 distance between the sweep and scipy at two tolerances.

Run:  python benchmarks/bench_pagerank.py [--model PATH] [--pairs 9] [--tol 1e-10] [--quick]
(``--quick`` skips scipy and the edge list: about 30 s.)
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from numba import njit

sys.path.insert(0, os.path.dirname(__file__))
from _memory import peak_memory  # noqa: E402

import llmrank_graph as lg  # noqa: E402
import llmrank_graph.kernels as kernels  # noqa: E402
from llmrank_graph.data.calibration import ActivationStats  # noqa: E402
from llmrank_graph.graph.blocks import WeightBlock  # noqa: E402
from llmrank_graph.models.architectures import mlp_layers  # noqa: E402
from llmrank_graph.scoring import PAGERANK_EXPORT  # noqa: E402

_BITS = {torch.float32: None, torch.bfloat16: np.uint16, torch.float16: np.uint16}


def timed(fn, repeats=1):
    best, out = float("inf"), None
    for _ in range(repeats):
        gc.collect()
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


@njit(nogil=True, fastmath=True)
def _sum_rows(a, r0, r1):
    """Sum of rows r0:r1 (wrapping for integers): every byte read once, vectorised."""
    s = a.dtype.type(0)
    for i in range(r0, r1):
        row = a[i]
        for j in range(row.shape[0]):
            s += row[j]
    return s


class Reader:
    """One read of every weight of the graph's blocks, at its stored dtype, on ``threads`` threads.

    The weights are the tensors the sweep's products read (``WeightBlock.weights``), viewed as
    numpy without a copy (16-bit ones as raw bits); each thread reads its share of the rows
    of each weight. One call wakes the pool once, as a sweep wakes it once per block.
    """

    def __init__(self, graph, threads: int):
        self.tensors = [w.detach() for b in graph.blocks if isinstance(b, WeightBlock) for w in b.weights]
        self.arrays = []
        for w in self.tensors:
            w = w.contiguous()
            bits = _BITS.get(w.dtype)
            self.arrays.append(w.numpy() if bits is None else w.view(torch.int16).numpy().view(bits))
        self.nbytes = sum(a.nbytes for a in self.arrays)
        self.threads = threads
        self.pool = ThreadPoolExecutor(threads - 1) if threads > 1 else None
        self()  # compile

    def part(self, t: int) -> float:
        total = 0.0
        for a in self.arrays:
            r = a.shape[0]
            total += float(_sum_rows(a, r * t // self.threads, r * (t + 1) // self.threads))
        return total

    def __call__(self) -> float:
        futures = [self.pool.submit(self.part, t) for t in range(1, self.threads)] if self.pool else []
        return self.part(0) + sum(f.result() for f in futures)


def pairs(read, fn, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` interleaved pairs (read, fn): the seconds of each, in order."""
    t_read, t_fn = np.empty(n), np.empty(n)
    for i in range(n):
        gc.collect()
        t = time.perf_counter()
        read()
        t_read[i] = time.perf_counter() - t
        t = time.perf_counter()
        fn()
        t_fn[i] = time.perf_counter() - t
    return t_read, t_fn


def describe_pairs(name: str, t_read: np.ndarray, t_fn: np.ndarray, load: tuple[float, float]) -> str:
    r = t_fn / t_read
    q1, q3 = np.percentile(r, [25, 75])
    return (f"  {name:34} median {np.median(r):5.2f}x  (pairs {len(r)}: min {r.min():.2f}, quartiles {q1:.2f}-"
            f"{q3:.2f}, max {r.max():.2f}; read {np.median(t_read) * 1e3:.1f} ms, sweep {np.median(t_fn) * 1e3:.1f}"
            f" ms, medians; load {load[0]:.2f} -> {load[1]:.2f})")


def synthetic_stats(model) -> ActivationStats:
    """Activation norms of the right shapes (the timing does not depend on their values)."""
    g = torch.Generator().manual_seed(0)
    norms = {}
    for m in mlp_layers(model):
        for name in m.named_modules():
            w = m.weight({m.up_name: "up", m.down_name: "down", m.gate_name: "gate"}[name])
            norms[name] = (torch.rand(w.shape[1], generator=g) + 0.1, torch.rand(w.shape[0], generator=g) + 0.1)
    return ActivationStats.from_norms(norms)


def sweep_rows(args, graph, scorer_graph, reader, rows):
    """The warm sweep against a read (pairs), the scorer's graph alike, cold, and the torch path."""
    def sweep(g):
        return lg.pagerank(g, backend="sweep", direction=args.direction)

    with peak_memory() as mem:
        t_cold, _ = timed(lambda: sweep(graph))
    rows.append(("sweep, cold (+ out-strengths)", t_cold, mem["peak_extra"]))
    t_torch_read, _ = timed(lambda: sum(float(w.sum()) for w in reader.tensors), args.pairs)
    load0 = os.getloadavg()[0]
    with peak_memory() as mem:
        t_read, t_sweep = pairs(reader, lambda: sweep(graph), args.pairs)
    load1 = os.getloadavg()[0]
    r_sweep = sweep(graph)
    rows.append((f"read the weights once (numba, {reader.threads} threads)", np.median(t_read), 0))
    rows.append(("read the weights once (torch .sum(), best)", t_torch_read, 0))
    rows.append(("sweep, warm", np.median(t_sweep), mem["peak_extra"]))
    sweep(scorer_graph)
    t_read_s, t_scorer = pairs(reader, lambda: sweep(scorer_graph), args.pairs)
    load2 = os.getloadavg()[0]
    rows.append(("sweep, warm, scorer's default graph", np.median(t_scorer), 0))
    with kernels.options(kernel="torch"):  # the torch path, for comparison in the same run
        t_fallback, r_fallback = timed(lambda: sweep(graph), args.pairs)
        t_fallback_scorer, _ = timed(lambda: sweep(scorer_graph), args.pairs)
    rows.append(("sweep, warm, torch fallback (best)", t_fallback, 0))
    rows.append(("sweep, warm, torch fallback, scorer's graph (best)", t_fallback_scorer, 0))
    ratios = [describe_pairs("sweep warm / read once", t_read, t_sweep, (load0, load1)),
              describe_pairs("scorer's graph: sweep warm / read", t_read_s, t_scorer, (load1, load2)),
              f"  {'torch fallback (best) / fused (min)':34} {t_fallback / t_sweep.min():6.2f}x",
              f"  {'L1(fused - fallback)':34} {np.abs(r_sweep.scores - r_fallback.scores).sum():.2e}"]
    return r_sweep, t_sweep.min(), t_cold, ratios


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model directory (default: embedded SmolLM2-135M)")
    ap.add_argument("--pairs", "--repeats", type=int, default=9, help="interleaved (read, sweep) pairs, >= 5")
    ap.add_argument("--tol", type=float, default=1e-10)
    ap.add_argument("--direction", default="forward", choices=["forward", "reverse"])
    ap.add_argument("--quick", action="store_true", help="skip scipy and the edge list")
    args = ap.parse_args(argv)
    if args.pairs < 5:
        ap.error(f"--pairs must be at least 5; got {args.pairs}")
    torch.set_grad_enabled(False)
    model, _ = lg.load_model(args.model)
    graph = lg.export_graph(model)
    scorer_graph = lg.export_graph(model, synthetic_stats(model), options=PAGERANK_EXPORT)
    why = kernels.fused_available()
    reader = Reader(graph, torch.get_num_threads())
    print(f"{graph!r}; torch threads: {torch.get_num_threads()}; fused kernels: {why or 'available'}; "
          f"weights read: {reader.nbytes / 1e6:.0f} MB; load average {os.getloadavg()[0]:.2f}")
    rows = []
    r_sweep, t_sweep, t_cold, ratios = sweep_rows(args, graph, scorer_graph, reader, rows)

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
                                                         tol=args.tol), 3)
        rows.append((f"scipy, warm ({r_scipy.iterations} iterations)", t_scipy, mem["peak_extra"]))
        tight = lg.pagerank(graph, backend="scipy", direction=args.direction, tol=1e-13)

    print(f"\n{'step (median of the pairs, else best)':52}{'seconds':>10}{'peak extra RSS':>16}")
    for name, t, m in rows:
        print(f"{name:52}{t:>10.4f}{m / 2**20:>13.0f} MiB")
    print("\nratios (same run; target: sweep warm / read once <= 2x):")
    print("\n".join(ratios))
    if not args.quick:
        print(f"  {'scipy warm / sweep warm (best)':34} {t_scipy / t_sweep:6.1f}x")
        print(f"  {'scipy cold / sweep cold':34} {t_scipy_cold / t_cold:6.1f}x")
        l1 = np.abs(r_sweep.scores - r_scipy.scores).sum()
        print(f"  L1(sweep - scipy) at tol={args.tol:g}      {l1:.2e}   (scipy's n * tol stopping rule)")
        print(f"  L1(sweep - scipy) at tol=1e-13      {np.abs(r_sweep.scores - tight.scores).sum():.2e}"
              f"   (target <= 1e-8; scipy {tight.iterations} iterations)")


if __name__ == "__main__":
    main()
