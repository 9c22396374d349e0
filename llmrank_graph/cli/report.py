"""``llmrank-graph report DIR``: plots and one self-contained HTML page from a sweep's results."""

from __future__ import annotations

from pathlib import Path

from ..errors import OutputExistsError
from ..experiments.report import REPORT_HTML, write_report


def add_parser(sub) -> None:
    """Add this command to the ``llmrank-graph`` subparsers."""
    p = sub.add_parser("report", help="plots and a self-contained HTML page from a sweep results directory",
                       description="Write PNG plots and one HTML page (images embedded, nothing fetched from "
                                   "elsewhere) for a directory written by `llmrank-graph sweep`.")
    p.add_argument("directory", metavar="DIR", help="a results directory written by `llmrank-graph sweep --out DIR`")
    p.add_argument("--out", metavar="DIR", default=None,
                   help=f"where to write the PNGs and {REPORT_HTML} (default: DIR itself)")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.out is not None and Path(args.out).expanduser().exists() and not Path(args.out).expanduser().is_dir():
        # checked here, in the option's name; write_report names its parameter `out`
        raise OutputExistsError(f"`--out` {args.out!r} exists and is not a directory")
    path = write_report(args.directory, args.out)
    print(f"wrote {path} (open it in a browser; it works offline) and the PNGs beside it")
    return 0
