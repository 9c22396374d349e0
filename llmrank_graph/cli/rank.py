"""``llmrank-graph rank``: PageRank of a graph directory or a model, with the pagerank scorer's defaults."""

from __future__ import annotations

import time
from pathlib import Path

from .._io import atomic_file
from ..centrality import DIRECTIONS, backend_names
from ..scoring import (ACTIVATION_PERSONALIZATIONS, PAGERANK_CENTRALITY, PAGERANK_EXPORT, PAGERANK_WITHOUT_STATS,
                       PERSONALIZATIONS, PageRankScorer)
from ._common import (_add_calibration, _add_graph_options, _calibrate, _check_out, _default, _given_export, _load,
                      logger)


def add_parser(sub) -> None:
    """Add this command to the ``llmrank-graph`` subparsers."""
    p = sub.add_parser("rank", help="PageRank of a graph directory or a model; scores joined to the node table",
                       description="PageRank with the defaults of the pagerank scorer (llmrank_graph.scoring."
                                   "PAGERANK_DEFAULTS): with --calibrate it ranks the intermediate neurons as "
                                   "`prune --method pagerank` does.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--graph", metavar="DIR", help="a directory written by `export`")
    src.add_argument("--model", metavar="PATH", default=None, help="a model (default: the embedded SmolLM2-135M)")
    p.add_argument("--out", required=True, metavar="FILE", help=".parquet or .csv")
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


def _write_table(df, out: Path, overwrite: bool) -> None:
    suffix = out.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise SystemExit(f"error: --out must end in .parquet or .csv; got {out.name!r}")
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
    teleport) fall back to :data:`~llmrank_graph.scoring.PAGERANK_WITHOUT_STATS` when there are
    none (no ``--calibrate``, or a ``--graph`` exported without), with a warning. Options typed
    on the command line are never replaced: one that needs statistics makes ``rank --model``
    calibrate.
    """
    from ..centrality import pagerank
    from ..graph import export_graph, read_graph

    out = Path(args.out)
    _check_out(out, args.overwrite)
    given = _given_export(args)
    replaced: dict[str, tuple[str, str]] = {}  # option -> (its default, what is used instead)
    if args.graph is not None:
        if given or args.calibrate:
            typed = [f"--{k}" for k in [*given, *(["calibrate"] if args.calibrate else [])]]
            raise SystemExit(f"error: {', '.join(typed)} appl{'ies' if len(typed) == 1 else 'y'} to --model only; "
                             "a graph read with --graph keeps the options it was exported with (see its meta.json)")
        graph = read_graph(args.graph)
    else:
        options = PAGERANK_EXPORT.replace(**given)  # checked before the model is loaded
        model, tok, _ = _load(args)
        asked = ("weighting" in given and options.needs_stats) or args.personalization in ACTIVATION_PERSONALIZATIONS
        stats = _calibrate(args, model, tok) if args.calibrate or asked else None
        if stats is None and options.needs_stats:  # the default weighting: it was not typed
            replaced["weighting"] = (options.weighting, PAGERANK_WITHOUT_STATS["weighting"])
            options = options.replace(weighting=PAGERANK_WITHOUT_STATS["weighting"])
        graph = export_graph(model, stats, **options.as_dict())
    personalization = args.personalization
    if personalization is None:
        personalization = PAGERANK_CENTRALITY["personalization"]
        if personalization in ACTIVATION_PERSONALIZATIONS and not graph.has_activation:
            replaced["personalization"] = (personalization, PAGERANK_WITHOUT_STATS["personalization"])
            personalization = PAGERANK_WITHOUT_STATS["personalization"]
    if replaced:
        how = ("export the graph with --calibrate" if args.graph is not None else "pass --calibrate")
        logger.warning("no calibration statistics: the pagerank defaults %s need them; using %s instead "
                       "(%s to rank as `prune --method pagerank` does)",
                       " and ".join(f"{k} {v[0]!r}" for k, v in replaced.items()),
                       " and ".join(f"{k} {v[1]!r}" for k, v in replaced.items()), how)
    t = time.perf_counter()
    res = pagerank(graph, alpha=args.alpha, personalization=personalization, direction=args.direction,
                   backend=args.backend, tol=args.tol, max_iter=args.max_iter)
    dt = time.perf_counter() - t
    _write_table(res.to_frame(graph), out, args.overwrite)
    inter = graph.nodes.kind.to_numpy() == "intermediate"
    print(f"{graph!r}\npagerank: backend={res.backend} iterations={res.iterations} converged={res.converged} "
          f"time={dt:.3f} s; intermediate nodes hold {res.scores[inter].sum():.3f} of the mass\nwrote {out}")
    return 0
