"""Structured pruning of MLP neurons: apply a mask, save and load pruned models.

``apply_mask(model, mask, how="remove")`` slices the rows of up/gate and the columns of down
(transpose-aware for GPT-2's ``Conv1D``), so the layers really shrink; ``how="zero"`` zeroes
the same weights in place (and, in the reference's paper mode, the down rows of pruned hidden
channels). :func:`prune_model` is the one-call pipeline: score, allocate, apply.

Saved models
------------
:func:`save_pruned` writes an ordinary Hugging Face directory (``config.json``, safetensors
weights, tokenizer, and optionally the neuron mask) atomically, in the format described in
:mod:`llmrank_graph.models.saved_format`. :func:`llmrank_graph.load_model` sees the format's entry in
``config.json`` and loads the directory with :func:`load_pruned` (which lives with the loader,
in :mod:`llmrank_graph.models.loading`): it builds the model, shrinks every layer's MLP to its saved
size and then loads the weights strictly. A plain ``transformers`` load works too when every
layer has the same size.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from torch import nn

from ..base.checks import check_bool, check_choice, fail_type
from ..base.files import atomic_directory
from .core import HOWS, PruneResult, zero_mlp
from ..models.architectures import check_finite_weights, get_architecture, intermediate_sizes, mlp_layers
from ..data.calibration import ActivationStats
from ..compensation.algebra import COMPENSATIONS, DEFAULT_RIDGE, apply_updates, check_compensation, down_updates
from ..errors import InvalidArgumentError
from .masks import ALLOCATIONS, NeuronMask, allocate, check_amount
from ..models.loading import load_pruned
from ..models.saved_format import (MASK_FILE, PRUNED_CONFIG_KEY, PrunedEntry, disk_config, is_saved_pruned,
                           original_intermediate_size, read_config, record_sizes)
from .sequential import prune_sequential

logger = logging.getLogger(__name__)

# load_pruned lives with the loader (models.py), intermediate_sizes with the architectures,
# PRUNED_CONFIG_KEY in saved_format.py, and HOWS and PruneResult in _prune_core.py (below the
# sequential mode, which uses them too); they are re-exported here, where users found them.
__all__ = ["HOWS", "COMPENSATIONS", "DEFAULT_RIDGE", "PruneResult", "apply_mask", "prune_model", "save_pruned", "load_pruned",
           "intermediate_sizes", "PRUNED_CONFIG_KEY"]

# ---------------------------------------------------------------------------- surgery
def apply_mask(model: nn.Module, mask: NeuronMask, how: str = "remove", *, compensate: str = "none",
               stats: ActivationStats | None = None, ridge: float = DEFAULT_RIDGE) -> nn.Module:
    """Prune ``model``'s MLP neurons in place as ``mask`` says, optionally compensating down_proj.

    Parameters
    ----------
    model : transformers model of a registered architecture
    mask : NeuronMask
        One keep-tensor per layer, of the layer's current intermediate size.
    how : {'remove', 'zero'}
        ``remove`` slices gate/up rows (and biases) and down columns, so the modules shrink,
        and updates the config (see the module docstring). ``zero`` sets those weights to 0
        and, with ``mask.hidden`` (paper mode), also the down rows of pruned hidden channels.
    compensate : {'none', 'bias', 'lstsq', 'lstsq+bias'}
        Repair each layer's MLP output from ``stats`` (:mod:`llmrank_graph.compensation.algebra`):
        ``bias`` stores the removed neurons' mean contribution as a down_proj bias (Llama
        gets ``mlp_bias=True``); ``lstsq`` refits the kept down_proj columns by ridge least
        squares; ``lstsq+bias`` does both. ``none`` changes nothing else.
    stats : ActivationStats, optional
        Statistics of ``model`` before pruning; needed unless ``compensate='none'``, with the
        second moments (``calibrate(..., second_moments=True)``) for ``lstsq``.
    ridge : float
        Ridge of the least-squares refit, relative to ``mean(diag G_KK)``.

    Returns
    -------
    torch.nn.Module
        ``model`` itself.

    Raises
    ------
    ValueError
        Unknown ``how`` or ``compensate``; a mask that does not fit the model (naming the layer
        and both sizes); ``how='remove'`` with a mask that prunes hidden channels
        (residual-stream channels cannot be removed from one MLP: use ``how='zero'``); stats
        without the second moments ``compensate`` needs (saying how to collect them);
        ``bias`` on a family without an MLP bias (suggesting ``lstsq``); a ridge that is not
        positive. The model is untouched then: every compensation is computed before the
        first weight changes.

    Example
    -------
    >>> mask = allocate(scores, 0.3)                    # doctest: +SKIP
    >>> model = apply_mask(model, mask, how="remove")   # doctest: +SKIP
    >>> stats = calibrate(model, tokenizer, second_moments=True)                      # doctest: +SKIP
    >>> model = apply_mask(model, mask, compensate="lstsq", stats=stats)              # doctest: +SKIP
    """
    check_choice("how", how, HOWS)
    if not isinstance(mask, NeuronMask):
        raise fail_type("mask", "a NeuronMask", mask)
    mask.check_model(model)
    if how == "remove" and mask.n_hidden_pruned():
        raise InvalidArgumentError(f"how='remove' cannot prune hidden channels ({mask.n_hidden_pruned()} down_proj rows "
                         "in the mask): they belong to the residual stream shared by every layer; "
                         "use how='zero' for the paper mode")
    check_compensation(model, stats, compensate, ridge)
    if compensate != "none":
        if mask.n_hidden_pruned():
            raise InvalidArgumentError(f"compensate={compensate!r} refits down_proj for the kept intermediate "
                                       "neurons, which the paper mode's zeroed down_proj rows contradict; use "
                                       "compensate='none' with prune_hidden")
        stats.check_model(model)
    updates = down_updates(model, mask, stats, compensate, ridge) if compensate != "none" else {}
    mlps = mlp_layers(model)
    if how == "zero":
        for mlp in mlps:
            hk = mask.hidden.get(mlp.layer) if mask.hidden is not None else None
            zero_mlp(mlp, mask.intermediate[mlp.layer], hk)
        apply_updates(model, updates, keep=mask.intermediate)
        logger.debug("zeroed %d intermediate neurons and %d hidden channels", mask.n_pruned(),
                     mask.n_hidden_pruned())
        return model
    original = original_intermediate_size(model)
    for mlp in mlps:
        keep = mask.intermediate[mlp.layer]
        if keep.all():
            continue
        mlp.keep_neurons(keep.nonzero().flatten())
    record_sizes(model, original)
    apply_updates(model, updates)
    logger.debug("removed %d intermediate neurons; sizes now %s; compensation %s", mask.n_pruned(),
                 intermediate_sizes(model), compensate)
    return model


# ---------------------------------------------------------------------------- pipeline
def _check_finite_weights(model: nn.Module) -> None:
    check_finite_weights(mlp_layers(model))


def prune_model(model: nn.Module, stats, method: str = "pagerank", amount: float = 0.3, allocation: str = "local",
                how: str = "remove", mode: str = "chained", prune_hidden: bool = False, graph=None, *,
                min_keep: int | float | None = None, compensate: str = "none", ridge: float = DEFAULT_RIDGE,
                sequential: bool = False, input_ids=None, device=None, **method_params) -> PruneResult:
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
        See :func:`apply_mask`.
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
        Repair each layer's MLP output after the removal (see :func:`apply_mask` and
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
    **method_params
        Further parameters of the scorer.

    Returns
    -------
    PruneResult
        ``.model`` (pruned in place), ``.masks``, ``.scores`` (and ``.stats`` in the
        sequential mode).

    Raises
    ------
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
    >>> stats = llmrank_graph.calibrate(model, tokenizer)                      # doctest: +SKIP
    >>> result = llmrank_graph.prune_model(model, stats, "pagerank", amount=0.3)  # doctest: +SKIP
    >>> result.masks.fraction                                                  # doctest: +SKIP
    0.3
    """
    amount = check_amount(amount)
    check_choice("allocation", allocation, ALLOCATIONS)
    check_choice("how", how, HOWS)
    check_bool("prune_hidden", prune_hidden)
    if prune_hidden and how == "remove":
        raise InvalidArgumentError("`prune_hidden=True` zeroes down_proj rows (hidden channels of the residual stream), "
                         "which cannot be removed; pass how='zero'")
    check_bool("sequential", sequential)
    get_architecture(model)
    if stats is not None:
        if not isinstance(stats, ActivationStats):
            raise fail_type("stats", "an ActivationStats or None", stats)
        stats.check_model(model)
    _check_finite_weights(model)
    if graph is not None:
        method_params["graph"] = graph
    if sequential:
        if prune_hidden:
            raise InvalidArgumentError("`sequential=True` cannot honour the paper mode (prune_hidden=True): it "
                                       "allocates hidden channels of the residual stream over all layers at once, "
                                       "while the sequential mode prunes one layer at a time")
        result = prune_sequential(model, input_ids, method, amount, allocation, how, stats=stats,
                                  compensate=compensate, ridge=ridge, min_keep=min_keep, device=device, mode=mode,
                                  **method_params)
        result.masks.meta.update({"how": how, "mode": mode, "prune_hidden": False, "compensate": compensate,
                                  "sequential": True})
        return result
    if input_ids is not None or device is not None:
        raise InvalidArgumentError("`input_ids` and `device` are used by the sequential mode only; pass "
                                   "sequential=True, or calibrate the model and pass `stats`")
    check_compensation(model, stats, compensate, ridge)

    from ..scoring.registry import score_neurons, scorer_class  # scoring pulls in the graph and centrality stack

    scores = score_neurons(model, stats, method, mode=mode, prune_hidden=prune_hidden, **method_params)
    rounding = "reference" if prune_hidden else scorer_class(method).rounding
    masks = allocate(scores, amount, allocation, min_keep=min_keep, rounding=rounding)
    masks.meta.update({"method": method, "how": how, "mode": mode, "prune_hidden": prune_hidden,
                       "compensate": compensate})
    apply_mask(model, masks, how=how, compensate=compensate, stats=stats, ridge=ridge)
    logger.info("pruned %d of %d intermediate neurons (%s, %s, %s, compensate=%s)", masks.n_pruned(),
                masks.n_total(), method, allocation, how, compensate)
    return PruneResult(model, masks, scores)


