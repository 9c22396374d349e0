"""Benchmark sweeps: run every combination of models, methods and settings, record everything, resume.

A :class:`~llmrank_graph.experiments.grid.Grid` names the axes and settings
(:mod:`~llmrank_graph.experiments.grid`); :func:`run_sweep` runs the grid into a results
directory::

    DIR/
      grid.json                       the grid(s) this directory holds
      calibration/<model>-<key>.safetensors   one per model and calibration setting
      dense/<model>-<key>.json        the dense model's evaluation, one per model and setting
      runs/<stem>-<run_id>.json       one result per run (written last: its presence = done)
      runs/<stem>-<run_id>.claim      only while a sweep computes the run (see "Sharing a directory")
      runs/<...>.mask.safetensors     optional (``save_masks``)
      scores/<scorer>.safetensors     optional (``save_scores``), one per scorer configuration
      tasks/<key>/                    the offline lm-eval task, when asked for
      results.csv, results.parquet    every run, one row each (:func:`read_results`)

Resuming
--------
Every file is written atomically (:mod:`llmrank_graph.base.files`): it is complete or absent. A run's
JSON is written after everything else of the run, so a rerun of the same grid skips every run
whose JSON is there and redoes only the rest; the model is not even loaded when all its runs
are done. Calibration is read back from its safetensors file. A damaged or truncated result
file is named in a warning and its run is redone. A directory written by a different grid is
refused unless ``extend=True``, which adds the new grid's runs to it.

Sharing a directory
-------------------
Sweeps may run at once on one directory (several GPUs or hosts, or a sweep started twice).
Each run is claimed before it is computed (:mod:`~llmrank_graph.experiments.claims`: one
exclusive file per run with a heartbeat, taken over when its holder is gone), so each run is
computed once. A run that another sweep is computing is left to it and listed in
:attr:`SweepSummary.claimed`; with ``wait=True`` the sweep waits for it instead (looking every
:data:`CLAIM_POLL_SECONDS`) and computes it itself if its claim goes stale. A model is loaded
only when one of its runs is claimed.

This module also gives the grid's and the results' names (:class:`Grid`, :func:`load_grid`,
:func:`read_results`...), so that one import serves a sweep.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import json
import logging
import os
import platform
import random
import re
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._version import __version__
from ..base.files import write_json_atomic
from ..base.params import Boolean, InstanceOf, validated
from ..data.calibration import ActivationStats, calibrate
from ..data.evaluation import (
    LASTWORD_TASK,
    check_lm_eval,
    compare_throughput,
    count_parameters,
    lastword_examples,
    lm_eval,
    perplexity,
    prepare_tasks,
    task_metrics,
    write_lastword_task,
)
from ..data.texts import load_texts, token_blocks
from ..errors import FileFormatError, InvalidArgumentError, LLMRankGraphError, MissingInputError, OutputExistsError
from ..models.loading import check_model_path, load_model
from ..pruning.surgery import prune_model
from .claims import CLAIM_SUFFIX, RunClaim
from .grid import Grid, load_grid
from .outputs import SCORE_QUANTILES as SCORE_QUANTILES  # noqa: F401  (its name here before outputs.py)
from .outputs import check_attention_support, head_counts, neuron_counts, save_outputs, score_quantiles
from .results import (
    CALIBRATION_DIR,
    DENSE_DIR,
    DENSE_FORMAT,
    GRID_FILE,
    RESULTS_CSV,
    RESULTS_PARQUET,
    RUN_FORMAT,
    RUN_STATUSES,
    RUNS_DIR,
    TASKS_DIR,
    _open_directory,
    _read_record,
    _scan,
    _write_tables,
    flatten_record,
    read_results,
    scan_results,
)
from .settings import _A_PATH, CalibrationSetting, EvaluationSetting, RunConfig, _hash, method_parameters

logger = logging.getLogger(__name__)

__all__ = ["CalibrationSetting", "EvaluationSetting", "RunConfig", "Grid", "SweepSummary", "load_grid",
           "method_parameters", "run_sweep", "scan_results", "read_results", "flatten_record",
           "GRID_FILE", "RESULTS_CSV", "RESULTS_PARQUET", "RUN_STATUSES"]

#: With ``wait=True``, how often a sweep looks again at the runs other sweeps are computing.
CLAIM_POLL_SECONDS = 5.0


@dataclass
class SweepSummary:
    """What :func:`run_sweep` did.

    Attributes
    ----------
    directory : pathlib.Path
    runs : list of str
        Run ids of the grid, in order.
    computed : list of str
        Runs computed by this call.
    skipped : list of str
        Runs found complete (or failed) and not redone.
    failed : list of str
        Runs of the grid whose result is ``failed`` (computed now or before).
    damaged : list of pathlib.Path
        Result files that could not be read (each was named in a warning).
    claimed : dict of str to str
        Runs left to another sweep on the same directory, which was computing them (run id ->
        its holder, ``host:pid``); not computed here.
    """

    directory: Path
    runs: list[str]
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    damaged: list[Path] = field(default_factory=list)
    claimed: dict[str, str] = field(default_factory=dict)


def _model_key(model: str | None) -> str:
    """File-name-safe name of a model: its last path component and a hash of the whole path."""
    if model is None:
        return "default"
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(model).name or "model")[:40]
    return f"{stem}-{_hash(model)[:8]}"


def _environment(model) -> dict[str, Any]:
    import transformers  # loaded by the model anyway; not at import time, which the CLI keeps short

    env = {"llmrank_graph": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
           "python": platform.python_version(), "device": str(next(model.parameters()).device),
           "threads": torch.get_num_threads()}
    try:
        env["lm_eval"] = version("lm_eval")
    except PackageNotFoundError:
        pass
    return env


# ---------------------------------------------------------------------------- what a model's runs share
@dataclass
class _ModelContext:
    """What the runs of one model share: loaded once, calibrated once, evaluated dense once."""

    model: Any
    tokenizer: Any
    load_seconds: float
    stats: ActivationStats | None = None
    calibrate_seconds: float = 0.0
    calibration_reused: bool = False
    eval_ids: torch.Tensor | None = None
    calibration_ids: torch.Tensor | None = None
    dense: dict | None = None


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _calibration(ctx: _ModelContext, directory: Path, run: RunConfig, progress: bool) -> None:
    cal = run.calibration
    path = directory / CALIBRATION_DIR / f"{_model_key(run.model)}-{cal.key}.safetensors"
    if path.is_file():
        try:
            stats = ActivationStats.load(path)
            stats.check_model(ctx.model)
        except (FileFormatError, InvalidArgumentError) as e:
            logger.warning("calibration file %s is damaged or does not fit the model (%s); calibrating again", path, e)
        else:
            ctx.stats, ctx.calibration_reused = stats, True
            ctx.calibrate_seconds = float(stats.meta.get("seconds", 0.0))
            logger.info("reusing the calibration statistics in %s", path)
            return
    t = time.perf_counter()
    stats = calibrate(ctx.model, ctx.tokenizer, texts=cal.texts, n_samples=cal.n_samples, seq_len=cal.seq_len,
                      batch_size=cal.batch_size, second_moments=cal.second_moments, progress=progress,
                      attention=bool(cal.attention))
    seconds = time.perf_counter() - t
    stats.meta.update({"model": run.model, "setting": cal.to_dict(), "seconds": seconds})
    try:
        stats.save(path, overwrite=path.exists())
    except OutputExistsError:  # another sweep on this directory saved it first: same statistics
        pass
    ctx.stats, ctx.calibrate_seconds, ctx.calibration_reused = stats, seconds, False
    logger.info("calibrated in %.1f s (%d tokens); saved %s", seconds, stats.n_tokens, path)


def _calibration_ids(ctx: _ModelContext, cal: CalibrationSetting) -> torch.Tensor:
    """The calibration tokens (for sequential pruning), cut as :func:`~llmrank_graph.calibrate` cuts them."""
    if ctx.calibration_ids is None:
        ctx.calibration_ids = token_blocks(ctx.tokenizer, load_texts(cal.texts, split="calibration"), cal.n_samples,
                                           cal.seq_len)
    return ctx.calibration_ids


def _tasks_manager(directory: Path, grid: Grid):
    """Write the offline task if asked for, and check every task and its data: before any work."""
    ev = grid.evaluation
    check_lm_eval(ev.tasks)
    include = None
    if LASTWORD_TASK in ev.tasks:
        # Rewritten each time (it is deterministic): its YAML names the data by absolute path,
        # which changes when the results directory is moved.
        include = directory / TASKS_DIR / ev.key
        write_lastword_task(include, lastword_examples(ev.texts), overwrite=include.exists())
    return prepare_tasks(ev.tasks, include)


def _evaluate(model, ctx: _ModelContext, ev: EvaluationSetting, manager,
              progress: bool = False) -> tuple[float, dict, float, float]:
    """(perplexity, task metrics, seconds of perplexity, seconds of tasks)."""
    t = time.perf_counter()
    ppl = perplexity(model, input_ids=ctx.eval_ids, batch_size=ev.batch_size, progress=progress)
    t_ppl = time.perf_counter() - t
    metrics: dict = {}
    t = time.perf_counter()
    if ev.tasks:
        results = lm_eval(model, ctx.tokenizer, list(ev.tasks), batch_size=ev.task_batch_size, limit=ev.task_limit,
                          task_manager=manager)
        metrics = task_metrics(results)
    return ppl, metrics, t_ppl, time.perf_counter() - t


def _dense(ctx: _ModelContext, directory: Path, run: RunConfig, manager, progress: bool) -> dict:
    ev = run.evaluation
    path = directory / DENSE_DIR / f"{_model_key(run.model)}-{ev.key}.json"
    if path.is_file():
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            if record.get("format") != DENSE_FORMAT or record.get("evaluation") != run.to_dict()["evaluation"]:
                raise ValueError("not the dense evaluation of this setting")
            return record
        except (OSError, ValueError) as e:
            logger.warning("dense evaluation file %s is damaged (%s); evaluating the dense model again", path, e)
    ppl, metrics, t_ppl, t_tasks = _evaluate(ctx.model, ctx, ev, manager, progress)
    record = {"format": DENSE_FORMAT, "model": run.model, "evaluation": run.to_dict()["evaluation"],
              "perplexity": ppl, "tasks": metrics, "parameters": count_parameters(ctx.model),
              "seconds": t_ppl + t_tasks}
    write_json_atomic(path, record, overwrite=True)
    logger.info("dense model: perplexity %.2f%s", ppl, "".join(f", {t} {m}" for t, m in metrics.items()))
    return record


# ---------------------------------------------------------------------------- one run
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _execute(run: RunConfig, ctx: _ModelContext, directory: Path, grid: Grid, manager, device) -> dict:
    """Prune a copy of the dense model, evaluate it, and return the run's record (not yet written)."""
    ev = run.evaluation
    _seed_everything(run.seed)
    record: dict[str, Any] = {
        "format": RUN_FORMAT, "run_id": run.run_id, "status": "complete", "error": None, "config": run.to_dict(),
        "dense_perplexity": ctx.dense["perplexity"], "dense_tasks": ctx.dense["tasks"],
        "shared_times": {"load": ctx.load_seconds, "calibrate": ctx.calibrate_seconds,
                         "dense_evaluation": ctx.dense["seconds"]},
        "calibration_reused": ctx.calibration_reused, "seed": run.seed, "environment": _environment(ctx.model),
    }
    t = time.perf_counter()
    model = copy.deepcopy(ctx.model)
    extra = {}
    if dict(run.params).get("sequential"):  # layer by layer, on the calibration tokens
        extra = {"input_ids": _calibration_ids(ctx, run.calibration), "device": device}
    try:
        res = prune_model(model, ctx.stats, method=run.method, amount=run.amount, allocation=run.allocation,
                          how=run.how, mode=run.mode, **dict(run.params), **extra)
    except LLMRankGraphError as e:  # refused or failed by the library (no convergence, empty layer...)
        logger.warning("run %s (%s, %s, %g) failed: %s", run.run_id, run.label, run.allocation, run.amount, e)
        record.update(status="failed", error=f"{type(e).__name__}: {e}", times={"prune": time.perf_counter() - t},
                      finished_at=_now())
        return record
    times = {"prune": time.perf_counter() - t}
    pruned = res.model
    ppl, metrics, times["perplexity"], times["tasks"] = _evaluate(pruned, ctx, ev, manager)
    t = time.perf_counter()
    tp = compare_throughput(ctx.model, pruned, ctx.eval_ids[:ev.throughput_batch], rounds=ev.throughput_rounds)
    times["throughput"] = time.perf_counter() - t
    t = time.perf_counter()
    files = save_outputs(res, run, directory, grid)
    times["save"] = time.perf_counter() - t
    record.update({
        "parameters": {"dense": ctx.dense["parameters"], "pruned": count_parameters(pruned)},
        "neurons": neuron_counts(res.masks), **head_counts(res.head_mask, ctx.model), "perplexity": ppl,
        "tasks": metrics,
        "throughput": {**tp, "tokens": int(ctx.eval_ids[:ev.throughput_batch].numel()),
                       "rounds": ev.throughput_rounds},
        "times": times, "score_quantiles": score_quantiles(res.scores), "files": files, "finished_at": _now(),
    })
    return record


