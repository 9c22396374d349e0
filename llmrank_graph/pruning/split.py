"""The measured split of ``target='both'``: how many heads go, chosen by the loss on calibration tokens.

``prune_model(..., target='both')`` removes ``amount`` of the MLP + attention parameters. Its
default split (``split='scores'``, :func:`~llmrank_graph.pruning.head_allocation.allocate_both_checked`)
pools neurons and heads by their per-layer normalised scores; on SmolLM2-135M it removes 14-20% of
the heads and loses to removing neurons alone (README, "Attention heads"). Normalised scores of two
kinds of unit say nothing about how a head's loss compares with 43 neurons' loss.

``split='measured'`` measures it instead. For each head fraction ``f`` of
:data:`MEASURED_HEAD_FRACTIONS` (0 is the MLP alone) it builds the pruning that removes the
fraction ``f`` of the query heads (the head scores, global allocation under the grouped-query
steps, :func:`~llmrank_graph.pruning.head_allocation.allocate_heads_checked`) and the neurons
that complete the parameter budget (the neuron scores, ``allocation``, at the fraction of the MLP
parameters left), applies it with the compensation to a copy of the model, and measures the
perplexity of the copy on ``input_ids`` (the calibration tokens, or any held-out tokens the caller
passes). The fraction of the lowest perplexity is applied to the model. The scores are computed
once; each trial costs a copy of the model, its compensation and one forward pass over
``input_ids``. The trials are recorded in both masks' ``meta['split']``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from ..data.evaluation import perplexity
from ..errors import InvalidArgumentError
from ..models.architectures import MLPModules
from ..models.attention import AttentionModules
from .head_allocation import allocate_heads_checked, layer_parameters, neuron_cost
from .heads import HeadMask, parameters_removed
from .masks import NeuronMask, allocate_checked

logger = logging.getLogger(__name__)

__all__ = ["SPLITS", "MEASURED_HEAD_FRACTIONS", "masks_at", "measured_split"]

#: How ``target='both'`` shares the budget between neurons and heads.
SPLITS: tuple[str, ...] = ("scores", "measured")
#: The head fractions ``split='measured'`` tries (of the query heads; 0: the MLP alone).
MEASURED_HEAD_FRACTIONS: tuple[float, ...] = (0.0, 0.025, 0.05, 0.1)


def masks_at(neuron_scores, mlps: Sequence[MLPModules],
             head_scores: Mapping[int, torch.Tensor], layers: Sequence[AttentionModules], amount: float,
             allocation: str, min_keep, method: str, rounding: str, head_fraction: float,
             ) -> tuple[NeuronMask, HeadMask, dict]:
    """The masks that remove ``head_fraction`` of the heads (global) and neurons up to ``amount`` of the
    MLP + attention parameters (``allocation``), with the accounting of
    :func:`~llmrank_graph.pruning.head_allocation.allocate_both_checked`.

    Raises
    ------
    InvalidArgumentError
        The heads alone exceed the budget, or the neurons cannot fill it.
    """
    sizes = [layer_parameters(m, a) for m, a in zip(mlps, layers)]
    total, mlp_total = sum(a + b for a, b in sizes), sum(a for a, _ in sizes)
    head_mask = allocate_heads_checked(head_scores, layers, head_fraction, "global", min_keep, method)
    head_removed = parameters_removed(layers, head_mask)
    mlp_amount = (amount * total - head_removed) / mlp_total
    if not 0 <= mlp_amount < 1:
        raise InvalidArgumentError(f"split='measured': {head_fraction:.1%} of the heads ({head_removed} parameters) "
                                   f"and amount={amount} leave the MLP a fraction {mlp_amount:.3f} to remove, "
                                   "outside [0, 1)")
    masks = allocate_checked(neuron_scores, mlp_amount, allocation, min_keep, rounding)
    mlp_removed = sum(masks.n_pruned(m.layer) * neuron_cost(m) for m in mlps)
    accounting = {"total_parameters": total, "mlp_removed": mlp_removed, "attention_removed": head_removed,
                  "removed": mlp_removed + head_removed, "fraction": (mlp_removed + head_removed) / total}
    meta = {"amount": amount, "allocation": allocation, "min_keep": min_keep, "method": method, "target": "both",
            "parameters": accounting}
    masks.meta.update(meta)
    head_mask.meta.update(meta)
    return masks, head_mask, accounting


def measured_split(model: nn.Module, build: Callable[[float], tuple[NeuronMask, HeadMask, dict]],
                   apply: Callable[[nn.Module, NeuronMask, HeadMask], None], input_ids: torch.Tensor,
                   batch_size: int = 4, fractions: Sequence[float] = MEASURED_HEAD_FRACTIONS,
                   ) -> tuple[NeuronMask, HeadMask, dict]:
    """The masks of the head fraction whose pruned copy of ``model`` has the lowest perplexity on ``input_ids``.

    ``build(f)`` gives the masks of head fraction ``f`` (:func:`masks_at`), ``apply(model, masks,
    head_mask)`` prunes a model with them (with its compensation). Fractions that ``build``
    refuses (the budget cannot hold them), or whose head count (after the grouped-query steps) was
    already tried, are skipped; the trials go to ``meta['split']``.
    """
    trials, best, seen = [], None, set()
    for f in fractions:
        try:
            masks, head_mask, acc = build(f)
        except InvalidArgumentError as e:
            logger.info("split='measured': head fraction %.3f skipped (%s)", f, e)
            continue
        if head_mask.n_pruned() in seen:  # the grouped-query steps gave a count already tried
            continue
        seen.add(head_mask.n_pruned())
        trial = copy.deepcopy(model)
        apply(trial, masks, head_mask)
        ppl = perplexity(trial, input_ids=input_ids, batch_size=batch_size)
        del trial
        trials.append({"head_fraction": f, "heads_removed": head_mask.n_pruned(), "perplexity": ppl})
        logger.info("split='measured': %.1f%% of the heads (%d), perplexity %.4g on %d calibration tokens", 100 * f,
                    head_mask.n_pruned(), ppl, input_ids.numel())
        if best is None or ppl < best[0]:
            best = (ppl, masks, head_mask, acc)
    if best is None:
        raise InvalidArgumentError(f"split='measured': no head fraction of {list(fractions)} fits the budget")
    _, masks, head_mask, acc = best
    for m in (masks, head_mask):
        m.meta["split"] = {"rule": "measured", "trials": trials}
    return masks, head_mask, acc