# ---------------------------------------------------------------------------- save / load
def save_pruned(model: nn.Module, tokenizer, directory: str | os.PathLike, overwrite: bool = False, *,
                mask: NeuronMask | None = None, force: bool = False) -> Path:
    """Save a (pruned) model, and its tokenizer, so that :func:`llmrank_graph.load_model` restores it.

    The directory is written under a temporary name next to ``directory`` and renamed at the
    end (:func:`llmrank_graph.base.files.atomic_directory`): an interrupted save (exception, Ctrl-C,
    SIGTERM) leaves nothing at ``directory``, an interrupted overwrite leaves the previous
    directory, and of concurrent saves to one new path exactly one succeeds.

    Parameters
    ----------
    model : transformers model of a registered architecture
    tokenizer : tokenizer or None
        Saved alongside when not None.
    directory : str or path-like
        Target directory; must not exist unless ``overwrite``.
    overwrite : bool
        Replace an existing directory (never a file).
    mask : NeuronMask, optional
        The mask that produced the model, saved inside the directory (at
        :data:`llmrank_graph.models.saved_format.MASK_FILE`) before the directory is renamed into
        place, so a saved model never lacks its mask.
    force : bool
        With ``overwrite``, also replace a directory that ``save_pruned`` did not write (its
        ``config.json`` has no ``"llmrank_graph"`` entry), such as the original model.

    Returns
    -------
    pathlib.Path
        ``directory``.

    Raises
    ------
    OutputExistsError
        If ``directory`` exists (or appears during the save) and ``overwrite`` is False, or
        is a file (a FileExistsError).
    InvalidArgumentError
        ``overwrite`` would replace a directory that ``save_pruned`` did not write, without ``force``.
    InvalidArgumentTypeError
        A ``directory``, ``overwrite``, ``force`` or ``mask`` of the wrong type.

    Example
    -------
    >>> save_pruned(result.model, tokenizer, "pruned-model", mask=result.masks)   # doctest: +SKIP
    >>> model, tokenizer = llmrank_graph.load_model("pruned-model")   # doctest: +SKIP
    """
    if not isinstance(directory, (str, os.PathLike)):
        raise fail_type("directory", "a str or a path", directory)
    check_bool("overwrite", overwrite)
    check_bool("force", force)
    if mask is not None and not isinstance(mask, NeuronMask):
        raise fail_type("mask", "a NeuronMask or None", mask)
    spec = get_architecture(model)
    entry = PrunedEntry.for_model(model, original_intermediate_size(model))

    def only_saved_models(existing: Path) -> None:
        if not force and not is_saved_pruned(existing):
            raise InvalidArgumentError(f"`directory` {str(existing)!r} exists and was not written by save_pruned "
                                       f"(its config.json has no '{PRUNED_CONFIG_KEY}' entry); refusing to replace "
                                       "it without force=True")

    with atomic_directory(directory, overwrite=overwrite, arg="directory", check_existing=only_saved_models) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        config_file = tmp / "config.json"
        config = disk_config(read_config(config_file), entry, spec.intermediate_attr)
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if mask is not None:
            mask.save(tmp / MASK_FILE)
    target = Path(directory).expanduser()
    logger.info("saved the pruned model (MLP sizes %s) to %s", list(entry.intermediate_sizes), target)
    return target
