"""What the commands share: the model, calibration and graph options, loading, and the checks
every command runs before it loads anything (:func:`preflight`).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from ..base.checks import check_positive_int, format_allowed
from ..base.files import check_output_path
from ..centrality import get_backend
from ..data.calibration import calibrate
from ..errors import (
    FileFormatError,
    InvalidArgumentError,
    MissingInputError,
    OutputExistsError,
)
from ..graph.export import (
    CALIBRATED_EXPORT,
    DEFAULT_EXPORT,
    GATES,
    MODES,
    WEIGHTINGS,
    ExportOptions,
    default_export,
)
from ..graph.meta import GRAPH_FORMAT, check_meta, read_format
from ..models import loading
from ..scoring.graph import PAGERANK_WITHOUT_STATS
from ._inputs import check_default_cache
from ._words import _relabel

logger = logging.getLogger("llmrank_graph.cli")

#: The graph options, as the CLI names them (``--mode`` ... ``--keep``), in ExportOptions order.
_EXPORT_FIELDS = tuple(DEFAULT_EXPORT.as_dict())


def _default(fn, name: str):
    """Default of parameter ``name`` of the library callable ``fn``: the CLI writes none of its own."""
    return inspect.signature(fn).parameters[name].default


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="PATH", default=None,
                   help="local Hugging Face model directory or .gguf file "
                        "(default: the embedded SmolLM2-135M-Instruct)")


def _add_calibration(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("calibration")
    g.add_argument("--texts", metavar="SOURCE", default=None,
                   help=".txt/.jsonl file or datasets name (default: embedded Wikipedia calibration articles)")
    g.add_argument("--n-samples", type=int, default=_default(calibrate, "n_samples"),
                   help="calibration blocks (default %(default)s)")
    g.add_argument("--seq-len", type=int, default=_default(calibrate, "seq_len"),
                   help="tokens per block (default %(default)s)")
    g.add_argument("--batch-size", type=int, default=_default(calibrate, "batch_size"),
                   help="(default %(default)s)")


def _add_graph_options(p: argparse.ArgumentParser, defaults: ExportOptions, *, given_only: bool = False,
                       weighting_by_stats: bool = False) -> None:
    """``--mode`` ... ``--keep`` with the defaults of ``defaults``.

    With ``given_only`` every option defaults to None, so the command can tell which ones were
    typed (:func:`_given_export`); the help still shows ``defaults``, and what a default that
    needs calibration statistics falls back to. With ``weighting_by_stats`` only ``--weighting``
    does: its default is :func:`~llmrank_graph.graph.export.default_export`'s, which depends on
    ``--calibrate``.
    """
    d = {k: (None if given_only else v) for k, v in defaults.as_dict().items()}
    if weighting_by_stats:
        d["weighting"] = None
    g = p.add_argument_group("graph", "how the whole-MLP graph is exported (llmrank_graph.ExportOptions)")
    g.add_argument("--mode", choices=MODES, default=d["mode"], help=f"(default: {defaults.mode})")
    g.add_argument("--gate", choices=GATES, default=d["gate"],
                   help=f"input edges of a gated MLP (default: {defaults.gate})")
    g.add_argument("--residual", type=float, default=d["residual"],
                   help=f"weight of skip edges H_l -> H_l+1, 0 for none (default: {defaults.residual:g})")
    fallback = (f"; {PAGERANK_WITHOUT_STATS['weighting']} without calibration statistics"
                if given_only and defaults.needs_stats else "")
    default = f"{defaults.weighting}{fallback}"
    if weighting_by_stats:
        default = (f"{CALIBRATED_EXPORT.weighting} with --calibrate, the pagerank scorer's; "
                   f"{DEFAULT_EXPORT.weighting} without")
    g.add_argument("--weighting", choices=WEIGHTINGS, default=d["weighting"], help=f"edge weights (default: {default})")
    g.add_argument("--keep", type=_keep, default=d["keep"],
                   help="sparsify: int k = top-k in-edges per node, float q = fraction kept "
                        f"(default: {'keep every edge' if defaults.keep is None else defaults.keep})")


def _add_attention(p: argparse.ArgumentParser, also: str = "") -> None:
    """``--attention``: the graph gets one node per attention head (``ExportOptions(attention=True)``)."""
    p.add_argument("--attention", action="store_true",
                   help="add one node per attention head between the residual stream and each MLP (--mode chained; "
                        f"with --calibrate, calibrates the attention too){also}")


def export_options(args, typed: Mapping) -> ExportOptions:
    """The graph a command exports from ``--model``: ``default_export(--calibrate)`` with the typed graph
    options ``typed`` (:func:`_given_export`) and ``--attention``, checked in the options' words."""
    typed = {**typed, **({"attention": True} if args.attention else {})}
    return _relabel({**GRAPH_OPTIONS, "attention": "--attention"}, default_export(args.calibrate).replace, **typed)


