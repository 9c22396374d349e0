"""Plot perplexity against the fraction of MLP neurons removed, from quality.py's CSV.

Run:  python benchmarks/plot_quality.py [CSV ...] [--out quality.png]
(default: the H200 table and the CPU run of the PageRank defaults in benchmarks/results/)
"""

from __future__ import annotations

import argparse
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

HERE = os.path.dirname(__file__)
SHOWN = {
    "pagerank (defaults)": "pagerank (defaults)",
    "reverse, contribution edges, uniform teleport": "pagerank, uniform teleport",
    "activation": "activation",
    "wanda-sp": "wanda-sp",
    "wpr": "wpr (reference)",
    "random": "random",
    "forward, abs weights, uniform teleport (paper graph)": "forward PageRank, paper graph",
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("csv", nargs="*", default=[os.path.join(HERE, "results", "quality_h200.csv"),
                                               os.path.join(HERE, "results", "quality_pagerank_defaults_cpu.csv")])
    ap.add_argument("--out", default=os.path.join(HERE, "results", "quality.png"))
    args = ap.parse_args(argv)
    df = pd.concat([pd.read_csv(p) for p in args.csv if os.path.exists(p)], ignore_index=True)
    dense = float(df.loc[df.table == "dense", "perplexity"].iloc[0])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, alloc in zip(axes, ("local", "global")):
        for key, label in SHOWN.items():
            d = df[(df.scorer == key) & (df.allocation == alloc)].sort_values("amount")
            if d.empty:
                continue
            ax.plot([0] + list(d.amount * 100), [dense] + list(d.perplexity), marker="o", label=label,
                    lw=2.5 if "defaults" in label else 1.2)
        ax.set_yscale("log")
        ax.set_xlabel("intermediate neurons removed (%)")
        ax.set_title(f"{alloc} allocation")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("held-out perplexity (log)")
    axes[1].legend(fontsize=8, loc="upper left")
    fig.suptitle("SmolLM2-135M, MLP neurons physically removed")
    fig.tight_layout()
    tmp = args.out + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
