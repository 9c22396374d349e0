"""Plots and one self-contained HTML page from a sweep's results directory.

:func:`write_report` reads the run results of a directory written by
:func:`llmrank_graph.experiments.runner.run_sweep` and writes, into that directory or another:

- ``quality*.png``: perplexity (and each task's accuracy) against the fraction of neurons
  removed, one line per method, the dense model as a dashed reference line, on a log axis
  where the values span more than a decade; for runs of attention heads against the exact
  fraction of heads removed, and for ``target='both'`` against the exact fraction of the MLP +
  attention parameters removed (one panel per target);
- ``layers*.png``: the fraction of each layer kept, per method, under global allocation (and
  any other allocation that is not ``local``); ``layers-heads*.png`` the same for heads;
- ``scores*.png``: the distribution of each method's scores in every layer (from the
  quantiles every run records);
- ``correlations*.png``: rank correlations between the methods' scores (the statistics of
  :func:`llmrank_graph.analysis.correlations`), where the sweep saved them (``save_scores``);
- ``report.html``: all of it, with the images embedded (``data:`` URIs), the before/after
  parameter and speed table, and the best method at each sparsity in bold. It fetches
  nothing: no scripts, no fonts, no styles from elsewhere.

The figures are drawn in :mod:`~llmrank_graph.experiments.figures`.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from safetensors.torch import load_file

from ..analysis import normalise, rank_corr
from ..base.checks import fail_type
from ..base.files import write_bytes_atomic, write_text_atomic
from ..base.params import Check, InstanceOf, Optional, validated
from ..errors import MissingInputError, OutputExistsError
from .figures import (
    X_AXES,
    _colors,
    _correlation_figure,
    _layers_figure,
    _panel_title,
    _panels,
    _png,
    _quality_figure,
    _scores_figure,
)
from .results import GRID_FILE, RESULTS_CSV, _scan, read_grid_file
from .results import _table as _results_table
from .settings import _A_PATH, RunConfig

logger = logging.getLogger(__name__)

__all__ = ["write_report", "perplexity_table", "rank_correlations", "REPORT_HTML"]

#: Name of the HTML page.
REPORT_HTML = "report.html"


# ---------------------------------------------------------------------------- data
def _fmt(x) -> str:
    """Perplexity-style number: 2 decimals below 100, 1 below 1000, 3 significant digits above."""
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
    df = _results_table(directory)
    found, _ = _scan(directory)
    return df, {rid: rec for rid, (_, rec) in found.items()}


def _run_ids(arg: str, value) -> list[str]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise fail_type(arg, "a list of run ids", value)
    return list(value)


@validated({"directory": _A_PATH, "run_ids": Optional(Check(_run_ids, "a list of run ids"))})
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

    Example
    -------
    A results directory with one run, written by hand (:func:`~llmrank_graph.experiments.runner.run_sweep`
    writes them):

    >>> import json, pathlib, tempfile
    >>> from llmrank_graph.experiments.results import RUN_FORMAT
    >>> run = RunConfig(None, "activation", 0.5, "local", "remove", "chained")
    >>> record = {"format": RUN_FORMAT, "run_id": run.run_id, "status": "complete", "config": run.to_dict(),
    ...           "perplexity": 31.0, "dense_perplexity": 20.0}
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     (pathlib.Path(tmp) / "runs").mkdir()
    ...     _ = (pathlib.Path(tmp) / "runs" / f"{run.stem}.json").write_text(json.dumps(record))
    ...     _ = (pathlib.Path(tmp) / "grid.json").write_text("{}")
    ...     [(title, table)] = perplexity_table(tmp)
    >>> title
    'perplexity, SmolLM2-135M-Instruct (embedded default), local allocation, remove, chained (columns: ...)'
    >>> table
                  0.5
    dense       20.00
    activation  31.00
    """
    df = _results_table(Path(directory))
    if run_ids is not None and len(df):
        df = df[df["run_id"].isin(run_ids)]
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
            words = X_AXES.get((*key, "mlp")[3], X_AXES["mlp"])[2]
            out.append((f"perplexity, {_model_name(model)}, {_panel_title(key)} (columns: {words})", t.fillna("")))
    return out


