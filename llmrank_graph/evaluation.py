"""Evaluation: held-out perplexity, parameter counts, tokens per second, lm-eval adapter."""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass

import torch
from torch import nn

from ._checks import check_bool, check_int, check_positive_int, fail_type
from .architectures import mlp_layers
from .errors import InvalidArgumentError, MissingDependencyError

logger = logging.getLogger(__name__)

__all__ = ["perplexity", "count_parameters", "tokens_per_second", "compare_throughput", "lm_eval"]


def perplexity(model: nn.Module, tokenizer=None, texts=None, seq_len: int = 512, n_samples: int = 16,
               batch_size: int = 4, input_ids: torch.Tensor | None = None, progress: bool = False) -> float:
    """Perplexity of ``model`` on non-overlapping windows of held-out text.

    Parameters
    ----------
    model : causal LM.
    tokenizer : tokenizer, needed unless ``input_ids`` is given.
    texts : None, path, dataset name or list of str
        None: the embedded Wikipedia *evaluation* articles, which never overlap the
        calibration articles (see :func:`llmrank_graph.data.wikipedia_articles`).
    seq_len, n_samples : int
        ``n_samples`` windows of ``seq_len`` tokens, cut in order from the text.
    batch_size : int
    input_ids : LongTensor (n, seq), optional
        Pre-tokenised windows (then ``texts``/``tokenizer`` are not used).
    progress : bool
        Show a progress bar.

    Returns
    -------
    float
        ``exp(mean token negative log-likelihood)`` over all predicted tokens.

    Raises
    ------
    InvalidArgumentError
        No tokenizer and no ``input_ids``; ``input_ids`` not (n, seq) with seq >= 2; sizes
        below 1 (a ValueError).
    InvalidArgumentTypeError
        Arguments of the wrong type (a TypeError).

    Example
    -------
    >>> model, tok = llmrank_graph.load_model()          # doctest: +SKIP
    >>> perplexity(model, tok, n_samples=16)              # doctest: +SKIP
    20.4
    """
    for arg, v in (("seq_len", seq_len), ("n_samples", n_samples), ("batch_size", batch_size)):
        check_positive_int(arg, v)
    check_bool("progress", progress)
    if input_ids is None:
        if tokenizer is None:
            raise InvalidArgumentError("`tokenizer` is required unless `input_ids` is given")
        from .data import load_texts, token_blocks

        if texts is None or isinstance(texts, (str, os.PathLike)):
            texts = load_texts(texts, split="evaluation")
        input_ids = token_blocks(tokenizer, texts, n_samples, seq_len)
    if not isinstance(input_ids, torch.Tensor):
        raise fail_type("input_ids", "a (n, seq) LongTensor or None", input_ids)
    if input_ids.dim() != 2 or input_ids.shape[1] < 2:
        raise InvalidArgumentError(f"`input_ids` must be (n, seq) with seq >= 2; got {tuple(input_ids.shape)}")
    device = next(model.parameters()).device
    nll, count = 0.0, 0
    batches = range(0, input_ids.shape[0], batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="perplexity", unit="batch")
    with torch.inference_mode():
        for i in batches:
            ids = input_ids[i:i + batch_size].to(device)
            logits = model(input_ids=ids, use_cache=False).logits.float()  # (b, seq, vocab)
            loss = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                               ids[:, 1:].reshape(-1), reduction="sum")
            nll += float(loss)
            count += ids[:, 1:].numel()
    value = math.exp(nll / count)
    if not math.isfinite(value):
        logger.warning("perplexity overflowed (mean NLL %.1f)", nll / count)
    return value


def count_parameters(model: nn.Module) -> dict[str, int]:
    """``{'total': ..., 'mlp': ...}``: all parameters (tied weights once) and MLP parameters."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    mlp = 0
    for m in mlp_layers(model):
        for mod in m.named_modules().values():
            mlp += sum(p.numel() for p in mod.parameters())
    return {"total": total, "mlp": mlp}


@dataclass(frozen=True)
class Throughput:
    tokens_per_second: float
    seconds: float
    tokens: int


def tokens_per_second(model: nn.Module, input_ids: torch.Tensor, repeats: int = 3, warmup: int = 1) -> Throughput:
    """Forward-pass throughput on ``input_ids`` (best of ``repeats`` after ``warmup`` runs)."""
    check_positive_int("repeats", repeats)
    check_int("warmup", warmup, minimum=0)
    device = next(model.parameters()).device
    ids = input_ids.to(device)
    best = math.inf
    with torch.inference_mode():
        for i in range(warmup + repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            model(input_ids=ids, use_cache=False)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                best = min(best, time.perf_counter() - t)
    return Throughput(ids.numel() / best, best, ids.numel())


def compare_throughput(dense: nn.Module, pruned: nn.Module, input_ids: torch.Tensor, rounds: int = 3) -> dict:
    """Tokens/s of two models on the same input, measured alternately in one run.

    Alternating the two models in each round keeps both under the same machine load.
    """
    check_positive_int("rounds", rounds)
    d, p = [], []
    for _ in range(rounds):
        d.append(tokens_per_second(dense, input_ids, repeats=1).seconds)
        p.append(tokens_per_second(pruned, input_ids, repeats=1).seconds)
    n = input_ids.numel()
    dense_tps, pruned_tps = n / min(d), n / min(p)
    return {"dense_tokens_per_s": dense_tps, "pruned_tokens_per_s": pruned_tps, "speedup": pruned_tps / dense_tps}


def lm_eval(model: nn.Module, tokenizer, tasks: list[str], batch_size: int = 8, num_fewshot: int = 0,
            limit: int | None = None, **kwargs) -> dict:
    """Zero-shot accuracy with lm-evaluation-harness (the ``eval`` extra).

    The task data must already be available locally (lm-eval reads it through ``datasets``;
    nothing is downloaded when ``HF_DATASETS_OFFLINE=1``).

    Returns
    -------
    dict
        lm-eval's ``results`` mapping, task -> metrics.
    """
    try:
        import lm_eval as _lm_eval
        from lm_eval.models.huggingface import HFLM
    except ImportError as e:
        raise MissingDependencyError("lm_eval() needs lm-evaluation-harness: pip install 'llmrank-graph[eval]'") from e
    if isinstance(tasks, str):
        raise fail_type("tasks", "a list of lm-eval task names, not a single str (wrap it in a list)", tasks)
    if not tasks:
        raise InvalidArgumentError("`tasks` must name at least one lm-eval task, e.g. ['piqa', 'arc_easy']")
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    out = _lm_eval.simple_evaluate(model=lm, tasks=list(tasks), num_fewshot=num_fewshot, limit=limit, **kwargs)
    return out["results"]
