"""The one-call pipeline: score the MLP neurons, choose the lowest-scored ones, prune them.

:func:`prune_model` checks everything once, at its entry (docs/design.md section 3): its
parameter table, the model, the statistics and one scan of the weights. It then scores, allocates
(:func:`~llmrank_graph.pruning.masks.allocate_checked`) and applies the mask
(:func:`~llmrank_graph.pruning.core.apply_checked`) without checking again; with
``sequential=True`` it hands the checked arguments to the layer-by-layer mode
(:mod:`llmrank_graph.pruning.sequential`).

``target='attention'`` and ``target='both'`` prune attention heads (alone, or with the MLP
neurons): the head scorers of :mod:`llmrank_graph.scoring.heads`, the allocation under the
grouped-query rule of :mod:`llmrank_graph.pruning.head_allocation`, head removal
(:func:`~llmrank_graph.pruning.heads.remove_heads`) and the compensation of the output
projection (:mod:`llmrank_graph.compensation.heads`), all checked at the entry as well.
"""

from __future__ import annotations

import logging

from torch import nn

from ..base.params import Boolean, OneOf, validate
from ..base.progress import counter
from ..compensation.algebra import (
    COMPENSATION_CONSTRAINTS,
    DEFAULT_RIDGE,
    check_bias_possible,
    check_compensation_stats,
    uses_bias,
)
from ..compensation.heads import apply_o_updates, check_head_compensation, o_updates
from ..errors import InvalidArgumentError, InvalidArgumentTypeError
from ..models.architectures import MODEL
from ..models.attention import attention_layers
from ..scoring import registry
from ..scoring.heads import HeadPageRankScorer, head_scorer_class
from .allocation import ALLOCATIONS
from .core import HOWS, STATS, PruneResult, apply_checked, check_hidden_compensation, check_model_and_stats
from .head_allocation import allocate_both_checked, allocate_heads_checked
from .heads import remove_heads
from .masks import AMOUNT, MIN_KEEP, allocate_checked, check_reference_floor
from .sequential import plan_sequential, prune_sequential_checked
from .split import SPLITS, masks_at, measured_split

logger = logging.getLogger(__name__)

__all__ = ["prune_model", "TARGETS", "check_target_options"]

#: What :func:`prune_model` prunes: MLP neurons, attention heads, or both.
TARGETS: tuple[str, ...] = ("mlp", "attention", "both")

#: The parameter constraints of :func:`prune_model`, checked once at its entry (in this order).
PRUNE_CONSTRAINTS = {"model": MODEL, "amount": AMOUNT, "allocation": OneOf(*ALLOCATIONS), "how": OneOf(*HOWS),
                     "prune_hidden": Boolean(), "sequential": Boolean(), "stats": STATS, "min_keep": MIN_KEEP,
                     **COMPENSATION_CONSTRAINTS, "progress": Boolean(), "target": OneOf(*TARGETS),
                     "split": OneOf(*SPLITS)}


