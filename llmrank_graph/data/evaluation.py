"""Evaluation: held-out perplexity, parameter counts, tokens per second, lm-eval adapter.

It also builds one lm-eval task that needs no download, so the lm-eval path can run offline:
``wikipedia_lastword`` (:data:`LASTWORD_TASK`), a LAMBADA-style last-word prediction made
from the held-out Wikipedia articles (:func:`lastword_examples`, :func:`write_lastword_task`).
:func:`prepare_tasks` checks, before any work, that lm-eval, every task and its data are there.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..base.checks import check_int, fail, fail_type
from ..base.files import atomic_directory
from ..base.params import Boolean, Interval, Optional, validated
from ..base.progress import counter
from ..base.progress import progress as base_progress
from ..errors import InvalidArgumentError, MissingDependencyError, MissingInputError
from ..models.architectures import mlp_layers
from .texts import load_texts, source_blocks

logger = logging.getLogger(__name__)

__all__ = ["perplexity", "count_parameters", "tokens_per_second", "compare_throughput", "RatioSummary",
           "summarize_ratios", "lm_eval",
           "LASTWORD_TASK", "lastword_examples", "write_lastword_task", "lastword_accuracy", "check_lm_eval",
           "prepare_tasks", "task_metrics"]

#: Name of the offline LAMBADA-style task built from the held-out articles.
LASTWORD_TASK = "wikipedia_lastword"
#: A last-word passage has at least this many words (target included) ...
LASTWORD_MIN_WORDS = 30
#: ... and at most this many; longer ones are skipped.
LASTWORD_MAX_WORDS = 120
#: Install hint of the lm-eval extra, used by every message that needs it.
EVAL_EXTRA_HINT = "pip install 'llmrank-graph[eval]'"


_PERPLEXITY_PARAMS = {"seq_len": Interval(int, 1), "n_samples": Interval(int, 1), "batch_size": Interval(int, 1),
                      "progress": Boolean()}


@validated(_PERPLEXITY_PARAMS)
def perplexity(model: nn.Module, tokenizer=None, texts=None, seq_len: int = 512, n_samples: int = 16,
               batch_size: int = 4, input_ids: torch.Tensor | None = None, progress: bool = False) -> float:
    """Perplexity of ``model`` on non-overlapping windows of held-out text.

    Parameters
    ----------
    model : causal LM.
    tokenizer : tokenizer, needed unless ``input_ids`` is given.
    texts : None, path, dataset name or list of str
        None: the embedded Wikipedia *evaluation* articles, which never overlap the
        calibration articles (see :func:`llmrank_graph.data.texts.wikipedia_articles`).
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
    A tiny random Llama (no download): untrained, it is about as perplexed as a uniform guess
    over its 32 tokens.

    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> _ = torch.manual_seed(0)
    >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=12, num_hidden_layers=2,
    ...                                      num_attention_heads=2, num_key_value_heads=2)).eval()
    >>> ppl = perplexity(model, input_ids=torch.randint(0, 32, (4, 16)))
    >>> 20 < ppl < 50
    True
    """
    if input_ids is None:
        input_ids = source_blocks(tokenizer, texts, n_samples, seq_len, split="evaluation")
    if not isinstance(input_ids, torch.Tensor):
        raise fail_type("input_ids", "a (n, seq) LongTensor or None", input_ids)
    if input_ids.dim() != 2 or input_ids.shape[1] < 2:
        raise InvalidArgumentError(f"`input_ids` must be (n, seq) with seq >= 2; got {tuple(input_ids.shape)}")
    device = next(model.parameters()).device
    nll, count = 0.0, 0
    batches = base_progress(range(0, input_ids.shape[0], batch_size), progress, "perplexity", "batch")
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
    """What :func:`tokens_per_second` measured: the best pass over ``tokens`` took ``seconds``."""

    tokens_per_second: float
    seconds: float
    tokens: int


@validated({"repeats": Interval(int, 1), "warmup": Interval(int, 0), "progress": Boolean()})
def tokens_per_second(model: nn.Module, input_ids: torch.Tensor, repeats: int = 3, warmup: int = 1,
                      progress: bool = False) -> Throughput:
    """Forward-pass throughput on ``input_ids`` (best of ``repeats`` after ``warmup`` runs).

    ``progress`` shows a bar over the forward passes.

    Example
    -------
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=12, num_hidden_layers=2,
    ...                                      num_attention_heads=2, num_key_value_heads=2)).eval()
    >>> t = tokens_per_second(model, torch.zeros(2, 8, dtype=torch.long), repeats=2)
    >>> t.tokens, t.tokens_per_second > 0
    (16, True)
    """
    with counter(progress, warmup + repeats, "tokens/s", "pass") as bar:
        best = min(_timed_passes(model, input_ids, repeats, bar, warmup=warmup))
    return Throughput(input_ids.numel() / best, best, input_ids.numel())


def _timed_passes(model: nn.Module, input_ids: torch.Tensor, repeats: int, bar=None, *, warmup: int = 0) -> list[float]:
    """Seconds of each of ``repeats`` forward passes, after ``warmup`` untimed ones.

    ``bar`` (a tqdm bar or None) advances after each pass, outside the timed interval.
    """
    device = next(model.parameters()).device
    ids = input_ids.to(device)
    seconds = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            model(input_ids=ids, use_cache=False)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                seconds.append(time.perf_counter() - t)
            if bar is not None:
                bar.update(1)
    return seconds


@validated({"rounds": Interval(int, 1), "warmup": Interval(int, 0), "progress": Boolean()})
def compare_throughput(dense: nn.Module, pruned: nn.Module, input_ids: torch.Tensor, rounds: int = 3,
                       progress: bool = False, warmup: int = 1) -> dict:
    """Tokens/s of two models on the same input, measured alternately in one run.

    After ``warmup`` untimed passes of each model, every round times one pass of each, the
    two back to back (dense first in even rounds, pruned first in odd ones), so that both
    see the same machine load and a slow drift of the load cancels. ``progress`` shows a bar
    over the forward passes (``2 * warmup + 2 * rounds``).

    Returns
    -------
    dict
        ``dense_tokens_per_s`` and ``pruned_tokens_per_s`` (each model's fastest round),
        ``speedup`` (pruned over dense, of those), and ``ratios``: each round's pruned over
        dense tokens/s, in order, for :func:`summarize_ratios`.

    Example
    -------
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=12, num_hidden_layers=2,
    ...                                      num_attention_heads=2, num_key_value_heads=2)).eval()
    >>> tp = compare_throughput(model, model, torch.zeros(1, 8, dtype=torch.long), rounds=2)
    >>> sorted(tp), len(tp["ratios"]), tp["speedup"] > 0
    (['dense_tokens_per_s', 'pruned_tokens_per_s', 'ratios', 'speedup'], 2, True)
    """
    d, p = [], []
    with counter(progress, 2 * (warmup + rounds), "tokens/s", "pass") as bar:
        for model in (dense, pruned):
            _timed_passes(model, input_ids, 0, bar, warmup=warmup)
        for i in range(rounds):
            order = ((dense, d), (pruned, p)) if i % 2 == 0 else ((pruned, p), (dense, d))
            for model, seconds in order:
                seconds += _timed_passes(model, input_ids, 1, bar)
    n = input_ids.numel()
    dense_tps, pruned_tps = n / min(d), n / min(p)
    return {"dense_tokens_per_s": dense_tps, "pruned_tokens_per_s": pruned_tps, "speedup": pruned_tps / dense_tps,
            "ratios": [a / b for a, b in zip(d, p)]}


@dataclass(frozen=True)
class RatioSummary:
    """Per-round ratios summed up (:func:`summarize_ratios`): ``median``, ``spread`` and ``rounds``.

    ``spread`` is half the interquartile range (quartiles interpolated linearly between the
    sorted ratios, numpy's default): half the width of the middle half of the rounds, about
    0.67 standard deviations for normally distributed ratios; 0 for one round.
    """

    median: float
    spread: float
    rounds: int

    @property
    def within_noise(self) -> bool:
        """Whether the spread is at least the distance of the median from 1 (or there is one round only)."""
        return self.rounds < 2 or self.spread >= abs(self.median - 1.0)

    def __str__(self) -> str:
        return f"{self.median:.2f}x ± {self.spread:.2f}"


def summarize_ratios(ratios: Sequence[float]) -> RatioSummary:
    """Median and half the interquartile range of per-round ratios (:func:`compare_throughput`'s ``ratios``).

    >>> s = summarize_ratios([1.08, 1.10, 1.12, 1.11, 1.09])
    >>> str(s), s.within_noise
    ('1.10x ± 0.01', False)
    >>> summarize_ratios([0.9, 1.2, 1.0, 1.1]).within_noise
    True
    """
    if not ratios:
        raise InvalidArgumentError("`ratios` must hold at least one ratio; got none")
    x = torch.tensor([float(r) for r in ratios], dtype=torch.float64)
    q1, med, q3 = torch.quantile(x, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)).tolist()
    return RatioSummary(med, (q3 - q1) / 2, len(ratios))


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


# ---------------------------------------------------------------------------- the offline last-word task
# A passage is cut at sentence ends; the sentence boundary is a [.!?] followed by space and a capital.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
# The target must be a plain word (no digits, no hyphen): what LAMBADA asks for.
_TARGET_WORD = re.compile(r"^[A-Za-z]{3,}$")
_TRAILING_PUNCT = re.compile(r"[.!?,;:\"')\]]+$")


@validated({"min_words": Interval(int, 2), "limit": Optional(Interval(int, 1))})
def lastword_examples(texts: Sequence[str] | str | os.PathLike | None = None, *,
                      min_words: int = LASTWORD_MIN_WORDS, max_words: int = LASTWORD_MAX_WORDS,
                      limit: int | None = None) -> list[dict[str, str]]:
    """LAMBADA-style examples: predict the last word of a passage from the passage.

    Every line (paragraph) of the texts with at least ``min_words`` words gives at most one
    example: its first sentences, up to the first sentence end at which the passage holds
    ``min_words`` words. The passage's last word, stripped of its final punctuation, is the
    target if it is a plain word of three letters or more (``[A-Za-z]{3,}``); otherwise, or
    if the passage is longer than ``max_words``, the paragraph gives none. The rule is
    deterministic, and the default texts are the held-out evaluation articles, which the
    calibration never sees.

    Parameters
    ----------
    texts : sequence of str, path, dataset name or None
        None: the embedded Wikipedia evaluation articles. A str or path is read with
        :func:`llmrank_graph.data.texts.load_texts` (its evaluation split for None).
    min_words, max_words : int
        Passage length bounds, in whitespace-separated words.
    limit : int, optional
        Keep the first ``limit`` examples.

    Returns
    -------
    list of dict
        ``{"context": passage without its last word, "target": " " + last word}`` (the
        target starts with the space that separates it from the context, as lm-eval expects).

    Raises
    ------
    InvalidArgumentError
        ``min_words < 2``, ``max_words < min_words``, ``limit < 1``, or texts that give no
        example (a ValueError).

    Example
    -------
    >>> ex = lastword_examples(["The cat sat on the mat. It was a very warm mat in the sun."], min_words=5)
    >>> ex[0]["context"], ex[0]["target"]
    ('The cat sat on the', ' mat')
    """
    max_words = check_int("max_words", max_words, minimum=min_words)  # its bound is the checked min_words
    if texts is None or isinstance(texts, (str, os.PathLike)):
        texts = load_texts(texts, split="evaluation")
    out: list[dict[str, str]] = []
    for text in texts:
        for line in text.split("\n"):
            example = _lastword_example(line, min_words, max_words)
            if example is not None:
                out.append(example)
                if limit is not None and len(out) >= limit:
                    return out
    if not out:
        raise InvalidArgumentError(f"`texts` must hold paragraphs of at least {min_words} words ending in a plain "
                                   "word; these give no last-word example")
    return out


def _lastword_example(line: str, min_words: int, max_words: int) -> dict[str, str] | None:
    """The example of one paragraph (see :func:`lastword_examples`), or None when it gives none."""
    words = line.split()
    if len(words) < min_words:
        return None
    acc, n = [], 0
    for sentence in _SENTENCE_END.split(" ".join(words)):
        acc.append(sentence)
        n += len(sentence.split())
        if n >= min_words:
            break
    if n < min_words or n > max_words:
        return None
    passage = " ".join(acc)
    last = passage.rsplit(" ", 1)[-1]
    word = _TRAILING_PUNCT.sub("", last)
    if not _TARGET_WORD.match(word):
        return None
    return {"context": passage[: len(passage) - len(last)].rstrip(), "target": " " + word}


_LASTWORD_YAML = """\
# Written by llmrank_graph.data.evaluation.write_lastword_task: a LAMBADA-style last-word task
# built from held-out text ({n} examples). Accuracy: the greedy continuation is the target.
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: loglikelihood
test_split: test
doc_to_text: "{{{{context}}}}"
doc_to_target: "{{{{target}}}}"
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def write_lastword_task(directory: str | os.PathLike, examples: Sequence[dict[str, str]] | None = None, *,
                        overwrite: bool = False) -> Path:
    """Write the last-word task as an lm-eval task directory (a YAML config and its data).

    Pass the directory to lm-eval as ``TaskManager(include_path=directory)`` (or to
    :func:`prepare_tasks`); the task is then called :data:`LASTWORD_TASK`. The data file is
    JSON lines, read by the ``datasets`` JSON loader, so nothing is downloaded.

    Parameters
    ----------
    directory : str or path-like
        Written atomically (:func:`llmrank_graph.base.files.atomic_directory`).
    examples : sequence of dict, optional
        ``{"context", "target"}`` records; default :func:`lastword_examples` ().
    overwrite : bool
        Replace an existing directory.

    Returns
    -------
    pathlib.Path
        The directory, absolute (the YAML names its data file by absolute path).

    Raises
    ------
    OutputExistsError
        ``directory`` exists and ``overwrite`` is False.
    InvalidArgumentError
        An example without a str ``context`` and ``target``.
    """
    examples = lastword_examples() if examples is None else list(examples)
    for i, ex in enumerate(examples):
        if not (isinstance(ex, dict) and isinstance(ex.get("context"), str) and isinstance(ex.get("target"), str)):
            raise fail(f"examples[{i}]", "a dict with str 'context' and 'target'", ex)
    if not examples:
        raise InvalidArgumentError("`examples` must hold at least one example; got 0")
    final = Path(directory).expanduser().absolute()
    with atomic_directory(final, overwrite=overwrite, arg="directory") as tmp:
        data = "\n".join(json.dumps({"context": e["context"], "target": e["target"]}, ensure_ascii=False)
                         for e in examples) + "\n"
        (tmp / "test.jsonl").write_text(data, encoding="utf-8")
        (tmp / f"{LASTWORD_TASK}.yaml").write_text(
            _LASTWORD_YAML.format(task=LASTWORD_TASK, n=len(examples), data=json.dumps(str(final / "test.jsonl"))),
            encoding="utf-8")
    return final


def lastword_accuracy(model: nn.Module, tokenizer, examples: Sequence[dict[str, str]]) -> dict[str, float]:
    """Last-word accuracy computed directly, the way lm-eval scores a ``loglikelihood`` task.

    For each example, ``context + target`` and ``context`` are encoded with the tokenizer's
    defaults; the target tokens are the tail of the first beyond the second. The example is
    right when every target token is the model's greedy choice. This is what lm-eval's
    ``acc`` means for :data:`LASTWORD_TASK`; it needs no harness.

    Returns
    -------
    dict
        ``{"acc": fraction right, "perplexity": exp(-mean target log-likelihood), "n": count}``.

    Raises
    ------
    InvalidArgumentError
        No examples, or an example whose target adds no token (a ValueError).
    """
    if not examples:
        raise InvalidArgumentError("`examples` must hold at least one example; got 0")
    device = next(model.parameters()).device
    right, lls = 0, []
    with torch.inference_mode():
        for i, ex in enumerate(examples):
            ctx = tokenizer.encode(ex["context"])
            whole = tokenizer.encode(ex["context"] + ex["target"])
            cont = whole[len(ctx):]
            if not cont:
                raise InvalidArgumentError(f"`examples[{i}]` target {ex['target']!r} adds no token to its context")
            ids = torch.tensor([(ctx + cont)[:-1]], device=device)
            logits = model(input_ids=ids, use_cache=False).logits[0, -len(cont):].float()  # (len(cont), vocab)
            target = torch.tensor(cont, device=device)
            logp = torch.log_softmax(logits, dim=-1)
            lls.append(float(logp.gather(1, target[:, None]).sum()))
            right += bool((logits.argmax(-1) == target).all())
    return {"acc": right / len(examples), "perplexity": math.exp(-sum(lls) / len(lls)), "n": len(examples)}


def check_lm_eval(tasks: Sequence[str]) -> list[str]:
    """``tasks`` as a list, once lm-eval is known to be importable.

    Raises
    ------
    InvalidArgumentTypeError, InvalidArgumentError
        ``tasks`` is not a non-empty list of names.
    MissingDependencyError
        lm-eval is not installed (an ImportError naming the tasks and the extra).
    """
    if isinstance(tasks, str) or not all(isinstance(t, str) for t in tasks):
        raise fail_type("tasks", "a list of lm-eval task names", tasks)
    tasks = list(tasks)
    if not tasks:
        raise InvalidArgumentError("`tasks` must name at least one lm-eval task, e.g. ['wikipedia_lastword']")
    try:
        import lm_eval.tasks  # noqa: F401
    except ImportError as e:
        raise MissingDependencyError(f"lm-eval tasks {', '.join(map(repr, tasks))} need lm-evaluation-harness, "
                                     f"which is not installed ({e}): {EVAL_EXTRA_HINT}") from e
    return tasks


def prepare_tasks(tasks: Sequence[str], include_path: str | os.PathLike | None = None):
    """Check that lm-eval, every task and every task's data are available; return the task manager.

    Meant to run before any work: it raises with everything that is missing, at once.
    Loading a task reads its data the way lm-eval does (through ``datasets``, from the local
    cache; ``datasets`` downloads it only where it is allowed to and can, never with
    ``HF_DATASETS_OFFLINE=1``).

    Parameters
    ----------
    tasks : sequence of str
        lm-eval task names.
    include_path : str or path-like, optional
        A directory of local task configs, e.g. from :func:`write_lastword_task`. When every
        task is found there, lm-eval's own task index (slow to build) is not read.

    Returns
    -------
    lm_eval.tasks.TaskManager
        Pass it to :func:`lm_eval` as ``task_manager=``.

    Raises
    ------
    MissingDependencyError
        lm-eval is not installed (an ImportError naming the extra).
    InvalidArgumentError
        A task lm-eval does not know (the message suggests close names) (a ValueError).
    MissingInputError
        A task's data cannot be loaded; the message names each task and the reason (a
        FileNotFoundError).
    """
    tasks = check_lm_eval(tasks)
    from lm_eval.tasks import TaskManager, get_task_dict

    local = []
    if include_path is not None:
        local = [p.stem for p in Path(include_path).glob("*.yaml")]
    only_local = bool(local) and all(t in local for t in tasks)
    manager = TaskManager(include_path=None if include_path is None else str(include_path),
                          include_defaults=not only_local)
    known = set(manager.all_tasks)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        hints = []
        for t in unknown:
            close = difflib.get_close_matches(t, manager.all_tasks, n=3)
            hints.append(f"{t!r}" + (f" (did you mean {', '.join(map(repr, close))}?)" if close else ""))
        offline = "" if LASTWORD_TASK in known else f"; the offline task {LASTWORD_TASK!r} needs its task directory"
        raise InvalidArgumentError(f"lm-eval does not know the task(s) {', '.join(hints)}{offline}")
    missing = []
    for t in tasks:
        try:
            with warnings.catch_warnings():  # newer lm-eval deprecates get_task_dict; older ones lack its successor
                warnings.simplefilter("ignore", DeprecationWarning)
                get_task_dict([t], manager)
        except Exception as e:  # noqa: BLE001 - datasets raises many kinds; each is reported with its task
            missing.append(f"task {t!r}: its data could not be loaded ({type(e).__name__}: {str(e)[:300]})")
    if missing:
        raise MissingInputError("lm-eval task data are missing: " + "; ".join(missing) +
                                ". Download them where the Hugging Face Hub is reachable (lm-eval reads them "
                                "through `datasets` from ~/.cache/huggingface) or drop these tasks; "
                                f"{LASTWORD_TASK!r} needs no download")
    return manager


def task_metrics(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """lm-eval's ``results`` mapping reduced to ``{task: {metric: value}}``, numbers only.

    lm-eval names metrics ``"acc,none"`` (metric, filter); the filter ``none`` is dropped and
    any other is kept after a slash (``"acc/strict"``); standard errors and aliases are left out.
    """
    out: dict[str, dict[str, float]] = {}
    for task, metrics in results.items():
        row = {}
        for key, value in metrics.items():
            name, _, filt = key.partition(",")
            if not isinstance(value, (int, float)) or isinstance(value, bool) or name.endswith("_stderr"):
                continue
            if name in ("sample_len",):
                continue
            row[name if filt in ("", "none") else f"{name}/{filt}"] = float(value)
        out[task] = row
    return out
