"""``llmrank-graph prune``: score, prune, evaluate and save a model (the main job).

``--target attention`` prunes attention heads (``--amount`` is then the fraction of query heads)
and ``--target both`` MLP neurons and heads together (the fraction of the MLP + attention
parameters), as :func:`llmrank_graph.prune_model`'s ``target`` does; what can be checked
without the model (the options, the head scorer, the family's head support, a local amount that
would remove every head of a layer) is checked before it loads.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import logging
import time
from types import SimpleNamespace

import torch

from ..compensation.algebra import (
    COMPENSATIONS,
    RECOMMENDED_COMPENSATION,
    check_compensation_options,
    check_ridge,
    needs_second_moments,
    uses_bias,
)
from ..compensation.heads import check_o_bias_possible
from ..data.cache import cached_perplexity, model_fingerprint
from ..data.evaluation import compare_throughput, count_parameters, perplexity, summarize_ratios
from ..data.texts import token_blocks
from ..errors import InvalidArgumentError
from ..graph.export import MODES
from ..models.architectures import UnsupportedArchitectureError, intermediate_sizes, mlp_layers
from ..models.attention import attention_layers, attention_spec
from ..models.saved_format import PrunedEntry, read_config
from ..pruning.head_allocation import allocate_both_checked, allocate_heads_checked, layer_parameters
from ..pruning.masks import ALLOCATIONS, allocate_checked, check_amount, check_min_keep
from ..pruning.prune import TARGETS, check_target_options
from ..pruning.split import SPLITS
from ..pruning.surgery import HOWS, prune_model, save_pruned
from ..scoring.heads import head_scorer_class
from ..scoring.registry import NeuronScores, get_scorer, scorer_class, scorers
from ._common import (
    CALIBRATION_OPTIONS,
    Checked,
    _add_calibration,
    _add_model,
    _add_threads,
    _calibrate,
    _default,
    _load,
    _relabel,
    check_backend,
    no_tokenizer_error,
    param_value,
    preflight,
    process_threads,
    scorer_params,
    scorer_words,
)
from ._inputs import TEXT_SPLITS, _config_file, model_layout, read_texts
from ._words import OUTPUT_OPTIONS

logger = logging.getLogger("llmrank_graph.cli")


def add_parser(sub) -> None:
    """Add this command to the ``llmrank-graph`` subparsers."""
    p = sub.add_parser("prune", help="score, prune, evaluate and save a model (the main job)")
    _add_model(p)
    names = scorers()
    p.add_argument("--method", default=_default(prune_model, "method"), choices=names, metavar="NAME",
                   help=f"scorer, one of {', '.join(names)} (default: %(default)s)")
    p.add_argument("--target", default=_default(prune_model, "target"), choices=TARGETS,
                   help="what to prune: MLP neurons, attention heads (under the grouped-query rule: the same number "
                        "of heads in every key/value group a layer keeps), or both (default: %(default)s); heads are "
                        "scored by magnitude, activation, flap or random")
    p.add_argument("--split", default=_default(prune_model, "split"), choices=SPLITS,
                   help="with --target both, how neurons and heads share the budget: by their normalised scores, "
                        "or 'measured': the head fraction (0, 2.5, 5 or 10%%) whose pruned copy has the lowest "
                        "perplexity on the calibration tokens (default: %(default)s)")
    p.add_argument("--amount", type=float, default=_default(prune_model, "amount"),
                   help="fraction of intermediate neurons to remove; with --target attention, of query heads; with "
                        "--target both, of the MLP + attention parameters (default %(default)s)")
    p.add_argument("--allocation", default=_default(prune_model, "allocation"), choices=ALLOCATIONS,
                   help="(default: %(default)s)")
    p.add_argument("--min-keep", type=_min_keep, default=None, metavar="K",
                   help="per-layer floor: an int keeps at least K neurons (heads, with --target attention or both) "
                        "in every layer, a float in [0, 1) that fraction (default: the allocation's own, 5%% for "
                        "global)")
    p.add_argument("--how", default=_default(prune_model, "how"), choices=HOWS, help="(default: %(default)s)")
    p.add_argument("--mode", default=_default(prune_model, "mode"), choices=MODES, help="(default: %(default)s)")
    p.add_argument("--prune-hidden", action="store_true",
                   help="reference paper mode: also zero down_proj rows (needs --how zero --compensate none)")
    # Not prune_model's default ('none'): the command runs the configuration measured best
    # (llmrank_graph.compensation.algebra.RECOMMENDED_COMPENSATION says why).
    p.add_argument("--compensate", default=RECOMMENDED_COMPENSATION, choices=COMPENSATIONS,
                   help="repair down_proj after the removal: a ridge least-squares refit of the kept columns "
                        "(lstsq), a bias (FLAP), both, or none (default: %(default)s). lstsq calibrates with the "
                        "second moments of the down_proj inputs, one m x m float64 matrix per layer (8 m^2 bytes: "
                        "566 MB for SmolLM2-135M, 31 GB for a 7B Llama; --sequential holds one layer's at a time); "
                        "--compensate none skips them and only removes the neurons")
    p.add_argument("--ridge", type=float, default=_default(prune_model, "ridge"),
                   help="ridge of the lstsq refit, relative to the mean diagonal of the kept neurons' second moments "
                        "(default %(default)g)")
    p.add_argument("--sequential", action="store_true", default=_default(prune_model, "sequential"),
                   help="prune layer by layer, each layer calibrated on the outputs of the already-pruned layers "
                        "(one layer and the calibration hidden states in memory at a time)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="scorer parameter, repeatable")
    p.add_argument("--out", default="pruned-model", metavar="DIR",
                   help="where to save the pruned model (default ./%(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if `prune` wrote it")
    p.add_argument("--force", action="store_true",
                   help="with --overwrite, replace --out even if `prune` did not write it (e.g. the original model)")
    p.add_argument("--eval-texts", default=None, metavar="SOURCE",
                   help="evaluation text (default: held-out Wikipedia articles)")
    p.add_argument("--eval-samples", type=int, default=_default(perplexity, "n_samples"),
                   help="evaluation windows of --seq-len tokens (default %(default)s)")
    p.add_argument("--no-cache", action="store_true",
                   help="compute the dense model's perplexity afresh, and neither read nor write it in the cache "
                        "(by default it is computed once per model, evaluation text and settings, and kept in "
                        "evaluations/ under the model cache directory, $LLMRANK_GRAPH_CACHE)")
    _add_threads(p)
    _add_calibration(p)
    p.set_defaults(func=run)


def _min_keep(text: str) -> int | float:
    """``--min-keep``: an int (a count) or a float (a fraction), as written; checked by the allocation."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an int >= 0 or a float in [0, 1), got {text!r}") from None