def prune_model(model: nn.Module, stats, method: str = "pagerank", amount: float = 0.3, allocation: str = "local",
                how: str = "remove", mode: str = "chained", prune_hidden: bool = False, graph=None, *,
                min_keep: int | float | None = None, compensate: str = "none", ridge: float = DEFAULT_RIDGE,
                sequential: bool = False, input_ids=None, device=None, progress: bool = False,
                target: str = "mlp", split: str = "scores", **method_params) -> PruneResult:
    """Score the MLP neurons (or attention heads) of ``model``, choose the lowest-scored ones and prune them in place.

    Parameters
    ----------
    model : transformers model of a registered architecture
    stats : ActivationStats or None
        Calibration statistics of ``model`` (:func:`llmrank_graph.calibrate`); ``None`` only for
        weight-only scorers.
    method : str
        A scorer of :func:`llmrank_graph.scoring.registry`; with ``target='attention'`` or
        ``'both'``, also one of :func:`llmrank_graph.scoring.heads.head_scorers` (``magnitude``,
        ``activation``, ``flap``, ``random``), which scores the heads.
    amount : float
        Fraction of intermediate neurons to prune, in [0, 1); with ``target='attention'`` the
        fraction of query heads, with ``target='both'`` the fraction of the MLP + attention
        parameters (reached as closely as the steps of the head counts allow).
    allocation : {'local', 'global', 'standardized'}
        See :func:`llmrank_graph.pruning.masks.allocate`.
    how : {'remove', 'zero'}
        See :func:`~llmrank_graph.pruning.surgery.apply_mask`.
    mode : {'chained', 'isolated'}
        Graph / reference pipeline over the whole stack or per MLP.
    prune_hidden : bool
        The reference's paper mode: also zero the down_proj rows of the lowest-scored hidden
        channels. Needs ``how='zero'``.
    graph : MLPGraph, optional
        A graph already exported from ``model``, passed to the scorer.
    min_keep : int, float or None
        Per-layer floor, see :func:`llmrank_graph.pruning.masks.allocate`.
    compensate : {'none', 'bias', 'lstsq', 'lstsq+bias'}
        Repair each layer's MLP output after the removal (see
        :func:`~llmrank_graph.pruning.surgery.apply_mask` and
        :mod:`llmrank_graph.compensation.algebra`). ``lstsq`` needs stats calibrated with
        ``second_moments=True``.
    ridge : float
        Ridge of the least-squares refit, relative to ``mean(diag G_KK)``.
    sequential : bool
        Prune layer by layer, each layer's statistics collected on the outputs of the
        already-pruned layers (:mod:`llmrank_graph.pruning.sequential`, which says how global
        allocations and whole-model scorers are handled). Needs ``input_ids``; ``stats``, if
        given, are the dense model's and serve the budgets of a global allocation.
    input_ids : LongTensor (n, seq) or list of LongTensor (batch, seq), optional
        The calibration tokens of the sequential mode, or the tokens ``split='measured'`` measures
        its trials on (a LongTensor).
    device : str or torch.device, optional
        Sequential mode: where each layer and the hidden states are processed (default: the
        model's device), so that a model larger than the device can be pruned from CPU memory.
    progress : bool
        Show a progress bar: over the steps (check, score, allocate, prune), or over the layers
        in the sequential mode.
    target : {'mlp', 'attention', 'both'}
        What to prune. ``'mlp'``: intermediate neurons, as always. ``'attention'``: query heads,
        under the grouped-query rule (every layer keeps the same number of heads in each
        key/value group it keeps; :mod:`llmrank_graph.pruning.head_allocation`), each allocation
        reaching ``amount`` as closely as the steps allow; ``how='zero'`` zeroes the heads'
        output columns (the same logits). ``'both'``: neurons and heads together. The rule:
        each layer's neuron scores and head scores are normalised separately as the global
        allocation normalises layers (divided by their mean absolute value; standardised with
        ``allocation='standardized'``), pooled, and taken lowest first, each unit costing its
        parameters (a neuron ``~3 d``, a query head ``2 d head_dim`` plus its share of its
        key/value group), up to ``amount`` of the MLP + attention parameters; ``local`` makes
        each layer its own pool with its own budget, ``global`` and ``standardized`` pool all
        layers. ``compensate`` repairs the attention output projection as it repairs down_proj
        (the stats must then be calibrated with ``attention=True``). ``sequential=True`` and the
        paper mode are refused with heads. ``min_keep`` is each layer's floor of heads (and,
        with ``'both'``, of neurons too).
    split : {'scores', 'measured'}
        With ``target='both'``: how the budget is shared. ``'scores'``: the rule above.
        ``'measured'``: the head fraction (0, 2.5, 5 or 10% of the heads, chosen globally) whose
        pruned copy, neurons completing the budget with ``allocation``, has the lowest
        perplexity on ``input_ids`` (:mod:`llmrank_graph.pruning.split`); needs ``input_ids``.
    **method_params
        Further parameters of the scorer. With ``target='both'`` each goes to the neuron scorer
        or the head scorer that declares it (to both if both do).

    Returns
    -------
    PruneResult
        ``.model`` (pruned in place), ``.masks``, ``.scores`` (and ``.stats`` in the
        sequential mode); ``.head_mask`` and ``.head_scores`` with heads (``.masks`` and
        ``.scores`` are None with ``target='attention'``). The head mask's ``meta`` holds the
        exact fraction of heads removed, and with ``'both'`` the parameter accounting
        (``meta['parameters']``).

    Raises
    ------
    InvalidArgumentTypeError
        ``model`` is not an nn.Module (a model's name is loaded with
        :func:`llmrank_graph.load_model` first), or an argument of the wrong type (a TypeError).
    UnsupportedArchitectureError
        ``model`` is an nn.Module of no registered family (a ValueError).
    ValueError
        Bad ``amount``/``allocation``/``how``; unknown ``method`` (listing the registry); stats
        from another model (naming the module and both shapes); NaN or inf in weights or stats;
        an allocation that would empty a layer; ``compensate`` with stats that lack the second
        moments (saying how to collect them); ``bias`` on a family without an MLP bias; a ridge
        that is not positive; ``sequential=True`` without ``input_ids`` or with the paper
        mode, whose allocation of hidden channels it cannot honour. Everything is checked
        before the model is modified, so on error the model is unchanged.

    Notes
    -----
    Each scorer says how its counts are rounded (``Scorer.rounding``): the reference
    reproductions (``wpr``, ``mpr``, ``channel-wanda``, ``norm``) with ``'reference'``, the other
    methods with ``'round'``. The paper mode (``prune_hidden=True``) always rounds as the reference.

    Example
    -------
    >>> import torch, llmrank_graph
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=20,
    ...                                      num_hidden_layers=2, num_attention_heads=2)).eval()
    >>> stats = llmrank_graph.calibrate(model, input_ids=torch.randint(0, 32, (2, 16)))
    >>> result = llmrank_graph.prune_model(model, stats, "pagerank", amount=0.3)
    >>> result.masks.fraction, llmrank_graph.pruning.intermediate_sizes(model)
    (0.3, [14, 14])
    >>> stats = llmrank_graph.calibrate(model, input_ids=torch.randint(0, 32, (2, 16)), attention=True)
    >>> heads = llmrank_graph.prune_model(model, stats, "activation", amount=0.5, target="attention")
    >>> heads.head_mask.sizes(), heads.masks is None
    ([1, 1], True)
    """
    v = validate(PRUNE_CONSTRAINTS, {"model": model, "amount": amount, "allocation": allocation, "how": how,
                                     "prune_hidden": prune_hidden, "sequential": sequential, "stats": stats,
                                     "min_keep": min_keep, "compensate": compensate, "ridge": ridge,
                                     "progress": progress, "target": target, "split": split})
    amount, allocation, how, prune_hidden, sequential, min_keep, compensate, ridge, progress = (
        v[k] for k in ("amount", "allocation", "how", "prune_hidden", "sequential", "min_keep", "compensate", "ridge",
                       "progress"))
    _check_split(split, target, input_ids, sequential)
    _check_modes(how, prune_hidden, sequential, None if split == "measured" else input_ids, device)
    check_hidden_compensation(prune_hidden, compensate)
    if target != "mlp":
        check_target_options(target, prune_hidden, sequential)
        if graph is not None:
            method_params["graph"] = graph
        return _prune_heads(model, stats, method, amount, allocation, how, mode, target, min_keep, compensate, ridge,
                            progress, method_params, split, input_ids)
    # The sequential mode counts its layers on a bar of its own.
    with _Steps(progress and not sequential, 4) as steps:
        steps.start("checking")  # a scan of the weights and statistics: seconds on a real model
        check_model_and_stats(model, stats)
        if uses_bias(compensate):
            check_bias_possible(model)
        if graph is not None:
            method_params["graph"] = graph
        if sequential:
            plan = plan_sequential(model, input_ids, method, mode, method_params, amount, allocation, min_keep)
            result = prune_sequential_checked(model, plan, amount, allocation, how, stats=stats,
                                              compensate=compensate, ridge=ridge, min_keep=min_keep, device=device,
                                              progress=progress)
            result.masks.meta.update({"how": how, "mode": mode, "prune_hidden": False, "compensate": compensate,
                                      "sequential": True})
            return result
        check_compensation_stats(model, stats, compensate)
        rounding = "reference" if prune_hidden else registry.scorer_class(method).rounding
        check_reference_floor(rounding, min_keep)
        steps.start("scoring")
        # The model and the statistics were checked above: the scorer does not check them again.
        scores = registry.score_neurons(model, stats, method, mode=mode, prune_hidden=prune_hidden,
                                        check_input=False, **method_params)
        steps.start("allocating")
        masks = allocate_checked(scores, amount, allocation, min_keep, rounding)
        masks.meta.update({"method": method, "how": how, "mode": mode, "prune_hidden": prune_hidden,
                           "compensate": compensate})
        steps.start("pruning" if compensate == "none" else f"pruning, compensate={compensate}")
        apply_checked(model, masks, how, compensate, stats, ridge)
    logger.info("pruned %d of %d intermediate neurons (%s, %s, %s, compensate=%s)", masks.n_pruned(),
                masks.n_total(), method, allocation, how, compensate)
    return PruneResult(model, masks, scores)