def _saved_scores(records: Mapping) -> dict[str, dict[str, str]]:
    """model -> label -> the score file of each scorer configuration the sweep saved."""
    several_modes = len({r["config"]["mode"] for r in records.values()}) > 1
    by_model: dict[str, dict[str, str]] = {}
    for rec in records.values():
        f = (rec.get("files") or {}).get("scores")
        run = RunConfig.from_dict(rec["config"])
        if rec["status"] != "complete" or not f or run.target == "attention":  # no neuron scores
            continue
        label = f"{run.label} ({run.mode})" if several_modes else run.label
        by_model.setdefault(rec["config"]["model"] or "default", {}).setdefault(label, f)
    return by_model


def _correlation_matrices(scores: list[dict[int, np.ndarray]]) -> dict[str, np.ndarray]:
    """Spearman and Kendall over all layers (each normalised), and the median Spearman within a layer."""
    k = len(scores)
    sp, kt, med = np.eye(k), np.eye(k), np.eye(k)
    for i in range(k):
        for j in range(i + 1, k):
            layers = sorted(set(scores[i]) & set(scores[j]))
            a = np.concatenate([normalise(scores[i][l]) for l in layers])
            b = np.concatenate([normalise(scores[j][l]) for l in layers])
            both = rank_corr(a, b, ("spearman", "kendall"))
            sp[i, j] = sp[j, i] = both["spearman"]
            kt[i, j] = kt[j, i] = both["kendall"]
            per = [rank_corr(scores[i][l], scores[j][l], ("spearman",))["spearman"] for l in layers]
            med[i, j] = med[j, i] = float(np.nanmedian(per)) if per else np.nan
    return {"spearman": sp, "kendall": kt, "spearman_layer_median": med}


def _rank_correlations(directory: Path, records: Mapping) -> dict[str, dict[str, Any]]:
    out = {}
    for model, files in _saved_scores(records).items():
        labels = sorted(files)
        if len(labels) < 2:
            continue
        scores = []
        for label in labels:
            t = load_file(str(directory / files[label]))
            scores.append({int(k.split(".")[1]): v.double().numpy() for k, v in t.items()
                           if k.startswith("intermediate.")})
        out[model] = {"labels": labels, **_correlation_matrices(scores)}
    return out


@validated({"directory": _A_PATH,
            "records": Optional(InstanceOf(Mapping, "a mapping of run id -> run record"))})
def rank_correlations(directory: str | os.PathLike, records: dict | None = None) -> dict[str, dict[str, Any]]:
    """Rank correlations between the saved scores of the methods, per model.

    For every pair of scorer configurations whose scores the sweep saved, with the statistics
    of :func:`llmrank_graph.analysis.correlations`: over the intermediate neurons only,
    Spearman and Kendall (tau-b) overall, on each layer's scores divided by their mean absolute
    value, and Spearman within each layer.

    Parameters
    ----------
    directory : str or path-like
        A sweep results directory.
    records : mapping of run id -> run record, optional
        The runs to use (default: every run of ``directory``).

    Returns
    -------
    dict
        model -> ``{"labels": [...], "spearman": (k, k), "kendall": (k, k),
        "spearman_layer_median": (k, k)}`` (numpy arrays); models with fewer than two saved
        score files are left out.
    """
    directory = Path(directory)
    if records is None:
        found, _ = _scan(directory)
        records = {rid: rec for rid, (_, rec) in found.items()}
    return _rank_correlations(directory, records)


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


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 1, row_classes=None) -> str:
    """An HTML table; cells are already-escaped HTML. The first ``left`` columns align left."""
    out = ["<table>"]
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
    # runs of heads: the exact fractions of the heads and of the MLP + attention parameters removed
    exact = [c for c in ("fraction_heads_pruned", "fraction_mlp_attention_pruned")
             if c in done.columns and done[c].notna().any()]
    for r in done.itertuples():
        d = r._asdict()

        def ratio(a, b):
            return f"{b / a:.3f}" if a and b and np.isfinite(a) and np.isfinite(b) else "n/a"

        rows.append([_e(r.label), _e(r.allocation), _e(r.how), _e(r.mode), f"{r.amount:.0%}"]
                    + ["" if pd.isna(d[c]) else f"{d[c]:.1%}" for c in exact] + [
                     f"{d['params_mlp_dense'] / 1e6:.3f}M", f"{d['params_mlp_pruned'] / 1e6:.3f}M",
                     f"{d['params_total_dense'] / 1e6:.3f}M", f"{d['params_total_pruned'] / 1e6:.3f}M",
                     ratio(d["params_total_dense"], d["params_total_pruned"]),
                     f"{r.dense_tokens_per_s:.0f}", f"{r.pruned_tokens_per_s:.0f}", f"{r.speedup:.2f}",
                     _e(_fmt(r.dense_perplexity)), _e(_fmt(r.perplexity))])
    return '<div class="wide">' + _table(
        ["method", "allocation", "how", "mode", "removed"]
        + [{"fraction_heads_pruned": "heads removed", "fraction_mlp_attention_pruned": "MLP + attention removed"}[c]
           for c in exact] + ["MLP params dense", "MLP params pruned", "total dense",
         "total pruned", "total ratio", "tokens/s dense", "tokens/s pruned", "speedup", "perplexity dense",
         "perplexity pruned"], rows, left=4) + "</div>"


