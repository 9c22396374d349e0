"""Plots and one self-contained HTML page from a sweep's results directory.

:func:`write_report` reads the run results of a directory written by
:func:`llmrank_graph.experiments.runner.run_sweep` and writes, into that directory or another:

- ``quality*.png``: perplexity (and each task's accuracy) against the fraction of neurons
  removed, one line per method, the dense model as a dashed reference line, on a log axis
  where the values span more than a decade;
- ``layers*.png``: the fraction of each layer kept, per method, under global allocation (and
  any other allocation that is not ``local``);
- ``scores*.png``: the distribution of each method's scores in every layer (from the
  quantiles every run records);
- ``correlations*.png``: rank correlations between the methods' scores (the statistics of
  :func:`llmrank_graph.analysis.core.correlations`), where the sweep saved them (``save_scores``);
- ``report.html``: all of it, with the images embedded (``data:`` URIs), the before/after
  parameter and speed table, and the best method at each sparsity in bold. It fetches
  nothing: no scripts, no fonts, no styles from elsewhere.

Figures are drawn with matplotlib's object API (no pyplot, no global backend switch).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import logging
import math
import os
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..base.checks import fail_type
from ..base.files import write_bytes_atomic, write_text_atomic
from ..errors import MissingInputError, OutputExistsError
from .runner import GRID_FILE, RESULTS_CSV, RunConfig, read_results, scan_results

logger = logging.getLogger(__name__)

__all__ = ["write_report", "perplexity_table", "rank_correlations", "REPORT_HTML"]

#: Name of the HTML page.
REPORT_HTML = "report.html"
# Values spanning more than this ratio get a log axis.
_LOG_SPAN = 10.0
_PANEL_KEYS = ("allocation", "how", "mode")


# ---------------------------------------------------------------------------- data
def _fmt(x) -> str:
    """Perplexity-style number: 1 decimal below 1000, 3 significant digits above."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    x = float(x)
    if not math.isfinite(x):
        return "inf"
    return f"{x:.2f}" if abs(x) < 100 else f"{x:.1f}" if abs(x) < 1000 else f"{x:.3g}"


def _model_name(model: str) -> str:
    return "SmolLM2-135M-Instruct (embedded default)" if model == "default" else model


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:60] or "x"


def _load(directory: Path):
    """(DataFrame of complete and failed runs, {run_id: record})."""
    df = read_results(directory)
    found, _ = scan_results(directory)
    return df, {rid: rec for rid, (_, rec) in found.items()}


def _panels(df) -> list[tuple[tuple, Any]]:
    keys = [k for k in _PANEL_KEYS]
    return [(k if isinstance(k, tuple) else (k,), g) for k, g in df.groupby(keys, sort=True)]


def _panel_title(key: tuple) -> str:
    allocation, how, mode = key
    return f"{allocation} allocation, {how}, {mode}"


def perplexity_table(directory: str | os.PathLike, run_ids: Sequence[str] | None = None):
    """Perplexity of every method (rows) at every amount (columns), one table per panel.

    Parameters
    ----------
    directory : str or path-like
        A sweep results directory.
    run_ids : sequence of str, optional
        Only these runs (default: all).

    Returns
    -------
    list of (str, pandas.DataFrame)
        Titles (model, allocation, how, mode) and tables; the first row is the dense model,
        failed runs show their status.
    """
    import pandas as pd

    df = read_results(directory)
    if run_ids is not None and len(df):
        df = df[df["run_id"].isin(list(run_ids))]
    out = []
    if not len(df):
        return out
    for model, dm in df.groupby("model", sort=False):
        for key, g in _panels(dm):
            table = {}
            dense = g["dense_perplexity"].dropna()
            if len(dense):
                table["dense"] = {a: _fmt(dense.iloc[0]) for a in sorted(g["amount"].unique())}
            for label, gl in g.groupby("label", sort=False):
                table[label] = {row.amount: (_fmt(row.perplexity) if row.status == "complete" else row.status)
                                for row in gl.itertuples()}
            t = pd.DataFrame(table).T
            t = t[sorted(t.columns)]
            t.columns = [f"{a:g}" for a in t.columns]
            out.append((f"perplexity, {_model_name(model)}, {_panel_title(key)} (columns: fraction removed)",
                        t.fillna("")))
    return out