class _Steps:
    """The steps of :func:`prune_model`, each debug-logged, and counted by a tqdm bar with ``progress``.

    A context manager: leaving it ends the last step and closes the bar.
    """

    def __init__(self, progress: bool, total: int):
        self.bar, self.running = None, False
        if progress:  # the CLI asks for a bar
            self.bar = counter(True, total, "score + prune", "step")

    def start(self, name: str) -> None:
        """End the running step, if any, and start ``name``."""
        self._end()
        logger.debug("prune_model: %s", name)
        if self.bar is not None:
            self.bar.set_postfix_str(name, refresh=True)
        self.running = True

    def _end(self) -> None:
        if self.running and self.bar is not None:
            self.bar.update(1)
        self.running = False

    def __enter__(self) -> _Steps:
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:  # a failed step is not counted as done
            self._end()
        if self.bar is not None:
            self.bar.close()


def _check_modes(how: str, prune_hidden: bool, sequential: bool, input_ids, device) -> None:
    """The combinations of checked arguments that prune_model refuses."""
    if prune_hidden and how == "remove":
        raise InvalidArgumentError("`prune_hidden=True` zeroes down_proj rows (hidden channels of the residual "
                                   "stream), which cannot be removed; pass how='zero'")
    if sequential and prune_hidden:
        raise InvalidArgumentError("`sequential=True` cannot honour the paper mode (prune_hidden=True): it "
                                   "allocates hidden channels of the residual stream over all layers at once, "
                                   "while the sequential mode prunes one layer at a time")
    if not sequential and (input_ids is not None or device is not None):
        raise InvalidArgumentError("`input_ids` and `device` are used by the sequential mode only; pass "
                                   "sequential=True, or calibrate the model and pass `stats`")