# ---------------------------------------------------------------------------- the page, model by model
@dataclass
class _Section:
    """One model's part of the page, and the images it adds to the report."""

    model: str
    suffix: str  # of the image names: empty with one model, the model's name with several
    colors: dict
    images: dict[str, bytes]
    parts: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return _model_name(self.model)

    def image(self, stem: str, fig, alt: str) -> str:
        """``<stem><suffix>.png``, kept for writing; returns the page's figure that embeds it."""
        file = f"{stem}{self.suffix}.png"
        self.images[file] = _png(fig)
        return _img(file, self.images[file], alt)


def _higher_is_better(metric: str) -> bool:
    return metric in ("acc", "acc_norm", "exact_match", "f1", "mcc")


def _quality_part(s: _Section, dm, tasks: list[tuple[str, str]]) -> None:
    fig = _quality_figure(dm, "perplexity", "dense_perplexity", "perplexity", s.colors,
                          f"Perplexity against sparsity: {s.name}")
    s.parts.append("<h3>Perplexity against sparsity</h3>"
                   + s.image("quality", fig, f"perplexity against sparsity, {s.name}"))
    for task, metric in tasks:
        fig = _quality_figure(dm, f"{task}.{metric}", f"dense.{task}.{metric}", f"{task} {metric}", s.colors,
                              f"{task} {metric} against sparsity: {s.name}")
        s.parts.append(f"<h3>{_e(task)} {_e(metric)} against sparsity</h3>"
                       + s.image(f"quality-{_slug(task)}-{_slug(metric)}", fig,
                                 f"{task} {metric} against sparsity, {s.name}"))


def _best_part(s: _Section, dm, tasks: list[tuple[str, str]]) -> None:
    s.parts.append("<h3>Best method at each sparsity</h3><p class=\"note\">Perplexity (lower is better); the best "
                   "at each fraction removed is in bold.</p>")
    for key, g in _panels(dm):
        s.parts.append(f"<p><b>{_e(_panel_title(key))}</b></p>"
                       + _best_table(g, "perplexity", "dense_perplexity", False))
        for task, metric in tasks:
            higher = _higher_is_better(metric)
            s.parts.append(f"<p>{_e(task)} {_e(metric)} ({'higher' if higher else 'lower'} is better)</p>"
                           + _best_table(g, f"{task}.{metric}", f"dense.{task}.{metric}", higher,
                                         fmt=lambda v: f"{v:.4f}" if abs(v) < 10 else _fmt(v)))


def _layers_part(s: _Section, recs: list[dict]) -> None:
    s.parts.append("<h3>Fraction of each layer kept under global allocation</h3>")
    shown = False
    for entry, stem, title in (("neurons", "layers", "Layers kept"), ("heads", "layers-heads", "Heads kept")):
        glob = [r for r in recs if r["config"]["allocation"] != "local" and r.get(entry)]
        if glob:
            s.parts.append(s.image(stem, _layers_figure(glob, s.colors, f"{title}: {s.name}", entry),
                                   f"fraction of each layer's {entry} kept, global allocation, {s.name}"))
            shown = True
    if not shown:
        s.parts.append('<p class="note">No run used global allocation (<code>--allocations global</code>).</p>')