def _fmt_int(n: int) -> str:
    return f"{n / 1e6:.2f}M"


def _fmt_bytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6)):
        if n >= size:
            return f"{n / size:.{2 if unit == 'GB' else 0}f} {unit}"
    return f"{n / 1e3:.0f} kB"


def _log_second_moments(args, model, scorer) -> None:
    """Say, before calibrating, what the Gram matrices will cost and how to do without them."""
    by_compensate = needs_second_moments(args.compensate)
    if by_compensate and args.target != "mlp":
        widths = [a.num_heads * a.head_dim for a in attention_layers(model)]
        logger.info("--compensate %s needs the second moments of the attention output projections' inputs: %d Gram "
                    "matrices of (heads x head_dim)^2 float64, %s in memory in all", args.compensate, len(widths),
                    _fmt_bytes(sum(w * w * 8 for w in widths)))
    if not (by_compensate or (scorer is not None and scorer.needs_second_moments())):
        return
    sizes = intermediate_sizes(model)
    held = max(sizes) ** 2 * 8 if args.sequential else sum(m * m * 8 for m in sizes)  # float64, (m, m) per layer
    why = f"--compensate {args.compensate}" if by_compensate else f"--method {args.method}"
    logger.info("%s needs the second moments of the down_proj inputs: %d Gram matrices of m x m float64, %s %s%s",
                why, len(sizes), _fmt_bytes(held),
                "for the largest layer, one layer at a time" if args.sequential else "in memory in all",
                "; --compensate none skips them" if by_compensate else "")


#: prune_model's parameters -> prune's options, for the allocation's messages.
_ALLOCATION_OPTIONS = {"amount": "--amount", "allocation": "--allocation", "min_keep": "--min-keep"}
#: prune_model's parameters -> prune's options (its `ridge` is the compensation's, whatever a scorer's is).
_PRUNE_OPTIONS = {**_ALLOCATION_OPTIONS, "method": "--method", "how": "--how", "mode": "--mode",
                  "prune_hidden": "--prune-hidden", "compensate": "--compensate", "ridge": "--ridge",
                  "sequential": "--sequential", "target": "--target", "split": "--split"}