def check_target_options(target: str, prune_hidden: bool, sequential: bool) -> None:
    """Refuse the options that heads cannot honour, on a checked ``target`` other than 'mlp' (before anything is read).

    Raises
    ------
    InvalidArgumentError
        ``sequential=True`` or ``prune_hidden=True``, naming the option.
    """
    if sequential:
        raise InvalidArgumentError(f"`sequential=True` prunes MLP neurons layer by layer and cannot prune attention "
                                   f"heads (target={target!r}); drop `sequential`, or prune with target='mlp'")
    if prune_hidden:
        raise InvalidArgumentError(f"`prune_hidden=True` (the reference's paper mode) prunes MLP neurons and hidden "
                                   f"channels only; it cannot be combined with target={target!r}")


def _split_params(method: str, target: str, params: dict) -> tuple[dict, dict]:
    """(head scorer's, neuron scorer's) parameters: each goes to the scorer that declares it."""
    head_names = head_scorer_class(method).param_names()
    if target == "attention":
        return dict(params), {}
    neuron_names = registry.scorer_class(method).param_names()
    unknown = [k for k in params if k not in head_names and k not in neuron_names]
    if unknown:
        raise InvalidArgumentTypeError(f"scorer {method!r} got unknown parameter(s) {', '.join(map(repr, unknown))}; "
                                       f"its neuron scorer takes {', '.join(map(repr, neuron_names))} and its head "
                                       f"scorer {', '.join(map(repr, head_names)) or 'none'}")
    return ({k: v for k, v in params.items() if k in head_names},
            {k: v for k, v in params.items() if k in neuron_names})


