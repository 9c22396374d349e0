"""A sweep's results directory: its layout, its ``grid.json``, and the run results read back.

The layout is :mod:`llmrank_graph.experiments.runner`'s (it writes the directory). Every run
result is a JSON file; :func:`scan_results` reads them, naming each damaged one in a warning;
:func:`read_results` turns them into one table, the rows of ``results.csv``
(:func:`flatten_record` makes one row).

>>> import json, pathlib, tempfile
>>> from llmrank_graph.experiments.settings import RunConfig
>>> run = RunConfig(None, "activation", 0.5, "local", "remove", "chained")
>>> record = {"format": RUN_FORMAT, "run_id": run.run_id, "status": "complete", "config": run.to_dict(),
...           "perplexity": 30.0, "dense_perplexity": 20.0}
>>> with tempfile.TemporaryDirectory() as tmp:
...     (pathlib.Path(tmp) / RUNS_DIR).mkdir()
...     _ = (pathlib.Path(tmp) / RUNS_DIR / f"{run.stem}.json").write_text(json.dumps(record))
...     _ = (pathlib.Path(tmp) / GRID_FILE).write_text(json.dumps({"format": SWEEP_FORMAT, "grids": []}))
...     table = read_results(tmp)
>>> table[["method", "amount", "status", "perplexity_ratio"]]
       method  amount    status  perplexity_ratio
0  activation     0.5  complete               1.5
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from .._version import __version__
from ..base.files import atomic_file, write_text_atomic
from ..base.params import InstanceOf, validated
from ..errors import FileFormatError, InvalidArgumentError, MissingInputError, OutputExistsError
from .grid import _GRID_KEYS, Grid
from .settings import _A_PATH, DEFAULT_TARGET, RunConfig

logger = logging.getLogger(__name__)

__all__ = ["scan_results", "read_results", "flatten_record", "GRID_FILE", "RESULTS_CSV", "RESULTS_PARQUET",
           "RUN_STATUSES"]

#: ``format`` of ``grid.json``, of each run's JSON and of each dense evaluation's JSON.
SWEEP_FORMAT = "llmrank_graph.sweep"
RUN_FORMAT = "llmrank_graph.sweep.run"
DENSE_FORMAT = "llmrank_graph.sweep.dense"
#: File and folder names inside a results directory.
GRID_FILE = "grid.json"
RESULTS_CSV = "results.csv"
RESULTS_PARQUET = "results.parquet"
RUNS_DIR, CALIBRATION_DIR, DENSE_DIR, SCORES_DIR, TASKS_DIR = "runs", "calibration", "dense", "scores", "tasks"
#: A run ends ``complete`` or ``failed`` (the library refused or could not do the work, e.g. a
#: centrality that did not converge; the error is recorded and the run is not retried unless asked).
RUN_STATUSES: tuple[str, ...] = ("complete", "failed")


# ---------------------------------------------------------------------------- run results
def _read_record(path: Path) -> dict:
    """A run's JSON, checked; FileFormatError when it is damaged, truncated or inconsistent."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FileFormatError(f"{type(e).__name__}: {e}") from None
    if not isinstance(record, dict) or record.get("format") != RUN_FORMAT:
        found = record.get("format") if isinstance(record, dict) else None
        raise FileFormatError(f"not a sweep result (format {found!r})")
    if record.get("status") not in RUN_STATUSES:
        raise FileFormatError(f"unknown status {record.get('status')!r}")
    try:
        config = RunConfig.from_dict(record["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise FileFormatError(f"its config is damaged: {e}") from None
    if config.run_id != record.get("run_id") or not path.name.endswith(f"{config.run_id}.json"):
        raise FileFormatError("its run id does not match its config")
    return record


def _scan(directory: Path) -> tuple[dict[str, tuple[Path, dict]], list[Path]]:
    runs_dir = directory / RUNS_DIR
    found: dict[str, tuple[Path, dict]] = {}
    damaged: list[Path] = []
    if not runs_dir.is_dir():
        return found, damaged
    for path in sorted(runs_dir.glob("*.json")):
        if path.name.startswith("."):
            continue  # a writer's temporary
        try:
            record = _read_record(path)
        except FileFormatError as e:
            logger.warning("result file %s is damaged or truncated (%s); its run will be redone", path, e)
            damaged.append(path)
            continue
        found[record["run_id"]] = (path, record)
    return found, damaged


@validated({"directory": _A_PATH})
def scan_results(directory: str | os.PathLike) -> tuple[dict[str, tuple[Path, dict]], list[Path]]:
    """The run results in a results directory: ``({run_id: (path, record)}, damaged paths)``.

    Each damaged or truncated file is named in a warning (logging).

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     scan_results(tmp)           # no run yet
    ({}, [])
    """
    return _scan(Path(directory))


@validated({"record": InstanceOf(Mapping, "a run's record (a mapping)")})
def flatten_record(record: Mapping) -> dict[str, Any]:
    """One row of ``results.csv`` from a run's JSON.

    Columns: ``run_id, status, model, method, label, amount, allocation, how, mode, target, seed,
    params`` (JSON), ``param.<name>`` per parameter, ``perplexity, dense_perplexity,
    perplexity_ratio``, ``params_total_dense/pruned``, ``params_mlp_dense/pruned``,
    ``neurons_total, neurons_pruned, fraction_pruned`` (of the intermediate neurons; empty for a
    run of ``target='attention'``); for a run of heads ``heads_total, heads_pruned,
    fraction_heads_pruned`` (the exact fraction of query heads removed),
    ``params_attention_removed``, and for ``target='both'`` ``params_mlp_attention_total,
    params_mlp_attention_removed, fraction_mlp_attention_pruned`` (the exact fraction of the MLP +
    attention parameters removed); ``dense_tokens_per_s,
    pruned_tokens_per_s, speedup``, ``<task>.<metric>`` and ``dense.<task>.<metric>``,
    ``time.<stage>``, ``calibration.<field>``, ``evaluation.<field>``, ``version.<package>``,
    ``error``.

    Example
    -------
    >>> from llmrank_graph.experiments.settings import RunConfig
    >>> run = RunConfig(None, "random", 0.5, "local", "remove", "chained", params=(("seed", 3),))
    >>> row = flatten_record({"run_id": run.run_id, "status": "failed", "config": run.to_dict(),
    ...                       "error": "ConvergenceError: ..."})
    >>> row["label"], row["param.seed"], row["perplexity"], row["model"]
    ('random seed=3', 3, None, 'default')
    """
    return _row(record)


def _row(record: Mapping) -> dict[str, Any]:
    cfg = record["config"]
    row: dict[str, Any] = {
        "run_id": record["run_id"], "status": record["status"], "model": cfg["model"] or "default",
        "method": cfg["method"], "label": RunConfig.from_dict(cfg).label, "amount": cfg["amount"],
        "allocation": cfg["allocation"], "how": cfg["how"], "mode": cfg["mode"],
        "target": cfg["params"].get("target", DEFAULT_TARGET), "seed": cfg["seed"],
        "params": json.dumps(cfg["params"], sort_keys=True),
    }
    for k, v in sorted(cfg["params"].items()):
        row[f"param.{k}"] = v
    _measurement_columns(row, record)
    for stage, seconds in (record.get("times") or {}).items():
        row[f"time.{stage}"] = seconds
    for stage, seconds in (record.get("shared_times") or {}).items():
        row[f"time.{stage}"] = seconds
    for k, v in cfg["calibration"].items():
        row[f"calibration.{k}"] = v
    for k, v in cfg["evaluation"].items():
        row[f"evaluation.{k}"] = " ".join(v) if k == "tasks" else v
    for k, v in (record.get("environment") or {}).items():
        row[f"version.{k}"] = v
    row["error"] = record.get("error")
    return row


def _measurement_columns(row: dict, record: Mapping) -> None:
    """Perplexity, parameters, neurons, speed and task metrics of a run, added to ``row``."""
    row["perplexity"] = record.get("perplexity")
    row["dense_perplexity"] = record.get("dense_perplexity")
    p, d = row["perplexity"], row["dense_perplexity"]
    row["perplexity_ratio"] = p / d if isinstance(p, (int, float)) and isinstance(d, (int, float)) and d else None
    params = record.get("parameters") or {}
    for which in ("dense", "pruned"):
        for kind in ("total", "mlp"):
            row[f"params_{kind}_{which}"] = (params.get(which) or {}).get(kind)
    neurons = record.get("neurons") or {}
    row["neurons_total"] = neurons.get("total")
    row["neurons_pruned"] = neurons.get("pruned")
    row["fraction_pruned"] = neurons.get("fraction")
    heads = record.get("heads")
    if heads:
        row.update({"heads_total": heads["total"], "heads_pruned": heads["pruned"],
                    "fraction_heads_pruned": heads["fraction"],
                    "params_attention_removed": heads["parameters_removed"]})
        both = heads.get("parameters") or {}
        if both:
            row.update({"params_mlp_attention_total": both["total_parameters"],
                        "params_mlp_attention_removed": both["removed"],
                        "fraction_mlp_attention_pruned": both["fraction"]})
    tp = record.get("throughput") or {}
    for k in ("dense_tokens_per_s", "pruned_tokens_per_s", "speedup"):
        row[k] = tp.get(k)
    for prefix, tasks in (("", record.get("tasks") or {}), ("dense.", record.get("dense_tasks") or {})):
        for task, metrics in sorted(tasks.items()):
            for metric, value in sorted(metrics.items()):
                row[f"{prefix}{task}.{metric}"] = value


_ORDER = ["model", "method", "label", "mode", "how", "allocation", "target", "amount"]


def _table(directory: Path) -> pd.DataFrame:
    """:func:`read_results` on a checked path."""
    if not (directory / GRID_FILE).is_file():
        raise MissingInputError(f"{str(directory)!r} is not a sweep results directory (no {GRID_FILE}); "
                                "make one with `llmrank-graph sweep --out DIR`")
    found, _ = _scan(directory)
    df = pd.DataFrame([_row(rec) for _, rec in found.values()])
    if len(df):
        # Parameter columns right after `params`; then the others in the order they first appear.
        cols = list(df.columns)
        params = sorted(c for c in cols if c.startswith("param."))
        rest = [c for c in cols if not c.startswith("param.")]
        at = rest.index("params") + 1
        df = df[rest[:at] + params + rest[at:]]
        df = df.sort_values(_ORDER, kind="stable").reset_index(drop=True)
        # Counts stay integers where a failed run leaves holes (pandas would make them floats).
        for col in df.columns:
            if df[col].dtype == float and df[col].dropna().map(float.is_integer).all() and (
                    col.startswith(("params_", "neurons_", "heads_"))):
                df[col] = df[col].astype("Int64")
    return df


@validated({"directory": _A_PATH})
def read_results(directory: str | os.PathLike) -> pd.DataFrame:
    """Every run result of a results directory as a pandas DataFrame (the rows of ``results.csv``).

    Rows are sorted by model, method, label, mode, how, allocation, target and amount. Damaged
    files are skipped with a warning. The module's example builds a directory by hand.

    Raises
    ------
    MissingInputError
        ``directory`` is not a results directory (no ``grid.json``).
    """
    return _table(Path(directory))


def _write_tables(directory: Path) -> None:
    """Rewrite ``results.csv`` and ``results.parquet`` from the run JSONs, atomically."""
    df = _table(directory)
    write_text_atomic(directory / RESULTS_CSV, df.to_csv(index=False), overwrite=True)
    pq = df.copy()
    for col in pq.columns:  # Parquet wants one type per column: a mixed column becomes text
        if pq[col].dtype == object:
            kinds = {type(v) for v in pq[col] if v is not None and not (isinstance(v, float) and math.isnan(v))}
            if len(kinds) > 1:
                pq[col] = pq[col].map(lambda v: None if v is None else str(v))
    with atomic_file(directory / RESULTS_PARQUET, overwrite=True, arg="results.parquet") as tmp:
        pq.to_parquet(tmp, index=False)


# ---------------------------------------------------------------------------- the directory's grid.json
def _grid_entry(grid: Grid) -> dict:
    return {"grid": grid.to_dict(), "runs": [r.run_id for r in grid.runs()]}


#: What a grid of ``grid.json`` that lacks a key had: a grid written before ``compensates``
#: existed ran without compensation, and its runs are those of ``compensates=["none"]``; one
#: written before ``targets`` pruned MLP neurons.
_BEFORE_THE_KEY: dict[str, Any] = {"compensates": ["none"], "targets": ["mlp"]}


def _differences(new: dict, old: dict) -> str:
    """The settings in which the grid ``new`` differs from ``old`` (``grid.json`` entries), in words."""
    diffs = []
    for k in _GRID_KEYS:
        older = k not in old and k in _BEFORE_THE_KEY
        was = _BEFORE_THE_KEY[k] if older else old.get(k)
        if k not in ("save_scores", "save_masks") and new.get(k) != was:
            note = f" (its grid predates `{k}`)" if older else ""
            diffs.append(f"{k}: {new.get(k)!r} here, {was!r} there{note}")
    return "; ".join(diffs) or "the same settings, other runs"


def read_grid_file(directory: Path) -> dict:
    """The ``grid.json`` of a results directory, checked; FileFormatError naming the file when it is damaged.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = (Path(tmp) / GRID_FILE).write_text('{"format": "llmrank_graph.sweep", "grids": [')
    ...     read_grid_file(Path(tmp))
    Traceback (most recent call last):
    ...
    llmrank_graph.errors.FileFormatError: '.../grid.json' is not valid JSON: Expecting value: line 1 column 45 ...
    """
    path = directory / GRID_FILE
    fix = "repair it or move the directory aside"
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise FileFormatError(f"{str(path)!r} is not valid JSON (not UTF-8 text: {e}); {fix}") from None
    except json.JSONDecodeError as e:
        raise FileFormatError(f"{str(path)!r} is not valid JSON: {e}; {fix}") from None
    grids = stored.get("grids") if isinstance(stored, dict) else None
    try:
        if not isinstance(stored, dict) or stored.get("format") != SWEEP_FORMAT:
            raise ValueError(f"its format is {stored.get('format') if isinstance(stored, dict) else None!r}, "
                             f"not {SWEEP_FORMAT!r}")
        if not isinstance(grids, list) or not all(isinstance(g, dict) and isinstance(g.get("runs"), list)
                                                  and isinstance(g.get("grid"), dict) for g in grids):
            raise ValueError("its `grids` is not a list of {grid, runs} entries")
    except ValueError as e:
        raise FileFormatError(f"{str(path)!r} is not a sweep grid file ({e}); {fix}") from None
    return stored


def _open_directory(directory: Path, grid: Grid, extend: bool) -> tuple[dict, bool]:
    """Check ``directory`` for this grid; return (grid.json content to write, whether it changed).

    Nothing is written here: the caller writes once every check has passed.
    """
    entry = _grid_entry(grid)
    fresh = {"format": SWEEP_FORMAT, "version": __version__, "grids": [entry]}
    if not directory.exists():
        return fresh, True
    if not directory.is_dir():
        raise OutputExistsError(f"results directory {str(directory)!r} exists and is not a directory")
    grid_file = directory / GRID_FILE
    if not grid_file.is_file():
        if any(p for p in directory.iterdir() if not p.name.startswith(".")):
            raise OutputExistsError(f"results directory {str(directory)!r} is not empty and holds no {GRID_FILE}: "
                                    "it is not a sweep results directory; choose another directory")
        return fresh, True
    stored = read_grid_file(directory)
    grids = stored["grids"]
    run_sets = [set(g["runs"]) for g in grids]
    mine = set(entry["runs"])
    if any(mine == s for s in run_sets):
        return stored, False
    if not extend:
        raise InvalidArgumentError(
            f"results directory {str(directory)!r} holds results of a different grid "
            f"({_differences(entry['grid'], grids[-1]['grid'])}); "
            "pass --extend (extend=True) to add this grid's runs to it, or choose another directory")
    stored["grids"] = grids + [entry]
    return stored, True