#: Rounds of the tokens/s comparison: each times one pass of each model over one evaluation window,
#: back to back (:func:`~llmrank_graph.data.evaluation.compare_throughput`), after one warm-up pass of each.
THROUGHPUT_ROUNDS = 7
#: The evaluation's parameters (token_blocks') -> prune's options.
_EVALUATION_OPTIONS = {"texts": "--eval-texts", "n_samples": "--eval-samples", "seq_len": "--seq-len"}


_NO_TEXT = "prune with the library, which also takes token ids (llmrank_graph.calibrate(model, input_ids=...))"


def _taken(args) -> dict[str, str]:
    """prune_model's own parameters -> why a scorer parameter of the same name cannot be set through `prune`.

    ``prune_model(..., **scorer_params)`` takes these names for itself (a scorer's ``device``,
    ``obs``'s ``ridge``): passed as ``--param``, they would never reach the scorer.
    """
    taken = {}
    for p in inspect.signature(prune_model).parameters.values():
        if p.kind is not p.VAR_KEYWORD:
            option = f" (`prune` sets it with --{p.name.replace('_', '-')})" if hasattr(args, p.name) else ""
            taken[p.name] = f"llmrank_graph.prune_model, which `prune` runs, takes `{p.name}` for itself{option}"
    return taken


def _layer_scores(sizes: list[int]) -> dict[int, torch.Tensor]:
    """Scores of every neuron 0, but 1 for each layer's last: any allocation keeps that one last.

    What an allocation refuses on these, it refuses on every score vector: the counts of the local
    and of the global allocations with a floor depend on the sizes alone, and the reference's
    pooled global allocation empties a layer on these only when it must on any scores.
    """
    out = {}
    for layer, n in enumerate(sizes):
        s = torch.zeros(n, dtype=torch.float64)
        s[-1] = 1.0
        out[layer] = s
    return out


def check_allocation(args, inter: list[int], hidden: list[int]) -> None:
    """Refuse an ``--amount`` that would empty a layer (or leave it below its floor), from the layer sizes.

    The allocation of :func:`llmrank_graph.prune_model` (its rule, and its rounding for the
    method) runs on stand-in scores (:func:`_layer_scores`), before the model loads.
    """
    scores = NeuronScores(_layer_scores(inter), _layer_scores(hidden) if args.prune_hidden else None,
                          method=args.method)
    # The rounding prune_model uses: the reference's in the paper mode, else the method's own.
    rounding = "reference" if args.prune_hidden else scorer_class(args.method).rounding
    _relabel(_ALLOCATION_OPTIONS, allocate_checked, scores, args.amount, args.allocation, args.min_keep, rounding)


def _checks(args) -> tuple[dict, Checked, bool]:
    """Every check that needs no model: the options, the scorer's parameters, the model's config, the text.

    Returns the scorer's parameters, what :func:`preflight` checked, and whether the allocation
    was checked against the config (else it is checked once the model has loaded).
    """
    _relabel({"amount": "--amount"}, check_amount, args.amount)
    _relabel({"ridge": "--ridge"}, check_ridge, args.ridge)
    check_min_keep("--min-keep", args.min_keep)
    if args.sequential and args.prune_hidden:
        raise InvalidArgumentError("`--sequential` cannot honour `--prune-hidden`: the paper mode allocates hidden "
                                   "channels over all layers at once")
    if args.prune_hidden and args.how == "remove":
        raise InvalidArgumentError("`--prune-hidden` zeroes down_proj rows (hidden channels of the residual stream), "
                                   "which cannot be removed; pass --how zero")
    if args.prune_hidden and args.compensate != "none":
        raise InvalidArgumentError(f"`--prune-hidden` zeroes down_proj rows, which the refit of --compensate "
                                   f"{args.compensate} (the default) contradicts; pass --compensate none")
    if args.split == "measured" and (args.target != "both" or args.sequential):
        raise InvalidArgumentError("`--split measured` chooses how many heads go with --target both, by the "
                                   "perplexity of pruned copies on the calibration tokens: it needs --target both "
                                   f"without --sequential; got --target {args.target}"
                                   f"{' --sequential' if args.sequential else ''}")
    if args.target != "mlp":
        _relabel(_PRUNE_OPTIONS, check_target_options, args.target, args.prune_hidden, args.sequential)
        params = _head_target_params(args)
    else:
        params = scorer_params(args.method, args.param, mode=args.mode, prune_hidden=args.prune_hidden,
                               taken=_taken(args))
    check_backend(params.get("backend", "auto"), "--param backend")
    checked = preflight(args, out_kind="directory", owner="model", reads_text=True, no_text=_NO_TEXT)
    layout = model_layout(checked.source)
    if args.target != "mlp":
        heads = _head_layout(args, checked.source, layout)
        if heads is not None and args.target == "attention":
            _check_head_allocation(args, heads)
        return params, checked, heads is not None and args.target == "attention"
    if layout is not None:
        check_allocation(args, *layout)
    return params, checked, layout is not None