def _keep(s: str):
    try:
        return int(s)
    except ValueError:
        return float(s)


def _given_export(args) -> dict:
    """The graph options typed on the command line (those whose argparse default is None)."""
    return {k: getattr(args, k) for k in _EXPORT_FIELDS if getattr(args, k) is not None}


def warn_pagerank_departures(graph, how: str, typed=()) -> None:
    """Say, as a warning, where PageRank by name on ``graph`` is not the ``pagerank`` scorer's, and what is used.

    ``rank`` and ``inspect`` take the scorer's defaults; a graph without calibration
    statistics, or exported with other options, cannot give them all
    (:func:`~llmrank_graph.analysis.scores.pagerank_departures`). Options in ``typed`` were
    chosen on the command line and are not reported. ``how`` says how to get the scorer's
    ranking.
    """
    from ..analysis.scores import describe_departures, pagerank_departures

    departures = {k: v for k, v in pagerank_departures(graph).items() if k not in typed}
    if departures:
        logger.warning("%s (%s to rank as `prune --method pagerank` does)", describe_departures(departures), how)


# ---------------------------------------------------------------------------- checks before any work
#: The graph options' parameter names -> their options, for :func:`_relabel`.
GRAPH_OPTIONS = {k: f"--{k}" for k in _EXPORT_FIELDS}
#: The graph readers' parameter names -> ``--graph``, for :func:`_relabel`.
GRAPH_INPUT_OPTIONS = {"path": "--graph", "directory": "--graph"}


def _is_graph_directory(path: Path) -> bool:
    return read_format(path) == GRAPH_FORMAT


def _is_saved_model(path: Path) -> bool:
    from ..models.saved_format import is_saved_pruned

    return is_saved_pruned(path)


#: What ``preflight(owner=...)`` accepts: the writer whose directories ``--overwrite`` may replace
#: without ``--force``, and how to recognise one.
OWNERS: dict[str, tuple[str, Callable[[Path], bool]]] = {
    "graph": ("a graph directory written by `llmrank-graph export` (no meta.json saying so)", _is_graph_directory),
    "model": ("a model directory written by `llmrank-graph prune` (its config.json has no 'llmrank_graph' entry)",
              _is_saved_model),
}


def no_tokenizer_error(args, alternative: str) -> InvalidArgumentError:
    """The one message, in every command, for a model without a tokenizer asked to read text.

    ``alternative`` says how to run the command without text (or is empty).
    """
    where = f"; copy the tokenizer files of its base model into {str(args.model)!r} to add one" if args.model else ""
    return InvalidArgumentError(f"the model has no tokenizer; pass --texts with a model that has one (the text is "
                                f"read through the model's tokenizer{where})"
                                + (f", or {alternative}" if alternative else ""))


@dataclass(frozen=True)
class Checked:
    """What :func:`preflight` checked: ``--out`` (``~`` expanded) and what ``--model`` names.

    Attributes
    ----------
    out : pathlib.Path or None
        None when the command writes no ``--out``.
    source : ModelSource or None
        :func:`llmrank_graph.models.loading.check_model_path`'s answer; None without a model.
    """

    out: Path | None
    source: loading.ModelSource | None


