"""Attention heads on SmolLM2-135M: held-out perplexity of each head scorer, MLP + attention against MLP
alone at the same removed parameters, and tokens/s after removing heads.

One calibration pass (``--n-samples`` x ``--seq-len`` tokens of the embedded Wikipedia calibration
articles, with the second moments and the attention statistics) feeds every run; each run prunes
a fresh copy of the model with ``prune_model(..., how='remove')`` and measures perplexity on
``--eval-samples`` windows of the held-out evaluation articles. Runs whose pruned model is the
same as an earlier one (the same heads and neurons removed, the same compensation: the steps of
the head counts often give one mask for two amounts, or for every scorer when nothing is
removed) reuse its perplexity.

Parts (``--parts``):
    heads   every head scorer (``scoring.heads.head_scorers()``: pagerank is there once the
            graph registers it; random with ``--seeds``) at ``--amounts`` of the query heads,
            ``--allocations``, ``--compensations``; the exact fraction of heads removed is
            recorded (SmolLM2's layers keep 9, 6, 4, 3, 2 or 1 of their 9 heads).
    both    ``target='both'`` against MLP neurons alone at the same number of removed
            parameters: ``--both-amounts`` of the MLP + attention parameters, ``--both-methods``,
            compensate ``--both-compensation``, each split of ``--both-splits`` (``measured``: its
            trials on the calibration tokens, ``prune_model(..., split='measured')``); the MLP-only
            amount is ``amount * (MLP + attention parameters) / (MLP parameters)``, the same
            parameter budget.
    speed   tokens/s of the model without ``--speed-amount`` of its heads (global allocation, the
            nearest step) against the dense one, alternated in one run for ``--speed-rounds``
            rounds (``data.evaluation.compare_throughput``); the median of the per-round ratios.

Modes:
    python benchmarks/heads.py                 # everything (resumable: rows already in the CSV are skipped)
    python benchmarks/heads.py --quick         # a tiny subset on small samples, to check that it runs
    python benchmarks/heads.py --tables        # rewrite --out/<name>.md from the CSV (loads nothing)

Results: stdout, ``--out/<name>.csv`` (one row per run) and ``--out/<name>.md`` (tables, with each
head's parameter cost).
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import os
import statistics
import time
from pathlib import Path

import torch
from _results import append_row, read_rows  # benchmarks/_results.py: this script's directory is on sys.path

import llmrank_graph as lg
from llmrank_graph.data.evaluation import compare_throughput, perplexity, summarize_ratios
from llmrank_graph.data.texts import load_texts, token_blocks
from llmrank_graph.models.architectures import mlp_layers
from llmrank_graph.models.attention import attention_layers
from llmrank_graph.pruning.head_allocation import layer_parameters, neuron_cost
from llmrank_graph.pruning.heads import removed_parameters
from llmrank_graph.scoring.heads import head_scorers

FIELDS = ["table", "scorer", "params", "target", "allocation", "amount", "compensation", "calibration", "eval",
          "heads_removed", "heads_total", "neurons_fraction", "params_removed", "params_total", "fraction",
          "perplexity", "dense_tokens_per_s", "pruned_tokens_per_s", "ratio_median", "ratio_spread", "rounds",
          "seconds"]
KEY = ["table", "scorer", "params", "target", "allocation", "amount", "compensation", "calibration", "eval"]
PARTS = ("heads", "both", "speed")


def fmt(x) -> str:
    if x is None or x == "" or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    x = float(x)
    if not math.isfinite(x):
        return "inf"
    return f"{x:.2f}" if x < 100 else f"{x:.1f}" if x < 1000 else f"{x:.3g}"


def _key(row) -> tuple:
    return tuple(f"{float(row[k]):.4f}" if k == "amount" else str(row[k]) for k in KEY)


# ----------------------------------------------------------------------------- the model, the CSV
def layout_facts(model) -> dict:
    """Each head's parameter cost and the parameter counts that the tables state."""
    atts, mlps = attention_layers(model), mlp_layers(model)
    sizes = [layer_parameters(m, a) for m, a in zip(mlps, atts)]
    att = atts[0]
    g, kv = att.group_size, att.num_key_value_heads
    return {"layers": len(atts), "heads": [a.num_heads for a in atts],
            "kv_heads": [a.num_key_value_heads for a in atts],
            "head_dim": att.head_dim, "hidden": att.hidden_size, "head_cost": [a.head_cost() for a in atts],
            "neuron_cost": [neuron_cost(m) for m in mlps], "keeps": sorted({a * b for a in range(1, kv + 1)
                                                                             for b in range(1, g + 1)}, reverse=True),
            "mlp_parameters": sum(s[0] for s in sizes), "attention_parameters": sum(s[1] for s in sizes)}