def _head_target_params(args) -> dict:
    """``--param`` items for the head scorer of ``--method`` (with ``--target both``, for the neuron scorer too).

    With ``both`` each item goes to the scorer that declares it, as in prune_model; the items are
    checked against the neuron scorer, and those the head scorer declares against it as well.
    """
    head = _relabel({"method": "--method"}, head_scorer_class, args.method)
    words = {k: f"--param {k}" for k in head.param_names()}
    if args.target == "both":
        params = scorer_params(args.method, args.param, mode=args.mode, prune_hidden=False, taken=_taken(args))
        _relabel(words, head.check_params, **{k: v for k, v in params.items() if k in words})
        return params
    params: dict = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidArgumentError(f"`--param` must be KEY=VALUE; got {item!r}")
        if key not in words:
            has = f"its parameters are {', '.join(map(repr, words))}" if words else "it has no parameters"
            raise InvalidArgumentError(f"`--param` {key!r} is not a parameter of head scorer {args.method!r}; {has}")
        if key in params:
            raise InvalidArgumentError(f"`--param` {key!r} is given twice")
        params[key] = param_value(value)
    _relabel(words, head.check_params, **params)
    return params


def _head_layout(args, source, layout) -> list[tuple[int, int]] | None:
    """(query heads, key/value heads) of every layer, from the config alone; refuses a family without heads.

    None where the config does not say (a GGUF file; checked once the model has loaded).
    """
    config_file = _config_file(source)
    if config_file is None:
        return None
    raw = read_config(config_file)
    try:
        _, att = attention_spec(raw.get("model_type"))
    except UnsupportedArchitectureError as e:
        raise UnsupportedArchitectureError(f"`--target {args.target}` prunes attention heads, but {e}") from None
    entry = PrunedEntry.from_config(raw, config_file) if source.kind == "pruned" else None
    if entry is not None and entry.heads is not None:
        return list(zip(entry.heads.num_heads, entry.heads.num_key_value_heads))
    n = raw.get(att.heads_attr)
    kv = (raw.get(att.kv_heads_attr) if att.kv_heads_attr is not None else None) or n
    if layout is None or not isinstance(n, int) or not isinstance(kv, int):
        return None
    return [(n, kv)] * len(layout[0])


def _check_head_allocation(args, heads: list[tuple[int, int]]) -> None:
    """Refuse an ``--amount`` of heads that the allocation would refuse, on stand-in scores of these head counts."""
    layers = [SimpleNamespace(layer=i, num_heads=n, num_key_value_heads=kv) for i, (n, kv) in enumerate(heads)]
    scores = {a.layer: torch.zeros(a.num_heads, dtype=torch.float64) for a in layers}
    _relabel(_ALLOCATION_OPTIONS, allocate_heads_checked, scores, layers, args.amount, args.allocation,
             args.min_keep)


def _check_loaded_heads(args, model) -> None:
    """The head checks that need the model: its family, the allocation of ``both``, where a bias would live."""
    layers = attention_layers(model)
    if args.target == "both":
        mlps = mlp_layers(model)
        neurons = _layer_scores([m.intermediate_size for m in mlps])
        heads = {a.layer: torch.zeros(a.num_heads, dtype=torch.float64) for a in layers}
        _relabel(_ALLOCATION_OPTIONS, allocate_both_checked, neurons, mlps, heads, layers, args.amount,
                 args.allocation, args.min_keep)
        _relabel({"compensate": "--compensate", "ridge": "--ridge"}, check_compensation_options, model,
                 args.compensate, args.ridge)
    else:
        _check_head_allocation(args, [(a.num_heads, a.num_key_value_heads) for a in layers])
    if uses_bias(args.compensate):
        _relabel({"compensate": "--compensate"}, check_o_bias_possible, model)


