"""The allocation rules on plain arrays: how many neurons each module loses, and which.

:func:`llmrank_graph.pruning.masks.allocate` validates its arguments and the scores, flattens
the scores into modules (one float64 array per layer, and one per layer's hidden channels in
the paper mode) and calls :func:`choose` here, which trusts what it gets and returns, per
module, the indices to prune. The rules themselves (local, global, standardized, and the
reference's rounding) are described in :mod:`llmrank_graph.pruning.masks`.

Ties are broken deterministically: the lowest score is pruned first, and among equal scores
the lower module (layer) and then the lower index.

>>> import numpy as np
>>> choose([np.array([0.1, 0.5, 0.3, 0.9])], ["layer 0"], 0.5, "local", None, "round")
[array([0, 2])]
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import numpy as np
import torch

from ..errors import InvalidArgumentError

__all__ = ["ALLOCATIONS", "ROUNDINGS", "GLOBAL_MIN_KEEP_FRACTION", "choose", "prune_lowest", "keep_all_but_lowest"]

#: Allocation strategies accepted by :func:`llmrank_graph.pruning.masks.allocate`.
ALLOCATIONS: tuple[str, ...] = ("local", "global", "standardized")
#: Rounding rules accepted by :func:`llmrank_graph.pruning.masks.allocate`.
ROUNDINGS: tuple[str, ...] = ("floor", "round", "reference")
#: Fraction of each layer kept by default under global allocation (at least one neuron).
GLOBAL_MIN_KEEP_FRACTION = 0.05


def choose(vals: list[np.ndarray], names: list[str], amount: float, allocation: str, min_keep: int | float | None,
           rounding: str) -> list[np.ndarray]:
    """Indices to prune in each module, ascending, on checked arguments.

    Parameters
    ----------
    vals : list of numpy.ndarray
        One finite float64 1-D array of scores per module, higher = more important.
    names : list of str
        One name per module, for messages ("layer 3", ...).
    amount, allocation, min_keep, rounding
        As :func:`llmrank_graph.pruning.masks.allocate`, already validated.

    Raises
    ------
    InvalidArgumentError
        If the allocation would go below a module's floor or empty a module (a ValueError).
    """
    sizes = [v.size for v in vals]
    if allocation == "local":
        pruned = _allocate_local(vals, sizes, names, amount, min_keep, rounding)
    elif rounding == "reference" and allocation == "global":
        pruned = _allocate_global_reference(vals, sizes, amount)
    else:
        normalise = _standardise if allocation == "standardized" else _by_mean_abs
        pruned = _allocate_global(vals, sizes, names, amount, min_keep, rounding, normalise)
    for n, idx, name in zip(sizes, pruned, names):
        if len(idx) >= n:
            raise InvalidArgumentError(
                f"allocation={allocation!r} with amount={amount} (rounding={rounding!r}) would prune all {n} "
                f"neurons of {name}; lower `amount`" + (" or raise `min_keep`" if rounding != "reference" else "")
            )
    return pruned


def keep_all_but_lowest(values: np.ndarray, k: int) -> torch.Tensor:
    """bool keep-mask, (m,), that drops the ``k`` lowest ``values`` (ties: the lower index); ``k`` trusted."""
    keep = torch.ones(values.size, dtype=torch.bool)
    keep[torch.as_tensor(_lowest(values, k), dtype=torch.long)] = False
    return keep


def prune_lowest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Keep-mask of one layer that prunes its ``k`` lowest scores (ties: the lower index first).

    Parameters
    ----------
    scores : torch.Tensor
        (m,) scores, higher = more important.
    k : int
        Number of neurons to prune, in [0, m).

    Returns
    -------
    torch.Tensor
        bool, (m,): True = kept.

    Raises
    ------
    InvalidArgumentError
        If ``k`` is not in [0, m) (a ValueError).

    Example
    -------
    >>> import torch
    >>> prune_lowest(torch.tensor([0.3, 0.1, 0.2, 0.1]), 2)
    tensor([ True, False,  True, False])
    """
    v = torch.as_tensor(scores).detach().to("cpu", torch.float64).numpy()
    if not 0 <= int(k) < v.size:
        raise InvalidArgumentError(f"`k` must be in [0, {v.size}) (a layer keeps at least one neuron); got {k}")
    return keep_all_but_lowest(v, int(k))


