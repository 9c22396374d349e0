"""Held-out perplexity of SmolLM2-135M after removing MLP neurons, with and without compensation.

For each scorer, compensation, allocation and amount, a fresh copy of the model is pruned
(``how='remove'``) and its perplexity measured on ``--eval-samples`` windows of the held-out
Wikipedia evaluation articles. One calibration pass (``--n-samples`` x ``--seq-len`` tokens of
the calibration articles, with the second moments) feeds every scorer and every one-shot
compensation; each scorer's dense scores are computed once.

Compensations (columns):
    none              removal only (today's behaviour)
    bias              FLAP's bias, b = W_R mu_R
    lstsq             ridge least-squares refit of the kept down_proj columns
    lstsq+bias        the refit on the covariance, plus the bias
    lstsq+sequential  lstsq, layer by layer on the outputs of the already-pruned layers
                      (prune_model(..., sequential=True)); global budgets from the dense pass

Modes:
    python benchmarks/compensation.py                       # the grid (resumable: rows already in
                                                            # the CSV are skipped)
    python benchmarks/compensation.py --ridge-sweep 1e-4,1e-3,1e-2,1e-1,1 --scorers activation
        # the ridge, measured on validation windows of the *calibration* articles that the fit
        # never saw (blocks --n-samples.. of that stream), not on the evaluation text
    python benchmarks/compensation.py --memory one-shot|sequential  # peak RSS, one process each
    python benchmarks/compensation.py --token-counts 512,2048,16384 --seq-len 128 --eval-seq-len 512
        --ridge-rules none,fixed,add=1 --name compensation_tokens   # refit rules per calibration size
    python benchmarks/compensation.py --token-counts 4096,8192,16384,32768,65536 --ridge-rules none,library
        --token-evals evaluation --amounts 0.1,0.3,0.5 --scorers pagerank --threads 1 --name calibration_size
        # the calibration-size curve: perplexity and calibration time per token count
    python benchmarks/compensation.py --variants            # graph variants under --compensations
    python benchmarks/compensation.py --tables              # rewrite the .md from the CSV only

Results: stdout, ``--out/<name>.csv`` (one row per run) and ``--out/<name>.md`` (tables).
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
import os
import time
from pathlib import Path

import torch
from _results import append_row, read_rows  # benchmarks/_results.py: this script's directory is on sys.path

import llmrank_graph as lg
from llmrank_graph.compensation.algebra import DEFAULT_RIDGE
from llmrank_graph.data.evaluation import perplexity
from llmrank_graph.data.texts import load_texts, token_blocks
from llmrank_graph.pruning.masks import allocate
from llmrank_graph.pruning.surgery import apply_mask, prune_model
from llmrank_graph.scoring.registry import score_neurons, scorer_class

SCORERS = ["pagerank", "activation", "wanda-sp", "flap", "obs"]
COMPENSATIONS = ["none", "bias", "lstsq", "lstsq+sequential"]
FIELDS = ["table", "scorer", "params", "allocation", "amount", "compensation", "ridge", "eval", "perplexity",
          "seconds"]


def fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if not math.isfinite(x):
        return "inf"
    return f"{x:.1f}" if x < 1000 else f"{x:.3g}"


def _parse_params(text: str) -> dict:
    out = {}
    for kv in filter(None, text.split(";")):
        k, v = kv.split("=", 1)
        for conv in (int, float):
            try:
                v = conv(v)
                break
            except ValueError:
                pass
        out[k] = v
    return out


class Runner:
    def __init__(self, args):
        self.args = args
        t = time.perf_counter()
        self.model, self.tok = lg.load_model(args.model)
        self.model.requires_grad_(False)
        calib_texts = load_texts(args.calib_texts, split="calibration")
        eval_len = args.eval_seq_len or args.seq_len
        if args.token_counts:  # calibration blocks for the largest count, then validation windows of eval_len
            n_cal, per = max(token_counts(args)) // args.seq_len, eval_len // args.seq_len
            blocks = token_blocks(self.tok, calib_texts, n_cal + args.val_samples * per, args.seq_len)
            self.calib_ids, self.val_ids = blocks[:n_cal], blocks[n_cal:].reshape(args.val_samples, eval_len)
        else:
            n_val = args.val_samples if args.ridge_sweep else 0
            blocks = token_blocks(self.tok, calib_texts, args.n_samples + n_val, args.seq_len)
            self.calib_ids = blocks[:args.n_samples]
            self.val_ids = blocks[args.n_samples:]
        self.eval_ids = token_blocks(self.tok, load_texts(args.eval_texts, split="evaluation"), args.eval_samples,
                                     eval_len)
        self.stats = None
        if not (args.memory or args.token_counts):
            self.stats = lg.calibrate(self.model, input_ids=self.calib_ids, batch_size=args.batch_size,
                                      second_moments=True, progress=False)
        print(f"loaded{'' if self.stats is None else ' + calibrated'} ({self.calib_ids.shape[0]} x "
              f"{self.calib_ids.shape[1]} calibration tokens) in {time.perf_counter() - t:.1f} s", flush=True)
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.out / f"{args.name}.csv"
        self.done = {}
        for row in read_rows(self.csv_path):
            self.done[self._key(row)] = row

    def is_done(self, table, scorer, params, allocation, amount, compensation, ridge, which) -> bool:
        return self._key({"table": table, "scorer": scorer, "params": params, "allocation": allocation,
                          "amount": amount, "compensation": compensation, "ridge": ridge, "eval": which}) in self.done

    @staticmethod
    def _key(row) -> tuple:
        return (row["table"], row["scorer"], row["params"], row["allocation"], f"{float(row['amount']):.3f}",
                row["compensation"], f"{float(row['ridge']):.3g}", row["eval"])

    def ppl(self, model, which="evaluation") -> float:
        ids = self.eval_ids if which == "evaluation" else self.val_ids
        return perplexity(model, input_ids=ids, batch_size=self.args.batch_size)

    def run(self, table, scorer, params, allocation, amount, compensation, ridge, build, which="evaluation"):
        row = {"table": table, "scorer": scorer, "params": params, "allocation": allocation, "amount": amount,
               "compensation": compensation, "ridge": ridge, "eval": which}
        key = self._key(row)
        if key in self.done:
            print(f"(done) {scorer:12} {params:28} {allocation:12} {amount:4.2f} {compensation:17} ridge {ridge:<7g} "
                  f"ppl {fmt(float(self.done[key]['perplexity'])):>8}", flush=True)
            return
        t = time.perf_counter()
        try:
            model = build()
            value = self.ppl(model, which)
            del model
        except lg.LLMRankGraphError as e:
            print(f"{scorer} {allocation} {amount} {compensation}: {e}", flush=True)
            value = float("nan")
        row.update(perplexity=value, seconds=round(time.perf_counter() - t, 1))
        self.done[key] = row
        print(f"{scorer:12} {params:28} {allocation:12} {amount:4.2f} {compensation:17} ridge {ridge:<7g} "
              f"ppl {fmt(value):>8}  ({row['seconds']:.0f} s)", flush=True)
        append_row(self.csv_path, FIELDS, row)


def grid(r: Runner, args) -> None:
    amounts = [float(a) for a in args.amounts.split(",")]
    allocations = args.allocations.split(",")
    compensations = args.compensations.split(",")
    ridge = args.ridge
    for spec in args.scorers.split(","):
        method, _, ptext = spec.partition(":")
        params = _parse_params(ptext)
        pname = ptext or "defaults"
        scores = None
        rounding = scorer_class(method).rounding
        for allocation in allocations:
            for amount in amounts:
                for comp in compensations:
                    if comp == "lstsq+sequential":
                        def build(method=method, amount=amount, allocation=allocation, params=params):
                            m = copy.deepcopy(r.model)
                            prune_model(m, r.stats, method, amount, allocation, compensate="lstsq", ridge=ridge,
                                        sequential=True, input_ids=r.calib_ids, **params)
                            return m
                    else:
                        if scores is None:
                            t = time.perf_counter()
                            scores = score_neurons(r.model, r.stats, method, **params)
                            print(f"scored {method} {pname} in {time.perf_counter() - t:.1f} s", flush=True)

                        def build(scores=scores, amount=amount, allocation=allocation, comp=comp, rounding=rounding):
                            mask = allocate(scores, amount, allocation, rounding=rounding)
                            return apply_mask(copy.deepcopy(r.model), mask, "remove", compensate=comp,
                                              stats=r.stats, ridge=ridge)
                    r.run("grid", method, pname, allocation, amount, comp, ridge, build)


# ----------------------------------------------------------------------------- graph variants
def centred_stats(stats):
    """Stats whose intermediate nodes (down_proj inputs) carry sqrt(n Var(h_j)) instead of ||h_j||."""
    from llmrank_graph.data.calibration import ActivationStats, ModuleStats

    mods = {}
    for name, st in stats.items():
        if st.input_gram is not None:  # a down projection
            centred = (st.input_sumsq - st.input_sum ** 2 / st.n_tokens).clamp_min(0)
            st = ModuleStats(centred, st.output_sumsq, st.input_batch_norm_sum, st.output_batch_norm_sum,
                             st.n_batches, st.n_tokens, st.input_sum, None)
        mods[name] = st
    return ActivationStats(mods, dict(stats.meta))


def _criteria(model, stats, which: str) -> dict[int, torch.Tensor]:
    """Per-layer non-negative criteria in norm units: sqrt(fluctuation) or sqrt(single-removal OBS cost)."""
    from llmrank_graph.compensation.algebra import _cholesky, fluctuation, relative_damp
    from llmrank_graph.models.architectures import mlp_layers

    out = {}
    for mlp in mlp_layers(model):
        s = stats[mlp.down_name]
        w = mlp.weight("down").detach().double()
        if which == "fluctuation":
            v = fluctuation(w, s.input_variance)
        else:
            g = s.input_second_moment
            h = g + relative_damp(g, DEFAULT_RIDGE) * torch.eye(g.shape[0], dtype=g.dtype)
            v = w.square().sum(0) / torch.cholesky_inverse(_cholesky(h)).diagonal()
        out[mlp.layer] = v.clamp_min(0).sqrt()
    return out


def _teleport(graph, criteria: dict[int, torch.Tensor]):
    """The graph's activation teleport with each layer's intermediate part replaced by ``criteria``,
    rescaled to the same total per layer (the balance with the hidden nodes is kept)."""
    import numpy as np

    t = np.array(graph.activation, dtype=np.float64)
    for part in graph.intermediate_partitions():
        base = t[part.offset:part.stop]
        v = criteria[part.layer].numpy()
        t[part.offset:part.stop] = v * (base.sum() / v.sum())
    return t


def variant_masks(r: Runner, amount: float, allocation: str):
    """name -> mask, for every graph variant (and budget hybrid) at one amount and allocation."""
    from llmrank_graph.graph.mlpgraph import export_graph
    from llmrank_graph.pruning.masks import NeuronMask, prune_lowest
    from llmrank_graph.scoring import PAGERANK_EXPORT

    cache = r.__dict__.setdefault("_variant_scores", {})

    def scores(name):
        if name not in cache:
            t = time.perf_counter()
            if name == "pagerank":
                cache[name] = score_neurons(r.model, r.stats, "pagerank")
            elif name == "pagerank, fluctuation nodes":
                cache[name] = score_neurons(r.model, centred_stats(r.stats), "pagerank")
            elif name.startswith("pagerank, ") and "teleport" in name:
                nodes = centred_stats(r.stats) if "fluctuation nodes" in name else r.stats
                graph = export_graph(r.model, nodes, **PAGERANK_EXPORT.as_dict())
                crit = _criteria(r.model, r.stats, "obs" if "OBS teleport" in name else "fluctuation")
                cache[name] = score_neurons(r.model, nodes, "pagerank", graph=graph,
                                            personalization=_teleport(graph, crit))
            else:
                cache[name] = score_neurons(r.model, r.stats, name)
            print(f"scored {name} in {time.perf_counter() - t:.1f} s", flush=True)
        return cache[name]

    out = {}
    for name in ("pagerank", "pagerank, fluctuation nodes", "pagerank, fluctuation teleport",
                 "pagerank, OBS teleport", "pagerank, fluctuation nodes, OBS teleport"):
        out[name] = allocate(scores(name), amount, allocation)
    if allocation != "local":
        budgets = allocate(scores("pagerank"), amount, allocation)
        for inner in ("obs", "flap", "activation"):
            s = scores(inner)
            out[f"budgets: global pagerank, neurons: {inner}"] = NeuronMask(
                {l: prune_lowest(s.intermediate[l], budgets.n_pruned(l)) for l in budgets.layers})
    return out


def variants(r: Runner, args) -> None:
    for allocation in args.allocations.split(","):
        for amount in (float(a) for a in args.amounts.split(",")):
            for name, mask in variant_masks(r, amount, allocation).items():
                for comp in args.compensations.split(","):
                    def build(mask=mask, comp=comp):
                        return apply_mask(copy.deepcopy(r.model), mask, "remove", compensate=comp, stats=r.stats,
                                          ridge=args.ridge)
                    r.run("variants", name, "-", allocation, amount, comp, args.ridge, build)


def ridge_sweep(r: Runner, args) -> None:
    ridges = [float(x) for x in args.ridge_sweep.split(",")]
    for spec in args.scorers.split(","):
        method, _, ptext = spec.partition(":")
        params = _parse_params(ptext)
        scores = score_neurons(r.model, r.stats, method, **params)
        for allocation in args.allocations.split(","):
            for amount in (float(a) for a in args.amounts.split(",")):
                mask = allocate(scores, amount, allocation, rounding=scorer_class(method).rounding)
                for comp in args.compensations.split(","):
                    for ridge in ridges:
                        def build(mask=mask, comp=comp, ridge=ridge):
                            return apply_mask(copy.deepcopy(r.model), mask, "remove", compensate=comp, stats=r.stats,
                                              ridge=ridge)
                        r.run("ridge", method, ptext or "defaults", allocation, amount, comp, ridge, build,
                              which="validation")


# ----------------------------------------------------------------------------- calibration token counts
def token_counts(args) -> list[int]:
    counts = [int(x) for x in args.token_counts.split(",")]
    bad = [n for n in counts if n % args.seq_len]
    if bad or (args.eval_seq_len or args.seq_len) % args.seq_len:
        raise SystemExit(f"--token-counts {bad} and --eval-seq-len must be multiples of --seq-len {args.seq_len}")
    return counts


def parse_rule(spec: str):
    """A refit rule: ``(ridge, n_tokens, n_kept) -> relative ridge``, None for no refit, or 'library'.

    none: no refit; fixed: the base ridge whatever the token count (before issue 17); fixed=R: the
    ridge R; pow=P: ridge * max(1, k / n)^P; add=C: ridge + C k / n; skip=C: no refit where n < C k,
    else the base ridge; library: apply_mask(compensate='lstsq', ridge=--ridge), the library's own.
    """
    name, _, value = spec.partition("=")
    c = float(value) if value else None
    rules = {
        "none": lambda ridge, n, k: None,
        "fixed": lambda ridge, n, k: ridge if c is None else c,
        "pow": lambda ridge, n, k: ridge * max(1.0, k / n) ** c,
        "add": lambda ridge, n, k: ridge + c * k / n,
        "skip": lambda ridge, n, k: None if n < c * k else ridge,
    }
    if name == "library":
        return "library"
    if name not in rules or (c is None and name not in ("none", "fixed")):
        raise SystemExit(f"--ridge-rules: unknown rule {spec!r}; see parse_rule's docstring")
    return rules[name]


def refit_with_rule(model, mask, stats, rule, ridge: float):
    """A pruned copy of ``model``, its kept down_proj columns refitted by the library's kernels with the ridge
    that ``rule`` gives each layer from its token count and kept-neuron count."""
    from llmrank_graph.compensation.algebra import DownUpdate, apply_updates, relative_damp, ridge_refit
    from llmrank_graph.models.architectures import mlp_layers

    if rule == "library":
        return apply_mask(copy.deepcopy(model), mask, "remove", compensate="lstsq", stats=stats, ridge=ridge)
    updates = {}
    for mlp in mlp_layers(model):
        keep = mask.intermediate[mlp.layer]
        s = stats[mlp.down_name]
        eff = rule(ridge, s.n_tokens, int(keep.sum()))
        if keep.all() or eff is None:
            continue
        w, g = mlp.weight("down").detach().double(), s.input_second_moment
        damp = relative_damp(g[keep][:, keep], eff)
        updates[mlp.layer] = DownUpdate(mlp.layer, ridge_refit(w, g, keep, damp), None)
    pruned = apply_mask(copy.deepcopy(model), mask, "remove")
    apply_updates(pruned, updates)
    return pruned


def _token_stats(r: Runner, args, n: int):
    """Calibration statistics (with the second moments) of the first ``n`` calibration tokens, cached on disk
    under --stats-dir if given."""
    from llmrank_graph.data.calibration import ActivationStats

    path = Path(args.stats_dir) / f"stats_{n}x{args.seq_len}.safetensors" if args.stats_dir else None
    if path is not None and path.exists():
        return ActivationStats.load(path)
    t = time.perf_counter()
    stats = lg.calibrate(r.model, input_ids=r.calib_ids[:n // args.seq_len], batch_size=args.batch_size,
                         second_moments=True, progress=False)
    seconds = time.perf_counter() - t
    print(f"calibrated {n} tokens ({n // args.seq_len} x {args.seq_len}, second moments) in "
          f"{seconds:.0f} s, load {os.getloadavg()[0]:.1f}", flush=True)
    # The cost side of the calibration-size curve: the time of this calibration (a row of its own).
    row = {"table": "tokens", "scorer": "calibration", "params": f"{n} tokens", "allocation": "-", "amount": 0.0,
           "compensation": f"load {os.getloadavg()[0]:.1f}", "ridge": args.ridge, "eval": "-",
           "perplexity": float("nan"), "seconds": round(seconds, 1)}
    append_row(r.csv_path, FIELDS, row)
    if path is not None:
        stats.save(path, overwrite=True)
    return stats


def token_sweep(r: Runner, args) -> None:
    """Every rule of --ridge-rules at every calibration token count and amount: perplexity on --token-evals."""
    specs, evals, amounts = args.ridge_rules.split(","), args.token_evals.split(","), args.amounts.split(",")
    rules = {spec: parse_rule(spec) for spec in specs}
    for which in evals:
        r.run("tokens", "dense", "-", "-", 0.0, "none", 0.0, lambda: r.model, which=which)
    method, _, ptext = args.scorers.split(",")[0].partition(":")
    allocation = args.allocations.split(",")[0]
    for n in token_counts(args):
        params = f"{n} tokens"
        todo = [(float(a), spec, which) for a in amounts for spec in specs for which in evals
                if not r.is_done("tokens", method, params, allocation, float(a), spec, args.ridge, which)]
        if todo:
            stats = _token_stats(r, args, n)
            scores = score_neurons(r.model, stats, method, **_parse_params(ptext))
        for amount, spec, which in todo:
            mask = allocate(scores, amount, allocation, rounding=scorer_class(method).rounding)
            r.run("tokens", method, params, allocation, amount, spec, args.ridge,
                  lambda mask=mask, rule=rules[spec], stats=stats: refit_with_rule(r.model, mask, stats, rule,
                                                                                    args.ridge), which=which)


def token_table(rows: list[dict]) -> list[str]:
    """One table per evaluation text: rows (tokens, amount), a column per rule, the lowest in bold; then the
    calibration's time per token count (the cost side of the curve), where measured."""
    out = []
    cost = {int(r["params"].split()[0]): (float(r["seconds"]), r["compensation"]) for r in rows
            if r["table"] == "tokens" and r["scorer"] == "calibration"}
    sel = [r for r in rows if r["table"] == "tokens" and r["scorer"] != "calibration"]
    for which in dict.fromkeys(r["eval"] for r in sel):
        here = [r for r in sel if r["eval"] == which]
        dense = next((float(r["perplexity"]) for r in here if r["scorer"] == "dense"), None)
        here = [r for r in here if r["scorer"] != "dense"]
        if not here:
            continue
        rules = list(dict.fromkeys(r["compensation"] for r in here))
        cells = {(int(r["params"].split()[0]), float(r["amount"]), r["compensation"]): float(r["perplexity"])
                 for r in here}
        out.append(f"### calibration tokens ({which} text, {here[0]['scorer']}, {here[0]['allocation']}, "
                   f"base ridge {here[0]['ridge']}; dense {fmt(dense)})\n")
        out.append("| tokens | amount | " + " | ".join(rules) + " |")
        out.append("|---|---|" + "---|" * len(rules))
        for n, amount in sorted({k[:2] for k in cells}):
            vals = {c: cells.get((n, amount, c)) for c in rules}
            best = min((v for v in vals.values() if v is not None and math.isfinite(v)), default=None)
            out.append(f"| {n} | {amount:.0%} | " + " | ".join(
                "" if v is None else f"**{fmt(v)}**" if v == best else fmt(v) for v in vals.values()) + " |")
        out.append("")
    if cost:
        out += ["### calibration time (forward pass with second moments; --threads as run)\n",
                "| tokens | seconds | ms per token | load |", "|---|---|---|---|"]
        out += [f"| {n} | {sec:.1f} | {sec / n * 1e3:.1f} | {load} |" for n, (sec, load) in sorted(cost.items())]
        out.append("")
    return out