class Runner:
    """The model loaded and calibrated once; the CSV read back; one method per kind of row."""

    def __init__(self, args):
        self.args = args
        t = time.perf_counter()
        self.model, self.tok = lg.load_model(args.model)
        self.model.requires_grad_(False)
        self.calib_ids = token_blocks(self.tok, load_texts(None, split="calibration"), args.n_samples, args.seq_len)
        self.eval_ids = token_blocks(self.tok, load_texts(None, split="evaluation"), args.eval_samples, args.seq_len)
        load_s = time.perf_counter() - t
        t = time.perf_counter()
        self.stats = lg.calibrate(self.model, input_ids=self.calib_ids, batch_size=args.batch_size,
                                  second_moments=True, attention=True)
        print(f"loaded in {load_s:.1f} s; calibrated ({args.n_samples} x {args.seq_len} tokens, second moments, "
              f"attention) in {time.perf_counter() - t:.1f} s", flush=True)
        self.facts = layout_facts(self.model)
        self.cal, self.ev = f"{args.n_samples}x{args.seq_len}", f"{args.eval_samples}x{args.seq_len}"
        self.csv_path = Path(args.out) / f"{args.name}.csv"
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        self.done = {}
        for row in read_rows(self.csv_path):
            self.done[_key(row)] = row
        self.by_mask: dict[tuple, float] = {}  # the pruned model (as its masks and compensation) -> perplexity
        self.row("facts", "layout", json.dumps(self.facts), "-", "-", 0.0, "-", lambda row: None)

    def row(self, table, scorer, params, target, allocation, amount, compensation, fill) -> dict:
        """The row of this key: read back from the CSV, or computed by ``fill(row)`` and appended to it."""
        row = dict.fromkeys(FIELDS, "")
        row.update(table=table, scorer=scorer, params=params, target=target, allocation=allocation, amount=amount,
                   compensation=compensation, calibration=self.cal, eval=self.ev)
        key = _key(row)
        if key in self.done:
            return self.done[key]
        t = time.perf_counter()
        try:
            fill(row)
        except lg.LLMRankGraphError as e:
            print(f"{table} {scorer} {params} {target} {allocation} {amount} {compensation}: {e}", flush=True)
            row["perplexity"] = float("nan")
        row["seconds"] = round(time.perf_counter() - t, 1)
        self.done[key] = row
        append_row(self.csv_path, FIELDS, row)
        if table != "facts":
            print(f"{table:6} {scorer:10} {params:9} {target:9} {allocation:6} {float(amount):5.3f} "
                  f"{compensation:6} exact {fmt_pct(row['fraction']):>6} ppl {fmt(row['perplexity']):>8} "
                  f"({row['seconds']:.0f} s)", flush=True)
        return row

    def ppl(self, model) -> float:
        return perplexity(model, input_ids=self.eval_ids, batch_size=self.args.batch_size)

    def pruned_ppl(self, res, compensation: str) -> float:
        """Perplexity of a pruned model, or of the same pruned model measured before."""
        masks = [m for m in (res.head_mask, res.masks) if m is not None]
        key = (compensation,) + tuple(bytes(k.numpy()) for m in masks
                                      for k in (m.heads.values() if hasattr(m, "heads") else m.intermediate.values()))
        if key not in self.by_mask:
            self.by_mask[key] = self.ppl(res.model)
        return self.by_mask[key]


