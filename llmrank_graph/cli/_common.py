"""What the commands share: the model, calibration and graph options, loading, output checks."""

from __future__ import annotations

import argparse
import inspect
import logging
import time
from pathlib import Path

from ..calibration import calibrate
from ..graph import DEFAULT_EXPORT, GATES, MODES, WEIGHTINGS, ExportOptions
from ..scoring import PAGERANK_WITHOUT_STATS

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
    from ..models import load_model

    t = time.perf_counter()
    model, tok = load_model(args.model)
    logger.info("loaded %s in %.1f s", args.model or "the embedded SmolLM2-135M-Instruct", time.perf_counter() - t)
    return model, tok, time.perf_counter() - t


def _calibrate(args, model, tok):
    return calibrate(model, tok, texts=args.texts, n_samples=args.n_samples, seq_len=args.seq_len,
                     batch_size=args.batch_size, progress=True)
