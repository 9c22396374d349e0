"""Command line: ``llmrank-graph export | rank | prune | backends``.

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
import contextlib
import copy
import inspect
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from .calibration import calibrate
from .centrality import DIRECTIONS, backend_names
from .errors import LLMRankGraphError
from .evaluation import perplexity
from .graph import DEFAULT_EXPORT, GATES, MODES, WEIGHTINGS, ExportOptions
from .masks import ALLOCATIONS
from .pruning import HOWS, prune_model
from .scoring import (ACTIVATION_PERSONALIZATIONS, PAGERANK_CENTRALITY, PAGERANK_EXPORT, PAGERANK_WITHOUT_STATS,
                      PERSONALIZATIONS, PageRankScorer, scorers)

logger = logging.getLogger("llmrank_graph.cli")

#: The graph options, as the CLI names them (``--mode`` ... ``--keep``), in ExportOptions order.
_EXPORT_FIELDS = tuple(DEFAULT_EXPORT.as_dict())


def _default(fn, name: str):
    """Default of parameter ``name`` of the library callable ``fn``: the CLI writes none of its own."""
    return inspect.signature(fn).parameters[name].default


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="PATH", default=None,
                   help="local Hugging Face model directory or .gguf file (default: the embedded SmolLM2-135M-Instruct)")


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


def _add_graph_options(p: argparse.ArgumentParser, defaults: ExportOptions, *, given_only: bool = False) -> None:
    """``--mode`` ... ``--keep`` with the defaults of ``defaults``.

    With ``given_only`` every option defaults to None, so the command can tell which ones were
    typed (:func:`_given_export`); the help still shows ``defaults``, and what a default that
    needs calibration statistics falls back to.
    """
    d = {k: (None if given_only else v) for k, v in defaults.as_dict().items()}
    g = p.add_argument_group("graph", "how the whole-MLP graph is exported (llmrank_graph.ExportOptions)")
    g.add_argument("--mode", choices=MODES, default=d["mode"], help=f"(default: {defaults.mode})")
    g.add_argument("--gate", choices=GATES, default=d["gate"],
                   help=f"input edges of a gated MLP (default: {defaults.gate})")
    g.add_argument("--residual", type=float, default=d["residual"],
                   help=f"weight of skip edges H_l -> H_l+1, 0 for none (default: {defaults.residual:g})")
    fallback = (f"; {PAGERANK_WITHOUT_STATS['weighting']} without calibration statistics"
                if given_only and defaults.needs_stats else "")
    g.add_argument("--weighting", choices=WEIGHTINGS, default=d["weighting"],
                   help=f"edge weights (default: {defaults.weighting}{fallback})")
    g.add_argument("--keep", type=_keep, default=d["keep"],
                   help="sparsify: int k = top-k in-edges per node, float q = fraction kept "
                        f"(default: {'keep every edge' if defaults.keep is None else defaults.keep})")


def _keep(s: str):
    try:
        return int(s)
    except ValueError:
        return float(s)


def _given_export(args) -> dict:
    """The graph options typed on the command line (those whose argparse default is None)."""
    return {k: getattr(args, k) for k in _EXPORT_FIELDS if getattr(args, k) is not None}


def _check_out(path: Path, overwrite: bool, what: str = "--out") -> None:
    if path.exists() and not overwrite:
        raise SystemExit(f"error: {what} {str(path)!r} exists; pass --overwrite to replace it")


def _load(args):
    from .models import load_model

    t = time.perf_counter()
    model, tok = load_model(args.model)
    logger.info("loaded %s in %.1f s", args.model or "the embedded SmolLM2-135M-Instruct", time.perf_counter() - t)
    return model, tok, time.perf_counter() - t


def _calibrate(args, model, tok):
    return calibrate(model, tok, texts=args.texts, n_samples=args.n_samples, seq_len=args.seq_len,
                     batch_size=args.batch_size, progress=True)


# ---------------------------------------------------------------------------- export
def cmd_export(args) -> int:
    from .graph import export_graph

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


# ---------------------------------------------------------------------------- rank
def _write_table(df, out: Path) -> None:
    suffix = out.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise SystemExit(f"error: --out must end in .parquet or .csv; got {out.name!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        df = df.assign(kind=df["kind"].astype(str))
        if suffix == ".csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def cmd_rank(args) -> int:
    """PageRank with the defaults of the ``pagerank`` scorer, so that ``rank --calibrate`` ranks the
    intermediate neurons as ``prune --method pagerank`` does.

    Defaults that need calibration statistics (the activation-share weighting, the activation
    teleport) fall back to :data:`~llmrank_graph.scoring.PAGERANK_WITHOUT_STATS` when there are
    none (no ``--calibrate``, or a ``--graph`` exported without), with a warning. Options typed
    on the command line are never replaced: one that needs statistics makes ``rank --model``
    calibrate.
    """
    from .centrality import pagerank
    from .graph import export_graph, read_graph

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
    _write_table(res.to_frame(graph), out)
    inter = graph.nodes.kind.to_numpy() == "intermediate"
    print(f"{graph!r}\npagerank: backend={res.backend} iterations={res.iterations} converged={res.converged} "
          f"time={dt:.3f} s; intermediate nodes hold {res.scores[inter].sum():.3f} of the mass\nwrote {out}")
    return 0


# ---------------------------------------------------------------------------- prune
def _fmt_int(n: int) -> str:
    return f"{n / 1e6:.2f}M"


def cmd_prune(args) -> int:
    import torch

    from .data import load_texts, token_blocks
    from .evaluation import compare_throughput, count_parameters
    from .pruning import save_pruned

    out = Path(args.out)
    _check_out(out, args.overwrite)
    times = {}
    model, tok, times["load"] = _load(args)
    if tok is None:
        raise SystemExit("error: the model has no tokenizer; llmrank-graph prune needs one to read text")
    t = time.perf_counter()
    stats = _calibrate(args, model, tok)
    times["calibrate"] = time.perf_counter() - t
    dense = copy.deepcopy(model)
    params = dict(kv.split("=", 1) for kv in args.param)
    params = {k: _literal(v) for k, v in params.items()}
    t = time.perf_counter()
    res = prune_model(model, stats, method=args.method, amount=args.amount, allocation=args.allocation,
                      how=args.how, mode=args.mode, prune_hidden=args.prune_hidden, **params)
    times["score + prune"] = time.perf_counter() - t
    pruned = res.model
    t = time.perf_counter()
    eval_ids = token_blocks(tok, load_texts(args.eval_texts, split="evaluation"), args.eval_samples, args.seq_len)
    ppl_dense = perplexity(dense, input_ids=eval_ids, batch_size=args.batch_size, progress=True)
    ppl_pruned = perplexity(pruned, input_ids=eval_ids, batch_size=args.batch_size, progress=True)
    times["perplexity (both)"] = time.perf_counter() - t
    t = time.perf_counter()
    tp = compare_throughput(dense, pruned, eval_ids[:1], rounds=3)  # one window, both models alternately
    times["tokens/s (both)"] = time.perf_counter() - t
    t = time.perf_counter()
    save_pruned(pruned, tok, out, overwrite=args.overwrite)
    res.masks.save(out / "llmrank_graph" / "neuron_mask.safetensors")  # beside, not among, the weights
    times["save"] = time.perf_counter() - t
    cd, cp = count_parameters(dense), count_parameters(pruned)
    rows = [
        ("MLP parameters", _fmt_int(cd["mlp"]), _fmt_int(cp["mlp"]), f"{cp['mlp'] / cd['mlp']:.3f}"),
        ("total parameters", _fmt_int(cd["total"]), _fmt_int(cp["total"]), f"{cp['total'] / cd['total']:.3f}"),
        ("perplexity", f"{ppl_dense:.2f}", f"{ppl_pruned:.2f}", f"{ppl_pruned / ppl_dense:.3f}"),
        ("tokens/s", f"{tp['dense_tokens_per_s']:.0f}", f"{tp['pruned_tokens_per_s']:.0f}", f"{tp['speedup']:.3f}"),
    ]
    print(f"\nmethod={args.method} amount={args.amount} allocation={args.allocation} how={args.how} "
          f"(pruned {res.masks.n_pruned()} of {res.masks.n_total()} intermediate neurons)")
    print(f"{'':18}{'dense':>12}{'pruned':>12}{'ratio':>9}")
    for r in rows:
        print(f"{r[0]:18}{r[1]:>12}{r[2]:>12}{r[3]:>9}")
    print("\nstage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))
    print(f"saved the pruned model to {out}/ (load it with llmrank_graph.load_model({str(out)!r}))")
    return 0


def _literal(v: str):
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(v.lower(), v)


# ---------------------------------------------------------------------------- backends
def cmd_backends(args) -> int:
    from .centrality import list_backends

    for b in list_backends():
        state = "available" if b["available"] else f"unavailable: {b['reason']}"
        print(f"{b['name']:14} {', '.join(b['algorithms']):40} {state}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser. Every default and every ``choices=`` is read from the library."""
    from ._version import __version__

    parser = argparse.ArgumentParser(prog="llmrank-graph", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v info, -vv debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("export", help="export the whole MLP stack as a Parquet graph")
    _add_model(p)
    p.add_argument("--out", required=True, metavar="DIR", help="directory for nodes.parquet, edges.parquet, meta.json")
    p.add_argument("--calibrate", action="store_true", help="fill node activations from calibration text")
    p.add_argument("--overwrite", action="store_true")
    _add_graph_options(p, DEFAULT_EXPORT)
    _add_calibration(p)
    p.set_defaults(func=cmd_export)

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
    p.set_defaults(func=cmd_rank)

    p = sub.add_parser("prune", help="score, prune, evaluate and save a model (the main job)")
    _add_model(p)
    names = scorers()
    p.add_argument("--method", default=_default(prune_model, "method"), choices=names, metavar="NAME",
                   help=f"scorer, one of {', '.join(names)} (default: %(default)s)")
    p.add_argument("--amount", type=float, default=_default(prune_model, "amount"),
                   help="fraction of intermediate neurons to remove (default %(default)s)")
    p.add_argument("--allocation", default=_default(prune_model, "allocation"), choices=ALLOCATIONS,
                   help="(default: %(default)s)")
    p.add_argument("--how", default=_default(prune_model, "how"), choices=HOWS, help="(default: %(default)s)")
    p.add_argument("--mode", default=_default(prune_model, "mode"), choices=MODES, help="(default: %(default)s)")
    p.add_argument("--prune-hidden", action="store_true", help="reference paper mode: also zero down_proj rows (needs --how zero)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="scorer parameter, repeatable")
    p.add_argument("--out", default="pruned-model", metavar="DIR", help="where to save the pruned model (default ./pruned-model)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--eval-texts", default=None, metavar="SOURCE", help="evaluation text (default: held-out Wikipedia articles)")
    p.add_argument("--eval-samples", type=int, default=_default(perplexity, "n_samples"),
                   help="evaluation windows of --seq-len tokens (default %(default)s)")
    _add_calibration(p)
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("backends", help="list centrality backends and whether they can run here")
    p.set_defaults(func=cmd_backends)
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
