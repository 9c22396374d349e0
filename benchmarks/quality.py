"""Held-out perplexity of SmolLM2-135M after removing MLP neurons, for every scorer.

One calibration pass (``--n-samples`` x ``--seq-len`` tokens of the embedded Wikipedia
calibration articles) feeds every scorer; each scorer runs once, and its scores are reused
for every amount and allocation. Perplexity is measured on ``--eval-samples`` windows of the
held-out evaluation articles. Neurons are physically removed (``how='remove'``); the paper-mode
rows zero up_proj and down_proj rows as the reference code does.

Run:
    python benchmarks/quality.py                         # the README table
    python benchmarks/quality.py --variants-only         # PageRank variants at 30% and 50%
Results go to stdout and, as Markdown and CSV, to ``--out`` (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
import os
import sys
import time
from pathlib import Path

import torch

import llmrank_graph as lg
from llmrank_graph.data import load_texts, token_blocks
from llmrank_graph.evaluation import perplexity
from llmrank_graph.masks import allocate
from llmrank_graph.pruning import apply_mask
from llmrank_graph.scoring import PAGERANK_DEFAULTS, score_neurons

BASE_METHODS = ["pagerank", "activation", "wanda-sp", "magnitude", "random", "wpr", "mpr", "channel-wanda", "norm",
                "katz", "hits", "eigenvector", "strength", "degree"]

# PageRank variants tried while choosing the defaults (each a dict of scorer parameters).
def _rev(alpha, **kw):
    return {"direction": "reverse", "weighting": "abs_x_input", "personalization": "activation", "alpha": alpha, **kw}


VARIANTS = {
    "forward, abs weights, uniform teleport (paper graph)": dict(direction="forward", weighting="abs",
                                                                 personalization="uniform", alpha=0.85),
    "forward, abs weights, activation teleport": dict(direction="forward", weighting="abs",
                                                      personalization="activation", alpha=0.85),
    "forward, contribution edges, activation teleport": dict(direction="forward", weighting="abs_x_input",
                                                             personalization="activation", alpha=0.85),
    "forward, abs weights, activation teleport, alpha 0.5": dict(direction="forward", weighting="abs",
                                                                 personalization="activation", alpha=0.5),
    "forward, abs weights, activation teleport, alpha 0.2": dict(direction="forward", weighting="abs",
                                                                 personalization="activation", alpha=0.2),
    "reverse, abs weights, uniform teleport": dict(direction="reverse", weighting="abs",
                                                   personalization="uniform", alpha=0.85),
    "reverse, abs weights, activation teleport": dict(direction="reverse", weighting="abs",
                                                      personalization="activation", alpha=0.85),
    "reverse, contribution edges, uniform teleport": dict(direction="reverse", weighting="abs_x_input",
                                                          personalization="uniform", alpha=0.85),
    "reverse, contribution edges, activation teleport, alpha 0.85": _rev(0.85),
    "reverse, contribution edges, activation teleport, alpha 0.5": _rev(0.5),
    "reverse, contribution edges, activation teleport, alpha 0.3": _rev(0.3),
    "reverse, contribution edges, activation teleport, alpha 0.2": _rev(0.2),
    "reverse, contribution edges, activation teleport, alpha 0.1": _rev(0.1),
    "reverse, contribution edges, activation teleport, alpha 0.05": _rev(0.05),
    "reverse, activation-share edges, activation teleport, alpha 0.85": _rev(0.85, weighting="activation_share"),
    "reverse, activation-share edges, activation teleport, alpha 0.7": _rev(0.7, weighting="activation_share"),
    "reverse, activation-share edges, activation teleport, alpha 0.5": _rev(0.5, weighting="activation_share"),
    "reverse, contribution edges, gate=sum, alpha 0.5": _rev(0.5, gate="sum"),
    "reverse, contribution edges, gate=gate, alpha 0.5": _rev(0.5, gate="gate"),
    "reverse, contribution edges, residual 1, alpha 0.5": _rev(0.5, residual=1.0),
    "reverse, contribution edges, residual 30, alpha 0.5": _rev(0.5, residual=30.0),
    "reverse, contribution edges, residual 30, alpha 0.2": _rev(0.2, residual=30.0),
    "reverse, contribution edges, isolated, alpha 0.5": _rev(0.5, mode="isolated"),
    "reverse, contribution edges, isolated, alpha 0.2": _rev(0.2, mode="isolated"),
}

PAPER_ROWS = {
    "wpr, default gamma=0 (paper mode)": dict(method="wpr"),
    "wpr, gamma=0.9, chained (paper mode)": dict(method="wpr", gamma=0.9),
    "channel wanda (paper mode)": dict(method="channel-wanda"),
}


def fmt(x: float) -> str:
    if math.isnan(x):
        return "n/a"
    if not math.isfinite(x):
        return "inf"
    return f"{x:.1f}" if x < 1000 else f"{x:.3g}"


class Runner:
    def __init__(self, args):
        self.args = args
        t = time.perf_counter()
        self.model, self.tok = lg.load_model(args.model, device=args.device)
        self.model.requires_grad_(False)
        self.stats = lg.calibrate(self.model, self.tok, texts=args.calib_texts, n_samples=args.n_samples,
                                  seq_len=args.seq_len, batch_size=args.batch_size, progress=True)
        texts = load_texts(args.eval_texts, split="evaluation")
        self.eval_ids = token_blocks(self.tok, texts, args.eval_samples, args.seq_len)
        print(f"loaded + calibrated in {time.perf_counter() - t:.1f} s", flush=True)
        self.rows = []
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.out / f"{args.name}.csv"

    def ppl(self, model) -> float:
        return perplexity(model, input_ids=self.eval_ids, batch_size=self.args.batch_size)

    def record(self, table: str, name: str, allocation: str, amount: float, value: float, seconds: float):
        row = {"table": table, "scorer": name, "allocation": allocation, "amount": amount, "perplexity": value,
               "seconds": round(seconds, 1)}
        self.rows.append(row)
        print(f"{table:9} {name:62} {allocation:6} {amount:4.2f} ppl {fmt(value):>9}  ({seconds:.0f} s)", flush=True)
        new = not self.csv_path.exists()
        with open(self.csv_path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)

    def run_scores(self, table, name, scores, amounts, allocations, how="remove", rounding="round"):
        for allocation in allocations:
            for amount in amounts:
                t = time.perf_counter()
                mask = allocate(scores, amount, allocation, rounding=rounding)
                model = apply_mask(copy.deepcopy(self.model), mask, how=how)
                value = self.ppl(model)
                del model
                self.record(table, name, allocation, amount, value, time.perf_counter() - t)


def markdown(rows, table, amounts) -> str:
    sel = [r for r in rows if r["table"] == table]
    keys = []
    for r in sel:
        k = (r["scorer"], r["allocation"])
        if k not in keys:
            keys.append(k)
    head = "| scorer | allocation | " + " | ".join(f"{int(a * 100)}%" for a in amounts) + " |"
    lines = [head, "|---|---|" + "---|" * len(amounts)]
    for scorer, alloc in keys:
        vals = {r["amount"]: r["perplexity"] for r in sel if r["scorer"] == scorer and r["allocation"] == alloc}
        lines.append(f"| {scorer} | {alloc} | " + " | ".join(fmt(vals[a]) if a in vals else "" for a in amounts) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model path (default: the embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--device", default=None, help="e.g. cuda (default: cpu)")
    ap.add_argument("--calib-texts", default=None, help="calibration text source (default: embedded Wikipedia)")
    ap.add_argument("--eval-texts", default=None, help="evaluation text source (default: held-out Wikipedia)")
    ap.add_argument("--n-samples", type=int, default=32)
    ap.add_argument("--eval-samples", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--amounts", default="0.1,0.2,0.3,0.5")
    ap.add_argument("--allocations", default="local,global")
    ap.add_argument("--methods", default=",".join(BASE_METHODS))
    ap.add_argument("--variants-only", action="store_true", help="only the PageRank variants table")
    ap.add_argument("--variant-amounts", default="0.3,0.5")
    ap.add_argument("--variant-allocations", default="local")
    ap.add_argument("--no-variants", action="store_true")
    ap.add_argument("--no-paper", action="store_true")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--name", default="quality")
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    amounts = [float(a) for a in args.amounts.split(",")]
    allocations = args.allocations.split(",")
    r = Runner(args)
    t = time.perf_counter()
    dense = r.ppl(r.model)
    r.record("dense", "dense model", "-", 0.0, dense, time.perf_counter() - t)
    if args.variants_only or not args.no_variants:
        vam = [float(a) for a in args.variant_amounts.split(",")]
        for name, params in VARIANTS.items():
            s = score_neurons(r.model, r.stats, "pagerank", **params)
            r.run_scores("variants", name, s, vam, args.variant_allocations.split(","))
    if not args.variants_only:
        for method in args.methods.split(","):
            t = time.perf_counter()
            name = method if method != "pagerank" else "pagerank (defaults)"
            try:
                s = score_neurons(r.model, r.stats, method)
            except lg.ConvergenceError as e:  # e.g. eigenvector on a near-bipartite graph
                print(f"{method}: {e}", flush=True)
                for allocation in allocations:
                    for amount in amounts:
                        r.record("main", name + " (did not converge)", allocation, amount, float("nan"), 0.0)
                continue
            print(f"scored {method} in {time.perf_counter() - t:.1f} s", flush=True)
            rounding = "reference" if method in ("wpr", "mpr", "channel-wanda") else "round"
            r.run_scores("main", name, s, amounts, allocations, rounding=rounding)
        if not args.no_paper:
            for name, kw in PAPER_ROWS.items():
                kw = dict(kw)
                method = kw.pop("method")
                s = score_neurons(r.model, r.stats, method, prune_hidden=True, **kw)
                r.run_scores("paper", name, s, [0.3], ["local"], how="zero", rounding="reference")
    md = [f"Dense perplexity: {fmt(dense)} ({args.eval_samples} x {args.seq_len} held-out Wikipedia tokens; "
          f"calibration {args.n_samples} x {args.seq_len}). PageRank defaults: {PAGERANK_DEFAULTS}.", ""]
    for table, am in (("main", amounts), ("variants", [float(a) for a in args.variant_amounts.split(",")]),
                      ("paper", [0.3])):
        if any(x["table"] == table for x in r.rows):
            md += [f"### {table}", "", markdown(r.rows, table, am), ""]
    text = "\n".join(md)
    (r.out / f"{args.name}.md").write_text(text)
    print("\n" + text)


if __name__ == "__main__":
    main()