# ---------------------------------------------------------------------------- the sweep
def _load_model(model_path: str | None, device):
    t = time.perf_counter()
    model, tok = load_model(model_path, device=device)
    if tok is None:
        raise MissingInputError(f"model {model_path or 'default'!r} has no tokenizer; a sweep needs one to read text")
    model.requires_grad_(False)
    return model, tok, time.perf_counter() - t


def _check_inputs(grid: Grid, todo: Sequence[RunConfig]) -> None:
    """Models (config against the weights' headers, a tokenizer, heads where runs prune them) and texts:
    checked before any work."""
    for m in dict.fromkeys(r.model for r in todo):
        source = check_model_path(m, arg="models")
        if not source.has_tokenizer:
            raise MissingInputError(f"model {m!r} has no tokenizer; a sweep needs one to read text")
        check_attention_support(source, [r.target for r in todo if r.model == m])
    if todo:
        load_texts(grid.calibration.texts, split="calibration")
        load_texts(grid.evaluation.texts, split="evaluation")


@dataclass
class _Plan:
    """A sweep once every check has passed: what is done, what is left, where it goes."""

    grid: Grid
    directory: Path
    summary: SweepSummary
    found: dict
    damaged_ids: set
    todo: list
    manager: Any
    device: Any
    wait: bool = False
    progress: bool = False  # bars for the shared stages (calibration, dense evaluation) under the sweep's