def preflight(args, *, out_kind: str | None = None, suffixes: tuple[str, ...] = (), owner: str | None = None,
              model: bool = True, reads_text: bool = False, no_text: str = "") -> Checked:
    """Check every argument of a command that can be checked without loading anything.

    Called first by each command's ``run``: a mistake costs a fraction of a second, not
    minutes of loading and calibration. Reads only ``config.json`` and safetensors headers
    (no text either: :func:`read_texts` reads it, once the command has made its own checks).

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments. Checked when present: ``--out`` (with ``--overwrite`` and
        ``--force``), ``--model``, ``--graph``, ``--texts``, ``--eval-texts``,
        ``--n-samples``, ``--seq-len``, ``--batch-size``, ``--eval-samples``, ``--threads``. The embedded
        model's cache directory must be writable when the model is not in it yet
        (:func:`check_default_cache`).
    out_kind : {'file', 'directory'}, optional
        What the command writes at ``--out``: its parent must be a writable directory, and it
        must not exist (unless ``--overwrite``) nor be of the other kind (even then).
    suffixes : tuple of str
        Allowed suffixes of ``--out`` (any when empty).
    owner : {'graph', 'model'}, optional
        ``--overwrite`` replaces only a directory that this writer wrote (:data:`OWNERS`),
        unless ``--force``.
    model : bool
        Whether ``--model`` is used (``rank --graph`` reads no model).
    reads_text : bool
        Whether the command will calibrate (or evaluate): the model must have a tokenizer.
    no_text : str
        How to run the command without text, for the no-tokenizer message.

    Returns
    -------
    Checked

    Raises
    ------
    LLMRankGraphError
        A subclass naming the option; see :mod:`llmrank_graph.errors`.
    """
    from ..data.texts import check_text_source

    given = vars(args)
    out = source = None
    if out_kind is not None:
        out = _check_output(args, out_kind, suffixes, owner)
    for name in ("n_samples", "seq_len", "batch_size", "eval_samples", "threads"):
        if given.get(name) is not None:
            check_positive_int("--" + name.replace("_", "-"), given[name])
    if given.get("texts") is not None or reads_text:
        check_text_source(given.get("texts"), arg="--texts")
    if given.get("eval_texts") is not None:
        check_text_source(given["eval_texts"], arg="--eval-texts")
    if given.get("graph") is not None:
        _check_graph_input(given["graph"])
    if model:
        source = loading.check_model_path(given.get("model"), arg="--model")
        if reads_text and not source.has_tokenizer:
            raise no_tokenizer_error(args, no_text)
        if source.kind == "default":
            check_default_cache()
    return Checked(out, source)


