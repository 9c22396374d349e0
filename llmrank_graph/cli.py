"""Command line: ``llmrank-graph export | rank | prune | backends``.

Examples::

    llmrank-graph prune                                  # embedded SmolLM2-135M, 30% of MLP neurons
    llmrank-graph export --out smollm2-graph --calibrate
    llmrank-graph rank --graph smollm2-graph --direction reverse --out scores.parquet
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .graph import ACTIVATION_WEIGHTINGS

logger = logging.getLogger("llmrank_graph.cli")


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="PATH", default=None,
                   help="local Hugging Face model directory or .gguf file (default: the embedded SmolLM2-135M-Instruct)")


def _add_calibration(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("calibration")
    g.add_argument("--texts", metavar="SOURCE", default=None,
                   help=".txt/.jsonl file or datasets name (default: embedded Wikipedia calibration articles)")
    g.add_argument("--n-samples", type=int, default=32, help="calibration blocks (default 32)")
    g.add_argument("--seq-len", type=int, default=512, help="tokens per block (default 512)")
    g.add_argument("--batch-size", type=int, default=4)


def _add_graph_options(p: argparse.ArgumentParser) -> None:
    from .graph import GATES, MODES, WEIGHTINGS

    g = p.add_argument_group("graph")
    g.add_argument("--mode", choices=MODES, default="chained")
    g.add_argument("--gate", choices=GATES, default="up", help="input edges of a gated MLP (default: up, as the paper)")
    g.add_argument("--residual", type=float, default=0.0, help="weight of skip edges H_l -> H_l+1 (default 0: none)")
    g.add_argument("--weighting", choices=WEIGHTINGS, default="abs")
    g.add_argument("--keep", type=_keep, default=None, help="sparsify: int k = top-k in-edges per node, float q = fraction kept")


def _keep(s: str):
    try:
        return int(s)
    except ValueError:
        return float(s)


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
    from .calibration import calibrate

    return calibrate(model, tok, texts=args.texts, n_samples=args.n_samples, seq_len=args.seq_len,
                     batch_size=args.batch_size, progress=True)


def _graph_kwargs(args) -> dict:
    # (graph options as export_graph takes them)
    return dict(mode=args.mode, gate=args.gate, residual=args.residual, weighting=args.weighting, keep=args.keep)


# ---------------------------------------------------------------------------- export
def cmd_export(args) -> int:
    from .graph import export_graph

    out = Path(args.out)
    _check_out(out, args.overwrite)
    model, tok, _ = _load(args)
    stats = _calibrate(args, model, tok) if args.calibrate or args.weighting in ACTIVATION_WEIGHTINGS else None
    graph = export_graph(model, stats, **_graph_kwargs(args))
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
    from .centrality import pagerank
    from .graph import export_graph, read_graph

    out = Path(args.out)
    _check_out(out, args.overwrite)
    if args.graph is not None:
        graph = read_graph(args.graph)
    else:
        model, tok, _ = _load(args)
        need = args.calibrate or args.weighting in ACTIVATION_WEIGHTINGS or args.personalization == "activation"
        stats = _calibrate(args, model, tok) if need else None
        graph = export_graph(model, stats, **_graph_kwargs(args))
    t = time.perf_counter()
    res = pagerank(graph, alpha=args.alpha, personalization=args.personalization, direction=args.direction,
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

    from .evaluation import compare_throughput, count_parameters, perplexity
    from .data import load_texts, token_blocks
    from .pruning import prune_model, save_pruned

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
    from .centrality import backends

    for b in backends():
        state = "available" if b["available"] else f"unavailable: {b['reason']}"
        print(f"{b['name']:14} {', '.join(b['algorithms']):40} {state}")
    return 0


def build_parser() -> argparse.ArgumentParser:
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
    _add_graph_options(p)
    _add_calibration(p)
    p.set_defaults(func=cmd_export)

    from .centrality.backends import registered

    p = sub.add_parser("rank", help="PageRank of a graph directory or a model; scores joined to the node table")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--graph", metavar="DIR", help="a directory written by `export`")
    src.add_argument("--model", metavar="PATH", default=None, help="a model (default: the embedded SmolLM2-135M)")
    p.add_argument("--out", required=True, metavar="FILE", help=".parquet or .csv")
    p.add_argument("--backend", default="auto", choices=["auto", *registered()])
    p.add_argument("--direction", default="forward", choices=["forward", "reverse"])
    p.add_argument("--alpha", type=float, default=0.85)
    p.add_argument("--personalization", default="uniform", choices=["uniform", "activation"])
    p.add_argument("--tol", type=float, default=1e-10)
    p.add_argument("--max-iter", type=int, default=1000)
    p.add_argument("--calibrate", action="store_true", help="fill node activations (with --model)")
    p.add_argument("--overwrite", action="store_true")
    _add_graph_options(p)
    _add_calibration(p)
    p.set_defaults(func=cmd_rank)

    p = sub.add_parser("prune", help="score, prune, evaluate and save a model (the main job)")
    _add_model(p)
    p.add_argument("--method", default="pagerank", help="scorer name (see llmrank_graph.scoring.scorers())")
    p.add_argument("--amount", type=float, default=0.3, help="fraction of intermediate neurons to remove (default 0.3)")
    p.add_argument("--allocation", default="local", choices=["local", "global"])
    p.add_argument("--how", default="remove", choices=["remove", "zero"])
    p.add_argument("--mode", default="chained", choices=["chained", "isolated"])
    p.add_argument("--prune-hidden", action="store_true", help="reference paper mode: also zero down_proj rows (needs --how zero)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="scorer parameter, repeatable")
    p.add_argument("--out", default="pruned-model", metavar="DIR", help="where to save the pruned model (default ./pruned-model)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--eval-texts", default=None, metavar="SOURCE", help="evaluation text (default: held-out Wikipedia articles)")
    p.add_argument("--eval-samples", type=int, default=16, help="evaluation windows of --seq-len tokens (default 16)")
    _add_calibration(p)
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("backends", help="list centrality backends and whether they can run here")
    p.set_defaults(func=cmd_backends)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.verbose == 0:
        logging.getLogger("llmrank_graph").setLevel(logging.INFO)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