# ---------------------------------------------------------------------------- counts and floors
def _round_count(x: float, rounding: str) -> int:
    if rounding == "floor":
        # amount * n carries float noise (0.29 * 100 = 28.999999999999996): floor with a tolerance.
        return int(math.floor(x + 1e-9))
    return int(round(x))  # Python round (half to even), as torch.nn.utils.prune


def _resolve_floor(min_keep: int | float | None, n: int, allocation: str, what: str) -> int:
    if min_keep is None:
        if allocation == "global":
            return max(1, math.ceil(GLOBAL_MIN_KEEP_FRACTION * n))
        return 1
    if isinstance(min_keep, numbers.Integral) and not isinstance(min_keep, bool):
        if min_keep > n:
            raise InvalidArgumentError(f"`min_keep` ({int(min_keep)}) is larger than {what}, which has {n} neurons")
        return int(min_keep)
    return math.ceil(float(min_keep) * n)


# ---------------------------------------------------------------------------- the rules
def _lowest(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k lowest values; ties by index (stable sort)."""
    return np.argsort(values, kind="stable")[:k]


def _allocate_local(vals, sizes, names, amount, min_keep, rounding) -> list[np.ndarray]:
    out = []
    for v, n, name in zip(vals, sizes, names):
        k = _round_count(amount * n, rounding)
        floor = 0 if rounding == "reference" else _resolve_floor(min_keep, n, "local", name)
        if n - k < floor:
            raise InvalidArgumentError(f"allocation='local' with amount={amount} would keep {n - k} of {n} neurons of "
                                       f"{name}, below min_keep={floor}; lower `amount` or `min_keep`")
        out.append(_lowest(v, k))
    return out


def _pool_lowest(values: np.ndarray, module: np.ndarray, index: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k lowest pooled values; ties by module, then index."""
    order = np.lexsort((index, module, values))
    return order[:k]


def _split(selected: np.ndarray, module: np.ndarray, index: np.ndarray, n_modules: int) -> list[np.ndarray]:
    return [np.sort(index[selected][module[selected] == i]) for i in range(n_modules)]


def _allocate_global_reference(vals, sizes, amount) -> list[np.ndarray]:
    # As the reference GlobalPruner: flat_scores = cat(all modules), threshold_idx =
    # math.ceil(len(flat_scores) * amount), prune flat_scores.argsort()[:threshold_idx].
    total = sum(sizes)
    k = math.ceil(total * amount)
    flat = np.concatenate(vals)
    module = np.concatenate([np.full(n, i) for i, n in enumerate(sizes)])
    index = np.concatenate([np.arange(n) for n in sizes])
    return _split(_pool_lowest(flat, module, index, k), module, index, len(vals))


def _by_mean_abs(v: np.ndarray) -> np.ndarray:
    scale = np.abs(v).mean()
    return v / scale if scale > 0 else np.zeros_like(v)


def _standardise(v: np.ndarray) -> np.ndarray:
    std = v.std()
    return (v - v.mean()) / std if std > 0 else np.zeros_like(v)


def _allocate_global(vals, sizes, names, amount, min_keep, rounding,
                     normalise: Callable[[np.ndarray], np.ndarray] = _by_mean_abs) -> list[np.ndarray]:
    total = sum(sizes)
    k = _round_count(amount * total, rounding)
    floors = [_resolve_floor(min_keep, n, "global", name) for n, name in zip(sizes, names)]
    caps = [n - f for n, f in zip(sizes, floors)]
    if k > sum(caps):
        raise InvalidArgumentError(f"allocation='global' with amount={amount} must prune {k} of {total} neurons, but "
                                   f"the per-layer floor (min_keep={min_keep!r}: {sum(floors)} kept in all) leaves "
                                   f"only {sum(caps)} prunable; lower `amount` or `min_keep`")
    cand_val, cand_mod, cand_idx = [], [], []
    for i, (v, cap) in enumerate(zip(vals, caps)):
        normed = normalise(v)
        # Only a layer's `cap` lowest neurons may be pruned: pooling those candidates and taking
        # the k lowest is one threshold with a floor per layer.
        idx = _lowest(normed, cap)
        cand_val.append(normed[idx])
        cand_mod.append(np.full(len(idx), i))
        cand_idx.append(idx)
    values, module, index = (np.concatenate(x) for x in (cand_val, cand_mod, cand_idx))
    return _split(_pool_lowest(values, module, index, k), module, index, len(vals))
