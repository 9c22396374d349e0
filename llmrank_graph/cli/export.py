"""``llmrank-graph export``: the whole MLP stack as a Parquet graph directory."""

from __future__ import annotations

from pathlib import Path
import time

from ..graph import DEFAULT_EXPORT, ExportOptions
from ._common import _EXPORT_FIELDS, _add_calibration, _add_graph_options, _add_model, _calibrate, _check_out, _load


def add_parser(sub) -> None:
    """Add this command to the ``llmrank-graph`` subparsers."""
    p = sub.add_parser("export", help="export the whole MLP stack as a Parquet graph")
    _add_model(p)
    p.add_argument("--out", required=True, metavar="DIR", help="directory for nodes.parquet, edges.parquet, meta.json")
    p.add_argument("--calibrate", action="store_true", help="fill node activations from calibration text")
    p.add_argument("--overwrite", action="store_true")
    _add_graph_options(p, DEFAULT_EXPORT)
    _add_calibration(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..graph import export_graph

    out = Path(args.out)
    _check_out(out, args.overwrite)
    options = ExportOptions(**{k: getattr(args, k) for k in _EXPORT_FIELDS})
    model, tok, _ = _load(args)
    stats = _calibrate(args, model, tok) if args.calibrate or options.needs_stats else None
    graph = export_graph(model, stats, **options.as_dict())
    t = time.perf_counter()
    graph.to_parquet(out, overwrite=args.overwrite, progress=True)
    print(f"{graph!r}\nwrote {out}/ (nodes.parquet, edges.parquet, meta.json) in {time.perf_counter() - t:.1f} s")
    return 0