def _check_graph_input(path) -> None:
    """``--graph`` names a graph directory whose whole meta.json is sound (the tables are read later)."""
    p = Path(path).expanduser()
    where = f"`--graph` {str(p)!r}"
    if not p.is_dir():
        raise MissingInputError(f"{where} must be a graph directory written by `llmrank-graph export`; "
                                f"it {'is not a directory' if p.exists() else 'does not exist'}")
    try:
        meta = json.loads((p / "meta.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileFormatError(f"{where} is not a graph directory written by `llmrank-graph export`: it has no "
                              "meta.json") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise FileFormatError(f"{where}: meta.json is damaged ({e})") from None
    check_meta(meta, where)
    if meta["format"] != GRAPH_FORMAT:
        raise FileFormatError(f"{where}: meta.json is not an llmrank_graph graph (format={meta['format']!r})")


def check_attention(args, source: loading.ModelSource | None, command: str) -> None:
    """``--attention``: refused before anything is loaded where it cannot be honoured.

    ``source`` is :func:`preflight`'s; a model whose family has no attention-head support is
    refused from its config.json (the embedded model has heads; a GGUF file is checked once
    loaded). ``command`` names the command in the advice.
    """
    from ..models.architectures import UnsupportedArchitectureError
    from ..models.attention import attention_spec

    if args.calibrate and "attention" not in inspect.signature(calibrate).parameters:
        raise InvalidArgumentError("--attention with --calibrate needs calibration statistics of the attention heads, "
                                   "which this version of llmrank_graph.calibrate does not record; run "
                                   f"`{command}` without --calibrate (and with --weighting "
                                   f"{PAGERANK_WITHOUT_STATS['weighting']})")
    config = source.path / "config.json" if source is not None and source.path is not None else None
    if config is not None and config.is_file():
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
        if model_type is not None:
            try:
                attention_spec(model_type)
            except UnsupportedArchitectureError as e:
                raise UnsupportedArchitectureError(f"`--attention` adds the attention heads of model "
                                                   f"{str(source.path)!r}, but {e}") from None


def _check_output(args, kind: str, suffixes: tuple[str, ...], owner: str | None) -> Path:
    out, overwrite, force = args.out, args.overwrite, vars(args).get("force", False)
    if suffixes and Path(out).suffix.lower() not in suffixes:
        raise InvalidArgumentError(f"`--out` must end in {' or '.join(suffixes)}; got {os.fspath(out)!r}")
    target = check_output_path(out, kind=kind, overwrite=overwrite, arg="--out")
    if owner is not None and overwrite and not force and target.is_dir():
        what, owned = OWNERS[owner]
        if not owned(target):
            raise OutputExistsError(f"`--out` {str(target)!r} exists and is not {what}; refusing to replace it "
                                    "without --force")
    return target


def scorer_params(method: str, items: list[str], *, mode: str, prune_hidden: bool,
                  taken: Mapping[str, str] | None = None) -> dict:
    """``--param KEY=VALUE`` items as the keyword arguments of scorer ``method``, checked.

    Each item must be ``KEY=VALUE`` with a key the scorer has (not one of its own options,
    such as ``--mode``, nor one the command's library call takes for itself: ``taken``, name
    -> what the key means there), given once. Values are read as int, float, true/false/none
    or str, and checked against the scorer's declared constraints
    (:meth:`~llmrank_graph.scoring.registry.Scorer.check_params`), so that a bad value is
    refused now, in the option's words (``--param max_iter``).

    Raises
    ------
    InvalidArgumentError, InvalidArgumentTypeError
        Naming ``--param`` and the key; unknown keys list the scorer's parameters.
    """
    from ..scoring.registry import scorer_class

    cls = _relabel({"method": "--method"}, scorer_class, method)
    options = {"mode": "--mode", "prune_hidden": "--prune-hidden", "graph": None}
    taken = dict(taken or {})
    allowed = [k for k in cls.param_names() if k not in options]
    params: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidArgumentError(f"`--param` must be KEY=VALUE; got {item!r}")
        if key in options:
            instead = f"use {options[key]}" if options[key] else "it cannot be set from the command line"
            raise InvalidArgumentError(f"`--param` {key!r} is not a scorer parameter here: {instead}")
        if key not in allowed:
            has = f"its parameters are {format_allowed(allowed)}" if allowed else "it has no parameters"
            raise InvalidArgumentError(f"`--param` {key!r} is not a parameter of scorer {method!r}; {has}")
        if key in taken:
            raise InvalidArgumentError(f"`--param` {key!r} of scorer {method!r} cannot be set from this command: "
                                       f"{taken[key]}")
        if key in params:
            raise InvalidArgumentError(f"`--param` {key!r} is given twice")
        params[key] = param_value(value)
    _relabel(scorer_words(method), cls.check_params, mode=mode, prune_hidden=prune_hidden, **params)
    return params


def scorer_words(method: str) -> dict[str, str]:
    """The parameters of scorer ``method`` -> how the command line sets them (``--param max_iter``, ``--mode``).

    >>> scorer_words("wpr")
    {'gamma': '--param gamma', 'theta': '--param theta', 'mode': '--mode', 'prune_hidden': '--prune-hidden'}
    """
    from ..scoring.registry import scorer_class

    options = {"mode": "--mode", "prune_hidden": "--prune-hidden"}
    names = _relabel({"method": "--method"}, scorer_class, method).param_names()
    return {k: options.get(k, f"--param {k}") for k in names if k != "graph"}


def check_backend(name: str, option: str) -> None:
    """Refuse, before any work, a centrality backend that cannot run here (``'auto'`` always can).

    The backend's own answer (:meth:`~llmrank_graph.centrality.backends.Backend.require`): a
    missing package is named with the extra that installs it.
    """
    if name != "auto":
        _relabel({"backend": option}, get_backend, name).require()


def param_value(text: str):
    """A ``--param`` value: int, float, true/false/none (any case), else the string.

    >>> param_value("3"), param_value("0.5"), param_value("TRUE"), param_value("none"), param_value("abs")
    (3, 0.5, True, None, 'abs')
    """
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


#: The calibration options: the parameters of llmrank_graph.calibrate -> the options.
CALIBRATION_OPTIONS: Mapping[str, str] = MappingProxyType(
    {"texts": "--texts", "n_samples": "--n-samples", "seq_len": "--seq-len", "batch_size": "--batch-size"})


def _load(args):
    t = time.perf_counter()
    model, tok = _relabel({"path": "--model"}, loading.load_model, args.model)
    logger.info("loaded %s in %.1f s", args.model or "the embedded SmolLM2-135M-Instruct", time.perf_counter() - t)
    return model, tok, time.perf_counter() - t


def _calibrate(args, model, tok, texts: list[str], no_text: str = "", *, second_moments: bool = False,
               attention: bool = False, scorer=None):
    """Calibrate on ``texts`` (:func:`~llmrank_graph.cli._inputs.read_texts` has read ``--texts``).

    ``attention``: also the attention output projections (``calibrate(..., attention=True)``);
    ``scorer``: also what it reads (the loss gradients, the residual stream: its
    ``needs_gradients()`` and ``needs_residual()``).
    """
    if tok is None:  # preflight refuses these; a loader may still come back without one
        raise no_tokenizer_error(args, no_text)
    extra = {} if scorer is None else {"gradients": scorer.needs_gradients(), "residual": scorer.needs_residual()}
    return _relabel(CALIBRATION_OPTIONS, calibrate, model, tok, texts=texts, n_samples=args.n_samples,
                    seq_len=args.seq_len, batch_size=args.batch_size, progress=True, second_moments=second_moments,
                    attention=attention, **extra)


# ---------------------------------------------------------------------------- threads
def _add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="threads of torch and of the numba kernels in this process (default: $OMP_NUM_THREADS "
                        "when set, else the physical cores this process may use: its CPU affinity, one thread a "
                        "core, at most the cgroup CPU quota)")