def _plan(grid: Grid, directory: Path, extend: bool, retry_failed: bool, device, wait: bool,
          progress: bool = False) -> _Plan:
    """Check everything that can be checked before any work, then write ``grid.json``."""
    grid_json, changed = _open_directory(directory, grid, extend)
    runs = grid.runs()
    found, damaged = _scan(directory)
    summary = SweepSummary(directory, [r.run_id for r in runs], damaged=damaged)
    todo = pending_runs(runs, found, retry_failed)
    _check_inputs(grid, todo)
    manager = _tasks_manager(directory, grid) if todo and grid.evaluation.tasks else None
    if changed:
        write_json_atomic(directory / GRID_FILE, grid_json, overwrite=(directory / GRID_FILE).exists())
    left = {r.run_id for r in todo}
    summary.skipped = [r.run_id for r in runs if r.run_id not in left]
    logger.info("%d runs in the grid: %d done, %d to run", len(runs), len(runs) - len(todo), len(todo))
    return _Plan(grid, directory, summary, found, {p.stem.rsplit("-", 1)[-1] for p in damaged}, todo, manager, device,
                 wait, progress)


def pending_runs(runs: Sequence[RunConfig], found: dict, retry_failed: bool = False) -> list[RunConfig]:
    """The runs of ``runs`` still to compute, given the results ``found`` (:func:`scan_results`).

    A run is done when its result is there, ``complete`` or (unless ``retry_failed``) ``failed``.
    """
    def done(r: RunConfig) -> bool:
        rec = found.get(r.run_id)
        return rec is not None and (rec[1]["status"] == "complete" or not retry_failed)

    return [r for r in runs if not done(r)]