def memory(r: Runner, args) -> None:
    """Peak RSS above the loaded model: one-shot (calibrate with second moments + lstsq) or sequential.

    One measurement per process: memory freed by a first run stays in the allocator's heap and
    would hide the second run's peak.
    """
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    from _memory import peak_memory

    amount = float(args.amounts.split(",")[0])
    for label in (args.memory,):
        model = copy.deepcopy(r.model)
        t = time.perf_counter()
        with peak_memory() as mem:
            if label == "one-shot":
                stats = lg.calibrate(model, input_ids=r.calib_ids, batch_size=args.batch_size, second_moments=True)
                prune_model(model, stats, "activation", amount, compensate="lstsq")
                del stats
            else:
                prune_model(model, None, "activation", amount, compensate="lstsq", sequential=True,
                            input_ids=r.calib_ids)
        print(f"{label:10} activation {amount:.0%} local lstsq: peak RSS +{mem['peak_extra'] / 2**20:.0f} MiB above "
              f"the loaded models, {time.perf_counter() - t:.0f} s", flush=True)
        del model


def goals(rows: list[dict], dense: float | None) -> list[str]:
    """The issue's goals from the grid rows: the best configuration per amount (local), and
    pagerank against the best other scorer under each allocation, amount and compensation."""
    grid = [r for r in rows if r["table"] == "grid" and r["params"] == "defaults"]
    if not grid:
        return []
    ppl = {(r["scorer"], r["allocation"], float(r["amount"]), r["compensation"]): float(r["perplexity"]) for r in grid}
    out = ["### goals (evaluation text)\n"]
    if dense is not None:
        out.append("Best configuration per amount, local allocation (goal 1: within 1.5x of dense at 30%, "
                   "2.0x at 50%):\n")
        out.append("| amount | best configuration | perplexity | x dense |")
        out.append("|---|---|---|---|")
        for amount in sorted({k[2] for k in ppl if k[1] == "local"}):
            cands = [(v, k) for k, v in ppl.items() if k[1] == "local" and k[2] == amount and math.isfinite(v)]
            v, k = min(cands)
            out.append(f"| {amount:.0%} | {k[0]}, {k[3]} | {fmt(v)} | {v / dense:.2f}x |")
        out.append("")
    out.append("PageRank against the best other scorer under the same allocation, amount and compensation "
               "(goal 2: pagerank at or below every other scorer):\n")
    out.append("| allocation | amount | compensation | pagerank | best other | gap |")
    out.append("|---|---|---|---|---|---|")
    for alloc, amount, comp in sorted({(k[1], k[2], k[3]) for k in ppl if k[0] == "pagerank"}):
        mine = ppl[("pagerank", alloc, amount, comp)]
        others = [(v, k[0]) for k, v in ppl.items() if k[1:] == (alloc, amount, comp) and k[0] != "pagerank"]
        if not others:
            continue
        v, name = min(others)
        gap = (mine / v - 1) * 100
        out.append(f"| {alloc} | {amount:.0%} | {comp} | {fmt(mine)} | {name} {fmt(v)} | "
                   f"{'**' if gap > 0 else ''}{gap:+.1f}%{'**' if gap > 0 else ''} |")
    out.append("")
    return out


