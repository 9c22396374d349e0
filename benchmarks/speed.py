"""Tokens/s of pruned models against the dense one, at several sparsities and batch sizes.

Every pruned model is measured in the same run as the dense model, alternately
(:func:`llmrank_graph.data.evaluation.compare_throughput`: each round runs dense then pruned on the
same batch and the best round of each counts), so machine load hits both alike; the printed
figure is the ratio. Neurons are physically removed (``how='remove'``, local allocation, so
every layer keeps the same width); the ranking does not change the speed, so the cheap
``magnitude`` scorer chooses them. Memory: the parameter bytes of each model, the peak memory
of one forward pass on CUDA (``torch.cuda.max_memory_allocated``), and the process's peak
resident memory at the end (on a CPU, freed activations are reused by the allocator, so a
per-forward RSS figure would mean little).

    python benchmarks/speed.py                 # sparsities 0.1-0.7, batch 1, 4, 16 x 256 tokens
    python benchmarks/speed.py --quick         # 0.3 and 0.5, batch 1 and 4 x 64 tokens: < 2 min on 2 cores
    python benchmarks/speed.py --device cuda
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _memory import rss_bytes  # noqa: E402

from llmrank_graph.data.evaluation import compare_throughput, count_parameters  # noqa: E402
from llmrank_graph.data.texts import load_texts, token_blocks  # noqa: E402
from llmrank_graph.models.loading import load_model  # noqa: E402
from llmrank_graph.pruning.surgery import prune_model  # noqa: E402


def param_bytes(model) -> int:
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel() * p.element_size()
    return total


def forward_peak(model, ids) -> int | None:
    """Peak allocated CUDA memory (bytes) of one forward pass; None on a CPU."""
    if ids.device.type != "cuda":
        return None
    torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        model(input_ids=ids, use_cache=False)
    return torch.cuda.max_memory_allocated()


def mib(x: int | None) -> str:
    return "-" if x is None else f"{x / 2**20:.0f} MiB"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model path (default: the embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--quick", action="store_true", help="fewer points: under 2 minutes on 2 CPU cores")
    ap.add_argument("--amounts", type=float, nargs="+", default=None)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    ap.add_argument("--seq-len", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3, help="dense/pruned alternations per point")
    args = ap.parse_args(argv)
    amounts = args.amounts or ([0.3, 0.5] if args.quick else [0.1, 0.3, 0.5, 0.7])
    batches = args.batch_sizes or ([1, 4] if args.quick else [1, 4, 16])
    seq = args.seq_len or (64 if args.quick else 256)
    torch.set_grad_enabled(False)
    t0 = time.perf_counter()
    dense, tok = load_model(args.model, device=args.device)
    device = next(dense.parameters()).device
    ids_all = token_blocks(tok, load_texts(None, split="evaluation"), max(batches), seq).to(device)
    print(f"model {args.model or 'SmolLM2-135M-Instruct (embedded)'} on {device}, torch threads "
          f"{torch.get_num_threads()}, {seq} tokens per sequence, {args.rounds} alternating rounds per point")
    dense_bytes = param_bytes(dense)
    dense_peak = {b: forward_peak(dense, ids_all[:b]) for b in batches}
    header = (f"{'removed':>8} {'batch':>5} {'dense tok/s':>12} {'pruned tok/s':>13} {'speedup':>8} "
              f"{'params':>7} {'CUDA peak dense':>15} {'CUDA peak pruned':>16}")
    print(header)
    print("-" * len(header))
    for amount in amounts:
        pruned = prune_model(copy.deepcopy(dense), None, method="magnitude", amount=amount, allocation="local",
                             how="remove").model
        ratio = count_parameters(pruned)["total"] / count_parameters(dense)["total"]
        for b in batches:
            ids = ids_all[:b]
            tp = compare_throughput(dense, pruned, ids, rounds=args.rounds)
            peak = forward_peak(pruned, ids)
            print(f"{amount:>8.0%} {b:>5} {tp['dense_tokens_per_s']:>12.0f} {tp['pruned_tokens_per_s']:>13.0f} "
                  f"{tp['speedup']:>7.2f}x {ratio:>7.3f} {mib(dense_peak[b]):>15} {mib(peak):>16}", flush=True)
        print(f"{'':>8} parameters: {dense_bytes / 2**20:.0f} MiB dense, {param_bytes(pruned) / 2**20:.0f} MiB pruned")
        del pruned
        gc.collect()
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"process peak RSS {mib(peak)} (now {mib(rss_bytes())}); total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
