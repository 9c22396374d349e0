"""Calibration against a plain forward pass of the whole model, side by side in one run.

Three jobs on the same calibration tokens (``--n-samples`` x ``--seq-len`` of the embedded
Wikipedia calibration articles, ``--batch-size`` blocks per pass), interleaved batch by batch
(each job runs on batch 1, then each on batch 2, ...) so that the noise of shared cores hits
them alike:

- ``forward``: ``model(input_ids, use_cache=False)``, every layer, the final norm and the LM head;
- ``calibrate``: :func:`llmrank_graph.calibrate` (statistics of every MLP Linear; the pass stops
  after the last decoder layer's MLP);
- ``calibrate + Gram``: the same with ``second_moments=True`` (float64 Gram matrices of the
  down_proj inputs).

Each round (one pass over all batches) prints the three total times and their ratios to the
forward pass; the summary gives the median of each ratio over rounds. The target of issue 11: calibrate <= 1.0x forward.

Run:
    python benchmarks/bench_calibration.py                      # default 32 x 512 tokens, 3 rounds
    python benchmarks/bench_calibration.py --rounds 1 --n-samples 8
    python benchmarks/bench_calibration.py --threads 1          # shared cores: no OpenMP stalls

On shared, oversubscribed cores the many small reductions of the hooks can stall for
milliseconds each in OpenMP with 2 threads, which the forward pass's large products do not
suffer from: compare runs with ``--threads 1`` there.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import llmrank_graph as lg
from llmrank_graph.data.texts import load_texts, token_blocks


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model path (default: the embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--n-samples", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-gram", action="store_true", help="skip the second-moment run")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: torch's); 1 avoids OpenMP stalls on shared cores")
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)

    model, tok = lg.load_model(args.model, device=args.device)
    ids = token_blocks(tok, load_texts(None, split="calibration"), args.n_samples, args.seq_len)
    device = next(model.parameters()).device
    print(f"{ids.shape[0]} x {ids.shape[1]} tokens, batch {args.batch_size}, {torch.get_num_threads()} threads, "
          f"device {device}", flush=True)

    batches = list(ids.split(args.batch_size))

    def forward(b):
        with torch.inference_mode():
            model(input_ids=b.to(device), use_cache=False)

    def calib(gram: bool):
        return lambda b: lg.calibrate(model, input_ids=b, batch_size=args.batch_size, second_moments=gram)

    jobs = {"forward": forward, "calibrate": calib(False)}
    if not args.no_gram:
        jobs["calibrate + Gram"] = calib(True)
    for job in jobs.values():  # warm-up (allocator, thread pool)
        job(batches[0])
    ratios: dict[str, list[float]] = {k: [] for k in jobs if k != "forward"}
    times: dict[str, list[float]] = {k: [] for k in jobs}
    for r in range(args.rounds):
        row = dict.fromkeys(jobs, 0.0)
        for b in batches:
            for name, job in jobs.items():
                t = time.perf_counter()
                job(b)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                row[name] += time.perf_counter() - t
        for name in jobs:
            times[name].append(row[name])
        for name in ratios:
            ratios[name].append(row[name] / row["forward"])
        print(f"round {r + 1}: " + ", ".join(f"{k} {v:.1f} s" for k, v in row.items()) + " | "
              + ", ".join(f"{k} / forward {row[k] / row['forward']:.2f}x" for k in ratios), flush=True)
    print("\nmedian over rounds:")
    for name in jobs:
        line = f"  {name:18} {statistics.median(times[name]):7.1f} s"
        if name in ratios:
            line += f"   {statistics.median(ratios[name]):.2f}x forward"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