def _scores_part(s: _Section, recs: list[dict]) -> None:
    by_scorer: dict[str, dict] = {}
    for r in recs:
        if r.get("score_quantiles"):
            by_scorer.setdefault(RunConfig.from_dict(r["config"]).label, r)
    s.parts.append("<h3>Score distributions per layer</h3>")
    if by_scorer:
        s.parts.append(s.image("scores", _scores_figure(by_scorer, f"Scores per layer: {s.name}"),
                               f"score distributions per layer, {s.name}"))


def _correlations_part(s: _Section, corr: dict | None) -> None:
    s.parts.append("<h3>Rank correlations between the methods' scores</h3>")
    if corr is None:
        s.parts.append('<p class="note">Needs the scores of at least two methods: run the sweep with '
                       "<code>--save-scores</code>.</p>")
        return
    s.parts.append(s.image("correlations", _correlation_figure(corr, f"Rank correlations: {s.name}"),
                           f"Spearman rank correlations between scores, {s.name}"))
    labels = corr["labels"]
    rows = [[_e(a)] + [f"{corr['spearman'][i, j]:.3f} / {corr['kendall'][i, j]:.3f} / "
                       f"{corr['spearman_layer_median'][i, j]:.3f}"
                       for j in range(len(labels))] for i, a in enumerate(labels)]
    s.parts.append("<p class=\"note\">Spearman / Kendall over the intermediate neurons of all layers (each "
                   "layer's scores divided by their mean absolute value) / median over layers of the "
                   "Spearman within a layer.</p>" + _table([""] + [_e(b) for b in labels], rows))


def _speed_part(s: _Section, dm) -> None:
    s.parts.append("<h3>Parameters and speed, before and after</h3><p class=\"note\">tokens/s of the dense and "
                   "the pruned model are measured alternately in the same run.</p>" + _speed_table(dm))
    failed = dm[dm["status"] == "failed"]
    if len(failed):
        s.parts.append("<h3>Failed runs</h3>" + _table(
            ["method", "allocation", "how", "mode", "removed", "error"],
            [[_e(r.label), _e(r.allocation), _e(r.how), _e(r.mode), f"{r.amount:.0%}", _e(r.error)]
             for r in failed.itertuples()], left=4))


def _model_section(s: _Section, directory: Path, dm, records: dict, tasks: list[tuple[str, str]]) -> str:
    """The page's part for one model: its figures, tables and failed runs, in reading order."""
    s.parts.append(f"<h2>{_e(s.name)}</h2>")
    _quality_part(s, dm, tasks)
    _best_part(s, dm, tasks)
    recs = [r for r in records.values() if r["status"] == "complete"]
    _layers_part(s, recs)
    _scores_part(s, recs)
    _correlations_part(s, _rank_correlations(directory, records).get(s.model))
    _speed_part(s, dm)
    return "\n".join(s.parts)


