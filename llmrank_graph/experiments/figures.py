"""The report's figures, drawn with matplotlib's object API (no pyplot, no global backend switch).

Each function takes the rows of ``results.csv`` (:func:`~llmrank_graph.experiments.results.read_results`)
or the run records, and returns a :class:`matplotlib.figure.Figure`; :func:`_png` makes the bytes
that :func:`~llmrank_graph.experiments.report.write_report` writes and embeds. matplotlib is
imported inside the functions: ``llmrank-graph sweep`` loads this package and draws nothing.

A figure has one panel per (allocation, how, mode, target). The x-axis of a panel of MLP runs
is the fraction of intermediate neurons asked for (``amount``); of a panel of runs of
``target='attention'``, the exact fraction of the query heads removed (the head counts move in
steps); of a panel of ``target='both'``, the exact fraction of the MLP + attention parameters
removed (:data:`X_AXES`).

>>> import pandas as pd
>>> rows = pd.DataFrame({"label": ["activation"] * 2, "amount": [0.1, 0.5], "status": ["complete"] * 2,
...                      "perplexity": [21.0, 40.0], "dense_perplexity": [20.0] * 2, "allocation": ["local"] * 2,
...                      "how": ["remove"] * 2, "mode": ["chained"] * 2})
>>> fig = _quality_figure(rows, "perplexity", "dense_perplexity", "perplexity", {"activation": "red"}, "Perplexity")
>>> fig.axes[0].get_title(), fig.axes[0].get_yscale(), _png(fig)[:4]
('local allocation, remove, chained', 'linear', b'\\x89PNG')
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np

from .settings import RunConfig

# Values spanning more than this ratio get a log axis.
_LOG_SPAN = 10.0
_PANEL_KEYS = ("allocation", "how", "mode", "target")
_MLP = "mlp"

#: target -> (the column of ``results.csv`` on a quality figure's x-axis, the axis label, what a
#: table's column of amounts means).
X_AXES: dict[str, tuple[str, str, str]] = {
    "mlp": ("amount", "intermediate neurons removed (%)", "fraction removed"),
    "attention": ("fraction_heads_pruned", "attention heads removed (%, exact: the head counts move in steps)",
                  "fraction of the query heads asked; the exact fraction removed is in results.csv"),
    "both": ("fraction_mlp_attention_pruned", "MLP + attention parameters removed (%, exact)",
             "fraction of the MLP + attention parameters asked; the exact fraction removed is in results.csv"),
}


def _panels(df) -> list[tuple[tuple, Any]]:
    """The rows of each (allocation, how, mode, target): one panel of a figure, one table of the page."""
    if "target" not in df.columns:  # rows of runs made before the targets: MLP neurons
        df = df.assign(target=_MLP)
    return [(k if isinstance(k, tuple) else (k,), g) for k, g in df.groupby(list(_PANEL_KEYS), sort=True)]


def _panel_title(key: tuple) -> str:
    allocation, how, mode, target = (*key, _MLP)[:4]
    return f"{allocation} allocation, {how}, {mode}" + ("" if target == _MLP else f", target {target}")


def _x(rows, target: str) -> np.ndarray:
    """The x values (percent) of ``rows`` on a panel of ``target``: :data:`X_AXES`' column, else the amount."""
    col = X_AXES.get(target, X_AXES[_MLP])[0]
    x = rows[col].astype(float).to_numpy() if col in rows.columns else np.full(len(rows), np.nan)
    return np.where(np.isfinite(x), x, rows["amount"].astype(float).to_numpy()) * 100


