"""The README's perplexity table, regenerated from a `llmrank-graph sweep` (a preset over it).

Runs ``llmrank-graph sweep`` with the README's grid into ``--out`` (resumable: a rerun skips
every finished run), then ``llmrank-graph report`` (PNGs + report.html in the same directory),
and prints the table as Markdown (also written to ``--out/quality.md``).

    python benchmarks/quality.py                       # the README table: every scorer, 10-50%, local + global
    python benchmarks/quality.py --quick               # 5 scorers, 30% and 50%, local, small samples:
                                                       # < 2 min on 2 cores
    python benchmarks/quality.py --variants            # adds PageRank variants (direction x weighting x
                                                       # teleport x alpha) at 30% and 50%, local
    python benchmarks/quality.py --paper               # adds the reference's paper mode (zero up and
                                                       # down rows, 30%, local)
    python benchmarks/quality.py --device cuda -- --tasks wikipedia_lastword   # after --: more sweep options

The same table by hand: ``llmrank-graph sweep --out DIR --methods ... --amounts 0.1 0.2 0.3 0.5
--allocations local global`` and ``llmrank-graph report DIR``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from llmrank_graph.base.files import write_text_atomic
from llmrank_graph.cli import main as cli
from llmrank_graph.experiments.runner import read_results

#: Every scorer of the README table, in its order.
METHODS = ["pagerank", "activation", "wanda-sp", "magnitude", "random", "wpr", "mpr", "channel-wanda", "norm",
           "katz", "hits", "eigenvector", "strength", "degree"]
QUICK_METHODS = ["pagerank", "activation", "wanda-sp", "magnitude", "random"]
# PageRank variants: one cartesian grid over the options that matter (see the README).
VARIANT_PARAMS = ["direction=forward,reverse", "weighting=abs,abs_x_input,activation_share",
                  "personalization=uniform,activation", "alpha=0.5,0.85"]


def fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if not math.isfinite(x):
        return "inf"
    return f"{x:.1f}" if x < 1000 else f"{x:.3g}"


def markdown(df, methods_order: list[str]) -> str:
    """Methods (rows) x allocation and amount (columns); the best value of each column in bold."""
    df = df[df["how"] == "remove"]
    cols = sorted({(a, x) for a, x in zip(df["allocation"], df["amount"])}, key=lambda c: (c[0] != "local", c))
    head = "| scorer | " + " | ".join(f"{a} {x:.0%}" for a, x in cols) + " |"
    lines = [head, "|---|" + "---|" * len(cols)]
    dense = df["dense_perplexity"].dropna()
    if len(dense):
        lines.append("| dense model | " + " | ".join(fmt(dense.iloc[0]) for _ in cols) + " |")
    best = {}
    for a, x in cols:
        sel = df[(df["allocation"] == a) & (df["amount"] == x) & (df["status"] == "complete")]["perplexity"]
        best[(a, x)] = sel.min() if len(sel) else None
    labels = sorted(df["label"].unique(), key=lambda l: (l.split()[0] not in methods_order,
                                                          methods_order.index(l.split()[0])
                                                          if l.split()[0] in methods_order else 0, l))
    for label in labels:
        cells = []
        for a, x in cols:
            sel = df[(df["label"] == label) & (df["allocation"] == a) & (df["amount"] == x)]
            if not len(sel):
                cells.append("")
            elif sel.iloc[0]["status"] != "complete":
                cells.append("failed")
            else:
                v = float(sel.iloc[0]["perplexity"])
                cells.append(f"**{fmt(v)}**" if v == best[(a, x)] else fmt(v))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "quality"),
                    help="results directory (default benchmarks/results/quality, or .../quality-quick)")
    ap.add_argument("--quick", action="store_true", help="small grid and samples: under 2 minutes on 2 CPU cores")
    ap.add_argument("--model", default=None, help="model path (default: the embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--device", default=None, help="e.g. cuda")
    ap.add_argument("--variants", action="store_true", help="also the PageRank variants")
    ap.add_argument("--paper", action="store_true", help="also the reference code's paper mode")
    ap.add_argument("sweep_args", nargs="*", help="after --: more `llmrank-graph sweep` options")
    args = ap.parse_args(argv)
    out = args.out
    if args.quick and out == ap.get_default("out"):
        out = out + "-quick"
    # The README's table is removal alone: no refit (sweep, like prune, refits by default).
    common = ["--out", out, "--compensate", "none"] + (["--model", args.model] if args.model else []) + (
        ["--device", args.device] if args.device else [])
    # Calibration and evaluation sizes: the library's defaults (32 x 512 and 16 x 512), or small ones.
    settings = (["--n-samples", "4", "--seq-len", "128", "--eval-samples", "4", "--throughput-rounds", "1"]
                if args.quick else [])
    if args.quick:
        grid = ["--methods", *QUICK_METHODS, "--amounts", "0.3", "0.5", "--allocations", "local"]
    else:
        grid = ["--methods", *METHODS, "--amounts", "0.1", "0.2", "0.3", "0.5", "--allocations", "local", "global"]
    # --extend: the directory holds this grid and, with --variants / --paper, theirs.
    rc = cli(["sweep", *common, *grid, *settings, "--save-scores", "--extend", *args.sweep_args])
    if rc:
        return rc
    if args.variants:
        rc = cli(["sweep", *common, "--methods", "pagerank", "--amounts", "0.3", "0.5", "--allocations", "local",
                  *[x for p in VARIANT_PARAMS for x in ("--param", p)], *settings, "--extend", *args.sweep_args])
        if rc:
            return rc
    if args.paper:
        rc = cli(["sweep", *common, "--methods", "wpr", "channel-wanda", "--amounts", "0.3", "--allocations", "local",
                  "--how", "zero", "--param", "prune_hidden=true", *settings, "--extend", *args.sweep_args])
        if rc:
            return rc
    rc = cli(["report", out])
    if rc:
        return rc
    df = read_results(out)
    dense = df["dense_perplexity"].dropna()
    cfg = df.iloc[0]
    text = (f"Dense perplexity {fmt(dense.iloc[0]) if len(dense) else 'n/a'} on {cfg['evaluation.n_samples']} x "
            f"{cfg['evaluation.seq_len']} held-out tokens; calibration {cfg['calibration.n_samples']} x "
            f"{cfg['calibration.seq_len']}. Best of each column in bold. Command: python benchmarks/quality.py "
            + " ".join(sys.argv[1:] if argv is None else argv) + "\n\n" + markdown(df, METHODS) + "\n")
    write_text_atomic(Path(out, "quality.md"), text, overwrite=True)
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