def fmt_pct(x) -> str:
    return "" if x in ("", None) else f"{float(x):.1%}"


# ----------------------------------------------------------------------------- the parts
def head_configs(args) -> list[tuple[str, str, dict]]:
    """(scorer, params label, params) of every head scorer asked for; random once per seed."""
    out = []
    for name in args.scorers.split(","):
        if name == "random":
            out += [(name, f"seed={s}", {"seed": int(s)}) for s in args.seeds.split(",")]
        else:
            out.append((name, "defaults", {}))
    return out


def heads_part(r: Runner, args) -> None:
    for scorer, label, params in head_configs(args):
        for allocation in args.allocations.split(","):
            for amount in (float(a) for a in args.amounts.split(",")):
                for comp in args.compensations.split(","):
                    def fill(row, scorer=scorer, params=params, allocation=allocation, amount=amount, comp=comp):
                        res = lg.prune_model(copy.deepcopy(r.model), r.stats, scorer, amount, allocation,
                                             compensate=comp, target="attention", **params)
                        mask = res.head_mask
                        row.update(heads_removed=mask.n_pruned(), heads_total=mask.n_total(), fraction=mask.fraction,
                                   params_removed=removed_parameters(r.model, mask),
                                   params_total=r.facts["attention_parameters"],
                                   perplexity=r.pruned_ppl(res, comp))
                    r.row("heads", scorer, label, "attention", allocation, amount, comp, fill)


def mlp_amount(facts: dict, amount: float) -> float:
    """The fraction of MLP neurons whose parameters are ``amount`` of the MLP + attention parameters."""
    return amount * (facts["mlp_parameters"] + facts["attention_parameters"]) / facts["mlp_parameters"]


def both_part(r: Runner, args) -> None:
    total = r.facts["mlp_parameters"] + r.facts["attention_parameters"]
    comp = args.both_compensation
    for method in args.both_methods.split(","):
        for allocation in args.allocations.split(","):
            for amount in (float(a) for a in args.both_amounts.split(",")):
                def both(row, method=method, allocation=allocation, amount=amount, split="scores"):
                    ids = r.calib_ids if split == "measured" else None
                    res = lg.prune_model(copy.deepcopy(r.model), r.stats, method, amount, allocation,
                                         compensate=comp, target="both", split=split, input_ids=ids)
                    acc = res.head_mask.meta["parameters"]
                    row.update(heads_removed=res.head_mask.n_pruned(), heads_total=res.head_mask.n_total(),
                               neurons_fraction=res.masks.fraction, params_removed=acc["removed"],
                               params_total=acc["total_parameters"], fraction=acc["fraction"],
                               perplexity=r.pruned_ppl(res, comp))

                def mlp_only(row, method=method, allocation=allocation, amount=amount):
                    res = lg.prune_model(copy.deepcopy(r.model), r.stats, method, mlp_amount(r.facts, amount),
                                         allocation, compensate=comp)
                    costs = r.facts["neuron_cost"]
                    removed = sum(res.masks.n_pruned(l) * costs[i] for i, l in enumerate(res.masks.layers))
                    row.update(neurons_fraction=res.masks.fraction, params_removed=removed, params_total=total,
                               fraction=removed / total,
                               perplexity=r.pruned_ppl(res, comp))

                for split in args.both_splits.split(","):
                    r.row("both", method, "defaults" if split == "scores" else f"split={split}", "both", allocation,
                          amount, comp, functools.partial(both, split=split))
                r.row("both", method, "defaults", "mlp", allocation, amount, comp, mlp_only)