def markdown(csv_path: Path, dense: float | None) -> str:
    rows = read_rows(csv_path)
    out = []
    if dense is not None:
        out.append(f"Dense perplexity {dense:.2f}.\n")
    for table in ("grid", "variants", "ridge"):
        sel = [r for r in rows if r["table"] == table]
        if not sel:
            continue
        def column(r, table=table):
            return r["compensation"] if table != "ridge" else f"{r['compensation']} ridge {r['ridge']}"

        comps = list(dict.fromkeys(column(r) for r in sel))
        order = {s: i for i, s in enumerate(dict.fromkeys(r["scorer"] for r in sel))}
        keys = list(dict.fromkeys((r["scorer"], r["params"], r["allocation"], f"{float(r['amount']):.2f}")
                                  for r in sel))
        out.append(f"### {table} ({sel[0]['eval']} text)\n")
        out.append("| scorer | params | allocation | amount | " + " | ".join(comps) + " |")
        out.append("|---|---|---|---|" + "---|" * len(comps))

        def sort_key(k, table=table, order=order):
            return k[2], float(k[3]), order[k[0]] if table == "variants" else k[0], k[1]

        for scorer, params, alloc, amount in sorted(keys, key=sort_key):
            vals = {}
            for r in sel:
                if (r["scorer"], r["params"], r["allocation"], f"{float(r['amount']):.2f}") == (scorer, params, alloc,
                                                                                                 amount):
                    vals[column(r)] = float(r["perplexity"])
            best = min((v for v in vals.values() if math.isfinite(v)), default=None)
            cells = [("**" + fmt(vals[c]) + "**" if vals.get(c) == best else fmt(vals[c])) if c in vals else ""
                     for c in comps]
            out.append(f"| {scorer} | {params} | {alloc} | {int(float(amount) * 100)}% | " + " | ".join(cells) + " |")
        out.append("")
    out += token_table(rows)
    out += goals(rows, dense)
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model path (default: the embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--calib-texts", default=None)
    ap.add_argument("--eval-texts", default=None)
    ap.add_argument("--n-samples", type=int, default=32)
    ap.add_argument("--val-samples", type=int, default=16, help="validation windows of the ridge sweep")
    ap.add_argument("--eval-samples", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--scorers", default=",".join(SCORERS),
                    help="comma-separated; parameters as name:key=value;key=value")
    ap.add_argument("--compensations", default=",".join(COMPENSATIONS))
    ap.add_argument("--amounts", default="0.3,0.5")
    ap.add_argument("--allocations", default="local")
    ap.add_argument("--ridge", type=float, default=DEFAULT_RIDGE)
    ap.add_argument("--ridge-sweep", default=None, help="comma-separated ridges, measured on validation windows")
    ap.add_argument("--eval-seq-len", type=int, default=None,
                    help="tokens per evaluation/validation window (default: --seq-len)")
    ap.add_argument("--token-counts", default=None,
                    help="comma-separated calibration token counts (multiples of --seq-len): each calibrated once, "
                         "with the first --scorers scorer and --allocations allocation, every --ridge-rules rule")
    ap.add_argument("--ridge-rules", default="none,fixed,library",
                    help="with --token-counts: comma-separated refit rules (see parse_rule)")
    ap.add_argument("--token-evals", default="validation,evaluation",
                    help="with --token-counts: where perplexity is measured (validation: --val-samples windows of "
                         "the calibration articles after the largest count; evaluation: the held-out articles)")
    ap.add_argument("--stats-dir", default=None, help="with --token-counts: cache the statistics here")
    ap.add_argument("--memory", choices=("one-shot", "sequential"), default=None,
                    help="peak memory of a one-shot or a sequential lstsq pruning (run each in its own process)")
    ap.add_argument("--variants", action="store_true", help="graph variants and budget hybrids")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: torch's); 1 is faster when the cores are shared")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--name", default="compensation")
    ap.add_argument("--tables", action="store_true",
                    help="only rewrite --out/<name>.md from the CSV (loads nothing)")
    args = ap.parse_args(argv)
    if args.tables:
        csv_path = Path(args.out) / f"{args.name}.csv"
        with open(csv_path, newline="") as f:
            dense = next((float(r["perplexity"]) for r in csv.DictReader(f)
                          if r["table"] == "grid" and r["scorer"] == "dense"), None)
        md = markdown(csv_path, dense)
        (Path(args.out) / f"{args.name}.md").write_text(md + "\n")
        print(md)
        return 0
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    r = Runner(args)
    if args.memory:
        memory(r, args)
        return 0
    if args.token_counts:
        token_sweep(r, args)
    elif args.ridge_sweep:
        r.run("ridge", "dense", "-", "-", 0.0, "none", 0.0, lambda: r.model, which="validation")
        ridge_sweep(r, args)
    else:
        r.run("grid", "dense", "-", "-", 0.0, "none", 0.0, lambda: r.model)
        if args.variants:
            variants(r, args)
        else:
            grid(r, args)
    dense = next((float(v["perplexity"]) for k, v in r.done.items() if k[1] == "dense"), None)
    md = markdown(r.csv_path, dense)
    (r.out / f"{args.name}.md").write_text(md + "\n")
    print("\n" + md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