def run(args) -> int:
    params, checked, allocation_checked = _checks(args)
    with process_threads(args.threads) as threads:
        return _run(args, params, checked, allocation_checked, threads)


def _run(args, params: dict, checked: Checked, allocation_checked: bool, threads: tuple[int, str]) -> int:
    # The files given first: the embedded corpus, read in seconds, always has text.
    read = {name: read_texts(args, name) for name in sorted(TEXT_SPLITS, key=lambda n: getattr(args, n) is None)}
    texts, eval_texts = read["texts"], read["eval_texts"]
    times = {}
    model, tok, times["load"] = _load(args)
    if tok is None:  # preflight refuses these; a loader may still come back without one
        raise no_tokenizer_error(args, _NO_TEXT)
    if args.target != "mlp":
        _check_loaded_heads(args, model)  # before calibrating
    elif not allocation_checked:  # a family whose sizes the config alone does not give
        layers = mlp_layers(model)
        check_allocation(args, [m.intermediate_size for m in layers], [m.hidden_size for m in layers])
    if args.target == "mlp":
        _relabel({"compensate": "--compensate", "ridge": "--ridge"}, check_compensation_options, model,
                 args.compensate, args.ridge)  # a family without an MLP bias is refused before calibrating
    # Cut before the calibration: too little evaluation text is refused now, not after the pruning.
    eval_ids = _relabel(_EVALUATION_OPTIONS, token_blocks, tok, eval_texts, args.eval_samples, args.seq_len)
    scorer = None if args.target == "attention" else get_scorer(
        args.method, **{k: v for k, v in params.items() if k in scorer_class(args.method).param_names()})
    _log_second_moments(args, model, scorer)
    t = time.perf_counter()
    if args.sequential:
        # The statistics are collected layer by layer inside prune_model, on the pruned inputs.
        calib_ids = _relabel(CALIBRATION_OPTIONS, token_blocks, tok, texts, args.n_samples, args.seq_len)
        stats, seq = None, {"sequential": True, "input_ids": list(calib_ids.split(args.batch_size))}
    else:
        moments = needs_second_moments(args.compensate) or (scorer is not None and scorer.needs_second_moments())
        stats, seq = _calibrate(args, model, tok, texts, _NO_TEXT, second_moments=moments,
                                attention=args.target != "mlp", scorer=scorer), {}
        if args.split == "measured":  # the trials are measured on the calibration tokens
            seq = {"split": "measured",
                   "input_ids": _relabel(CALIBRATION_OPTIONS, token_blocks, tok, texts, args.n_samples, args.seq_len)}
        times["calibrate"] = time.perf_counter() - t
    dense = copy.deepcopy(model)
    t = time.perf_counter()
    res = _relabel({**scorer_words(args.method), **_PRUNE_OPTIONS}, prune_model, model, stats, method=args.method,
                   amount=args.amount, allocation=args.allocation, how=args.how, mode=args.mode,
                   prune_hidden=args.prune_hidden, compensate=args.compensate, ridge=args.ridge, progress=True, **seq,
                   target=args.target, min_keep=args.min_keep, **params)
    times["calibrate + score + prune, layer by layer" if args.sequential else "score + prune"] = (
        time.perf_counter() - t)
    pruned = res.model
    ppl, tp = _evaluate(args, checked, dense, pruned, eval_ids, times)
    t = time.perf_counter()
    _relabel(OUTPUT_OPTIONS, save_pruned, pruned, tok, checked.out, overwrite=args.overwrite, mask=res.masks,
             force=args.force, head_mask=res.head_mask)  # the masks inside
    times["save"] = time.perf_counter() - t
    _print_summary(args, res, dense, pruned, ppl, tp, times, checked.out, threads)
    return 0


def _evaluate(args, checked: Checked, dense, pruned, eval_ids, times: dict) -> tuple[tuple, dict]:
    """Perplexity of both models (the dense one from the cache when there), then tokens/s of both, alternately.

    Returns ``((dense, pruned, dense_cached), throughput)``; adds the stage times to ``times``.
    """
    t = time.perf_counter()
    ppl_dense, cached = cached_perplexity(dense, eval_ids, fingerprint=model_fingerprint(checked.source),
                                          batch_size=args.batch_size, use_cache=not args.no_cache, progress=True)
    times["perplexity dense (cached)" if cached else "perplexity dense"] = time.perf_counter() - t
    t = time.perf_counter()
    ppl_pruned = perplexity(pruned, input_ids=eval_ids, batch_size=args.batch_size, progress=True)
    times["perplexity pruned"] = time.perf_counter() - t
    t = time.perf_counter()
    # One evaluation window, both models alternately.
    tp = compare_throughput(dense, pruned, eval_ids[:1], rounds=THROUGHPUT_ROUNDS, progress=True)
    tp["tokens"] = int(eval_ids[:1].numel())
    times["tokens/s (both)"] = time.perf_counter() - t
    return (ppl_dense, ppl_pruned, cached), tp


