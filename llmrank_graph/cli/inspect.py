"""``llmrank-graph inspect``: what the whole-MLP graph looks like, and how its centralities compare.

Prints a readable summary (``--json`` for machine-readable output) and, with ``--out DIR``,
writes the same numbers as CSV/JSON plus PNG plots; see :func:`llmrank_graph.analysis.inspect_graph`. The
options are checked against the library's own constraints (:data:`llmrank_graph.analysis.inspect.INSPECT_CONSTRAINTS`)
before a model is loaded, in the option names the user typed.
"""

from __future__ import annotations

import json

from ..analysis import BASELINES, CENTRALITIES, DEFAULT_AMOUNT, DEFAULT_CENTRALITIES, TOP_K, inspect_graph
from ..analysis.inspect import INSPECT_CONSTRAINTS, TOP_HEADS
from ..analysis.sketch import RELATIVE_ERROR
from ..base.params import validate
from ..centrality import backend_names
from ..errors import InvalidArgumentError
from ..graph.export import CALIBRATED_EXPORT
from ..graph.mlpgraph import export_graph, read_graph
from ._common import (
    GRAPH_INPUT_OPTIONS,
    GRAPH_OPTIONS,
    _add_attention,
    _add_calibration,
    _add_graph_options,
    _calibrate,
    _given_export,
    _load,
    _relabel,
    check_attention,
    check_backend,
    export_options,
    logger,
    preflight,
    warn_pagerank_departures,
)
from ._inputs import read_texts
from ._words import OUTPUT_OPTIONS

#: The library's parameter names -> this command's options, for the messages.
_OPTIONS = {"centralities": "--centralities", "baselines": "--baselines", "stored": "--stored", "k": "--top",
            "k_heads": "--top-heads", "amount": "--amount", "paths": "--paths", "layers": "--layers",
            "exact_quantiles": "--exact-quantiles", **GRAPH_OPTIONS}


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in _names(text)]
    except ValueError:
        raise InvalidArgumentError(f"`--layers` must be comma-separated layer numbers; got {text!r}") from None


def add_parser(sub) -> None:
    """Add this command to the ``llmrank-graph`` subparsers."""
    p = sub.add_parser(
        "inspect", help="summarise a graph: statistics, centralities vs baselines, heaviest paths",
        description="Summary of the whole-MLP graph: partition sizes, edge weight and strength quantiles per layer, "
                    "top neurons per centrality, rank correlations with the pruning baselines, overlap of the "
                    "pruned sets, where the PageRank mass sits, the heaviest paths, and (with --attention, or on a "
                    "graph exported with it) the top attention heads per layer by PageRank. Stored score columns "
                    "(`rank --add-to-graph`) are used instead of recomputing.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--graph", metavar="DIR", help="a directory written by `export`")
    src.add_argument("--model", metavar="PATH", default=None,
                     help="a model (default, without --graph: the embedded SmolLM2-135M)")
    p.add_argument("--layers", type=_ints, default=None, metavar="L,L,...",
                   help="with --graph: read only these layers")
    p.add_argument("--calibrate", action="store_true",
                   help="with --model: calibration statistics (node activations; the activation and wanda-sp "
                        "baselines)")
    p.add_argument("--centralities", type=_names, default=list(DEFAULT_CENTRALITIES), metavar="NAME,...",
                   help=f"centralities to compare, of {', '.join(CENTRALITIES)} (default: "
                        f"{','.join(DEFAULT_CENTRALITIES)})")
    p.add_argument("--stored", type=_names, default=None, metavar="COLUMN,...",
                   help="score columns stored with --graph to include (see `rank --add-to-graph`)")
    p.add_argument("--baselines", type=_names, default=None, metavar="NAME,...",
                   help=f"pruning baselines, of {', '.join(BASELINES)} (default: those available)")
    p.add_argument("--top", type=int, default=TOP_K, metavar="K", help="top neurons per layer (default %(default)s)")
    p.add_argument("--top-heads", type=int, default=TOP_HEADS, metavar="K",
                   help="with --attention, or a graph exported with it: top heads per layer by PageRank, with "
                        "their KV group and share of the layer's head mass (default %(default)s)")
    p.add_argument("--amount", type=float, default=DEFAULT_AMOUNT,
                   help="fraction pruned for the overlap of pruned sets (default %(default)s)")
    p.add_argument("--paths", type=int, default=None, metavar="K", help="also print the K heaviest paths")
    p.add_argument("--exact-quantiles", action="store_true",
                   help="exact quantiles of the edge weights (each block in memory); by default they come from a "
                        f"sketch, each within {100 * RELATIVE_ERROR:.2f}%% relative error")
    p.add_argument("--backend", default="auto", choices=["auto", *backend_names()],
                   help="backend of the centralities (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--out", metavar="DIR", default=None, help="also write CSV/JSON tables and PNG plots here")
    p.add_argument("--overwrite", action="store_true", help="replace --out")
    _add_graph_options(p, CALIBRATED_EXPORT, given_only=True)
    _add_attention(p, "; with --model: the report ranks the heads")
    _add_calibration(p)
    p.set_defaults(func=run)


def run(args) -> int:
    early = {"centralities": args.centralities, "baselines": args.baselines, "k": args.top, "k_heads": args.top_heads,
             "amount": args.amount, "paths": args.paths, "exact_quantiles": args.exact_quantiles}
    _relabel(_OPTIONS, validate, INSPECT_CONSTRAINTS, early)  # before anything is loaded
    given = _given_export(args)
    if args.graph is not None:
        if given or args.calibrate or args.attention:
            typed = [f"--{k}" for k in [*given, *(k for k in ("calibrate", "attention") if getattr(args, k))]]
            raise InvalidArgumentError(f"{', '.join(typed)} appl{'ies' if len(typed) == 1 else 'y'} to --model only; "
                                       "a graph read with --graph keeps the options it was exported with")
    elif args.layers is not None:
        raise InvalidArgumentError("`--layers` applies to --graph only")
    check_backend(args.backend, "--backend")
    checked = preflight(args, out_kind="directory" if args.out else None, model=args.graph is None,
                        reads_text=args.graph is None and args.calibrate)
    out = checked.out
    model = stats = None
    if args.graph is not None:
        graph = _relabel({**_OPTIONS, **GRAPH_INPUT_OPTIONS}, read_graph, args.graph, args.layers)
    else:
        # With --calibrate, the graph that the pagerank scorer ranks; without, plain |W| edges.
        options = export_options(args, given)
        if args.attention:
            check_attention(args, checked.source, "inspect")
        texts = read_texts(args) if args.calibrate or options.needs_stats else None
        model, tok, _ = _load(args)
        stats = _calibrate(args, model, tok, texts, attention=args.attention) if texts is not None else None
        graph = export_graph(model, stats, options=options)
    logger.info("inspecting %r", graph)
    if "pagerank" in args.centralities:
        how = ("export the graph with --calibrate and the default graph options" if args.graph is not None
               else "pass --calibrate")
        warn_pagerank_departures(graph, how, typed=given)
    report = _relabel(_OPTIONS, inspect_graph, graph, centralities=args.centralities, stored=args.stored,
                      baselines=args.baselines, model=model, stats=stats, k=args.top, k_heads=args.top_heads,
                      amount=args.amount, paths=args.paths, backend=args.backend,
                      exact_quantiles=args.exact_quantiles, progress=True)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(report.to_text(), end="")
    if out is not None:
        _relabel(OUTPUT_OPTIONS, report.write, out, overwrite=args.overwrite)
        logger.info("wrote %s (report.json, one CSV per table, PNG plots)", out)
    return 0
