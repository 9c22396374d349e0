"""Command line: ``llmrank-graph export | rank | inspect | prune | sweep | report | backends``.

Examples::

    llmrank-graph prune                                  # embedded SmolLM2-135M, 30% of MLP neurons
    llmrank-graph export --out smollm2-graph --calibrate
    llmrank-graph rank --calibrate --out scores.parquet  # ranks neurons as `prune --method pagerank`
    llmrank-graph rank --graph smollm2-graph --direction forward --out scores.parquet

Every default and choice list is read from the library (``DEFAULT_EXPORT`` for ``export``, the
``pagerank`` scorer's ``PAGERANK_EXPORT`` and ``PAGERANK_CENTRALITY`` for ``rank``,
``prune_model`` and the registries for ``prune``).

One module per command (``add_parser`` and ``run``) and ``_common``, what they share. The top
stage: it may import every other stage; none imports it. Logging handlers are configured here
only (:func:`main`): the library never changes process-wide state.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback

from ..errors import FAILURE_EXIT_STATUS, LLMRankGraphError
from . import backends, export, inspect, prune, rank, report, sweep

#: Exit status after Ctrl-C (128 + SIGINT), as a shell reports it.
INTERRUPTED_EXIT_STATUS = 130

#: The subcommands, in the order ``--help`` lists them. Each module has ``add_parser(sub)``,
#: which registers its arguments and sets ``func`` to its ``run(args) -> int``.
COMMANDS = (export, rank, inspect, prune, sweep, report, backends)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser. Every default and every ``choices=`` is read from the library."""
    from .._version import __version__

    parser = argparse.ArgumentParser(prog="llmrank-graph", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v info, -vv debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit status.

    One error surface: every error the library raises on purpose
    (:class:`~llmrank_graph.errors.LLMRankGraphError`) is printed as ``error: ...``, and the
    status is its ``exit_status``: 2 for a usage or input error (as argparse's own), 1 for a
    failure during the work (:class:`~llmrank_graph.errors.WorkFailedError`). A write that
    the system refuses midway (disk full, ``ulimit -f``, a read-only target) reaches here as
    :class:`~llmrank_graph.errors.WriteFailedError` from the atomic writers, already undone, and
    prints ``error: could not write OUT: REASON`` (OUT as given to ``--out``); any other
    refusal of the system (permission denied on a read) and running out of memory print
    ``error: ...`` and exit 1; Ctrl-C exits 130, a SIGTERM during a write 143. Anything else is
    a bug: its traceback is printed and the status is 1. ``-vv`` prints the traceback of every
    error.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse has printed the usage error (or --help / --version)
        return 0 if e.code is None else e.code if isinstance(e.code, int) else 2
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.verbose == 0:
        logging.getLogger("llmrank_graph").setLevel(logging.INFO)
    debug = args.verbose >= 2
    try:
        return args.func(args)
    except LLMRankGraphError as e:
        return _error(str(e), e.exit_status, debug)
    except KeyboardInterrupt:
        return _error("interrupted", INTERRUPTED_EXIT_STATUS, debug)
    except OSError as e:  # not a bug: the system refused (ENOSPC, EACCES, EIO ...)
        return _error(str(e), FAILURE_EXIT_STATUS, debug)
    except MemoryError as e:
        return _error(f"out of memory{f' ({e})' if str(e) else ''}", FAILURE_EXIT_STATUS, debug)
    except Exception as e:
        if _out_of_gpu_memory(e):
            return _error(f"out of GPU memory: {e}", FAILURE_EXIT_STATUS, debug)
        traceback.print_exc()
        print(f"error: {type(e).__name__}: {e}\nThis is a bug in llmrank_graph; please report it with the "
              "traceback above.", file=sys.stderr)
        return FAILURE_EXIT_STATUS


def _error(message: str, status: int, traceback_too: bool) -> int:
    if traceback_too:
        traceback.print_exc()
    print(f"error: {message}", file=sys.stderr)
    return status


def _out_of_gpu_memory(e: Exception) -> bool:
    import torch

    return isinstance(e, torch.cuda.OutOfMemoryError)


if __name__ == "__main__":
    sys.exit(main())