def _run_one(plan: _Plan, run: RunConfig, ctx: _ModelContext) -> None:
    """One run: computed, its JSON written last, the tables updated."""
    t = time.perf_counter()
    record = _execute(run, ctx, plan.directory, plan.grid, plan.manager, plan.device)
    record["computed_by"] = {"host": socket.gethostname(), "pid": os.getpid()}
    path = plan.directory / RUNS_DIR / f"{run.stem}.json"
    try:
        write_json_atomic(path, record, overwrite=run.run_id in plan.damaged_ids or run.run_id in plan.found)
    except OutputExistsError:
        logger.info("run %s was completed meanwhile by another sweep on %s", run.run_id, plan.directory)
    plan.summary.computed.append(run.run_id)
    if record["status"] == "complete":
        logger.info("%s %s %s %s %g: perplexity %.2f (dense %.2f), %.2fx tokens/s, %.0f s",
                    run.label, run.allocation, run.how, run.mode, run.amount, record["perplexity"],
                    record["dense_perplexity"], record["throughput"]["speedup"], time.perf_counter() - t)
    _write_tables(plan.directory)


class _LazyContext:
    """A model's shared context, loaded when its first run is claimed (never, if others hold them all)."""

    def __init__(self, plan: _Plan, model_path: str | None):
        self.plan, self.model_path, self.ctx = plan, model_path, None

    def get(self, run: RunConfig) -> _ModelContext:
        if self.ctx is None:
            plan = self.plan
            model, tok, load_s = _load_model(self.model_path, plan.device)
            ctx = _ModelContext(model, tok, load_s)
            logger.info("loaded %s in %.1f s", self.model_path or "the embedded default model", load_s)
            ev = plan.grid.evaluation
            ctx.eval_ids = token_blocks(tok, load_texts(ev.texts, split="evaluation"), ev.n_samples, ev.seq_len)
            _calibration(ctx, plan.directory, run, plan.progress)
            ctx.dense = _dense(ctx, plan.directory, run, plan.manager, plan.progress)
            self.ctx = ctx
        return self.ctx


