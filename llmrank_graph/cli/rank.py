"""``llmrank-graph rank``: PageRank of a graph directory or a model, with the pagerank scorer's defaults."""

from __future__ import annotations

import time
from pathlib import Path

from ..base.files import atomic_file
from ..base.params import validate
from ..centrality import DIRECTIONS, backend_names, pagerank
from ..errors import InvalidArgumentError
from ..graph.scores import add_scores, column_name
from ..scoring.graph import (
    ACTIVATION_PERSONALIZATIONS,
    PAGERANK_CENTRALITY,
    PAGERANK_EXPORT,
    PAGERANK_WITHOUT_STATS,
    PERSONALIZATIONS,
    PageRankScorer,
)
from ._common import (
    GRAPH_INPUT_OPTIONS,
    GRAPH_OPTIONS,
    _add_calibration,
    _add_graph_options,
    _calibrate,
    _default,
    _given_export,
    _load,
    _relabel,
    check_backend,
    preflight,
    warn_pagerank_departures,
)
from ._inputs import read_texts


def add_parser(sub) -> None:
    """Add this command to the ``llmrank-graph`` subparsers."""
    p = sub.add_parser("rank", help="PageRank of a graph directory or a model; scores joined to the node table",
                       description="PageRank with the defaults of the pagerank scorer (llmrank_graph.scoring.graph."
                                   "PAGERANK_DEFAULTS): with --calibrate it ranks the intermediate neurons as "
                                   "`prune --method pagerank` does.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--graph", metavar="DIR", help="a directory written by `export`")
    src.add_argument("--model", metavar="PATH", default=None, help="a model (default: the embedded SmolLM2-135M)")
    p.add_argument("--out", default=None, metavar="FILE", help=".parquet or .csv (needed unless --add-to-graph)")
    p.add_argument("--add-to-graph", action="store_true",
                   help="with --graph: store the scores in the graph directory as a typed column of its node table, "
                        "named after the method and parameters (e.g. pagerank_reverse_a0.85); `inspect` uses it")
    p.add_argument("--backend", default=PAGERANK_CENTRALITY["backend"], choices=["auto", *backend_names()],
                   help="(default: %(default)s)")
    p.add_argument("--direction", default=PAGERANK_CENTRALITY["direction"], choices=DIRECTIONS,
                   help="(default: %(default)s)")
    p.add_argument("--alpha", type=float, default=PAGERANK_CENTRALITY["alpha"], help="(default: %(default)s)")
    p.add_argument("--personalization", default=None, choices=PERSONALIZATIONS,
                   help=f"teleport (default: {PAGERANK_CENTRALITY['personalization']}; "
                        f"{PAGERANK_WITHOUT_STATS['personalization']} without calibration statistics)")
    p.add_argument("--tol", type=float, default=_default(PageRankScorer, "tol"), help="(default: %(default)s)")
    p.add_argument("--max-iter", type=int, default=_default(PageRankScorer, "max_iter"),
                   help="(default: %(default)s)")
    p.add_argument("--calibrate", action="store_true",
                   help="fill node activations (with --model); needed by the default weighting and teleport")
    p.add_argument("--overwrite", action="store_true")
    _add_graph_options(p, PAGERANK_EXPORT, given_only=True)
    _add_calibration(p)
    p.set_defaults(func=run)


#: The options checked against :func:`llmrank_graph.pagerank`'s declared constraints.
_PAGERANK_OPTIONS = {"alpha": "--alpha", "tol": "--tol", "max_iter": "--max-iter"}
#: All of :func:`llmrank_graph.pagerank`'s parameters that are options, for the messages of the run.
_PAGERANK_WORDS = {**_PAGERANK_OPTIONS, "backend": "--backend", "direction": "--direction",
                   "personalization": "--personalization"}

#: What ``rank --out`` writes: the score table as Parquet or CSV.
TABLE_SUFFIXES = (".parquet", ".csv")


def _write_table(df, out: Path, overwrite: bool) -> None:
    """Write the score table to ``out`` (its suffix checked by :func:`preflight`: one of :data:`TABLE_SUFFIXES`)."""
    suffix = out.suffix.lower()
    df = df.assign(kind=df["kind"].astype(str))
    with atomic_file(out, overwrite=overwrite, arg="--out") as tmp:
        if suffix == ".csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)