def _speed_lines(tp: dict, threads: tuple[int, str]) -> list[str]:
    """What the tokens/s row measured, and whether its ratio says anything."""
    summary = summarize_ratios(tp["ratios"])
    n = summary.rounds
    plural = "s" if threads[0] > 1 else ""
    lines = [f"tokens/s: the fastest of {n} rounds, each timing both models back to back on {tp['tokens']} tokens, "
             f"{threads[0]} thread{plural} ({threads[1]});",
             "  ratio: the median of the rounds' ratios ± half their interquartile range"]
    if summary.within_noise:
        lines.append(f"the difference is within the noise of {n} round{'s' if n > 1 else ''}: "
                     "no speed-up can be claimed")
    elif summary.median < 1:
        lines.append(f"the pruned model ran slower than the dense one in this measurement ({summary})")
    return lines


def _print_summary(args, res, dense, pruned, ppl: tuple[float, float, bool], tp: dict, times: dict, out,
                   threads: tuple[int, str]) -> None:
    """The table of the dense and the pruned model, the stage times, and where the model is."""
    cd, cp = count_parameters(dense), count_parameters(pruned)
    ppl_dense, ppl_pruned, cached = ppl
    rows = [("MLP parameters", _fmt_int(cd["mlp"]), _fmt_int(cp["mlp"]), f"{cp['mlp'] / cd['mlp']:.3f}")]
    if res.head_mask is not None:
        ad, ap = _attention_parameters(dense), _attention_parameters(pruned)
        rows.append(("attention parameters", _fmt_int(ad), _fmt_int(ap), f"{ap / ad:.3f}"))
    rows += [
        ("total parameters", _fmt_int(cd["total"]), _fmt_int(cp["total"]), f"{cp['total'] / cd['total']:.3f}"),
        ("perplexity", f"{ppl_dense:.2f}{' (cached)' if cached else ''}", f"{ppl_pruned:.2f}",
         f"{ppl_pruned / ppl_dense:.3f}"),
        ("tokens/s", f"{tp['dense_tokens_per_s']:.0f}", f"{tp['pruned_tokens_per_s']:.0f}",
         str(summarize_ratios(tp["ratios"]))),
    ]
    wide, ratio = (max(w, *(len(r[i]) + 2 for r in rows)) for i, w in ((1, 12), (3, 9)))
    print(f"\nmethod={args.method} amount={args.amount} allocation={args.allocation} how={args.how} "
          f"compensate={args.compensate}{' sequential' if args.sequential else ''}"
          f"{'' if args.target == 'mlp' else f' target={args.target}'} threads={threads[0]} ({_what_went(res)})")
    print(f"{'':18}{'dense':>{wide}}{'pruned':>12}{'ratio':>{ratio}}")
    for r in rows:
        print(f"{r[0]:18}{r[1]:>{wide}}{r[2]:>12}{r[3]:>{ratio}}")
    for line in _speed_lines(tp, threads):
        print(line)
    print("\nstage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))
    print(f"saved the pruned model to {out}/ (load it with llmrank_graph.load_model({str(out)!r}))")


def _attention_parameters(model) -> int:
    """Parameters of every attention projection of ``model``."""
    return sum(layer_parameters(m, a)[1] for m, a in zip(mlp_layers(model), attention_layers(model)))


def _what_went(res) -> str:
    """What the summary says was removed: neurons, heads (and the exact fraction), parameters of both."""
    parts = []
    if res.masks is not None:
        parts.append(f"pruned {res.masks.n_pruned()} of {res.masks.n_total()} intermediate neurons")
    heads = res.head_mask
    if heads is not None:
        parts.append(f"removed {heads.n_pruned()} of {heads.n_total()} attention heads ({heads.fraction:.1%})")
        acct = heads.meta.get("parameters")
        if acct is not None:
            parts.append(f"{acct['removed']} of the {acct['total_parameters']} MLP + attention parameters "
                         f"({acct['fraction']:.1%})")
    return "; ".join(parts)