def _settled_elsewhere(plan: _Plan, run: RunConfig) -> bool:
    """Whether another sweep wrote ``run``'s result since the plan read the directory."""
    try:
        record = _read_record(plan.directory / RUNS_DIR / f"{run.stem}.json")
    except FileFormatError:  # absent or damaged: ours to compute
        return False
    seen = plan.found.get(run.run_id)
    return seen is None or record != seen[1]  # the record the plan saw is a failed run to retry


def _attempt(plan: _Plan, run: RunConfig, shared: _LazyContext) -> bool:
    """Claim ``run`` and compute it, then release it; False when another sweep holds it."""
    claim = RunClaim(plan.directory / RUNS_DIR / f"{run.stem}{CLAIM_SUFFIX}")
    holder = claim.acquire()
    if holder is not None:
        plan.summary.claimed[run.run_id] = str(holder)
        return False
    plan.summary.claimed.pop(run.run_id, None)
    with claim.held():
        if _settled_elsewhere(plan, run):  # checked under the claim: no other sweep is writing it now
            logger.info("run %s was finished meanwhile by another sweep on %s", run.run_id, plan.directory)
            plan.summary.skipped.append(run.run_id)
        else:
            _run_one(plan, run, shared.get(run))
    return True


def _run_model(plan: _Plan, model_path: str | None, runs: list[RunConfig], bar) -> None:
    """The runs of one model: loaded once, calibrated once, evaluated dense once; each run claimed first."""
    shared = _LazyContext(plan, model_path)
    pending = list(runs)
    while pending:
        left = []
        for run in pending:
            if bar is not None:
                bar.set_postfix_str(f"{run.label} {run.allocation} {run.amount:g}", refresh=True)
            if not _attempt(plan, run, shared):
                left.append(run)
            elif bar is not None:
                bar.update(1)
        pending = left
        if not pending or not plan.wait:
            break
        logger.info("waiting for %d run(s) that other sweeps are computing: %s", len(pending),
                    ", ".join(sorted(set(plan.summary.claimed[r.run_id] for r in pending))))
        time.sleep(CLAIM_POLL_SECONDS)


def _finish(plan: _Plan) -> SweepSummary:
    """The tables rewritten once more, and the summary's failed runs: computed now, before, or by other sweeps."""
    _write_tables(plan.directory)
    found, _ = _scan(plan.directory)
    summary = plan.summary
    summary.failed = [r for r in summary.runs if r in found and found[r][1]["status"] == "failed"]
    return summary