def rank_correlations(directory: str | os.PathLike, records: dict | None = None) -> dict[str, dict[str, Any]]:
    """Rank correlations between the saved scores of the methods, per model.

    For every pair of scorer configurations whose scores the sweep saved, with the statistics
    of :func:`llmrank_graph.analysis.core.correlations`: over the intermediate neurons only,
    Spearman and Kendall (tau-b) overall, on each layer's scores divided by their mean absolute
    value, and Spearman within each layer.

    Returns
    -------
    dict
        model -> ``{"labels": [...], "spearman": (k, k), "kendall": (k, k),
        "spearman_layer_median": (k, k)}`` (numpy arrays); models with fewer than two saved
        score files are left out.
    """
    from safetensors.torch import load_file

    from ..analysis.core import _normalise, _rank_corr  # the statistics of analysis.correlations, on saved scores

    directory = Path(directory)
    if records is None:
        found, _ = scan_results(directory)
        records = {rid: rec for rid, (_, rec) in found.items()}
    several_modes = len({r["config"]["mode"] for r in records.values()}) > 1
    by_model: dict[str, dict[str, str]] = {}
    for rec in records.values():
        f = (rec.get("files") or {}).get("scores")
        if rec["status"] != "complete" or not f:
            continue
        run = RunConfig.from_dict(rec["config"])
        label = f"{run.label} ({run.mode})" if several_modes else run.label
        by_model.setdefault(rec["config"]["model"] or "default", {}).setdefault(label, f)
    out = {}
    for model, files in by_model.items():
        labels = sorted(files)
        if len(labels) < 2:
            continue
        scores = []
        for label in labels:
            t = load_file(str(directory / files[label]))
            scores.append({int(k.split(".")[1]): v.double().numpy() for k, v in t.items() if k.startswith("intermediate.")})
        k = len(labels)
        sp, kt, med = np.eye(k), np.eye(k), np.eye(k)
        for i in range(k):
            for j in range(i + 1, k):
                layers = sorted(set(scores[i]) & set(scores[j]))
                a = np.concatenate([_normalise(scores[i][l]) for l in layers])
                b = np.concatenate([_normalise(scores[j][l]) for l in layers])
                both = _rank_corr(a, b, ("spearman", "kendall"))
                sp[i, j] = sp[j, i] = both["spearman"]
                kt[i, j] = kt[j, i] = both["kendall"]
                per = [_rank_corr(scores[i][l], scores[j][l], ("spearman",))["spearman"] for l in layers]
                med[i, j] = med[j, i] = float(np.nanmedian(per)) if per else np.nan
        out[model] = {"labels": labels, "spearman": sp, "kendall": kt, "spearman_layer_median": med}
    return out


