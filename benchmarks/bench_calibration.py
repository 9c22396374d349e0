"""Calibration against a plain forward pass of the whole model, side by side in one run.

Three jobs on the same calibration tokens (``--n-samples`` x ``--seq-len`` of the embedded
Wikipedia calibration articles, ``--batch-size`` blocks per pass), interleaved batch by batch
(each job runs on batch 1, then each on batch 2, ...) so that the noise of shared cores hits
them alike:

- ``forward``: ``model(input_ids, use_cache=False)``, every layer, the final norm and the LM head;
- ``calibrate``: :func:`llmrank_graph.calibrate` (statistics of every MLP Linear; the pass stops
  after the last decoder layer's MLP);
- ``calibrate + Gram``: the same with ``second_moments=True`` (float64 Gram matrices of the
  down_proj inputs, which the default ``prune --compensate lstsq`` needs).

With ``--attention``, ``calibrate + attention`` and ``calibrate + Gram + attention`` run the same
calibrations with ``attention=True`` (the head statistics of ``prune --target attention|both``: the
o_proj and v_proj inputs, and with the Gram the o_proj Gram matrices of the refit); the summary
gives each one's ratio to the same calibration without them (the overhead of issue 18).

Each round (one pass over all batches) prints the three total times, their ratios to the
forward pass and the 1-minute load average; the summary gives the median of each ratio over
rounds. Targets: calibrate <= 1.0x forward (issue 11), calibrate + Gram <= 1.2x (issue 17).

``--refit-check`` then compares the default pruning (PageRank, 30%, local, ``lstsq`` refit)
made from these second moments with the same pruning made from float64 Gram matrices of
float64 products (the computation before issue 17), on 16 x 512 held-out tokens: the two
perplexities, their relative difference, and the relative Frobenius error of each layer's Gram.

Run:
    python benchmarks/bench_calibration.py --threads 1          # 32 x 512 tokens, 2 rounds (~5 min)
    python benchmarks/bench_calibration.py --quick --threads 1  # 8 x 512 tokens, 1 round (~40 s)
    python benchmarks/bench_calibration.py --threads 1 --out benchmarks/results/bench_calibration_cpu.txt
    python benchmarks/bench_calibration.py --threads 1 --rounds 0 --refit-check   # the refit only (~3 min)
    python benchmarks/bench_calibration.py --threads 1 --attention \
        --out benchmarks/results/bench_calibration_attention_cpu.txt     # the head statistics' overhead

On shared, oversubscribed cores the many small reductions of the hooks can stall for
milliseconds each in OpenMP with 2 threads, which the forward pass's large products do not
suffer from: compare runs with ``--threads 1`` there.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch

import llmrank_graph as lg
from llmrank_graph.base.files import write_text_atomic
from llmrank_graph.data.texts import load_texts, token_blocks
from llmrank_graph.models.architectures import mlp_layers


def _load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


def timings(model, batches, batch_size: int, rounds: int, gram: bool, say, attention: bool = False) -> None:
    """Interleaved rounds of forward / calibrate / calibrate + Gram (and, with ``attention``, both again with
    ``attention=True``); prints each round and the medians."""
    device = next(model.parameters()).device

    def forward(b):
        with torch.inference_mode():
            model(input_ids=b.to(device), use_cache=False)

    def calib(second: bool, heads: bool = False):
        return lambda b: lg.calibrate(model, input_ids=b, batch_size=batch_size, second_moments=second,
                                      attention=heads)

    jobs = {"forward": forward, "calibrate": calib(False)}
    if gram:
        jobs["calibrate + Gram"] = calib(True)
    if attention:
        jobs["calibrate + attention"] = calib(False, True)
        if gram:
            jobs["calibrate + Gram + attention"] = calib(True, True)
    for job in jobs.values():  # warm-up (allocator, thread pool)
        job(batches[0])
    ratios: dict[str, list[float]] = {k: [] for k in jobs if k != "forward"}
    times: dict[str, list[float]] = {k: [] for k in jobs}
    loads = []
    for r in range(rounds):
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
        loads.append(os.getloadavg()[0])
        say(f"round {r + 1}: " + ", ".join(f"{k} {v:.1f} s" for k, v in row.items()) + " | "
            + ", ".join(f"{k} / forward {row[k] / row['forward']:.2f}x" for k in ratios) + f" | {_load()}")
    say(f"\nmedian over {rounds} rounds (1-minute load average {min(loads):.2f} to {max(loads):.2f}):")
    for name in jobs:
        line = f"  {name:28} {statistics.median(times[name]):7.1f} s"
        if name in ratios:
            line += f"   {statistics.median(ratios[name]):.2f}x forward"
        plain = name.removesuffix(" + attention")
        if plain != name:  # the attention statistics' overhead, against the same calibration without them
            line += f"   {statistics.median(a / b for a, b in zip(times[name], times[plain])):.3f}x {plain}"
        say(line)


def _float64_grams(model, batches) -> dict[str, torch.Tensor]:
    """Every down projection's input Gram matrix from float64 copies and float64 products (the reference)."""
    grams: dict[str, torch.Tensor] = {}
    handles = []
    device = next(model.parameters()).device
    for mlp in mlp_layers(model):
        def hook(mod, inputs, output, _name=mlp.down_name):
            h = inputs[0].reshape(-1, inputs[0].shape[-1]).to(torch.float64)
            grams[_name] = grams[_name] + h.T @ h if _name in grams else h.T @ h
        handles.append(mlp.down.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            for b in batches:
                model(input_ids=b.to(device), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return grams


def refit_check(model, tok, ids, batch_size: int, say) -> None:
    """Perplexity of the default pruning from these second moments vs from float64-product ones."""
    stats = lg.calibrate(model, input_ids=ids, batch_size=batch_size, second_moments=True)
    reference = _float64_grams(model, list(ids.split(batch_size)))
    errors = []
    for name, g in reference.items():
        errors.append(float((stats[name].input_gram - g).norm() / g.norm()))
    say(f"\nGram vs float64 products: relative Frobenius error max {max(errors):.1e}, "
        f"median {statistics.median(errors):.1e} over {len(errors)} layers")
    exact = lg.ActivationStats({name: copy.copy(s) for name, s in stats.items()}, stats.meta)
    for name, g in reference.items():
        exact[name].input_gram = g
    eval_ids = token_blocks(tok, load_texts(None, split="evaluation"), 16, 512)
    ppl = {}
    for label, st in (("float64 products (before)", exact), ("float32 blocks (now)", stats)):
        pruned = copy.deepcopy(model)
        lg.prune_model(pruned, st, "pagerank", amount=0.3, compensate="lstsq")
        ppl[label] = lg.perplexity(pruned, input_ids=eval_ids)
        say(f"  pagerank 30% local + lstsq, perplexity on 16 x 512 held-out tokens, Gram from {label}: "
            f"{ppl[label]:.4f}")
    before, now = ppl.values()
    say(f"  relative difference {abs(now - before) / before:.2e} (target < 1e-3)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model path (default: the embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--n-samples", type=int, default=None, help="calibration blocks (default 32; 8 with --quick)")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=None, help="timing rounds (default 2; 1 with --quick; 0: none)")
    ap.add_argument("--quick", action="store_true", help="8 blocks, 1 round: for development")
    ap.add_argument("--no-gram", action="store_true", help="skip the second-moment run")
    ap.add_argument("--attention", action="store_true",
                    help="also time calibrate(..., attention=True), with and without the Gram matrices (the "
                         "statistics of the head scorers and the o_proj refit): their overhead")
    ap.add_argument("--refit-check", action="store_true",
                    help="also compare the default pruning's perplexity with float64-product Gram matrices")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: torch's); 1 avoids OpenMP stalls on shared cores")
    ap.add_argument("--out", default=None, help="also write the output to this file, the command on its first line")
    args = ap.parse_args(argv)
    n_samples = args.n_samples or (8 if args.quick else 32)
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 2)
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    lines = ["# python benchmarks/bench_calibration.py " + " ".join(sys.argv[1:] if argv is None else argv)]

    def say(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    model, tok = lg.load_model(args.model, device=args.device)
    ids = token_blocks(tok, load_texts(None, split="calibration"), n_samples, args.seq_len)
    device = next(model.parameters()).device
    say(f"{ids.shape[0]} x {ids.shape[1]} tokens, batch {args.batch_size}, {torch.get_num_threads()} threads, "
        f"device {device}, {_load()}")
    if rounds:
        timings(model, list(ids.split(args.batch_size)), args.batch_size, rounds, not args.no_gram, say,
                attention=args.attention)
    if args.refit_check:
        refit_check(model, tok, ids, args.batch_size, say)
    if args.out:
        write_text_atomic(Path(args.out), "\n".join(lines) + "\n", overwrite=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