def _progress_bar(stack: contextlib.ExitStack, total: int, done: int):
    from tqdm.auto import tqdm  # only with progress=True
    from tqdm.contrib.logging import logging_redirect_tqdm

    stack.enter_context(logging_redirect_tqdm())  # log lines above the bar, not through it
    return stack.enter_context(tqdm(total=total, initial=done, desc="sweep", unit="run", dynamic_ncols=True))


@validated({"grid": InstanceOf(Grid, "a Grid"), "directory": _A_PATH, "extend": Boolean(),
            "retry_failed": Boolean(), "progress": Boolean(), "wait": Boolean()})
def run_sweep(grid: Grid, directory: str | os.PathLike, *, extend: bool = False, retry_failed: bool = False,
              device: str | None = None, progress: bool = False, wait: bool = False) -> SweepSummary:
    """Run every missing run of ``grid`` into ``directory`` and update ``results.csv``/``.parquet``.

    Everything that can be checked is checked before any work: the directory (a different
    grid is refused unless ``extend``), the models and texts, lm-eval and its task data.
    Then, model by model: the model is loaded once (not at all if all its runs are done), the
    calibration statistics are read from ``directory`` or computed once and saved there, the
    dense model is evaluated once, and each missing run prunes a copy, measures perplexity,
    the tasks, and tokens/s of dense and pruned side by side, and writes its JSON. Sweeps may
    share a directory: each run is computed once (see "Sharing a directory" above).

    Parameters
    ----------
    grid : Grid
    directory : str or path-like
        The results directory (created if missing).
    extend : bool
        Allow a directory that holds another grid's results; this grid's runs are added.
    retry_failed : bool
        Redo runs recorded as ``failed``.
    device : str, optional
        Where the models run (e.g. ``"cuda"``); default CPU. Not part of a run's identity.
    progress : bool
        Show a progress bar over the grid, with the time left, and bars for the calibration
        and the dense evaluation that the runs of a model share.
    wait : bool
        Wait for the runs other sweeps on ``directory`` are computing, rather than leave them.

    Returns
    -------
    SweepSummary

    Raises
    ------
    InvalidArgumentError
        ``directory`` holds another grid and ``extend`` is False (the message says how they differ).
    OutputExistsError
        ``directory`` is a file, or a non-empty directory that is not a results directory.
    MissingInputError, MissingDependencyError
        A model, text, lm-eval or a task's data is missing (before any work).

    Example
    -------
    A random two-layer Llama with a word-level tokenizer, saved as a Hugging Face directory:

    >>> import pathlib, tempfile
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> from llmrank_graph.models import TOY_WORDS, toy_model_directory
    >>> _ = toy_model_directory(tmp / "model")    # a random 2-layer Llama and an 8-word tokenizer
    >>> _ = (tmp / "text.txt").write_text(" ".join(TOY_WORDS[2:] * 100))
    >>> small = {"texts": str(tmp / "text.txt"), "n_samples": 2, "seq_len": 8}
    >>> grid = Grid(models=[str(tmp / "model")], methods=["activation", "magnitude"], amounts=[0.25],
    ...             calibration=small, evaluation={**small, "throughput_rounds": 1})
    >>> len(run_sweep(grid, tmp / "results").computed)
    2
    >>> run_sweep(grid, tmp / "results").computed     # a rerun resumes: nothing left to do
    []
    >>> read_results(tmp / "results")[["method", "amount", "status"]]
           method  amount    status
    0  activation    0.25  complete
    1   magnitude    0.25  complete
    >>> import shutil; shutil.rmtree(tmp)
    """
    directory = Path(directory).expanduser()
    plan = _plan(grid, directory, extend, retry_failed, device, wait, progress)
    with contextlib.ExitStack() as stack:
        bar = _progress_bar(stack, len(plan.summary.runs), len(plan.summary.skipped)) if progress else None
        for model_path in grid.models:
            mine = [r for r in plan.todo if r.model == model_path]
            if mine:
                _run_model(plan, model_path, mine, bar)
    return _finish(plan)