# ---------------------------------------------------------------------------- figures
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
        values = []
        for label, gl in g.groupby("label", sort=True):
            gl = gl.sort_values("amount")
            y = gl[metric].astype(float).to_numpy()
            ax.plot(gl["amount"] * 100, y, marker="o", label=label, color=colors[label])
            values.extend(y[np.isfinite(y)])
        dense = g[dense_col].dropna()
        if len(dense):
            ax.axhline(float(dense.iloc[0]), color="black", linestyle="--", linewidth=1, label="dense")
            values.append(float(dense.iloc[0]))
        pos = [v for v in values if v > 0]
        if pos and max(pos) / min(pos) > _LOG_SPAN:
            ax.set_yscale("log")
        ax.set_title(_panel_title(key))
        ax.set_xlabel("intermediate neurons removed (%)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    _suptitle(fig, title)
    return fig


def _layers_figure(runs: list[dict], colors: dict, title: str):
    from matplotlib.ticker import MaxNLocator

    panels = sorted({(r["config"]["allocation"], r["config"]["amount"]) for r in runs})
    fig, axes = _figure(len(panels))
    for ax, (allocation, amount) in zip(axes, panels):
        for rec in sorted((r for r in runs if (r["config"]["allocation"], r["config"]["amount"]) == (allocation, amount)),
                          key=lambda r: RunConfig.from_dict(r["config"]).label):
            n = rec["neurons"]
            label = RunConfig.from_dict(rec["config"]).label
            kept = np.asarray(n["layer_kept"], dtype=float) / np.asarray(n["layer_total"], dtype=float)
            ax.plot(n["layers"], kept, marker=".", label=label, color=colors.get(label))
        ax.axhline(1 - amount, color="black", linestyle="--", linewidth=1, label="local (same in every layer)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{amount:.0%} removed, {allocation} allocation")
        ax.set_xlabel("layer")
        ax.set_ylabel("fraction of neurons kept")
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


# ---------------------------------------------------------------------------- HTML
_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 78em;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.05em; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f2f2; } b.best { color: #000; } td.l, th.l { text-align: left; }
tr.dense td { color: #555; font-style: italic; }
img { max-width: 100%; height: auto; border: 1px solid #eee; margin: 0.5em 0; }
code { background: #f5f5f5; padding: 0 0.2em; } .note { color: #555; }
div.wide { overflow-x: auto; }
"""


def _e(x) -> str:
    return html.escape(str(x))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 1, row_classes=None,
           caption: str | None = None) -> str:
    """An HTML table; cells are already-escaped HTML. The first ``left`` columns align left."""
    out = ["<table>"]
    if caption:
        out.append(f"<caption>{caption}</caption>")
    out.append("<thead><tr>" + "".join(f'<th class="l">{h}</th>' if i < left else f"<th>{h}</th>"
                                       for i, h in enumerate(header)) + "</tr></thead><tbody>")
    for k, row in enumerate(rows):
        cls = f' class="{row_classes[k]}"' if row_classes and row_classes[k] else ""
        out.append(f"<tr{cls}>" + "".join(f'<td class="l">{c}</td>' if i < left else f"<td>{c}</td>"
                                          for i, c in enumerate(row)) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _best_table(g, metric: str, dense_col: str, higher_is_better: bool, fmt=_fmt) -> str:
    """Methods x amounts; the best value at each amount in bold (ties: all of them)."""
    amounts = sorted(g["amount"].unique())
    labels = sorted(g["label"].unique())
    done = g[g["status"] == "complete"]
    best = {}
    for a in amounts:
        v = done.loc[done["amount"] == a, metric].astype(float)
        v = v[np.isfinite(v)]
        if len(v):
            best[a] = v.max() if higher_is_better else v.min()
    rows, classes = [], []
    dense = g[dense_col].dropna()
    if len(dense):
        rows.append(["dense model"] + [_e(fmt(dense.iloc[0]))] * len(amounts))
        classes.append("dense")
    for label in labels:
        row = [_e(label)]
        for a in amounts:
            sel = g[(g["label"] == label) & (g["amount"] == a)]
            if not len(sel):
                row.append("")
                continue
            r = sel.iloc[0]
            if r["status"] != "complete":
                row.append(f'<span title="{_e(r["error"])}">failed</span>')
                continue
            v = float(r[metric])
            cell = _e(fmt(v))
            row.append(f'<b class="best">{cell}</b>' if a in best and v == best[a] else cell)
        rows.append(row)
        classes.append("")
    return _table(["method"] + [f"{a:.0%}" for a in amounts], rows, row_classes=classes)


def _img(name: str, data: bytes, alt: str) -> str:
    return (f'<figure><img src="data:image/png;base64,{base64.b64encode(data).decode()}" alt="{_e(alt)}">'
            f'<figcaption class="note">{_e(alt)} (<code>{_e(name)}</code>)</figcaption></figure>')


def _task_metrics(df) -> list[tuple[str, str]]:
    """(task, metric) pairs present in the results, accuracy first."""
    pairs = []
    for col in df.columns:
        if col.startswith("dense.") and col.count(".") >= 2:
            task, metric = col[len("dense."):].rsplit(".", 1)
            if f"{task}.{metric}" in df.columns and not metric.endswith("_stderr"):
                pairs.append((task, metric))
    return sorted(pairs, key=lambda p: (p[0], p[1] != "acc", p[1]))


def _speed_table(g) -> str:
    rows = []
    done = g[g["status"] == "complete"].sort_values(["label", "allocation", "how", "mode", "amount"])
    for r in done.itertuples():
        d = r._asdict()

        def ratio(a, b):
            return f"{b / a:.3f}" if a and b and np.isfinite(a) and np.isfinite(b) else "n/a"

        rows.append([_e(r.label), _e(r.allocation), _e(r.how), _e(r.mode), f"{r.amount:.0%}",
                     f"{d['params_mlp_dense'] / 1e6:.3f}M", f"{d['params_mlp_pruned'] / 1e6:.3f}M",
                     f"{d['params_total_dense'] / 1e6:.3f}M", f"{d['params_total_pruned'] / 1e6:.3f}M",
                     ratio(d["params_total_dense"], d["params_total_pruned"]),
                     f"{r.dense_tokens_per_s:.0f}", f"{r.pruned_tokens_per_s:.0f}", f"{r.speedup:.2f}",
                     _e(_fmt(r.dense_perplexity)), _e(_fmt(r.perplexity))])
    return '<div class="wide">' + _table(
        ["method", "allocation", "how", "mode", "removed", "MLP params dense", "MLP params pruned", "total dense",
         "total pruned", "total ratio", "tokens/s dense", "tokens/s pruned", "speedup", "perplexity dense",
         "perplexity pruned"], rows, left=4) + "</div>"


def write_report(directory: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write the PNGs and ``report.html`` for a sweep results directory.

    Parameters
    ----------
    directory : str or path-like
        A directory written by :func:`llmrank_graph.experiments.runner.run_sweep`.
    out : str or path-like, optional
        Where to write (created if missing); default ``directory``. Report files already
        there are replaced (each atomically); nothing else is touched.

    Returns
    -------
    pathlib.Path
        The HTML page.

    Raises
    ------
    MissingInputError
        ``directory`` is not a results directory, or holds no run result yet.
    OutputExistsError
        ``out`` exists and is not a directory.

    Example
    -------
    >>> write_report("results/smollm2")                  # doctest: +SKIP
    PosixPath('results/smollm2/report.html')
    """
    if not isinstance(directory, (str, os.PathLike)):
        raise fail_type("directory", "a str or a path", directory)
    directory = Path(directory).expanduser()
    out = directory if out is None else Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"`--out` {str(out)!r} exists and is not a directory")
    df, records = _load(directory)
    if not len(df):
        raise MissingInputError(f"{str(directory)!r} holds no run results yet; run `llmrank-graph sweep --out "
                                f"{directory}` first")
    out.mkdir(parents=True, exist_ok=True)
    images: dict[str, bytes] = {}
    sections: list[str] = []
    colors = _colors(df["label"].unique())
    models = list(dict.fromkeys(df["model"]))
    tasks = _task_metrics(df)

    def add_image(name: str, fig) -> str:
        images[name] = _png(fig)
        return name

    for model in models:
        dm = df[df["model"] == model]
        suffix = "" if len(models) == 1 else f"-{_slug(model)}"
        mname = _model_name(model)
        part = [f"<h2>{_e(mname)}</h2>"]
        # Quality against sparsity.
        name = add_image(f"quality{suffix}.png", _quality_figure(dm, "perplexity", "dense_perplexity", "perplexity",
                                                                 colors, f"Perplexity against sparsity: {mname}"))
        part.append("<h3>Perplexity against sparsity</h3>" + _img(name, images[name],
                                                                 f"perplexity against sparsity, {mname}"))
        for task, metric in tasks:
            name = add_image(f"quality-{_slug(task)}-{_slug(metric)}{suffix}.png",
                             _quality_figure(dm, f"{task}.{metric}", f"dense.{task}.{metric}", f"{task} {metric}",
                                             colors, f"{task} {metric} against sparsity: {mname}"))
            part.append(f"<h3>{_e(task)} {_e(metric)} against sparsity</h3>"
                        + _img(name, images[name], f"{task} {metric} against sparsity, {mname}"))
        # Best method at each sparsity.
        part.append("<h3>Best method at each sparsity</h3><p class=\"note\">Perplexity (lower is better); the best "
                    "at each fraction removed is in bold.</p>")
        for key, g in _panels(dm):
            part.append(f"<p><b>{_e(_panel_title(key))}</b></p>" + _best_table(g, "perplexity", "dense_perplexity",
                                                                                 False))
            for task, metric in tasks:
                higher = metric in ("acc", "acc_norm", "exact_match", "f1", "mcc")
                part.append(f"<p>{_e(task)} {_e(metric)} ({'higher' if higher else 'lower'} is better)</p>"
                            + _best_table(g, f"{task}.{metric}", f"dense.{task}.{metric}", higher,
                                          fmt=lambda v: f"{v:.4f}" if abs(v) < 10 else _fmt(v)))
        # Layers kept under global allocation.
        recs = [r for r in records.values() if (r["config"]["model"] or "default") == model and r["status"] == "complete"]
        glob = [r for r in recs if r["config"]["allocation"] != "local"]
        part.append("<h3>Fraction of each layer kept under global allocation</h3>")
        if glob:
            name = add_image(f"layers{suffix}.png", _layers_figure(glob, colors, f"Layers kept: {mname}"))
            part.append(_img(name, images[name], f"fraction of each layer kept, global allocation, {mname}"))
        else:
            part.append('<p class="note">No run used global allocation (<code>--allocations global</code>).</p>')
        # Score distributions.
        by_scorer: dict[str, dict] = {}
        for r in recs:
            if r.get("score_quantiles"):
                by_scorer.setdefault(RunConfig.from_dict(r["config"]).label, r)
        part.append("<h3>Score distributions per layer</h3>")
        if by_scorer:
            name = add_image(f"scores{suffix}.png", _scores_figure(by_scorer, f"Scores per layer: {mname}"))
            part.append(_img(name, images[name], f"score distributions per layer, {mname}"))
        # Rank correlations.
        part.append("<h3>Rank correlations between the methods' scores</h3>")
        corr = rank_correlations(directory, {rid: r for rid, r in records.items()
                                             if (r["config"]["model"] or "default") == model}).get(model)
        if corr is not None:
            name = add_image(f"correlations{suffix}.png", _correlation_figure(corr, f"Rank correlations: {mname}"))
            part.append(_img(name, images[name], f"Spearman rank correlations between scores, {mname}"))
            labels = corr["labels"]
            rows = [[_e(a)] + [f"{corr['spearman'][i, j]:.3f} / {corr['kendall'][i, j]:.3f} / "
                               f"{corr['spearman_layer_median'][i, j]:.3f}"
                               for j in range(len(labels))] for i, a in enumerate(labels)]
            part.append("<p class=\"note\">Spearman / Kendall over the intermediate neurons of all layers (each "
                        "layer's scores divided by their mean absolute value) / median over layers of the "
                        "Spearman within a layer.</p>" + _table([""] + [_e(b) for b in labels], rows))
        else:
            part.append('<p class="note">Needs the scores of at least two methods: run the sweep with '
                        "<code>--save-scores</code>.</p>")
        # Parameters and speed.
        part.append("<h3>Parameters and speed, before and after</h3><p class=\"note\">tokens/s of the dense and the "
                    "pruned model are measured alternately in the same run.</p>" + _speed_table(dm))
        failed = dm[dm["status"] == "failed"]
        if len(failed):
            part.append("<h3>Failed runs</h3>" + _table(
                ["method", "allocation", "how", "mode", "removed", "error"],
                [[_e(r.label), _e(r.allocation), _e(r.how), _e(r.mode), f"{r.amount:.0%}", _e(r.error)]
                 for r in failed.itertuples()], left=4))
        sections.append("\n".join(part))

    for name, data in images.items():
        write_bytes_atomic(out / name, data, overwrite=True)
    page = _page(directory, df, records, sections)
    path = write_text_atomic(out / REPORT_HTML, page, overwrite=True)
    logger.info("wrote %s and %d images", path, len(images))
    return path


def _page(directory: Path, df, records: dict, sections: list[str]) -> str:
    first = next(iter(records.values()))
    env = first.get("environment") or {}
    cfg = first["config"]
    grid_file = directory / GRID_FILE
    grids = json.loads(grid_file.read_text(encoding="utf-8")).get("grids", [])
    n_done = int((df["status"] == "complete").sum())
    summary = _table(["", ""], [
        ["runs", f"{len(df)} ({n_done} complete, {len(df) - n_done} failed)"],
        ["models", _e(", ".join(_model_name(m) for m in dict.fromkeys(df["model"])))],
        ["methods", _e(", ".join(sorted(df["label"].unique())))],
        ["amounts", _e(", ".join(f"{a:g}" for a in sorted(df["amount"].unique())))],
        ["calibration", _e(json.dumps(cfg["calibration"]))],
        ["evaluation", _e(json.dumps(cfg["evaluation"]))],
        ["versions", _e(", ".join(f"{k} {v}" for k, v in env.items()))],
        ["grids in this directory", str(len(grids))],
    ], left=2)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>llmrank_graph sweep report: {_e(directory.name)}</title>
<style>{_CSS}</style></head>
<body>
<h1>Sweep report: <code>{_e(directory)}</code></h1>
<p class="note">Generated {now} by <code>llmrank-graph report</code> from the run results in
<code>{_e(directory)}</code> (table: <code>{RESULTS_CSV}</code>). Perplexity is on held-out text;
pruned runs remove (or zero) MLP intermediate neurons.</p>
{summary}
{''.join(sections)}
</body></html>
"""
