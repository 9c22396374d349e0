"""Structured pruning of MLP neurons: apply a mask to a model, optionally compensating down_proj.

``apply_mask(model, mask, how="remove")`` slices the rows of up/gate and the columns of down
(transpose-aware for GPT-2's ``Conv1D``), so the layers really shrink; ``how="zero"`` zeroes
the same weights in place (and, in the reference's paper mode, the down rows of pruned hidden
channels). It checks its arguments once, at the entry, and hands them to
:func:`llmrank_graph.pruning.core.apply_checked`, which does the work.

The one-call pipeline :func:`prune_model` (score, allocate, apply) lives in
:mod:`llmrank_graph.pruning.prune` and saving in :mod:`llmrank_graph.pruning.save`;
``load_pruned`` lives with the loader (:mod:`llmrank_graph.models.loading`),
``intermediate_sizes`` with the architectures, ``PRUNED_CONFIG_KEY`` with the saved format,
``COMPENSATIONS`` and ``DEFAULT_RIDGE`` with the compensation, and ``HOWS`` and
``PruneResult`` in :mod:`llmrank_graph.pruning.core`. They are all re-exported here, where
users found them.
"""

from __future__ import annotations

from torch import nn

from ..base.params import InstanceOf, OneOf, validate
from ..compensation.algebra import (
    COMPENSATION_CONSTRAINTS,
    COMPENSATIONS,
    DEFAULT_RIDGE,
    check_bias_possible,
    check_compensation_stats,
    uses_bias,
)
from ..data.calibration import ActivationStats
from ..errors import InvalidArgumentError
from ..models.architectures import MODEL, intermediate_sizes
from ..models.loading import load_pruned
from ..models.saved_format import PRUNED_CONFIG_KEY
from .core import HOWS, STATS, PruneResult, apply_checked, check_hidden_compensation
from .masks import NeuronMask
from .prune import prune_model
from .save import save_pruned

__all__ = ["HOWS", "COMPENSATIONS", "DEFAULT_RIDGE", "PruneResult", "apply_mask", "prune_model", "save_pruned",
           "load_pruned", "intermediate_sizes", "PRUNED_CONFIG_KEY"]

#: The parameter constraints of :func:`apply_mask`, checked once at its entry.
APPLY_CONSTRAINTS = {"model": MODEL, "how": OneOf(*HOWS), "mask": InstanceOf(NeuronMask, "a NeuronMask"),
                     **COMPENSATION_CONSTRAINTS, "stats": STATS}


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
    InvalidArgumentTypeError
        ``model`` is not an nn.Module (load a name with :func:`llmrank_graph.load_model`), or
        ``mask`` not a NeuronMask (a TypeError).
    ValueError
        ``model`` of no registered family (UnsupportedArchitectureError); unknown ``how`` or
        ``compensate``; a mask that does not fit the model (naming the layer
        and both sizes); ``how='remove'`` with a mask that prunes hidden channels
        (residual-stream channels cannot be removed from one MLP: use ``how='zero'``); stats
        without the second moments ``compensate`` needs (saying how to collect them);
        ``bias`` on a family without an MLP bias (suggesting ``lstsq``); a ridge that is not
        positive. The model is untouched then: every compensation is computed before the
        first weight changes.

    Example
    -------
    >>> import torch, llmrank_graph
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=12,
    ...                                      num_hidden_layers=2, num_attention_heads=2)).eval()
    >>> scores = {0: torch.arange(12.0), 1: torch.arange(12.0).flip(0)}
    >>> mask = llmrank_graph.allocate(scores, 0.25)
    >>> model = apply_mask(model, mask, how="remove")
    >>> intermediate_sizes(model)
    [9, 9]
    >>> ids = torch.randint(0, 32, (2, 16))
    >>> stats = llmrank_graph.calibrate(model, input_ids=ids, second_moments=True)
    >>> mask = llmrank_graph.allocate(scores={0: torch.rand(9), 1: torch.rand(9)}, amount=1 / 3)
    >>> model = apply_mask(model, mask, compensate="lstsq", stats=stats)
    >>> intermediate_sizes(model)
    [6, 6]
    """
    v = validate(APPLY_CONSTRAINTS, {"model": model, "how": how, "mask": mask, "compensate": compensate,
                                     "ridge": ridge, "stats": stats})
    how, compensate, ridge = v["how"], v["compensate"], v["ridge"]
    mask.check_model(model)
    if how == "remove" and mask.n_hidden_pruned():
        raise InvalidArgumentError(f"how='remove' cannot prune hidden channels ({mask.n_hidden_pruned()} down_proj "
                                   "rows in the mask): they belong to the residual stream shared by every layer; "
                                   "use how='zero' for the paper mode")
    if uses_bias(compensate):
        check_bias_possible(model)
    check_compensation_stats(model, stats, compensate)
    if compensate != "none":
        check_hidden_compensation(bool(mask.n_hidden_pruned()), compensate)
        stats.check_model(model)
    return apply_checked(model, mask, how, compensate, stats, ridge)