def speed_part(r: Runner, args) -> None:
    def fill(row):
        res = lg.prune_model(copy.deepcopy(r.model), r.stats, args.speed_method, args.speed_amount, "global",
                             target="attention")
        tp = compare_throughput(r.model, res.model, r.eval_ids[:args.speed_batch], rounds=args.speed_rounds)
        s = summarize_ratios(tp["ratios"])
        row.update(heads_removed=res.head_mask.n_pruned(), heads_total=res.head_mask.n_total(),
                   fraction=res.head_mask.fraction, params_removed=removed_parameters(r.model, res.head_mask),
                   params_total=r.facts["attention_parameters"], dense_tokens_per_s=tp["dense_tokens_per_s"],
                   pruned_tokens_per_s=tp["pruned_tokens_per_s"], ratio_median=s.median, ratio_spread=s.spread,
                   rounds=s.rounds)
        print(f"tokens/s at {res.head_mask.fraction:.1%} of the heads removed: {s} (median of the per-round ratios, "
              f"{s.rounds} rounds; best rounds: dense {tp['dense_tokens_per_s']:.0f}, pruned "
              f"{tp['pruned_tokens_per_s']:.0f})", flush=True)

    r.row("speed", args.speed_method, f"batch={args.speed_batch}", "attention", "global", args.speed_amount, "none",
          fill)


# ----------------------------------------------------------------------------- the tables
def facts_text(facts: dict) -> list[str]:
    cost = facts["head_cost"][0]
    same = all(c == cost for c in facts["head_cost"])
    heads, kv = facts["heads"][0], facts["kv_heads"][0]
    return [f"{facts['layers']} layers of {heads} query heads in {kv} key/value groups (head_dim "
            f"{facts['head_dim']}, hidden {facts['hidden']}); a layer keeps "
            f"{', '.join(map(str, facts['keeps']))} heads. Each query head holds {cost['query_head']:,} parameters "
            f"(its query rows and output-projection columns), each key/value group {cost['kv_group']:,} (its key and "
            f"value rows, removed with its last query head){'' if same else ' in layer 0 (other layers differ)'}; "
            f"an intermediate neuron {facts['neuron_cost'][0]:,}. MLP parameters {facts['mlp_parameters']:,}, "
            f"attention parameters {facts['attention_parameters']:,}.\n"]


