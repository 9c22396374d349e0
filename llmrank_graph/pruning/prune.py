"""The one-call pipeline: score the MLP neurons, choose the lowest-scored ones, prune them.

:func:`prune_model` checks everything once, at its entry (docs/design.md section 3): its
parameter table, the model, the statistics and one scan of the weights. It then scores, allocates
(:func:`~llmrank_graph.pruning.masks.allocate_checked`) and applies the mask
(:func:`~llmrank_graph.pruning.core.apply_checked`) without checking again; with
``sequential=True`` it hands the checked arguments to the layer-by-layer mode
(:mod:`llmrank_graph.pruning.sequential`).
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
from ..errors import InvalidArgumentError
from ..models.architectures import MODEL
from ..scoring import registry
from .allocation import ALLOCATIONS
from .core import HOWS, STATS, PruneResult, apply_checked, check_model_and_stats
from .masks import AMOUNT, MIN_KEEP, allocate_checked, check_reference_floor
from .sequential import plan_sequential, prune_sequential_checked

logger = logging.getLogger(__name__)

__all__ = ["prune_model"]

#: The parameter constraints of :func:`prune_model`, checked once at its entry (in this order).
PRUNE_CONSTRAINTS = {"model": MODEL, "amount": AMOUNT, "allocation": OneOf(*ALLOCATIONS), "how": OneOf(*HOWS),
                     "prune_hidden": Boolean(), "sequential": Boolean(), "stats": STATS, "min_keep": MIN_KEEP,
                     **COMPENSATION_CONSTRAINTS, "progress": Boolean()}


def prune_model(model: nn.Module, stats, method: str = "pagerank", amount: float = 0.3, allocation: str = "local",
                how: str = "remove", mode: str = "chained", prune_hidden: bool = False, graph=None, *,
                min_keep: int | float | None = None, compensate: str = "none", ridge: float = DEFAULT_RIDGE,
                sequential: bool = False, input_ids=None, device=None, progress: bool = False,
                **method_params) -> PruneResult:
    """Score the MLP neurons of ``model``, choose the lowest-scored ones and prune them in place.

    Parameters
    ----------
    model : transformers model of a registered architecture
    stats : ActivationStats or None
        Calibration statistics of ``model`` (:func:`llmrank_graph.calibrate`); ``None`` only for
        weight-only scorers.
    method : str
        A scorer of :func:`llmrank_graph.scoring.registry`.
    amount : float
        Fraction of intermediate neurons to prune, in [0, 1).
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
        The calibration tokens of the sequential mode.
    device : str or torch.device, optional
        Sequential mode: where each layer and the hidden states are processed (default: the
        model's device), so that a model larger than the device can be pruned from CPU memory.
    progress : bool
        Show a progress bar: over the steps (check, score, allocate, prune), or over the layers
        in the sequential mode.
    **method_params
        Further parameters of the scorer.

    Returns
    -------
    PruneResult
        ``.model`` (pruned in place), ``.masks``, ``.scores`` (and ``.stats`` in the
        sequential mode).

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
    """
    v = validate(PRUNE_CONSTRAINTS, {"model": model, "amount": amount, "allocation": allocation, "how": how,
                                     "prune_hidden": prune_hidden, "sequential": sequential, "stats": stats,
                                     "min_keep": min_keep, "compensate": compensate, "ridge": ridge,
                                     "progress": progress})
    amount, allocation, how, prune_hidden, sequential, min_keep, compensate, ridge, progress = (
        v[k] for k in ("amount", "allocation", "how", "prune_hidden", "sequential", "min_keep", "compensate", "ridge",
                       "progress"))
    _check_modes(how, prune_hidden, sequential, input_ids, device)
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
