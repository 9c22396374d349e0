"""The PNG plots of an inspect report: strength per layer, mean centrality per layer, correlations, mass.

matplotlib is imported when a report is written, with the non-interactive Agg backend unless
the caller chose one: writing a report must work on a machine without a display.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .correlations import pair_matrix

__all__ = ["write_plots"]


def _pyplot():
    import matplotlib  # heavy, and only the written report needs it

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _strength_plot(plt, st: pd.DataFrame, out: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    for ax, quantity in zip(axes, ("in_strength", "out_strength")):
        for kind, color in (("intermediate", "tab:blue"), ("hidden", "tab:orange")):
            s = st[(st.quantity == quantity) & (st.kind == kind)].sort_values("layer")
            if s.empty:
                continue
            ax.plot(s.layer, s["q0.5"], color=color, label=f"{kind} median")
            ax.fill_between(s.layer, s["q0.05"], s["q0.95"], color=color, alpha=0.25, label=f"{kind} 5-95%")
        ax.set_title(quantity.replace("_", "-"))
        ax.set_xlabel("layer")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    fig.suptitle("node strength per layer")
    fig.tight_layout()
    return _save(plt, fig, out / "strength.png")


def _relative_means(rep, layers: list[int]) -> pd.DataFrame | None:
    lm = rep.layer_means
    if lm is None or lm.empty:
        return None
    return lm.pivot(index="score", columns="layer", values="relative").reindex(columns=layers)


def _heatmap_plot(plt, heat: pd.DataFrame, layers: list[int], out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(max(6, 0.25 * len(layers) + 3), 0.45 * len(heat) + 1.5))
    with np.errstate(divide="ignore", invalid="ignore"):
        # log2 of the ratio: one outlying layer (forward Katz grows with depth) keeps the others visible
        rel = np.log2(heat.to_numpy(dtype=float))
    rel[~np.isfinite(rel)] = np.nan
    lim = min(float(np.nanmax(np.abs(rel))), 3.0) if np.isfinite(rel).any() else 1.0
    im = ax.imshow(rel, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_yticks(range(len(heat)), heat.index)
    ax.set_xticks(range(len(layers)), layers, fontsize=7)
    ax.set_xlabel("layer")
    fig.colorbar(im, ax=ax, extend="both", label="log2(layer mean / mean over all layers), clipped at +-3")
    ax.set_title("mean centrality per layer (intermediate neurons)")
    fig.tight_layout()
    return _save(plt, fig, out / "centrality_heatmap.png")


def _correlation_plot(plt, m: pd.DataFrame, out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(1.1 * len(m) + 2, 1.0 * len(m) + 1.5))
    im = ax.imshow(m.to_numpy(dtype=float), vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(len(m)), m.columns, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(m)), m.index, fontsize=8)
    for i in range(len(m)):
        for j in range(len(m)):
            ax.text(j, i, f"{m.iat[i, j]:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, label="Spearman")
    ax.set_title("rank correlation, all layers")
    fig.tight_layout()
    return _save(plt, fig, out / "correlations.png")


def _mass_plot(plt, mass: pd.DataFrame, out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(10, 4))
    names = list(dict.fromkeys(mass.score))
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        g = mass[mass.score == name]
        per = g.groupby(["layer", "kind"]).share.sum().unstack(fill_value=0.0)
        x = per.index.to_numpy() + i * width
        bottom = np.zeros(len(per))
        for kind in [c for c in ("intermediate", "head", "hidden") if c in per.columns]:
            ax.bar(x, per[kind], width, bottom=bottom, label=f"{name}: {kind}")
            bottom += per[kind].to_numpy()
    ax.set_xlabel("layer")
    ax.set_ylabel("share of the mass")
    ax.set_title("PageRank mass per layer")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(plt, fig, out / "mass.png")


def write_plots(rep, out: Path) -> list[Path]:
    """Write the plots of an :class:`~llmrank_graph.analysis.inspect.InspectReport` to ``out``; the paths written.

    ``strength.png`` (in/out-strength per layer), ``centrality_heatmap.png`` (mean score per
    layer, relative), ``correlations.png`` (overall Spearman matrix) and ``mass.png`` (share of
    each PageRank per layer), each when the report has the table it shows.
    """
    plt = _pyplot()
    written = []
    if len(rep.layer_stats):
        written.append(_strength_plot(plt, rep.layer_stats, out))
    names = list(rep.sources)
    if rep.top_neurons is not None and names:
        layers = sorted({r.layer for r in rep.partitions.itertuples() if r.kind == "intermediate"})
        heat = _relative_means(rep, layers)
        if heat is not None:
            written.append(_heatmap_plot(plt, heat, layers, out))
    corr = rep.correlations
    if len(corr):
        written.append(_correlation_plot(plt, pair_matrix(corr[corr.scope == "all"], names, "spearman"), out))
    if len(rep.mass):
        written.append(_mass_plot(plt, rep.mass, out))
    return written
