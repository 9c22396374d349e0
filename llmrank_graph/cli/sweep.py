"""``llmrank-graph sweep``: run a benchmark grid into a results directory, resumably.

Examples::

    llmrank-graph sweep --out results --methods pagerank activation wanda-sp --amounts 0.1 0.3 0.5
    llmrank-graph sweep --out results --methods pagerank --param alpha=0.5,0.85 --allocations local global
    llmrank-graph sweep --out results --grid grid.toml --tasks wikipedia_lastword
    llmrank-graph sweep --out results --methods katz --extend      # add runs to an existing directory
    llmrank-graph sweep --out results --compensate none lstsq       # with and without the refit
    llmrank-graph sweep --out results --methods activation magnitude --target attention both   # heads

Lists are space-separated. A rerun skips every completed run; see
:mod:`llmrank_graph.experiments.runner` for the directory layout. Every default and choice is the
library's (:class:`~llmrank_graph.experiments.grid.Grid` and its settings).

Exit status: 0 when every run of the grid is complete (or left to another sweep on the same
directory, which is computing it); 1 when runs failed (the good ones are kept, the message
counts the failed ones); 2 for a refused request, including a grid of more than
:data:`CONFIRM_ABOVE` runs to compute without ``--yes`` when stdin is not a terminal (on a
terminal the sweep asks; answering no exits 1).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
from dataclasses import fields
from pathlib import Path

from ..compensation.algebra import COMPENSATIONS
from ..data.evaluation import LASTWORD_TASK
from ..errors import InvalidArgumentError, WorkFailedError
from ..experiments.grid import Grid, load_grid
from ..experiments.report import perplexity_table
from ..experiments.results import RESULTS_CSV, RUNS_DIR, scan_results
from ..experiments.runner import pending_runs, run_sweep
from ..experiments.settings import CalibrationSetting, EvaluationSetting
from ..graph.mlpgraph import MODES
from ..models.loading import check_model_path
from ..pruning.masks import ALLOCATIONS
from ..pruning.prune import TARGETS
from ..pruning.surgery import HOWS
from ..scoring.registry import scorers
from ._common import param_value

logger = logging.getLogger("llmrank_graph.cli")

#: A grid with more runs than this to compute starts only with ``--yes`` (or a yes on a terminal).
CONFIRM_ABOVE = 1000

_GRID = {f.name: f.default for f in fields(Grid) if f.default is not f.default_factory}
_CAL = CalibrationSetting()
_EV = EvaluationSetting()


def _listed(values) -> str:
    return " ".join("default" if v is None else str(v) for v in values)


def add_parser(sub) -> None:
    """Add this command to the ``llmrank-graph`` subparsers."""
    p = sub.add_parser("sweep", help="run a benchmark grid (methods x amounts x ...) into a results directory",
                       description="Run a benchmark grid into a results directory: one JSON per run, results.csv "
                                   "and .parquet; a rerun skips every finished run.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n" + __doc__.split("Examples::\n\n")[1].split("\n\n")[0] +
                              "\n\nLists are space-separated. docs/benchmarking.md has the details.")
    p.add_argument("--out", required=True, metavar="DIR", help="results directory (created; reruns resume it)")
    p.add_argument("--grid", metavar="FILE.toml", default=None,
                   help="read the grid from a TOML file; options given here override its values")
    g = p.add_argument_group("grid (space-separated lists)")
    g.add_argument("--model", dest="models", nargs="+", action="extend", metavar="PATH", default=None,
                   help="model directories or .gguf files, repeatable (default: the embedded SmolLM2-135M-Instruct)")
    names = scorers()
    g.add_argument("--methods", nargs="+", choices=names, metavar="NAME", default=None,
                   help=f"scorers, of {', '.join(names)} (default: {_listed(_GRID['methods'])})")
    g.add_argument("--amounts", nargs="+", type=float, metavar="A", default=None,
                   help="fractions of intermediate neurons to remove, in [0, 1); with --target attention of query "
                        "heads, with --target both of the MLP + attention parameters "
                        f"(default: {_listed(_GRID['amounts'])})")
    g.add_argument("--allocations", nargs="+", choices=ALLOCATIONS, default=None,
                   help=f"(default: {_listed(_GRID['allocations'])})")
    g.add_argument("--how", dest="hows", nargs="+", choices=HOWS, default=None,
                   help=f"remove neurons or zero them (default: {_listed(_GRID['hows'])})")
    g.add_argument("--modes", nargs="+", choices=MODES, default=None, help=f"(default: {_listed(_GRID['modes'])})")
    g.add_argument("--compensate", dest="compensates", nargs="+", choices=COMPENSATIONS, default=None,
                   help="repair down_proj after the removal (default: "
                        f"{_listed(_GRID['compensates'])}, as `llmrank-graph prune`)")
    g.add_argument("--target", dest="targets", nargs="+", choices=TARGETS, default=None,
                   help="what to prune: MLP neurons, attention heads (methods with a head scorer), or both "
                        f"(default: {_listed(_GRID['targets'])}, as `llmrank-graph prune`)")
    g.add_argument("--param", action="append", default=[], metavar="KEY=V1,V2",
                   help="a parameter axis, repeatable: applies to every method that has KEY; METHOD.KEY=... to one "
                        "method. Values: numbers, true/false/none, or text")
    g.add_argument("--seed", type=int, default=None,
                   help=f"seeds the global generators per run (default {_GRID['seed']})")
    c = p.add_argument_group("calibration (once per model, saved in DIR)")
    c.add_argument("--texts", metavar="SOURCE", default=None,
                   help=".txt/.jsonl file or datasets name (default: embedded Wikipedia calibration articles)")
    c.add_argument("--n-samples", type=int, default=None, help=f"calibration blocks (default {_CAL.n_samples})")
    c.add_argument("--seq-len", type=int, default=None,
                   help=f"tokens per block, for calibration and evaluation (default {_CAL.seq_len} and {_EV.seq_len})")
    c.add_argument("--batch-size", type=int, default=None,
                   help=f"blocks per forward pass (default {_CAL.batch_size} and {_EV.batch_size})")
    c.add_argument("--second-moments", action="store_true", default=None,
                   help="also collect the Gram matrices of the down_proj inputs (default: when a run needs "
                        "them: --compensate lstsq or lstsq+bias, the obs method)")
    e = p.add_argument_group("evaluation")
    e.add_argument("--eval-texts", metavar="SOURCE", default=None,
                   help="perplexity text (default: held-out Wikipedia articles)")
    e.add_argument("--eval-samples", type=int, default=None, help=f"perplexity windows (default {_EV.n_samples})")
    e.add_argument("--throughput-batch", type=int, default=None,
                   help=f"windows per forward pass for tokens/s (default {_EV.throughput_batch})")
    e.add_argument("--throughput-rounds", type=int, default=None,
                   help=f"dense/pruned alternations for tokens/s (default {_EV.throughput_rounds})")
    e.add_argument("--tasks", nargs="+", metavar="TASK", default=None,
                   help=f"lm-eval tasks (the `eval` extra); {LASTWORD_TASK} works offline")
    e.add_argument("--task-limit", type=int, default=None, help="examples per task (default: all)")
    e.add_argument("--task-batch-size", type=int, default=None, help=f"(default {_EV.task_batch_size})")
    o = p.add_argument_group("output")
    o.add_argument("--save-scores", action="store_true", default=None,
                   help="save each scorer's scores (safetensors); the report's rank correlations need them")
    o.add_argument("--save-masks", action="store_true", default=None, help="save each run's neuron mask")
    o.add_argument("--extend", action="store_true", help="add this grid's runs to a directory written by another grid")
    o.add_argument("--retry-failed", action="store_true", help="redo runs recorded as failed")
    o.add_argument("--wait", action="store_true",
                   help="wait for the runs another sweep on DIR is computing (default: leave them to it); "
                        "a run whose sweep died is taken over")
    o.add_argument("--yes", action="store_true",
                   help=f"start a grid of more than {CONFIRM_ABOVE:,} runs to compute without asking")
    o.add_argument("--device", default=None, help="e.g. cuda (default: cpu)")
    p.set_defaults(func=run)


def _parse_param(text: str) -> tuple[str | None, str, list]:
    """``KEY=V1,V2`` or ``METHOD.KEY=V1,V2`` -> (method or None, key, values)."""
    key, sep, values = text.partition("=")
    key = key.strip()
    if not sep or not key or not values:
        raise InvalidArgumentError(f"`--param` must be KEY=V1,V2 or METHOD.KEY=V1,V2; got {text!r}")
    method = None
    if "." in key:
        method, key = key.split(".", 1)
        if method not in scorers():
            raise InvalidArgumentError(f"`--param` {text!r} names the method {method!r}, which is not one of "
                                       f"{', '.join(scorers())}")
    return method, key, [param_value(v.strip()) for v in values.split(",")]


def grid_from_args(args) -> Grid:
    """The grid of a ``sweep`` command line: the TOML file, with the options given on top."""
    d: dict = {}
    if args.grid is not None:
        d = load_grid(args.grid).to_dict()  # the file is validated on its own first
    for name in ("models", "methods", "amounts", "allocations", "hows", "modes", "compensates", "targets", "seed",
                 "save_scores", "save_masks"):
        value = getattr(args, name)
        if value is not None:
            d[name] = value
    params = dict(d.get("params", {}))
    method_params = {m: dict(p) for m, p in d.get("method_params", {}).items()}
    for text in args.param:
        method, key, values = _parse_param(text)
        if method is None:
            params[key] = values
        else:
            method_params.setdefault(method, {})[key] = values
    d["params"], d["method_params"] = params, method_params
    cal = dict(d.get("calibration", {}))
    ev = dict(d.get("evaluation", {}))
    for target, key, value in ((cal, "texts", args.texts), (cal, "n_samples", args.n_samples),
                               (cal, "seq_len", args.seq_len), (cal, "batch_size", args.batch_size),
                               (cal, "second_moments", args.second_moments),
                               (ev, "seq_len", args.seq_len), (ev, "batch_size", args.batch_size),
                               (ev, "texts", args.eval_texts), (ev, "n_samples", args.eval_samples),
                               (ev, "throughput_batch", args.throughput_batch),
                               (ev, "throughput_rounds", args.throughput_rounds), (ev, "tasks", args.tasks),
                               (ev, "task_limit", args.task_limit), (ev, "task_batch_size", args.task_batch_size)):
        if value is not None:
            target[key] = value
    d["calibration"], d["evaluation"] = cal, ev
    return Grid.from_dict(d)


def _duration(seconds: float) -> str:
    """``3 h 05 min``, ``12 min``, ``40 s``."""
    minutes = round(seconds / 60)
    if minutes >= 60:
        return f"{minutes // 60} h {minutes % 60:02d} min"
    return f"{minutes} min" if minutes else f"{seconds:.0f} s"


def _eta(found: dict, n_todo: int, directory: str) -> str:
    """An estimate from the runs already timed in the directory, or "unknown" when there are none."""
    seconds = [sum((rec.get("times") or {}).values()) for _, rec in found.values() if rec["status"] == "complete"]
    seconds = [s for s in seconds if isinstance(s, (int, float)) and s > 0]
    if not seconds:
        return f"ETA unknown: no finished run in {directory} to time"
    each = statistics.fmean(seconds)
    return (f"ETA about {_duration(each * n_todo)}: {n_todo:,} x {each:.1f} s, the mean of the {len(seconds)} "
            f"finished run(s) in {directory} on the device they ran on, plus loading and calibrating each model")


def _confirm_size(runs: list, args) -> bool:
    """A grid of more than CONFIRM_ABOVE runs to compute: its size and ETA, then --yes or a yes on a terminal."""
    found, _ = scan_results(args.out) if Path(args.out).expanduser().is_dir() else ({}, [])
    todo = pending_runs(runs, found, args.retry_failed)
    if len(todo) <= CONFIRM_ABOVE or args.yes:
        return True
    print(f"this grid has {len(todo):,} runs to compute ({len(runs) - len(todo):,} already done), more than "
          f"{CONFIRM_ABOVE:,}; {_eta(found, len(todo), args.out)}", flush=True)
    if not sys.stdin.isatty():
        raise InvalidArgumentError(f"a grid of {len(todo):,} runs to compute (more than {CONFIRM_ABOVE:,}) starts "
                                   "only with --yes when stdin is not a terminal; pass --yes, or make the grid "
                                   "smaller")
    try:
        answer = input(f"start {len(todo):,} runs? [y/N] ")
    except EOFError:
        answer = ""
    return answer.strip().lower() in ("y", "yes")


def _report(summary, out: str) -> None:
    """The counts, the runs left to other sweeps, the damaged files and the perplexity tables."""
    print(f"\n{len(summary.runs)} runs: {len(summary.computed)} computed now, {len(summary.skipped)} already done, "
          f"{len(summary.failed)} failed")
    holders: dict[str, int] = {}
    for holder in summary.claimed.values():
        holders[holder] = holders.get(holder, 0) + 1
    for holder, n in holders.items():
        print(f"{n} run{'s' if n > 1 else ''} claimed by {holder}, skipped: another sweep on {out} is computing "
              f"{'them' if n > 1 else 'it'}; rerun (or pass --wait) to pick up any it does not finish")
    if summary.damaged:
        print(f"{len(summary.damaged)} damaged result file(s) were redone where they belong to this grid: "
              + ", ".join(str(p) for p in summary.damaged))
    tables = perplexity_table(summary.directory, run_ids=summary.runs)
    for title, table in tables:
        print(f"\n{title}\n{table.to_string()}")
    print(f"\nresults: {Path(out) / RESULTS_CSV} (and .parquet); plots and an HTML page: "
          f"llmrank-graph report {out}")


def run(args) -> int:
    grid = grid_from_args(args)
    for model in args.models or ():  # in the option's words; run_sweep checks every model of the grid again
        check_model_path(model, arg="--model")
    runs = grid.runs()
    print(f"grid: {len(runs)} runs ({len(grid.models)} model(s) x {len(grid.methods)} method(s) with their "
          f"parameters x {len(grid.amounts)} amount(s) x {len(grid.allocations)} allocation(s) x "
          f"{len(grid.hows)} how x {len(grid.modes)} mode(s) x {len(grid.compensates)} compensation(s) x "
          f"{len(grid.targets)} target(s)) into {args.out}/", flush=True)
    if len(runs) > CONFIRM_ABOVE and not _confirm_size(runs, args):
        print("not started")
        return 1
    summary = run_sweep(grid, args.out, extend=args.extend, retry_failed=args.retry_failed, device=args.device,
                        progress=True, wait=args.wait)
    _report(summary, args.out)
    if summary.failed:
        raise WorkFailedError(f"{len(summary.failed)} of {len(summary.runs)} runs failed; see "
                              f"{Path(args.out) / RUNS_DIR}/*.json (each failed run's `error`)")
    return 0
