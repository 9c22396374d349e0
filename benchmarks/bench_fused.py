"""The fused |W| kernel against one plain read of the weights, on SmolLM2-135M's MLP shapes.

Prints, from one run and side by side, for fp32 and bf16 weights:

* one plain read of the weights, ``sum(float(w.sum()) for w in weights)`` (torch, threaded);
* the torch path (today's approach: |W| copied to float64 chunk by chunk, then ``mm``/``addmm``);
* the fused kernel (``llmrank_graph._fused``), when it runs here;

for the forward product ``M @ v``, the transpose ``M.T @ v`` (k = 1 and 2) and the row/column
sums, each as best-of-N seconds and as a ratio to one read. Then the cost of the first call in
a fresh process: with numba's on-disk cache (warm) and, with ``--cold``, compiling from scratch.

Random weights stand in for the model's (the kernels' speed does not depend on the values):
30 layers of (1536 x 576) up and (576 x 1536) down projections, 53M edges.

    python benchmarks/bench_fused.py [--layers 30] [--repeat 7] [--scale] [--cold]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import torch

from llmrank_graph import _fused


def best_of(fn, repeat: int) -> float:
    """Best wall time of ``repeat`` calls (one warm-up first): the least disturbed run."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def make_weights(layers: int, d: int, m: int, dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ws = []
    for _ in range(layers):
        ws.append((torch.randn(m, d, generator=g) * 0.02).to(dtype))  # up: (m, d)
        ws.append((torch.randn(d, m, generator=g) * 0.02).to(dtype))  # down: (d, m)
    return ws


def run_ops(ws, scales, k: int, transpose: bool):
    vs = [torch.rand(w.shape[0] if transpose else w.shape[1], k, dtype=torch.float64) for w in ws]

    def go():
        for w, s, v in zip(ws, scales, vs):
            _fused.abs_matmul([w], "single", s, v, transpose)
    return go


def run_sums(ws, scales):
    def go():
        for w, s in zip(ws, scales):
            _fused.abs_sums([w], "single", s)
    return go


def bench_dtype(dtype: torch.dtype, args) -> None:
    ws = make_weights(args.layers, args.d, args.m, dtype)
    scales = [torch.rand(w.shape[1], dtype=torch.float64) + 0.5 if args.scale else None for w in ws]
    nbytes = sum(w.numel() * w.element_size() for w in ws)
    edges = sum(w.numel() for w in ws)
    t_read = best_of(lambda: sum(float(w.sum()) for w in ws), args.repeat)
    kernel = _fused.fused_available() is None
    print(f"\n{str(dtype).replace('torch.', '')}: {len(ws)} matrices, {edges / 1e6:.1f}M edges, "
          f"{nbytes / 2**20:.0f} MiB; col_scale: {'yes' if args.scale else 'no'}; "
          f"torch threads: {torch.get_num_threads()}")
    print(f"  one plain read (torch sum): {t_read * 1e3:8.2f} ms  ({nbytes / t_read / 1e9:.1f} GB/s)")
    print(f"  {'operation':<22}{'torch path ms':>14}{'x read':>8}{'fused ms':>11}{'x read':>8}{'speed-up':>10}")
    ops = [("forward  M @ v, k=1", lambda: run_ops(ws, scales, 1, False)),
           ("transpose M.T @ v, k=1", lambda: run_ops(ws, scales, 1, True)),
           ("forward  M @ v, k=2", lambda: run_ops(ws, scales, 2, False)),
           ("transpose M.T @ v, k=2", lambda: run_ops(ws, scales, 2, True)),
           ("row + column sums", lambda: run_sums(ws, scales))]
    for name, make in ops:
        go = make()
        _fused.use_kernel = False
        try:
            t_torch = best_of(go, max(2, args.repeat // 2))  # slow: fewer repeats
        finally:
            _fused.use_kernel = True
        # One read again right before the kernel, so a busy machine shows in both numbers.
        t_fused = best_of(go, args.repeat) if kernel else float("nan")
        print(f"  {name:<22}{t_torch * 1e3:14.2f}{t_torch / t_read:8.2f}{t_fused * 1e3:11.2f}"
              f"{t_fused / t_read:8.2f}{t_torch / t_fused:9.1f}x")
    if not kernel:
        print(f"  (fused kernel not available: {_fused.fused_available()})")


_FIRST_CALL = r"""
import time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
from llmrank_graph import _fused
t2 = time.perf_counter()
w = torch.randn(64, 48, dtype=torch.DTYPE)
_fused.abs_matmul([w], "single", None, torch.rand(48, 1, dtype=torch.float64))
t3 = time.perf_counter()
_fused.abs_matmul([w], "single", None, torch.rand(64, 2, dtype=torch.float64), transpose=True)
_fused.abs_sums([w], "single", None)
t4 = time.perf_counter()
print(f"{t2 - t1:.2f} {t3 - t2:.2f} {t4 - t3:.3f}")
"""


def first_call(dtype: str, cache_dir: str | None) -> str:
    env = dict(os.environ)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    out = subprocess.run([sys.executable, "-c", _FIRST_CALL.replace("DTYPE", dtype)], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    return f"import _fused {out[0]} s, first call {out[1]} s, the other two jobs {out[2]} s"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--d", type=int, default=576)
    ap.add_argument("--m", type=int, default=1536)
    ap.add_argument("--repeat", type=int, default=7, help="best of N (default 7)")
    ap.add_argument("--scale", action="store_true", help="with a column scale (activation weighting)")
    ap.add_argument("--cold", action="store_true", help="also time a first call compiling from scratch")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    args = ap.parse_args(argv)
    print(f"fused kernel: {_fused.fused_available() or 'available'}")
    for name in args.dtypes.split(","):
        bench_dtype(getattr(torch, name), args)
    if _fused.fused_available() is None:
        print("\nfirst call in a fresh process (numba on-disk cache filled by the runs above):")
        for name in args.dtypes.split(","):
            print(f"  {name}: {first_call(name, None)}")
        if args.cold:
            print("first call in a fresh process with an empty numba cache (compiles):")
            for name in args.dtypes.split(","):
                with tempfile.TemporaryDirectory() as tmp:
                    print(f"  {name}: {first_call(name, tmp)}")


if __name__ == "__main__":
    main()