def _cell(values: list[float]) -> tuple[float, str]:
    """(the value compared, its text): one value, or the mean of random's seeds with their range."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return float("nan"), "n/a"
    mean = statistics.fmean(finite)
    return mean, fmt(mean) if len(values) == 1 else f"{fmt(mean)} ({fmt(min(finite))}-{fmt(max(finite))})"


def heads_tables(rows: list[dict]) -> list[str]:
    sel = [r for r in rows if r["table"] == "heads"]
    out = []
    for comp in dict.fromkeys(r["compensation"] for r in sel):
        here = [r for r in sel if r["compensation"] == comp]
        cols = sorted({(r["allocation"], float(r["amount"])) for r in here}, key=lambda c: (c[0] != "local", c))
        exact = {c: sorted({float(r["fraction"]) for r in here if (r["allocation"], float(r["amount"])) == c
                            and r["fraction"] != ""}) for c in cols}
        out.append(f"### heads removed, compensate {comp} (perplexity; columns: allocation, fraction of the heads "
                   "asked, and removed)\n")
        out.append("| scorer | " + " | ".join(f"{a} {x:.0%} ({'/'.join(f'{e:.1%}' for e in exact[(a, x)])})"
                                              for a, x in cols) + " |")
        out.append("|---|" + "---|" * len(cols))
        cells = {}
        for scorer in dict.fromkeys(r["scorer"] for r in here):
            for c in cols:
                vals = [float(r["perplexity"]) for r in here if r["scorer"] == scorer
                        and (r["allocation"], float(r["amount"])) == c]
                cells[scorer, c] = _cell(vals) if vals else (float("nan"), "")
        best = {c: min((cells[s, c][0] for s, cc in cells if cc == c and math.isfinite(cells[s, c][0])),
                       default=None) for c in cols}
        for scorer in dict.fromkeys(s for s, _ in cells):
            out.append(f"| {scorer}{' (mean of seeds, range)' if scorer == 'random' else ''} | " + " | ".join(
                f"**{cells[scorer, c][1]}**" if cells[scorer, c][0] == best[c] else cells[scorer, c][1]
                for c in cols) + " |")
        out.append("")
        out += heads_goal(cells, cols, exact, comp)
    return out


def heads_goal(cells: dict, cols: list, exact: dict, comp: str) -> list[str]:
    """Goal: heads chosen by the graph (pagerank) at least as good as every head baseline."""
    if not any(s == "pagerank" for s, _ in cells):
        return ["(goal: pagerank is not among the scorers of these rows: no head scorer `pagerank` was "
                "registered)\n"]
    out = [f"Goal, compensate {comp}: pagerank's heads at least as good as every baseline's (random: the mean of "
           "its seeds).\n", "| column | pagerank | best baseline | gap | met |", "|---|---|---|---|---|"]
    for c in cols:
        mine = cells["pagerank", c][0]
        others = [(cells[s, cc][0], s) for s, cc in cells if cc == c and s != "pagerank"
                  and math.isfinite(cells[s, cc][0])]
        if not others or not math.isfinite(mine):
            continue
        v, name = min(others)
        nothing = exact[c] == [0.0]
        out.append(f"| {c[0]} {c[1]:.0%} | {fmt(mine)} | {name} {fmt(v)} | {(mine / v - 1) * 100:+.2f}% | "
                   f"{'yes' if mine <= v else '**no**'}{' (no head removed)' if nothing else ''} |")
    return out + [""]


def both_table(rows: list[dict]) -> list[str]:
    sel = [r for r in rows if r["table"] == "both"]
    if not sel:
        return []
    out = [f"### MLP + attention against MLP alone at the same removed parameters (compensate "
           f"{sel[0]['compensation']}; perplexity)\n",
           "| method | allocation | budget | both: removed | both | MLP alone: removed | MLP alone | "
           "both better |", "|---|---|---|---|---|---|---|---|"]
    keys = list(dict.fromkeys((r["scorer"], r["allocation"], float(r["amount"]), r["params"]) for r in sel
                              if r["target"] == "both"))
    for method, allocation, amount, params in keys:
        b = next(r for r in sel if (r["scorer"], r["allocation"], float(r["amount"]), r["params"], r["target"]) == (
            method, allocation, amount, params, "both"))
        m = next((r for r in sel if (r["scorer"], r["allocation"], float(r["amount"]), r["target"]) == (
            method, allocation, amount, "mlp")), None)
        if m is None:
            continue
        pb, pm = float(b["perplexity"]), float(m["perplexity"])
        name = method if params == "defaults" else f"{method}, {params}"
        out.append(f"| {name} | {allocation} | {amount:.0%} | {float(b['fraction']):.2%} "
                   f"({int(b['heads_removed'])}/{int(b['heads_total'])} heads, "
                   f"{float(b['neurons_fraction']):.1%} of the neurons) | {fmt(pb)} | {float(m['fraction']):.2%} "
                   f"({float(m['neurons_fraction']):.1%} of the neurons) | {fmt(pm)} | "
                   f"{'yes' if pb < pm else '**no**'} |")
    return out + [""]


def speed_text(rows: list[dict]) -> list[str]:
    out = []
    for r in (r for r in rows if r["table"] == "speed" and r["ratio_median"] != ""):
        out.append(f"### tokens/s\n\n{r['scorer']}, global allocation, {float(r['amount']):.0%} of the heads asked, "
                   f"{float(r['fraction']):.1%} removed ({r['heads_removed']}/{r['heads_total']} heads, "
                   f"{int(float(r['params_removed'])):,} parameters): pruned/dense tokens/s "
                   f"**{float(r['ratio_median']):.3f}x** ± {float(r['ratio_spread']):.3f} (median and half the "
                   f"interquartile range of {r['rounds']} alternated rounds; {r['params'].split('=')[1]} window(s) "
                   f"of {r['eval'].split('x')[1]} tokens per pass); best rounds {float(r['dense_tokens_per_s']):.0f} "
                   "(dense) and "
                   f"{float(r['pruned_tokens_per_s']):.0f} (pruned) tokens/s.\n")
    return out


def markdown(csv_path: Path) -> str:
    rows = read_rows(csv_path)
    out = []
    for r in rows:
        if r["table"] == "facts":
            out += facts_text(json.loads(r["params"]))
        if r["table"] == "dense":
            out.append(f"Dense perplexity {fmt(r['perplexity'])} on {r['eval']} held-out tokens; calibration "
                       f"{r['calibration']} tokens of the calibration articles.\n")
    return "\n".join(out + heads_tables(rows) + both_table(rows) + speed_text(rows))


# ----------------------------------------------------------------------------- the command
QUICK = {"scorers": "activation,pagerank,random", "seeds": "0", "amounts": "0.2", "allocations": "global",
         "compensations": "none,lstsq", "both_amounts": "0.2", "both_methods": "activation", "n_samples": 4,
         "seq_len": 128, "eval_samples": 2, "speed_rounds": 3, "name": "heads_quick"}


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model path (default: the embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    ap.add_argument("--scorers", default=None, help="comma-separated head scorers (default: every registered one, "
                                                    "now " + ",".join(head_scorers()) + ")")
    ap.add_argument("--seeds", default="0,1,2", help="seeds of the random head scorer")
    ap.add_argument("--amounts", default="0.1,0.2,0.3", help="fractions of the query heads (part heads)")
    ap.add_argument("--allocations", default="local,global")
    ap.add_argument("--compensations", default="none,lstsq", help="of the part heads")
    ap.add_argument("--both-amounts", default="0.2,0.3", help="fractions of the MLP + attention parameters")
    ap.add_argument("--both-methods", default="activation,pagerank")
    ap.add_argument("--both-compensation", default="lstsq")
    ap.add_argument("--both-splits", default="scores,measured",
                    help="prune_model's split of target='both' (measured: its trials on the calibration tokens)")
    ap.add_argument("--speed-method", default="activation")
    ap.add_argument("--speed-amount", type=float, default=0.25, help="fraction of the heads (the nearest step)")
    ap.add_argument("--speed-rounds", type=int, default=11)
    ap.add_argument("--speed-batch", type=int, default=1, help="evaluation windows per forward pass")
    ap.add_argument("--n-samples", type=int, default=32, help="calibration blocks")
    ap.add_argument("--seq-len", type=int, default=512, help="tokens per calibration block and evaluation window")
    ap.add_argument("--eval-samples", type=int, default=16, help="held-out evaluation windows")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--quick", action="store_true",
                    help="a tiny subset on small samples (" + ", ".join(f"{k}={v}" for k, v in QUICK.items()) + ")")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--name", default="heads")
    ap.add_argument("--tables", action="store_true", help="only rewrite --out/<name>.md from the CSV")
    if ap.parse_known_args(argv)[0].quick:  # the quick values as defaults: options given still win
        ap.set_defaults(**QUICK)
    args = ap.parse_args(argv)
    if args.scorers is None:
        args.scorers = ",".join(head_scorers())
    unknown = [p for p in args.parts.split(",") if p not in PARTS]
    if unknown:
        ap.error(f"--parts: unknown {unknown}; of {PARTS}")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    csv_path = Path(args.out) / f"{args.name}.csv"
    if not args.tables:
        torch.set_grad_enabled(False)
        if args.threads:
            torch.set_num_threads(args.threads)
        t = time.perf_counter()
        r = Runner(args)
        r.row("dense", "dense", "-", "-", "-", 0.0, "-", lambda row: row.update(perplexity=r.ppl(r.model)))
        parts = args.parts.split(",")
        for name, part in (("heads", heads_part), ("both", both_part), ("speed", speed_part)):
            if name in parts:
                part(r, args)
        print(f"done in {time.perf_counter() - t:.0f} s", flush=True)
    md = markdown(csv_path)
    (Path(args.out) / f"{args.name}.md").write_text(md + "\n")
    print("\n" + md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