def _check_split(split: str, target: str, input_ids, sequential: bool) -> None:
    """``split='measured'`` needs ``target='both'`` and the tokens it measures on."""
    if split == "measured" and (target != "both" or input_ids is None or sequential):
        raise InvalidArgumentError("`split='measured'` chooses how many heads go with target='both' by the perplexity "
                                   "of pruned copies on `input_ids` (the calibration tokens): it needs target='both', "
                                   f"input_ids and sequential=False; got target={target!r}, input_ids "
                                   f"{'given' if input_ids is not None else 'None'}, sequential={sequential}")


def _apply_both(model: nn.Module, masks, head_mask, how: str, compensate: str, stats, ridge: float) -> None:
    """Prune ``model`` with checked masks of its neurons (or None) and heads: every compensation first."""
    layers = attention_layers(model)
    o_new = o_updates(layers, head_mask.heads, stats, compensate, ridge) if compensate != "none" else {}
    if masks is not None:
        apply_checked(model, masks, how, compensate, stats, ridge)  # its own updates first, then its removal
    remove_heads(model, head_mask, how)
    apply_o_updates(model, o_new, keep=head_mask.heads if how == "zero" else None)


def _prune_heads(model: nn.Module, stats, method: str, amount: float, allocation: str, how: str, mode: str,
                 target: str, min_keep, compensate: str, ridge: float, progress: bool,
                 method_params: dict, split: str = "scores", input_ids=None) -> PruneResult:
    """:func:`prune_model` with ``target='attention'`` or ``'both'``, on checked options.

    Every check (scorers, statistics, compensation) and every compensation is made before the
    first weight changes.
    """
    with _Steps(progress, 4) as steps:
        steps.start("checking")
        mlps = check_model_and_stats(model, stats)
        head_params, neuron_params = _split_params(method, target, method_params)
        head_scorer = head_scorer_class(method)(**head_scorer_class(method).check_params(**head_params))
        layers = check_head_compensation(model, stats, compensate)  # the family's heads, or its refusal
        if target == "both":
            if isinstance(head_scorer, HeadPageRankScorer):  # neurons ranked on the graph with heads
                neuron_params = {**neuron_params, "attention": True}
            registry.scorer_class(method).check_params(mode=mode, **neuron_params)
            if uses_bias(compensate):
                check_bias_possible(model)
            check_compensation_stats(model, stats, compensate)
        steps.start("scoring")
        head_scores = head_scorer.score(model, stats, check_input=False)
        if target == "both" and isinstance(head_scorer, HeadPageRankScorer):
            neuron_params = {**neuron_params, "graph": head_scorer.graph_}  # the graph it ranked: one graph
        scores = None if target == "attention" else registry.score_neurons(
            model, stats, method, mode=mode, check_input=False, **neuron_params)
        steps.start("allocating")
        if target == "attention":
            masks, head_mask = None, allocate_heads_checked(head_scores.heads, layers, amount, allocation, min_keep,
                                                            method)
        elif split == "measured":
            rounding = registry.scorer_class(method).rounding
            masks, head_mask, _ = measured_split(
                model, lambda f: masks_at(scores, mlps, head_scores.heads, layers, amount, allocation, min_keep, method,
                                          rounding, f),
                lambda m, nm, hm: _apply_both(m, nm, hm, how, compensate, stats, ridge), input_ids)
        else:
            masks, head_mask, _ = allocate_both_checked(scores.intermediate, mlps, head_scores.heads, layers, amount,
                                                        allocation, min_keep, method)
        for mask in (masks, head_mask):
            if mask is not None:
                mask.meta.update({"method": method, "how": how, "mode": mode, "compensate": compensate,
                                  "target": target})
        steps.start("pruning" if compensate == "none" else f"pruning, compensate={compensate}")
        _apply_both(model, masks, head_mask, how, compensate, stats, ridge)
    logger.info("pruned %d of %d attention heads (%.1f%%)%s (%s, %s, %s, compensate=%s)", head_mask.n_pruned(),
                head_mask.n_total(), 100 * head_mask.fraction,
                "" if masks is None else f" and {masks.n_pruned()} of {masks.n_total()} intermediate neurons",
                method, allocation, how, compensate)
    return PruneResult(model, masks, scores, head_mask=head_mask, head_scores=head_scores)
