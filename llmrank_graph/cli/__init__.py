"""Command line: ``llmrank-graph export | rank | inspect | prune | sweep | report | backends``.

Examples::

    llmrank-graph prune                                  # embedded SmolLM2-135M, 30% of MLP neurons
    llmrank-graph export --out smollm2-graph --calibrate
    llmrank-graph rank --calibrate --out scores.parquet  # ranks neurons as `prune --method pagerank`
    llmrank-graph rank --graph smollm2-graph --direction forward --out scores.parquet

Every default and choice list is read from the library (``DEFAULT_EXPORT`` for ``export``, the
``pagerank`` scorer's ``PAGERANK_EXPORT`` and ``PAGERANK_CENTRALITY`` for ``rank``,
``prune_model`` and the registries for ``prune``).
"""

from __future__ import annotations

import argparse
import logging
import sys

from ..errors import LLMRankGraphError
from . import backends, export, inspect, prune, rank, report, sweep

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
    """Run the command line; returns the exit status (2 for a usage error or a refused argument)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse has printed the usage error (or --help / --version)
        return 0 if e.code is None else e.code if isinstance(e.code, int) else 2
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.verbose == 0:
        logging.getLogger("llmrank_graph").setLevel(logging.INFO)
    try:
        return args.func(args)
    except (LLMRankGraphError, ValueError, FileNotFoundError, FileExistsError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
