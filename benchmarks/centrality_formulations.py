"""The graph formulations of issue 19 against activation and Taylor, on held-out text (SmolLM2-135M).

One calibration pass (``--n-samples`` x ``--seq-len`` tokens of the embedded calibration
articles) records everything at once: the forward statistics with the second moments (for
``lstsq``), the loss gradients (``gradients=True``: the ``taylor`` scorer and the ``gradient``
seed) and the residual stream entering each MLP (``residual=True``: the measured skip edges) and the attention's
(``attention=True``: the head nodes).
Each formulation is scored once; then, for each allocation, amount and compensation, a fresh
copy of the model is pruned (``how='remove'``) and its perplexity measured on ``--eval-samples``
windows of the held-out evaluation articles, as benchmarks/compensation.py does.

Formulations (``--formulations``, names below or ``method:key=value;key=value``):
    activation                  the baseline: the down_proj input norm
    taylor                      |sum_t x dL/dx|, LLM-Pruner's first-order criterion
    pagerank                    the default: reverse, activation teleport, activation_share edges
    pagerank output_seed=unembedding   (a) teleport only at the output, the LM head's column norms
    pagerank output_seed=gradient      (a) teleport only at the output, the loss gradient's norms
    pagerank residual=measured  (b) skip edges weighing the measured residual stream
    influence                   (d) (I - A)^-1 on the in-normalised abs_x_input graph, unembedding seed
    influence output_seed=gradient     (d) the same, gradient seed
    pagerank attention=True     (c) the default PageRank on the graph with the attention heads as nodes

Reported:
    Spearman per layer over the intermediate neurons, averaged over layers, to activation and
    to taylor (``<name>_spearman.csv``: one row per formulation and layer);
    perplexity per formulation, allocation, amount and compensation (``<name>.csv``, resumable:
    rows already there are skipped);
    where the neurons that a formulation ranks differently from activation sit relative to the
    pruning threshold (local allocation, every amount; ``<name>_threshold.csv``, one row per
    formulation, amount and layer): the neurons it keeps that activation prunes ("rescued") and
    the ones it prunes that activation keeps ("sacrificed"), their distance from the threshold
    in activation rank (% of the layer) and their activation relative to the threshold's.

Modes:
    python benchmarks/centrality_formulations.py                  # the whole grid: 145 runs
    python benchmarks/centrality_formulations.py --quick          # 4 x 128 tokens, 30% local only: a check

Time on 2 CPU cores: the calibration with gradients about 3 min (16 x 512 tokens), each
formulation scored in about 4 s, each run about 55 s (the perplexity of 16 x 512 tokens, measured
with the cores shared; the lstsq refit adds about 8 s), so about 2 h for the grid, less on idle
cores; ``--quick`` took 8 min under the same load.
    python benchmarks/centrality_formulations.py --tables         # rewrite <name>.md from the CSVs only

Results: stdout and ``--out/<name>{.csv,_spearman.csv,_threshold.csv,.md}``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from _results import append_row, read_rows  # benchmarks/_results.py: this script's directory is on sys.path
from scipy.stats import spearmanr

import llmrank_graph as lg
from llmrank_graph.data.evaluation import perplexity
from llmrank_graph.data.stats import ActivationStats
from llmrank_graph.data.texts import load_texts, token_blocks
from llmrank_graph.pruning.masks import allocate
from llmrank_graph.pruning.surgery import apply_mask
from llmrank_graph.scoring.registry import score_neurons, scorer_class

FORMULATIONS = {
    "activation": ("activation", {}),
    "taylor": ("taylor", {}),
    "pagerank": ("pagerank", {}),
    "pagerank output_seed=unembedding": ("pagerank", {"output_seed": "unembedding"}),
    "pagerank output_seed=gradient": ("pagerank", {"output_seed": "gradient"}),
    "pagerank residual=measured": ("pagerank", {"residual": "measured"}),
    "pagerank attention=True": ("pagerank", {"attention": True}),
    "influence": ("influence", {}),
    "influence output_seed=gradient": ("influence", {"output_seed": "gradient"}),
}
FIELDS = ["formulation", "allocation", "amount", "compensation", "eval", "perplexity", "seconds"]
SPEARMAN_FIELDS = ["formulation", "layer", "to_activation", "to_taylor"]
THRESHOLD_FIELDS = ["formulation", "amount", "layer", "m", "pruned", "swapped", "rescued_gap_median",
                    "rescued_gap_max", "sacrificed_gap_median", "sacrificed_gap_max", "rescued_act_ratio",
                    "sacrificed_act_ratio"]


def fmt(x) -> str:
    x = float(x)
    if math.isnan(x):
        return "n/a"
    return "inf" if not math.isfinite(x) else f"{x:.2f}" if x < 100 else f"{x:.4g}"


def pct(x, digits: int = 1, unit: str = "%") -> str:
    """A percentage (or a ratio with ``unit=''``), '-' where there is none (no neuron swapped)."""
    x = float(x)
    return "-" if math.isnan(x) else f"{x:.{digits}f}{unit}"


def parse_formulation(spec: str) -> tuple[str, str, dict]:
    """``(name, method, params)`` of a name of FORMULATIONS or a ``method:key=value;key=value`` spec."""
    if spec in FORMULATIONS:
        return (spec, *FORMULATIONS[spec])
    method, _, text = spec.partition(":")
    params = {}
    for kv in filter(None, text.split(";")):
        k, v = kv.split("=", 1)
        for conv in (int, float):
            try:
                v = conv(v)
                break
            except ValueError:
                pass
        params[k] = v
    return spec, method, params


def _write(path: Path, fields: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


# ----------------------------------------------------------------------------- the measurements
def spearman_rows(name: str, scores, activation, taylor) -> list[dict]:
    rows = []
    for layer, s in scores.intermediate.items():
        rows.append({"formulation": name, "layer": layer,
                     "to_activation": spearmanr(s.numpy(), activation.intermediate[layer].numpy())[0],
                     "to_taylor": spearmanr(s.numpy(), taylor.intermediate[layer].numpy())[0]})
    return rows


def _swap_stats(idx: np.ndarray, rank: np.ndarray, k: int, a: np.ndarray, thr: float) -> tuple[float, float, float]:
    """Median and max distance from the threshold (activation rank, % of the layer) and median a / threshold."""
    if not idx.size:
        return float("nan"), float("nan"), float("nan")
    g = np.abs(rank[idx] + 0.5 - k) / a.size * 100
    return float(np.median(g)), float(g.max()), float(np.median(a[idx] / thr)) if thr > 0 else float("nan")


def threshold_rows(name: str, mask, act_mask, activation, amount: float) -> list[dict]:
    """Per layer, where the neurons that ``mask`` and ``act_mask`` (local allocations) disagree on sit."""
    rows = []
    for layer, a in activation.intermediate.items():
        a = a.numpy()
        m = a.size
        keep, keep_act = mask.intermediate[layer].numpy(), act_mask.intermediate[layer].numpy()
        k = int((~keep_act).sum())
        rank = np.empty(m, dtype=np.int64)
        rank[np.lexsort((np.arange(m), a))] = np.arange(m)  # 0 = lowest activation, ties by index
        order = np.sort(a)
        thr = (order[k - 1] + order[k]) / 2 if 0 < k < m else order[min(k, m - 1)]
        rescued, sacrificed = np.flatnonzero(keep & ~keep_act), np.flatnonzero(~keep & keep_act)
        r_med, r_max, r_ratio = _swap_stats(rescued, rank, k, a, thr)
        s_med, s_max, s_ratio = _swap_stats(sacrificed, rank, k, a, thr)
        rows.append({"formulation": name, "amount": amount, "layer": layer, "m": m, "pruned": k,
                     "swapped": int(rescued.size), "rescued_gap_median": r_med, "rescued_gap_max": r_max,
                     "sacrificed_gap_median": s_med, "sacrificed_gap_max": s_max, "rescued_act_ratio": r_ratio,
                     "sacrificed_act_ratio": s_ratio})
    return rows


class Runner:
    def __init__(self, args):
        self.args = args
        t = time.perf_counter()
        self.model, tok = lg.load_model(args.model)
        self.model.requires_grad_(False)
        self.calib_ids = token_blocks(tok, load_texts(args.calib_texts, split="calibration"), args.n_samples,
                                      args.seq_len)
        self.eval_ids = token_blocks(tok, load_texts(args.eval_texts, split="evaluation"), args.eval_samples,
                                     args.eval_seq_len or args.seq_len)
        print(f"loaded in {time.perf_counter() - t:.1f} s", flush=True)
        self.stats = self._stats()
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.out / f"{args.name}.csv"
        self.done = {self._key(r): r for r in read_rows(self.csv_path)}

    def _stats(self) -> ActivationStats:
        path = Path(self.args.stats_file) if self.args.stats_file else None
        if path is not None and path.exists():
            return ActivationStats.load(path)
        t = time.perf_counter()
        stats = lg.calibrate(self.model, input_ids=self.calib_ids, batch_size=self.args.batch_size,
                             second_moments=True, gradients=True, residual=True, attention=True)
        print(f"calibrated {self.calib_ids.shape[0]} x {self.calib_ids.shape[1]} tokens (second moments, gradients, "
              f"residual stream, attention) in {time.perf_counter() - t:.1f} s", flush=True)
        if path is not None:
            stats.save(path, overwrite=True)
        return stats

    @staticmethod
    def _key(row) -> tuple:
        return row["formulation"], row["allocation"], f"{float(row['amount']):.3f}", row["compensation"], row["eval"]

    def run(self, name, allocation, amount, compensation, build) -> None:
        row = {"formulation": name, "allocation": allocation, "amount": amount, "compensation": compensation,
               "eval": "evaluation"}
        key = self._key(row)
        if key in self.done:
            print(f"(done) {name:30} {allocation:7} {amount:4.2f} {compensation:6} "
                  f"ppl {fmt(self.done[key]['perplexity']):>8}", flush=True)
            return
        t = time.perf_counter()
        try:
            model = build()
            value = perplexity(model, input_ids=self.eval_ids, batch_size=self.args.batch_size)
            del model
        except lg.LLMRankGraphError as e:
            print(f"{name} {allocation} {amount} {compensation}: {e}", flush=True)
            value = float("nan")
        row.update(perplexity=value, seconds=round(time.perf_counter() - t, 1))
        self.done[key] = row
        print(f"{name:30} {allocation:7} {amount:4.2f} {compensation:6} ppl {fmt(value):>8}  "
              f"({row['seconds']:.0f} s)", flush=True)
        append_row(self.csv_path, FIELDS, row)


def measure(r: Runner, args) -> None:
    specs = [parse_formulation(s) for s in args.formulations.split(",")]
    scores, rounding = {}, {}
    for name, method, params in [parse_formulation("activation"), parse_formulation("taylor"), *specs]:
        if name not in scores:
            t = time.perf_counter()
            scores[name] = score_neurons(r.model, r.stats, method, **params)
            rounding[name] = scorer_class(method).rounding
            print(f"scored {name} in {time.perf_counter() - t:.1f} s", flush=True)
    act, tay = scores["activation"], scores["taylor"]
    spear = [row for name, _, _ in specs for row in spearman_rows(name, scores[name], act, tay)]
    _write(r.out / f"{args.name}_spearman.csv", SPEARMAN_FIELDS, spear)
    amounts = [float(a) for a in args.amounts.split(",")]
    thresholds = []
    for amount in amounts:
        act_mask = allocate(act, amount, "local")
        for name, _, _ in (s for s in specs if s[0] != "activation"):
            thresholds += threshold_rows(name, allocate(scores[name], amount, "local", rounding=rounding[name]),
                                         act_mask, act, amount)
    _write(r.out / f"{args.name}_threshold.csv", THRESHOLD_FIELDS, thresholds)
    r.run("dense", "-", 0.0, "none", lambda: r.model)
    for allocation in args.allocations.split(","):
        for amount in amounts:
            for name, _, _ in specs:
                mask = allocate(scores[name], amount, allocation, rounding=rounding[name])
                for comp in args.compensations.split(","):
                    r.run(name, allocation, amount, comp,
                          lambda mask=mask, comp=comp: apply_mask(copy.deepcopy(r.model), mask, "remove",
                                                                  compensate=comp, stats=r.stats))


# ----------------------------------------------------------------------------- tables
def _spearman_table(rows: list[dict]) -> list[str]:
    out = ["### Spearman per layer over the intermediate neurons (mean over layers; min)\n",
           "| formulation | to activation | min | to taylor | min |", "|---|---|---|---|---|"]
    for name in dict.fromkeys(r["formulation"] for r in rows):
        a = np.array([float(r["to_activation"]) for r in rows if r["formulation"] == name])
        t = np.array([float(r["to_taylor"]) for r in rows if r["formulation"] == name])
        out.append(f"| {name} | {a.mean():.3f} | {a.min():.3f} | {t.mean():.3f} | {t.min():.3f} |")
    return out + [""]


def _perplexity_tables(rows: list[dict]) -> list[str]:
    dense = next((float(r["perplexity"]) for r in rows if r["formulation"] == "dense"), None)
    rows = [r for r in rows if r["formulation"] != "dense"]
    out = [f"Dense perplexity {fmt(dense)}.\n"] if dense is not None else []
    ppl = {(r["formulation"], r["allocation"], float(r["amount"]), r["compensation"]): float(r["perplexity"])
           for r in rows}
    names = list(dict.fromkeys(r["formulation"] for r in rows))
    for allocation in dict.fromkeys(r["allocation"] for r in rows):
        cols = sorted({(k[2], k[3]) for k in ppl if k[1] == allocation}, key=lambda c: (c[0], c[1] != "none", c[1]))
        out.append(f"### perplexity, {allocation} allocation (held-out text; in brackets: % against activation)\n")
        out.append("| formulation | " + " | ".join(f"{a:.0%} {c}" for a, c in cols) + " |")
        out.append("|---|" + "---|" * len(cols))
        best = {c: min((v for k, v in ppl.items() if (k[1], k[2], k[3]) == (allocation, *c) and math.isfinite(v)),
                       default=None) for c in cols}
        for name in names:
            cells = []
            for c in cols:
                v = ppl.get((name, allocation, *c))
                base = ppl.get(("activation", allocation, *c))
                if v is None:
                    cells.append("")
                    continue
                text = f"**{fmt(v)}**" if v == best[c] else fmt(v)
                if base and name != "activation" and math.isfinite(v):
                    text += f" ({(v / base - 1) * 100:+.1f}%)"
                cells.append(text)
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        out.append("")
    return out


def _threshold_tables(rows: list[dict], detail: float) -> list[str]:
    out = ["### where the neurons ranked differently from activation sit (local allocation)\n",
           "Swapped: neurons of a layer that the formulation keeps and activation prunes (as many the other way), "
           "% of the layer, mean over layers. Gap: distance from the pruning threshold in activation rank, % of the "
           "layer (median over the swapped neurons of all layers; max). Ratio: their activation over the "
           "threshold's (median; rescued < 1 < sacrificed).\n",
           "| formulation | amount | swapped | rescued gap | max | sacrificed gap | max | rescued ratio | "
           "sacrificed ratio |", "|---|---|---|---|---|---|---|---|---|"]

    def med(vals):
        vals = [v for v in vals if math.isfinite(v)]
        return float(np.median(vals)) if vals else float("nan")

    def top(vals):
        return max((v for v in vals if math.isfinite(v)), default=float("nan"))

    keys = list(dict.fromkeys((r["formulation"], float(r["amount"])) for r in rows))
    for name, amount in keys:
        sel = [r for r in rows if r["formulation"] == name and float(r["amount"]) == amount]
        swapped = np.mean([int(r["swapped"]) / int(r["m"]) * 100 for r in sel])
        f = {k: [float(r[k]) for r in sel] for k in THRESHOLD_FIELDS[6:]}
        out.append(f"| {name} | {amount:.0%} | {swapped:.1f}% | {pct(med(f['rescued_gap_median']))} | "
                   f"{pct(top(f['rescued_gap_max']))} | {pct(med(f['sacrificed_gap_median']))} | "
                   f"{pct(top(f['sacrificed_gap_max']))} | {pct(med(f['rescued_act_ratio']), 3, '')} | "
                   f"{pct(med(f['sacrificed_act_ratio']), 3, '')} |")
    out.append("")
    for name in dict.fromkeys(r["formulation"] for r in rows):
        sel = [r for r in rows if r["formulation"] == name and abs(float(r["amount"]) - detail) < 1e-9]
        if not sel or name == "activation":
            continue
        out.append(f"#### {name}, {detail:.0%} local, per layer\n")
        out.append("| layer | swapped | rescued gap (median, max) | sacrificed gap (median, max) | rescued ratio | "
                   "sacrificed ratio |")
        out.append("|---|---|---|---|---|---|")
        for r in sel:
            out.append(f"| {r['layer']} | {r['swapped']} of {r['m']} | {pct(r['rescued_gap_median'])}, "
                       f"{pct(r['rescued_gap_max'])} | {pct(r['sacrificed_gap_median'])}, "
                       f"{pct(r['sacrificed_gap_max'])} | {pct(r['rescued_act_ratio'], 3, '')} | "
                       f"{pct(r['sacrificed_act_ratio'], 3, '')} |")
        out.append("")
    return out


def markdown(out: Path, name: str, detail: float) -> str:
    parts = []
    spear = read_rows(out / f"{name}_spearman.csv")
    if spear:
        parts += _spearman_table(spear)
    ppl = read_rows(out / f"{name}.csv")
    if ppl:
        parts += _perplexity_tables(ppl)
    thr = read_rows(out / f"{name}_threshold.csv")
    if thr:
        parts += _threshold_tables(thr, detail)
    return "\n".join(parts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model path (default: the embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--calib-texts", default=None)
    ap.add_argument("--eval-texts", default=None)
    ap.add_argument("--n-samples", type=int, default=16, help="calibration blocks of --seq-len tokens")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--eval-samples", type=int, default=16)
    ap.add_argument("--eval-seq-len", type=int, default=None, help="tokens per evaluation window (default: --seq-len)")
    ap.add_argument("--batch-size", type=int, default=4,
                    help="sequences per pass (the gradient pass keeps about 2.4 MB per token of SmolLM2)")
    ap.add_argument("--formulations", default=",".join(FORMULATIONS),
                    help="comma-separated names (see above) or method:key=value;key=value")
    ap.add_argument("--amounts", default="0.1,0.2,0.3,0.5")
    ap.add_argument("--allocations", default="local,global")
    ap.add_argument("--compensations", default="none,lstsq")
    ap.add_argument("--detail-amount", type=float, default=0.3, help="amount of the per-layer threshold tables")
    ap.add_argument("--stats-file", default=None, help="keep the calibration statistics here (reused when present)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--quick", action="store_true",
                    help="4 x 128 calibration and evaluation tokens, 30%% local only, name <name>_quick: a check")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--name", default="centrality_formulations")
    ap.add_argument("--tables", action="store_true", help="only rewrite --out/<name>.md from the CSVs (loads nothing)")
    args = ap.parse_args(argv)
    if args.quick:
        args.n_samples, args.eval_samples, args.seq_len, args.batch_size = 4, 4, 128, 2
        args.amounts, args.allocations, args.name = "0.3", "local", f"{args.name}_quick"
    out = Path(args.out)
    if not args.tables:
        torch.set_grad_enabled(False)  # the gradient pass turns it on for itself
        if args.threads:
            torch.set_num_threads(args.threads)
        measure(Runner(args), args)
    md = markdown(out, args.name, args.detail_amount)
    (out / f"{args.name}.md").write_text(md + "\n")
    print("\n" + md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