def _figure(nplots: int, width: float = 5.2, height: float = 3.8, ncols: int | None = None):
    from matplotlib.figure import Figure

    ncols = ncols or min(nplots, 3)
    nrows = math.ceil(nplots / ncols)
    # at least 7 inches wide, so that the title of a one-panel figure fits
    fig = Figure(figsize=(max(width * ncols, 7.0), height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[nplots:]:
        ax.set_visible(False)
    return fig, axes[:nplots]


def _suptitle(fig, title: str) -> None:
    """The figure's title, wrapped to its width (about 11 characters per inch at the default size)."""
    fig.suptitle("\n".join(textwrap.wrap(title, width=max(20, int(fig.get_figwidth() * 11)))))


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _colors(labels: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {label: cmap(i % cmap.N) for i, label in enumerate(sorted(labels))}


def _quality_figure(dm, metric: str, dense_col: str, ylabel: str, colors: dict, title: str):
    panels = _panels(dm)
    fig, axes = _figure(len(panels))
    for ax, (key, g) in zip(axes, panels):
        g = g[g["status"] == "complete"]
        target = (*key, _MLP)[3]
        values = []
        for label, gl in g.groupby("label", sort=True):
            gl = gl.sort_values("amount")
            y = gl[metric].astype(float).to_numpy()
            ax.plot(_x(gl, target), y, marker="o", label=label, color=colors[label])
            values.extend(y[np.isfinite(y)])
        dense = g[dense_col].dropna()
        if len(dense):
            ax.axhline(float(dense.iloc[0]), color="black", linestyle="--", linewidth=1, label="dense")
            values.append(float(dense.iloc[0]))
        pos = [v for v in values if v > 0]
        if pos and max(pos) / min(pos) > _LOG_SPAN:
            ax.set_yscale("log")
        ax.set_title(_panel_title(key))
        ax.set_xlabel(X_AXES.get(target, X_AXES[_MLP])[1])
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    _suptitle(fig, title)
    return fig


def _layers_figure(runs: list[dict], colors: dict, title: str, entry: str = "neurons"):
    """The fraction of each layer's neurons (``entry='neurons'``) or heads (``'heads'``) kept, per run.

    One panel per (target, allocation, amount); the dashed line of a local allocation where the
    amount is a fraction of these units (neurons of MLP runs, heads of runs of ``'attention'``).
    """
    from matplotlib.ticker import MaxNLocator

    def where(r):
        return RunConfig.from_dict(r["config"]).target, r["config"]["allocation"], r["config"]["amount"]

    panels = sorted({where(r) for r in runs})
    fig, axes = _figure(len(panels))
    for ax, (target, allocation, amount) in zip(axes, panels):
        mine = [r for r in runs if where(r) == (target, allocation, amount)]
        for rec in sorted(mine, key=lambda r: RunConfig.from_dict(r["config"]).label):
            n = rec[entry]
            label = RunConfig.from_dict(rec["config"]).label
            kept = np.asarray(n["layer_kept"], dtype=float) / np.asarray(n["layer_total"], dtype=float)
            ax.plot(n["layers"], kept, marker=".", label=label, color=colors.get(label))
        if target == {"neurons": _MLP, "heads": "attention"}[entry]:
            ax.axhline(1 - amount, color="black", linestyle="--", linewidth=1, label="local (same in every layer)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{amount:.0%} removed, {allocation} allocation" if target == _MLP
                     else f"{amount:.0%} asked, {allocation} allocation, target {target}")
        ax.set_xlabel("layer")
        ax.set_ylabel(f"fraction of {entry} kept")
        ax.set_ylim(0, 1.05)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    _suptitle(fig, title)
    return fig


def _scores_figure(runs: dict[str, dict], title: str):
    labels = sorted(runs)
    fig, axes = _figure(len(labels), width=6.0, height=3.4, ncols=min(len(labels), 2))
    for ax, label in zip(axes, labels):
        q = runs[label]["score_quantiles"]
        qs = list(q["q"])
        idx = {p: qs.index(p) for p in (0.05, 0.25, 0.5, 0.75, 0.95)}
        layers = sorted(q["layers"], key=int)
        stats = []
        for l in layers:
            v = q["layers"][l]
            stats.append({"label": l, "whislo": v[idx[0.05]], "q1": v[idx[0.25]], "med": v[idx[0.5]],
                          "q3": v[idx[0.75]], "whishi": v[idx[0.95]], "fliers": []})
        ax.bxp(stats, showfliers=False)
        lo = min(s["whislo"] for s in stats)
        hi = max(s["whishi"] for s in stats)
        if lo > 0 and hi / lo > 100:
            ax.set_yscale("log")
        ax.set_title(label)
        ax.set_xlabel("layer")
        ax.set_ylabel("score / layer mean (5-25-50-75-95%)")
        ax.tick_params(axis="x", labelsize="x-small")
        ax.grid(True, alpha=0.3, axis="y")
    _suptitle(fig, title)
    return fig


def _correlation_figure(corr: dict, title: str):
    labels, m = corr["labels"], corr["spearman"]
    k = len(labels)
    from matplotlib.figure import Figure

    size = 1.2 + 0.6 * k
    fig = Figure(figsize=(size + 2.5, size + 1.5), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(m, vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(k), labels, rotation=45, ha="right", fontsize="small")
    ax.set_yticks(range(k), labels, fontsize="small")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize="x-small",
                    color="white" if abs(m[i, j]) > 0.6 else "black")
    fig.colorbar(im, ax=ax, label="Spearman, all layers (each divided by its mean)")
    ax.set_title("\n".join(textwrap.wrap(title, width=max(20, int(fig.get_figwidth() * 9)))))
    return fig