@validated({"directory": _A_PATH, "out": Optional(_A_PATH)})
def _check_paths(directory: Path, out: Path) -> list | None:
    """``directory`` and ``out`` before anything is read or written; the grids of ``grid.json``, if it is there."""
    if directory.exists() and not directory.is_dir():
        raise MissingInputError(f"{str(directory)!r} is not a directory; a sweep results directory is expected "
                                "(made by `llmrank-graph sweep --out DIR`)")
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"`out` {str(out)!r} exists and is not a directory")
    return read_grid_file(directory)["grids"] if (directory / GRID_FILE).is_file() else None


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
        ``directory`` is not a directory, not a results directory, or holds no run result yet.
    FileFormatError
        Its ``grid.json`` is damaged (the message names the file).
    OutputExistsError
        ``out`` exists and is not a directory.

    Example
    -------
    A sweep of a random two-layer Llama (as in :func:`~llmrank_graph.experiments.runner.run_sweep`'s
    example), then its report:

    >>> import pathlib, tempfile
    >>> from llmrank_graph.experiments import Grid, run_sweep
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> from llmrank_graph.models import TOY_WORDS, toy_model_directory
    >>> _ = toy_model_directory(tmp / "model")    # a random 2-layer Llama and an 8-word tokenizer
    >>> _ = (tmp / "text.txt").write_text(" ".join(TOY_WORDS[2:] * 100))
    >>> small = {"texts": str(tmp / "text.txt"), "n_samples": 2, "seq_len": 8}
    >>> grid = Grid(models=[str(tmp / "model")], methods=["activation", "magnitude"], amounts=[0.25, 0.5],
    ...             allocations=["global"], calibration=small, evaluation={**small, "throughput_rounds": 1},
    ...             save_scores=True)
    >>> _ = run_sweep(grid, tmp / "results")
    >>> write_report(tmp / "results").name
    'report.html'
    >>> sorted(p.name for p in (tmp / "results").glob("*.png"))
    ['correlations.png', 'layers.png', 'quality.png', 'scores.png']
    >>> [corr] = rank_correlations(tmp / "results").values()
    >>> corr["labels"], corr["spearman"].shape
    (['activation compensate=lstsq', 'magnitude compensate=lstsq'], (2, 2))
    >>> import shutil; shutil.rmtree(tmp)
    """
    directory = Path(directory).expanduser()
    out = directory if out is None else Path(out).expanduser()
    grids = _check_paths(directory, out)
    df, records = _load(directory)
    if not len(df):
        raise MissingInputError(f"{str(directory)!r} holds no run results yet; run `llmrank-graph sweep --out "
                                f"{directory}` first")
    images: dict[str, bytes] = {}
    colors = _colors(df["label"].unique())
    models = list(dict.fromkeys(df["model"]))
    tasks = _task_metrics(df)
    sections = []
    for model in models:
        section = _Section(model, "" if len(models) == 1 else f"-{_slug(model)}", colors, images)
        mine = {rid: r for rid, r in records.items() if (r["config"]["model"] or "default") == model}
        sections.append(_model_section(section, directory, df[df["model"] == model], mine, tasks))
    for name, data in images.items():
        write_bytes_atomic(out / name, data, overwrite=True)
    path = write_text_atomic(out / REPORT_HTML, _page(directory, df, records, sections, len(grids)), overwrite=True)
    logger.info("wrote %s and %d images", path, len(images))
    return path


def _heads_note(records: dict) -> str:
    """What runs of heads remove, and the parameters of one head (its cost), for the page's note."""
    heads = [r["heads"] for r in records.values() if r.get("heads")]
    if not heads:
        return ""
    costs = {k: sorted({c for h in heads for c in h["head_cost"][k]}) for k in ("query_head", "kv_group")}
    return (", or attention heads (<code>target</code> attention: <code>amount</code> is the fraction of the "
            "query heads; both: of the MLP + attention parameters). A query head holds "
            f"{'/'.join(f'{c:,}' for c in costs['query_head'])} parameters (its query rows and output-projection "
            f"columns), a key/value group {'/'.join(f'{c:,}' for c in costs['kv_group'])} (its key and value rows), "
            "removed with the last of its query heads")


def _page(directory: Path, df, records: dict, sections: list[str], n_grids: int) -> str:
    first = next(iter(records.values()))
    env = first.get("environment") or {}
    cfg = first["config"]
    n_done = int((df["status"] == "complete").sum())
    summary = _table(["", ""], [
        ["runs", f"{len(df)} ({n_done} complete, {len(df) - n_done} failed)"],
        ["models", _e(", ".join(_model_name(m) for m in dict.fromkeys(df["model"])))],
        ["methods", _e(", ".join(sorted(df["label"].unique())))],
        ["amounts", _e(", ".join(f"{a:g}" for a in sorted(df["amount"].unique())))],
        ["calibration", _e(json.dumps(cfg["calibration"]))],
        ["evaluation", _e(json.dumps(cfg["evaluation"]))],
        ["versions", _e(", ".join(f"{k} {v}" for k, v in env.items()))],
        ["grids in this directory", str(n_grids)],
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
pruned runs remove (or zero) MLP intermediate neurons{_heads_note(records)}.</p>
{summary}
{''.join(sections)}
</body></html>
"""
