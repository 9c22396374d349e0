"""``llmrank-graph export``: the whole MLP stack as a Parquet graph directory, or a thresholded
subgraph as GraphML/GEXF for viewers (``--format``, :mod:`llmrank_graph.graph.viewer`);
``--attention`` adds the attention heads (:mod:`llmrank_graph.graph.heads`)."""

from __future__ import annotations

import time

from ..errors import InvalidArgumentError
from ..graph.export import DEFAULT_EXPORT, EXPORT_FORMATS
from ..graph.viewer import VIEW_EDGE_LIMIT, VIEW_FORMATS, to_networkx, write_viewer
from ..scoring.graph import PAGERANK_WITHOUT_STATS
from ._common import (
    GRAPH_INPUT_OPTIONS,
    _add_attention,
    _add_calibration,
    _add_graph_options,
    _add_model,
    _calibrate,
    _default,
    _given_export,
    _load,
    _relabel,
    check_attention,
    export_options,
    preflight,
)
from ._inputs import read_texts
from ._words import OUTPUT_OPTIONS


def add_parser(sub) -> None:
    """Add this command to the ``llmrank-graph`` subparsers."""
    p = sub.add_parser("export", help="export the whole MLP stack as a Parquet graph (or GraphML/GEXF for viewers)")
    _add_model(p)
    p.add_argument("--graph", metavar="DIR", default=None,
                   help="export a graph directory instead of a model (e.g. to GraphML/GEXF with its stored scores)")
    p.add_argument("--out", required=True, metavar="DIR|FILE",
                   help="directory for nodes.parquet, edges.parquet, meta.json; a .graphml/.gexf file with --format")
    p.add_argument("--format", default=EXPORT_FORMATS[0], choices=EXPORT_FORMATS,
                   help="parquet: the full graph; graphml/gexf: a thresholded subgraph for Gephi or Cytoscape "
                        "(default: %(default)s)")
    p.add_argument("--calibrate", action="store_true", help="fill node activations from calibration text")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it is a graph directory (or file)")
    p.add_argument("--force", action="store_true",
                   help="parquet: with --overwrite, replace --out even if it is not a graph; graphml/gexf: write more "
                        f"than {VIEW_EDGE_LIMIT:,} edges")
    g = p.add_argument_group("viewer thresholds",
                             "with --format graphml or gexf (llmrank_graph.graph.viewer.to_networkx)")
    g.add_argument("--top-nodes", type=int, default=None, metavar="K",
                   help=f"nodes kept per partition, by --score (default: {_default(to_networkx, 'top_nodes')})")
    g.add_argument("--top-edges", type=_top_edges, default=None, metavar="K|auto|all",
                   help="heaviest in-edges kept per node and block; auto: as many as fit the edge budget "
                        f"(default: {_default(to_networkx, 'top_edges')})")
    g.add_argument("--min-quantile", type=float, default=None, metavar="Q",
                   help="keep edges at or above this weight quantile, in [0, 1)")
    g.add_argument("--min-weight", type=float, default=None, metavar="W", help="keep edges of at least this weight")
    g.add_argument("--score", default=None, metavar="NAME",
                   help="ranks nodes for --top-nodes: a stored score column or a centrality (default: total strength)")
    _add_graph_options(p, DEFAULT_EXPORT, weighting_by_stats=True)
    _add_attention(p)
    _add_calibration(p)
    p.set_defaults(func=run)


def _top_edges(text: str):
    if text in ("auto", "all"):
        return text
    try:
        return int(text)
    except ValueError:
        raise InvalidArgumentError(f"`--top-edges` must be a positive int, 'auto' or 'all'; got {text!r}") from None


#: The viewer options -> the parameters of llmrank_graph.graph.viewer.to_networkx.
_VIEW_OPTIONS = {"top_nodes": "--top-nodes", "top_edges": "--top-edges", "min_quantile": "--min-quantile",
                 "min_weight": "--min-weight", "score": "--score", "force": "--force"}


def _viewer_args(args) -> dict:
    """The viewer thresholds typed on the command line (``--top-edges all`` is None: every edge)."""
    out = {k: getattr(args, k) for k in ("top_nodes", "min_quantile", "min_weight", "score")
           if getattr(args, k) is not None}
    if args.top_edges is not None:
        out["top_edges"] = None if args.top_edges == "all" else args.top_edges
    return out


def run(args) -> int:
    from ..graph.mlpgraph import export_graph, read_graph

    viewer = args.format in VIEW_FORMATS
    view = _viewer_args(args)
    if not viewer and view:
        typed = ", ".join(_VIEW_OPTIONS[k] for k in view)
        raise InvalidArgumentError(f"{typed} appl{'ies' if len(view) == 1 else 'y'} to --format "
                                   f"{' or '.join(VIEW_FORMATS)} only")
    # --weighting's default is the pagerank scorer's with --calibrate, plain |W| without (default_export)
    options = export_options(args, _given_export(args))
    if args.graph is not None:
        if args.model is not None or args.calibrate or options != DEFAULT_EXPORT:
            raise InvalidArgumentError("--model, --calibrate, --attention and the graph options apply to a model only; "
                                       "a graph read with --graph keeps the options it was exported with")
        out = preflight(args, out_kind="file" if viewer else "directory", owner=None if viewer else "graph",
                        suffixes=(f".{args.format}",) if viewer else (), model=False).out
        graph = _relabel(GRAPH_INPUT_OPTIONS, read_graph, args.graph)
    else:
        reads_text = args.calibrate or options.needs_stats
        no_text = f"export without --calibrate and with --weighting {PAGERANK_WITHOUT_STATS['weighting']}"
        checked = preflight(args, out_kind="file" if viewer else "directory", owner=None if viewer else "graph",
                            suffixes=(f".{args.format}",) if viewer else (), reads_text=reads_text, no_text=no_text)
        out = checked.out
        if args.attention:
            check_attention(args, checked.source, "export")
        texts = read_texts(args) if reads_text else None
        model, tok, _ = _load(args)
        stats = _calibrate(args, model, tok, texts, no_text, attention=args.attention) if reads_text else None
        graph = export_graph(model, stats, **options.as_dict())
    t = time.perf_counter()
    if viewer:
        _relabel({**OUTPUT_OPTIONS, **_VIEW_OPTIONS}, write_viewer, graph, out, args.format,
                 overwrite=args.overwrite, force=args.force, **view)
        print(f"{graph!r}\nwrote {out} ({args.format}) in {time.perf_counter() - t:.1f} s")
        return 0
    _relabel(OUTPUT_OPTIONS, graph.to_parquet, out, overwrite=args.overwrite, progress=True, force=args.force)
    print(f"{graph!r}\nwrote {out}/ (nodes.parquet, edges.parquet, meta.json) in {time.perf_counter() - t:.1f} s")
    return 0
