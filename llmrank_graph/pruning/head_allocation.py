"""Choosing the attention heads to remove, under the grouped-query rule; and MLP + attention together.

**The steps.** A layer of ``n`` query heads in ``K`` key/value groups of ``G = n / K`` keeps
``g * j`` heads: ``g`` whole groups (``1 <= g <= K``) of ``j`` heads each (``1 <= j <= G``)
(:meth:`~llmrank_graph.models.attention.AttentionModules.plan`). SmolLM2's 9 heads in 3 groups
keep 9, 6, 4, 3, 2 or 1. For each count a layer can keep, the best heads to keep are those with
the largest sum of scores: in every group its ``j`` best heads, and the ``g`` groups whose ``j``
best sum highest (ties: the lower score, then the lower index, is removed first).

**Allocations** of a fraction ``amount`` of the heads (:func:`allocate_heads`):

``local``
    every layer removes the count it can nearest to ``amount * n`` (ties: the smaller). A layer
    whose ``round(amount * n)`` is all its heads is refused, unless ``min_keep`` is given; then
    no layer keeps fewer than its floor.
``global`` / ``standardized``
    each layer's scores are normalised as :func:`llmrank_graph.allocate` normalises neuron
    scores (divided by their mean absolute value; ``standardized``: standardised), and the
    total nearest ``round(amount * N)`` that the steps allow is removed with the smallest sum of
    normalised scores (a dynamic programme over the layers; without the steps it is the one
    threshold of the neuron allocation). Each layer keeps at least its floor (default
    ``max(1, ceil(5% of n))``, as for neurons).

The exact fraction removed is the mask's :attr:`~llmrank_graph.pruning.heads.HeadMask.fraction`,
also in its ``meta``.

**MLP + attention** (:func:`allocate_both_checked`, ``prune_model(..., target='both')``):
``amount`` is a fraction of the parameters of the MLP and attention modules. Each layer's neuron
scores and head scores are normalised separately, as above, and pooled; the units are taken
lowest normalised score first (ties: neurons first, then the lower layer and index), each
costing its parameters (a neuron: its gate and up rows and down column; a head: its query rows
and output columns plus ``1/G`` of its group's key/value rows), up to the budget nearest
``amount`` of the parameters. The heads so taken fix how many heads go; they are then chosen
under the steps as above, and the neurons fill what is left of the budget (lowest normalised
first), so the total removed is within one neuron of the budget. With ``local`` every layer is
its own pool with its own budget; ``global`` and ``standardized`` pool all layers.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..base.params import OneOf, validate
from ..errors import InvalidArgumentError
from ..models.architectures import MLPModules
from ..models.attention import AttentionModules, attention_layers
from .allocation import ALLOCATIONS, GLOBAL_MIN_KEEP_FRACTION, _by_mean_abs, _standardise
from .heads import HeadMask
from .masks import AMOUNT, MIN_KEEP, NeuronMask

__all__ = ["allocate_heads", "allocate_heads_checked", "allocate_both_checked", "layer_parameters", "neuron_cost"]


@dataclass(frozen=True)
class _Option:
    """One way for a layer to keep ``n - removed`` heads: the best one for that count."""

    removed: int
    cost: float  # sum of the removed heads' (normalised) scores
    keep: np.ndarray  # bool (n,)
    groups_removed: int


def _layer_options(v: np.ndarray, kv: int, floor: int) -> list[_Option]:
    """The best keep-mask for every head count the layer can keep at or above ``floor``, by removed count."""
    n = v.size
    g = n // kv
    grid = v.reshape(kv, g)
    within = np.argsort(grid, axis=1, kind="stable")  # per group, ascending: removed first
    ranked = np.take_along_axis(grid, within, axis=1)
    total = float(v.sum())
    best: dict[int, _Option] = {}
    for j in range(g, 0, -1):
        sums = ranked[:, g - j:].sum(1)  # each group's j best
        groups = np.argsort(sums, kind="stable")
        for kept_groups in range(kv, 0, -1):
            kept = kept_groups * j
            if kept < floor:
                continue
            chosen = groups[kv - kept_groups:]
            removed, cost = n - kept, total - float(sums[chosen].sum())
            if removed in best and not cost < best[removed].cost:
                continue
            keep = np.zeros((kv, g), dtype=bool)
            keep[chosen[:, None], within[chosen, g - j:]] = True
            best[removed] = _Option(removed, cost, keep.reshape(-1), kv - kept_groups)
    return [best[r] for r in sorted(best)]


def _floor(min_keep, n: int, allocation: str, what: str) -> int:
    """Heads (or neurons) a layer keeps at least: ``min_keep`` as a count or a fraction, or the default."""
    if min_keep is None:
        return max(1, math.ceil(GLOBAL_MIN_KEEP_FRACTION * n)) if allocation != "local" else 1
    if isinstance(min_keep, numbers.Integral):
        if min_keep > n:
            raise InvalidArgumentError(f"`min_keep` ({int(min_keep)}) is larger than {what}, which has {n}")
        return max(1, int(min_keep))
    return max(1, math.ceil(float(min_keep) * n))


def _nearest(options: list[_Option], target: float) -> _Option:
    """The option whose removed count is nearest ``target`` (ties: the smaller)."""
    return min(options, key=lambda o: (abs(o.removed - target), o.removed))


def _normaliser(allocation: str) -> Callable[[np.ndarray], np.ndarray]:
    return _standardise if allocation == "standardized" else _by_mean_abs


def _check_layout(v: np.ndarray, att: AttentionModules) -> None:
    if v.size != att.num_heads:
        raise InvalidArgumentError(f"the head scores do not match the model: layer {att.layer} has {att.num_heads} "
                                   f"query heads in the model but {v.size} scores")


def _choose_local(vals, layers, amount, min_keep) -> list[_Option]:
    out = []
    for v, att in zip(vals, layers):
        n = v.size
        if min_keep is None and round(amount * n) >= n:
            raise InvalidArgumentError(f"allocation='local' with amount={amount} would remove all {n} heads of layer "
                                       f"{att.layer}; lower `amount` or raise `min_keep`")
        floor = _floor(min_keep, n, "local", f"layer {att.layer}")
        out.append(_nearest(_layer_options(v, att.num_key_value_heads, floor), amount * n))
    return out


def _dp(options: list[list[_Option]], target: int) -> list[_Option]:
    """One option per layer: the removed total nearest ``target`` the steps allow (ties: the smaller),
    with the smallest summed cost."""
    top = sum(o[-1].removed for o in options)
    best = np.full(top + 1, np.inf)
    best[0] = 0.0
    choice = np.full((len(options), top + 1), -1, dtype=np.int64)
    for l, opts in enumerate(options):
        new = np.full(top + 1, np.inf)
        for i, o in enumerate(opts):
            r = o.removed
            cand = best[: top + 1 - r] + o.cost
            better = cand < new[r:]
            new[r:][better] = cand[better]
            choice[l, r:][better] = i
        best = new
    reachable = np.flatnonzero(np.isfinite(best))
    total = int(reachable[np.lexsort((reachable, np.abs(reachable - target)))[0]])
    out = []
    for l in range(len(options) - 1, -1, -1):
        o = options[l][choice[l, total]]
        out.append(o)
        total -= o.removed
    return out[::-1]


def _choose_global(vals, layers, amount, allocation, min_keep, target: int | None = None) -> list[_Option]:
    normalise = _normaliser(allocation)
    options, floors = [], []
    for v, att in zip(vals, layers):
        floor = _floor(min_keep, v.size, allocation, f"layer {att.layer}")
        floors.append(floor)
        options.append(_layer_options(normalise(v), att.num_key_value_heads, floor))
    total = sum(v.size for v in vals)
    k = round(amount * total) if target is None else target
    if k > total - sum(floors):
        raise InvalidArgumentError(f"allocation={allocation!r} with amount={amount} must remove {k} of {total} "
                                   f"heads, but the per-layer floor (min_keep={min_keep!r}: {sum(floors)} kept in "
                                   f"all) leaves only {total - sum(floors)} removable; lower `amount` or `min_keep`")
    return _dp(options, k)


def _mask(layers: Sequence[AttentionModules], chosen: list[_Option], meta: dict) -> HeadMask:
    mask = HeadMask({att.layer: torch.from_numpy(o.keep.copy()) for att, o in zip(layers, chosen)}, meta)
    mask.meta.update({"heads_removed": mask.n_pruned(), "heads_total": mask.n_total(), "fraction": mask.fraction})
    return mask


def allocate_heads_checked(scores: Mapping[int, torch.Tensor], layers: Sequence[AttentionModules], amount: float,
                           allocation: str, min_keep, method: str | None = None) -> HeadMask:
    """:func:`allocate_heads` on checked arguments and finite scores (one tensor per layer of ``layers``).

    ``layers`` are AttentionModules, or any objects with their ``layer``, ``num_heads`` and
    ``num_key_value_heads`` (the command line checks an amount against a config's head counts
    before it loads the model).
    """
    vals = [torch.as_tensor(scores[att.layer]).detach().to("cpu", torch.float64).numpy() for att in layers]
    for v, att in zip(vals, layers):
        _check_layout(v, att)
    if allocation == "local":
        chosen = _choose_local(vals, layers, amount, min_keep)
    else:
        chosen = _choose_global(vals, layers, amount, allocation, min_keep)
    return _mask(layers, chosen, {"amount": amount, "allocation": allocation, "min_keep": min_keep,
                                  "method": method})


#: The parameter constraints of :func:`allocate_heads`, checked once at its entry.
ALLOCATE_HEADS_CONSTRAINTS = {"amount": AMOUNT, "allocation": OneOf(*ALLOCATIONS), "min_keep": MIN_KEEP}


def allocate_heads(scores, model_or_layers, amount: float, allocation: str = "local", *,
                   min_keep: int | float | None = None) -> HeadMask:
    """Choose the query heads to remove from their scores, under the grouped-query rule (module docstring).

    Parameters
    ----------
    scores : HeadScores or mapping of int -> torch.Tensor
        Layer -> (num_heads,) scores, higher = more important
        (:func:`llmrank_graph.scoring.heads.score_heads`).
    model_or_layers : transformers model or list of AttentionModules
        Where the layers' key/value groups are read.
    amount : float
        Fraction of the query heads to remove, in [0, 1); reached as closely as the steps allow.
    allocation : {'local', 'global', 'standardized'}
    min_keep : int, float or None
        Heads each layer keeps at least: a count, or a fraction of the layer (rounded up); at
        least one. None: 1 for local (and a local amount that would remove every head of a
        layer is refused), ``max(1, ceil(5% of n))`` for global.

    Returns
    -------
    HeadMask
        Its ``meta`` holds the amount asked, the allocation, ``heads_removed``, ``heads_total``
        and ``fraction``, the fraction removed exactly.

    Raises
    ------
    InvalidArgumentError
        Bad ``amount``, ``allocation`` or ``min_keep``; scores that do not fit the layers or are
        not finite; a local amount that would remove every head of a layer without ``min_keep``;
        a global amount beyond what the floors leave.

    Example
    -------
    >>> import torch
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=24, intermediate_size=12, head_dim=4,
    ...                                      num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2))
    >>> scores = {0: torch.tensor([5., 1., 2., 6., 4., 3.]), 1: torch.tensor([1., 2., 3., 4., 5., 6.])}
    >>> mask = allocate_heads(scores, model, 0.34)  # 2 of each layer's 6: one head of each group
    >>> mask.heads[0].tolist(), mask.fraction
    ([True, False, True, True, True, False], 0.3333333333333333)
    >>> allocate_heads(scores, model, 0.5, "global").sizes()  # 6 of 12: a whole group of layer 1 goes
    [3, 3]
    """
    v = validate(ALLOCATE_HEADS_CONSTRAINTS, {"amount": amount, "allocation": allocation, "min_keep": min_keep})
    layers = attention_layers(model_or_layers) if isinstance(model_or_layers, torch.nn.Module) else model_or_layers
    method = getattr(scores, "method", None)
    raw = getattr(scores, "heads", scores)
    if not isinstance(raw, Mapping):
        raise InvalidArgumentError("`scores` must be HeadScores or a mapping of layer -> head scores")
    missing = [att.layer for att in layers if att.layer not in raw]
    if missing or len(raw) != len(layers):
        raise InvalidArgumentError(f"the head scores do not match the model: they have layers {sorted(raw)} but the "
                                   f"model has {len(layers)} attention layers")
    for layer, s in raw.items():
        if not torch.isfinite(torch.as_tensor(s, dtype=torch.float64)).all():
            raise InvalidArgumentError(f"the head scores of layer {layer} contain NaN or inf; scores must be finite")
    return allocate_heads_checked(raw, layers, v["amount"], v["allocation"], v["min_keep"], method)


# ---------------------------------------------------------------------------- MLP + attention
def neuron_cost(mlp: MLPModules) -> int:
    """Parameters one intermediate neuron of ``mlp`` holds: its gate and up rows (with biases), its down column."""
    cost = mlp.weight("down").shape[0]
    for mod, role in ((mlp.gate, "gate"), (mlp.up, "up")):
        if mod is not None:
            cost += mlp.weight(role).shape[1] + (1 if getattr(mod, "bias", None) is not None else 0)
    return cost


def layer_parameters(mlp: MLPModules, att: AttentionModules) -> tuple[int, int]:
    """(MLP, attention) parameters of one layer: every parameter of its MLP Linears and attention projections."""
    mlp_total = sum(p.numel() for mod in mlp.named_modules().values() for p in mod.parameters())
    mods = {id(m): m for m in (att.q, att.k, att.v, att.qkv, att.o) if m is not None}
    return mlp_total, sum(p.numel() for m in mods.values() for p in m.parameters())


def _head_params(att: AttentionModules, o: _Option) -> int:
    cost = att.head_cost()
    return o.removed * cost["query_head"] + o.groups_removed * cost["kv_group"]


def _prefix(costs: np.ndarray, budget: float) -> int:
    """The number of leading units whose summed cost is nearest ``budget`` (ties: fewer)."""
    cum = np.concatenate([[0.0], np.cumsum(costs)])
    i = int(np.searchsorted(cum, budget))
    if i >= cum.size:
        return cum.size - 1
    return i - 1 if i > 0 and budget - cum[i - 1] <= cum[i] - budget else i


@dataclass
class _Pool:
    """Candidate units of one pool, sorted lowest normalised score first."""

    value: np.ndarray
    cost: np.ndarray
    kind: np.ndarray  # 0 neuron, 1 head
    layer: np.ndarray  # position in the pool's layer list
    index: np.ndarray

    @classmethod
    def of(cls, parts: list[tuple[np.ndarray, float, int, int, np.ndarray]]) -> _Pool:
        """``parts``: (the candidates' normalised values, their unit cost, kind, layer position, their indices)."""
        value = np.concatenate([p[0] for p in parts])
        cost, kind, layer = (np.concatenate([np.full(len(p[0]), p[i]) for p in parts]) for i in (1, 2, 3))
        index = np.concatenate([p[4] for p in parts])
        order = np.lexsort((index, layer, kind, value))  # lowest value first; ties: neurons, lower layer, index
        return cls(value[order], cost[order].astype(np.float64), kind[order], layer[order], index[order])


def _candidates(v: np.ndarray, floor: int) -> np.ndarray:
    """Indices of the ``n - floor`` lowest values (ties: the lower index)."""
    return np.argsort(v, kind="stable")[: max(v.size - floor, 0)]


def _split_pool(neuron_vals, neuron_floors, neuron_costs, head_vals, head_floors, layers, budget, allocation,
                min_keep, amount, local: bool):
    """Heads chosen under the steps and neuron prune-indices for one pool of layers (see the module docstring)."""
    normalise = _normaliser("global" if local else allocation)
    nvals, hvals = [normalise(v) for v in neuron_vals], [normalise(v) for v in head_vals]
    parts = []
    for i, (v, f, c) in enumerate(zip(nvals, neuron_floors, neuron_costs)):
        idx = _candidates(v, f)
        parts.append((v[idx], c, 0, i, idx))
    for i, (v, f, att) in enumerate(zip(hvals, head_floors, layers)):
        idx = _candidates(v, f)
        cost = att.head_cost()
        parts.append((v[idx], cost["query_head"] + cost["kv_group"] / att.group_size, 1, i, idx))
    pool = _Pool.of(parts)
    taken = _prefix(pool.cost, budget)
    n_heads = int((pool.kind[:taken] == 1).sum())
    if local:  # one layer; a step of heads never overshoots its budget
        options = _layer_options(hvals[0], layers[0].num_key_value_heads, head_floors[0])
        chosen = [_nearest([o for o in options if _head_params(layers[0], o) <= budget], n_heads)]
    else:
        chosen = _choose_global(head_vals, layers, amount, allocation, min_keep, target=n_heads)
    head_removed = sum(_head_params(att, o) for att, o in zip(layers, chosen))
    neurons = pool.kind == 0
    k = _prefix(pool.cost[neurons], max(budget - head_removed, 0.0))
    lay, idx = pool.layer[neurons][:k], pool.index[neurons][:k]
    pruned = [np.sort(idx[lay == i]).astype(np.int64) for i in range(len(nvals))]
    return chosen, pruned, head_removed


def allocate_both_checked(neuron_scores: Mapping[int, torch.Tensor], mlps: Sequence[MLPModules],
                          head_scores: Mapping[int, torch.Tensor], layers: Sequence[AttentionModules], amount: float,
                          allocation: str, min_keep, method: str | None = None) -> tuple[NeuronMask, HeadMask, dict]:
    """Neurons and heads that remove the fraction ``amount`` of the MLP + attention parameters (module docstring).

    On checked arguments: finite scores, one tensor per layer of ``mlps`` and ``layers`` (in the
    same layer order). ``min_keep`` is each layer's floor for its neurons and for its heads alike
    (a count of each, or a fraction); None: the defaults of the allocation, for each.

    Returns
    -------
    NeuronMask, HeadMask, dict
        The masks, and the accounting: ``total_parameters`` (MLP + attention), ``mlp_removed``,
        ``attention_removed``, ``removed`` and ``fraction`` (exact), also in both masks' ``meta``.

    Raises
    ------
    InvalidArgumentError
        An amount beyond what the per-layer floors leave removable.
    """
    nv = [torch.as_tensor(neuron_scores[m.layer]).detach().to("cpu", torch.float64).numpy() for m in mlps]
    hv = [torch.as_tensor(head_scores[a.layer]).detach().to("cpu", torch.float64).numpy() for a in layers]
    for v, att in zip(hv, layers):
        _check_layout(v, att)
    kind = "local" if allocation == "local" else "global"
    nfloors = [_floor(min_keep, v.size, kind, f"layer {m.layer}'s MLP") for v, m in zip(nv, mlps)]
    hfloors = [_floor(min_keep, v.size, kind, f"layer {a.layer}'s attention") for v, a in zip(hv, layers)]
    ncosts = [neuron_cost(m) for m in mlps]
    sizes = [layer_parameters(m, a) for m, a in zip(mlps, layers)]
    total = sum(a + b for a, b in sizes)
    groups = [[i] for i in range(len(mlps))] if kind == "local" else [list(range(len(mlps)))]
    chosen, pruned, head_removed = [None] * len(layers), [None] * len(mlps), 0
    for g in groups:
        budget = amount * sum(sum(sizes[i]) for i in g)
        room = sum((nv[i].size - nfloors[i]) * ncosts[i] for i in g) + sum(
            _head_params(layers[i], _layer_options(hv[i], layers[i].num_key_value_heads, hfloors[i])[-1]) for i in g)
        if budget > room:
            where = f"layer {mlps[g[0]].layer}" if kind == "local" else "the model"
            raise InvalidArgumentError(f"target='both' with amount={amount} must remove {budget:.0f} MLP + attention "
                                       f"parameters of {where}, but the per-layer floors (min_keep={min_keep!r}) "
                                       f"leave only {room} removable; lower `amount` or `min_keep`")
        c, p, h = _split_pool([nv[i] for i in g], [nfloors[i] for i in g], [ncosts[i] for i in g], [hv[i] for i in g],
                              [hfloors[i] for i in g], [layers[i] for i in g], budget, allocation, min_keep, amount,
                              kind == "local")
        for j, i in enumerate(g):
            chosen[i], pruned[i] = c[j], p[j]
        head_removed += h
    mlp_removed = sum(len(p) * c for p, c in zip(pruned, ncosts))
    accounting = {"total_parameters": total, "mlp_removed": mlp_removed, "attention_removed": head_removed,
                  "removed": mlp_removed + head_removed, "fraction": (mlp_removed + head_removed) / total}
    meta = {"amount": amount, "allocation": allocation, "min_keep": min_keep, "method": method, "target": "both",
            "parameters": accounting}
    keeps = {}
    for m, v, p in zip(mlps, nv, pruned):
        keep = torch.ones(v.size, dtype=torch.bool)
        keep[torch.as_tensor(p, dtype=torch.long)] = False
        keeps[m.layer] = keep
    return NeuronMask(keeps, meta=dict(meta)), _mask(layers, chosen, dict(meta)), accounting