def run(args) -> int:
    """PageRank with the defaults of the ``pagerank`` scorer, so that ``rank --calibrate`` ranks the
    intermediate neurons as ``prune --method pagerank`` does.

    Defaults that need calibration statistics (the activation-share weighting, the activation
    teleport) fall back to :data:`~llmrank_graph.scoring.graph.PAGERANK_WITHOUT_STATS` when there are
    none (no ``--calibrate``, or a ``--graph`` exported without), with a warning. A ``--graph``
    exported with calibration (``export --calibrate``) has the scorer's edges by default and
    ranks as ``rank --calibrate`` does; one exported with other graph options is ranked as
    exported, with a warning that names them. Options typed on the command line are never
    replaced: one that needs statistics makes ``rank --model`` calibrate.
    """
    from ..graph.mlpgraph import export_graph, read_graph

    given = _given_export(args)
    # Everything is checked before the graph or the model is read.
    _relabel(_PAGERANK_OPTIONS, validate, pagerank.parameter_constraints,  # the rules of llmrank_graph.pagerank
             {k: getattr(args, k) for k in _PAGERANK_OPTIONS})
    check_backend(args.backend, "--backend")
    if args.out is None and not args.add_to_graph:
        raise InvalidArgumentError("`--out` is required (a .parquet or .csv file) unless --add-to-graph stores the "
                                   "scores in the --graph directory")
    if args.add_to_graph and args.graph is None:
        raise InvalidArgumentError("`--add-to-graph` needs --graph DIR: the scores are stored in that graph directory")
    if args.graph is not None:
        if given or args.calibrate:
            typed = [f"--{k}" for k in [*given, *(["calibrate"] if args.calibrate else [])]]
            raise InvalidArgumentError(f"{', '.join(typed)} appl{'ies' if len(typed) == 1 else 'y'} to --model only; "
                                       "a graph read with --graph keeps the options it was exported with (see its "
                                       "meta.json)")
        out = preflight(args, out_kind="file" if args.out is not None else None, suffixes=TABLE_SUFFIXES,
                        model=False).out
        graph = _relabel(GRAPH_INPUT_OPTIONS, read_graph, args.graph)
    else:
        options = _relabel(GRAPH_OPTIONS, PAGERANK_EXPORT.replace, **given)
        asked = ("weighting" in given and options.needs_stats) or args.personalization in ACTIVATION_PERSONALIZATIONS
        no_text = (f"rank without --calibrate, with --weighting {PAGERANK_WITHOUT_STATS['weighting']} and "
                   f"--personalization {PAGERANK_WITHOUT_STATS['personalization']}")
        out = preflight(args, out_kind="file", suffixes=TABLE_SUFFIXES, reads_text=args.calibrate or asked,
                        no_text=no_text).out
        texts = read_texts(args) if args.calibrate or asked else None
        model, tok, _ = _load(args)
        stats = _calibrate(args, model, tok, texts, no_text) if texts is not None else None
        if stats is None and options.needs_stats:  # the default weighting: it was not typed
            options = options.replace(weighting=PAGERANK_WITHOUT_STATS["weighting"])
        graph = export_graph(model, stats, **options.as_dict())
    personalization = args.personalization
    if personalization is None:
        personalization = PAGERANK_CENTRALITY["personalization"]
        if personalization in ACTIVATION_PERSONALIZATIONS and not graph.has_activation:
            personalization = PAGERANK_WITHOUT_STATS["personalization"]
    # What the graph cannot give of the scorer's defaults, and what is used instead (typed options aside).
    how = ("export the graph with --calibrate and the default graph options" if args.graph is not None
           else "pass --calibrate")
    warn_pagerank_departures(graph, how, typed={*given, *(["personalization"] if args.personalization else [])})
    column = column_name("pagerank", {"direction": args.direction, "alpha": args.alpha,
                                      "personalization": personalization})
    if args.add_to_graph and column in graph.scores and not args.overwrite:
        raise InvalidArgumentError(f"`--add-to-graph`: {args.graph!r} already stores {column!r}; pass --overwrite to "
                                   "replace it")
    t = time.perf_counter()
    res = _relabel(_PAGERANK_WORDS, pagerank, graph, alpha=args.alpha,
                   personalization=personalization, direction=args.direction, backend=args.backend, tol=args.tol,
                   max_iter=args.max_iter)
    dt = time.perf_counter() - t
    inter = graph.nodes.kind.to_numpy() == "intermediate"
    how = ("exact (one sweep of the DAG)" if res.exact
           else f"{res.iterations} iterations, converged" if res.converged else f"{res.iterations} iterations")
    print(f"{graph!r}\npagerank: backend={res.backend}, {how}, time={dt:.3f} s; intermediate nodes hold "
          f"{res.scores[inter].sum():.3f} of the mass")
    if out is not None:
        _write_table(res.to_frame(graph), out, args.overwrite)
        print(f"wrote {out}")
    if args.add_to_graph:
        _relabel({**GRAPH_INPUT_OPTIONS, "scores": "--add-to-graph", "overwrite": "--overwrite"}, add_scores,
                 args.graph, {column: res}, overwrite=args.overwrite)
        print(f"stored column {column!r} in {args.graph}")
    return 0
