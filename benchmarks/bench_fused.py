"""The fused |W| kernel against one plain read of the weights, on real MLP shapes.

Prints, from one run and side by side, for each weight dtype:

* one plain read of the weights, ``sum(float(w.sum()) for w in weights)`` (torch, threaded);
* the torch path (``kernel='torch'``: |W| copied to float64 chunk by chunk, then ``mm``/``addmm``);
* the fused kernel (``llmrank_graph.kernels``: numba on the CPU, Triton on CUDA), when it runs;

for the forward product ``M @ v``, the transpose ``M.T @ v`` (k = 1 and 2) and the row/column
sums, each as best-of-N milliseconds and as a ratio to one read. Reads and kernel runs are
interleaved and the best of each kept, so a busy machine disturbs both alike. On CUDA the
device-to-device copy bandwidth is measured too, and each kernel's read bandwidth given as a
share of it. Then, on the CPU, the cost of the first call in a fresh process: with numba's
on-disk cache (warm) and, with ``--cold``, compiling from scratch.

Random weights stand in for the model's (the kernels' speed does not depend on the values):

* ``--shapes smollm2`` (default): SmolLM2-135M, 30 layers of (1536 x 576) up and
  (576 x 1536) down projections, 53M edges;
* ``--shapes llama7b``: Llama-2-7B, 32 layers of (11008 x 4096) and (4096 x 11008), 2.9G edges
  (bf16 on a GPU: ``--device cuda --dtypes bfloat16``).

    python benchmarks/bench_fused.py [--repeat 9] [--scale] [--cold] [--device cuda --shapes llama7b]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import torch

import llmrank_graph.kernels as kernels

SHAPES = {"smollm2": (30, 576, 1536), "llama7b": (32, 4096, 11008)}  # layers, d, m


def make_weights(layers: int, d: int, m: int, dtype: torch.dtype, device: str, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator(device=device).manual_seed(seed)
    ws = []
    for _ in range(layers):
        ws.append((torch.randn(m, d, generator=g, device=device) * 0.02).to(dtype))  # up: (m, d)
        ws.append((torch.randn(d, m, generator=g, device=device) * 0.02).to(dtype))  # down: (d, m)
    return ws


class Timer:
    """Best-of-N wall time, synchronising CUDA around each run."""

    def __init__(self, device: str):
        self.cuda = device == "cuda"

    def __call__(self, fn) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0


def product(ws, scales, k: int, transpose: bool):
    dev = ws[0].device
    vs = [torch.rand(w.shape[0] if transpose else w.shape[1], k, dtype=torch.float64, device=dev) for w in ws]

    def go():
        for w, s, v in zip(ws, scales, vs):
            kernels.abs_matmul([w], "single", s, v, transpose)
    return go


def sums(ws, scales):
    def go():
        for w, s in zip(ws, scales):
            kernels.abs_sums([w], "single", s)
    return go


def bench_dtype(dtype: torch.dtype, args) -> None:
    layers, d, m = SHAPES[args.shapes]
    ws = make_weights(layers, d, m, dtype, args.device)
    scales = [torch.rand(w.shape[1], dtype=torch.float64, device=args.device) + 0.5 if args.scale else None
              for w in ws]
    nbytes = sum(w.numel() * w.element_size() for w in ws)
    edges = sum(w.numel() for w in ws)
    timer = Timer(args.device)

    def read():  # the baseline the issue names: one plain read of every weight
        return sum(float(w.sum()) for w in ws)

    read()
    kernel = kernels.fused_available(args.device) is None
    threads = f"torch threads: {torch.get_num_threads()}" if args.device == "cpu" else torch.cuda.get_device_name()
    print(f"\n{str(dtype).replace('torch.', '')} on {args.device}: {len(ws)} matrices, {edges / 1e6:.1f}M edges, "
          f"{nbytes / 2**20:.0f} MiB; col_scale: {'yes' if args.scale else 'no'}; {threads}")
    copy_bw = None
    if args.device == "cuda":
        dst = [torch.empty_like(w) for w in ws]
        t_copy = min(timer(lambda: [o.copy_(w) for o, w in zip(dst, ws)]) for _ in range(args.repeat))
        copy_bw = 2 * nbytes / t_copy  # a copy reads and writes every byte
        del dst
        print(f"  device-to-device copy: {copy_bw / 1e9:.0f} GB/s (read + write)")
    ops = [("forward  M @ v, k=1", product(ws, scales, 1, False)),
           ("transpose M.T @ v, k=1", product(ws, scales, 1, True)),
           ("forward  M @ v, k=2", product(ws, scales, 2, False)),
           ("transpose M.T @ v, k=2", product(ws, scales, 2, True)),
           ("row + column sums", sums(ws, scales))]
    rows = []
    t_read = float("inf")
    for name, go in ops:
        with kernels.options(kernel="torch"):
            go()
            t_torch = min(timer(go) for _ in range(max(2, args.repeat // 3)))  # slow: fewer repeats
        t_fused = float("nan")
        if kernel:
            go()
            t_fused = float("inf")
            for _ in range(args.repeat):  # interleaved with reads: both see the same machine
                t_read = min(t_read, timer(read))
                go()  # untimed: torch's OpenMP workers spin for a while after the read
                t_fused = min(t_fused, timer(go))
        else:
            t_read = min([t_read] + [timer(read) for _ in range(args.repeat)])
        rows.append((name, t_torch, t_fused))
    print(f"  one plain read (torch sum): {t_read * 1e3:8.2f} ms  ({nbytes / t_read / 1e9:.1f} GB/s)")
    extra = f"{'% copy bw':>11}" if copy_bw else ""
    print(f"  {'operation':<22}{'torch path ms':>14}{'x read':>8}{'fused ms':>11}{'x read':>8}{'speed-up':>10}"
          + extra)
    for name, t_torch, t_fused in rows:
        line = (f"  {name:<22}{t_torch * 1e3:14.2f}{t_torch / t_read:8.2f}{t_fused * 1e3:11.2f}"
                f"{t_fused / t_read:8.2f}{t_torch / t_fused:9.1f}x")
        if copy_bw:
            line += f"{100 * (nbytes / t_fused) / copy_bw:10.0f}%"
        print(line)
    if not kernel:
        print(f"  (fused kernel not available: {kernels.fused_available(args.device)})")


_FIRST_CALL = r"""
import time
import torch
import numba
from llmrank_graph.kernels import abs_matmul, abs_sums
t0 = time.perf_counter()
w = torch.randn(64, 48, dtype=torch.DTYPE)
abs_matmul([w], "single", None, torch.rand(48, 1, dtype=torch.float64))
t1 = time.perf_counter()
abs_matmul([w, w], "max", torch.rand(48), torch.rand(64, 2, dtype=torch.float64), transpose=True)
abs_sums([w], "single", None)
t2 = time.perf_counter()
print(f"{t1 - t0:.2f} {t2 - t1:.2f}")
"""


def first_call(dtype: str, cache_dir: str | None) -> str:
    env = dict(os.environ)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    res = subprocess.run([sys.executable, "-c", _FIRST_CALL.replace("DTYPE", dtype)], env=env,
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        return "failed: " + res.stderr.strip().splitlines()[-1]
    out = res.stdout.split()
    return f"first call {out[0]} s, then the other jobs and paths {out[1]} s"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", choices=sorted(SHAPES), default="smollm2")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--repeat", type=int, default=9, help="best of N (default 9)")
    ap.add_argument("--scale", action="store_true", help="with a column scale (activation weighting)")
    ap.add_argument("--cold", action="store_true", help="also time a first call compiling from scratch")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    args = ap.parse_args(argv)
    print(f"fused kernel on {args.device}: {kernels.fused_available(args.device) or 'available'}")
    for name in args.dtypes.split(","):
        bench_dtype(getattr(torch, name), args)
    if args.device == "cpu" and kernels.fused_available() is None:
        print("\nfirst call in a fresh process, numba's on-disk cache filled by the runs above "
              "(not counting `import torch, numba`):")
        for name in args.dtypes.split(","):
            print(f"  {name}: {first_call(name, None)}")
        if args.cold:
            print("the same with an empty numba cache (compiles):")
            for name in args.dtypes.split(","):
                with tempfile.TemporaryDirectory() as tmp:
                    print(f"  {name}: {first_call(name, tmp)}")


if __name__ == "__main__":
    main()