def _cpu_topology(cpus: set[int]) -> set[tuple[str, str]] | None:
    """(package, core) of each CPU in ``cpus``: from /sys, else /proc/cpuinfo; None when neither says."""
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(),
                       (topology / "core_id").read_text().strip()))
        except OSError:
            break
    else:
        return cores or None
    try:
        blocks = Path("/proc/cpuinfo").read_text().split("\n\n")
    except OSError:
        return None
    cores = set()
    for block in blocks:
        fields = dict((k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in block.splitlines()))
        if "processor" in fields and "core id" in fields and int(fields["processor"]) in cpus:
            cores.add((fields.get("physical id", "0"), fields["core id"]))
    return cores or None


def _quota_v2(directory: Path) -> float | None:
    quota, period = (directory / "cpu.max").read_text().split()  # "max 100000" or "200000 100000"
    return None if quota == "max" else int(quota) / int(period)


def _quota_v1(directory: Path) -> float | None:
    quota = int((directory / "cpu.cfs_quota_us").read_text())
    return quota / int((directory / "cpu.cfs_period_us").read_text()) if quota > 0 else None


def _cgroup_cpus() -> float | None:
    """CPUs the cgroup quota of this process allows (quota / period, v2 or v1); None without a quota."""
    try:
        groups = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in groups:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            root, read = Path("/sys/fs/cgroup"), _quota_v2
        elif "cpu" in controllers.split(","):
            root, read = Path("/sys/fs/cgroup") / controllers, _quota_v1
        else:
            continue
        for directory in (root / path.lstrip("/"), root):
            try:
                cpus = read(directory)
            except (OSError, ValueError):
                continue
            if cpus is not None and cpus > 0:
                return cpus
    return None


def physical_cores() -> int:
    """The physical cores this process may use: one thread a core, never oversubscribed.

    The CPUs of the process's affinity (``os.sched_getaffinity``), counted once per physical
    core (the distinct (package, core id) pairs of ``/sys/devices/system/cpu/cpuN/topology``, or
    of ``/proc/cpuinfo``), at most the cgroup CPU quota rounded up (``cpu.max``, or
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``). Where none of these exists (not Linux):
    ``psutil.cpu_count(logical=False)`` if psutil is installed, else ``os.cpu_count()``.
    """
    try:
        cpus = set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = None
    cores = _cpu_topology(cpus) if cpus else None
    if cores is not None:
        n = len(cores)
    elif cpus:
        n = len(cpus)
    else:
        try:
            import psutil

            n = psutil.cpu_count(logical=False) or os.cpu_count() or 1
        except ImportError:
            n = os.cpu_count() or 1
    quota = _cgroup_cpus()
    if quota is not None:
        n = min(n, math.ceil(quota))
    return max(1, n)


def default_threads() -> tuple[int, str]:
    """The thread count a command runs with when ``--threads`` is not given, and where it comes from."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) >= 1:
        return int(env), "OMP_NUM_THREADS"
    return physical_cores(), "physical cores"


@contextlib.contextmanager
def process_threads(threads: int | None) -> Iterator[tuple[int, str]]:
    """Run the block on ``threads`` threads (None: :func:`default_threads`): torch's and the numba kernels'.

    The command line alone sets torch's process-wide count (the library never does); the
    kernels take it through :func:`llmrank_graph.kernels.options`. Torch's previous count is
    put back at the end, so a command run in-process (the tests) leaves it as it was.

    Yields
    ------
    (int, str)
        The count, and where it comes from (``--threads``, ``OMP_NUM_THREADS`` or ``physical cores``).
    """
    import torch

    from ..kernels import options

    n, origin = (threads, "--threads") if threads is not None else default_threads()
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with options(threads=n):
            yield n, origin
    finally:
        torch.set_num_threads(previous)
