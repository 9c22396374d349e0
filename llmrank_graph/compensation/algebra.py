"""Compensation after removal: repair a layer's MLP output from calibration statistics.

The algebra is that of docs/design.md section 6. For one layer, ``h`` is the intermediate
activation (the input of down_proj, shape (m,)), ``W`` down_proj's weight (d, m), ``K`` the
kept neurons and ``R`` the removed ones. Calibration gives the mean ``mu = E[h]`` and the
second moment ``G = E[h h^T]`` (:func:`llmrank_graph.calibrate` with ``second_moments=True``);
``C = G - mu mu^T`` is the covariance.

``compensate='bias'`` (FLAP's baseline bias)
    ``b = W_R mu_R``, added to down_proj's bias: the removed neurons are replaced by their
    mean contribution. Needs only the means.
``compensate='lstsq'``
    a ridge least-squares refit of the kept columns,
    ``W_K <- W_K + W_R G_RK (G_KK + lambda I)^-1``, with
    ``lambda = (ridge + TOKEN_RIDGE * k / n) * mean(diag G_KK)`` (:func:`token_ridge`: k kept
    neurons, n calibration tokens), solved by a Cholesky factorisation.
``compensate='lstsq+bias'``
    the same fit on the covariance ``C`` instead of ``G``, then ``b = W mu - W'_K mu_K``.

The lower layer (:func:`bias_term`, :func:`ridge_refit`, :func:`obs_greedy`,
:func:`fluctuation`) takes and returns plain float64 tensors; :func:`check_compensation` and
:func:`down_updates` read models and :class:`~llmrank_graph.data.calibration.ActivationStats`, and
:func:`apply_updates` writes the result into a model. :func:`llmrank_graph.apply_mask` and
:func:`llmrank_graph.prune_model` use them with ``compensate=``.

A bias needs somewhere to live. GPT-2's and OPT's down projections have one; Llama's config
has ``mlp_bias``, which :func:`enable_down_bias` turns on (with zero biases on gate and up, so
that a plain ``transformers`` load of the saved model builds the same modules). Families whose
config has no such flag (Mistral, Qwen2, Gemma) cannot hold a bias: ``bias`` is refused there,
and ``lstsq`` suggested.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from ..base.checks import check_float, fail_type
from ..base.params import Check, OneOf, validate
from ..data.calibration import ActivationStats
from ..errors import InvalidArgumentError
from ..models.architectures import MLPModules, get_architecture, mlp_layers

logger = logging.getLogger(__name__)

__all__ = ["COMPENSATIONS", "DEFAULT_RIDGE", "RECOMMENDED_COMPENSATION", "COMPENSATION_CONSTRAINTS", "DownUpdate",
           "ObsResult", "TOKEN_RIDGE", "bias_term", "ridge_refit", "obs_greedy", "fluctuation", "relative_damp",
           "token_ridge", "check_ridge", "check_compensation", "check_compensation_options", "check_compensation_stats",
           "check_bias_possible",
           "needs_second_moments", "uses_bias", "column_update", "down_updates", "apply_updates", "enable_down_bias"]

#: Values of ``compensate=``.
COMPENSATIONS: tuple[str, ...] = ("none", "bias", "lstsq", "lstsq+bias")
#: Ridge of the least-squares refit, relative to ``mean(diag G_KK)``. Chosen by measurement on
#: SmolLM2-135M (``benchmarks/compensation.py --ridge-sweep``, docs/compensation.md).
DEFAULT_RIDGE = 1e-2
#: Coefficient of the token-count term of the refit's ridge, ``ridge + TOKEN_RIDGE * k / n``
#: (:func:`token_ridge`). Chosen by measurement on SmolLM2-135M at 512, 2048 and 16384
#: calibration tokens and 10, 30 and 50% (``benchmarks/compensation.py --token-counts``,
#: docs/compensation.md): with the base ridge alone, a Gram matrix of fewer tokens than kept
#: neurons is rank-deficient and the refit worsens perplexity.
TOKEN_RIDGE = 1.0
#: What ``llmrank-graph prune`` uses unless told otherwise: the best configuration measured
#: without a layer-by-layer pass. On SmolLM2-135M (held-out perplexity, dense 22.2,
#: pagerank, local allocation; benchmarks/results/compensation.md) ``lstsq`` gives 38.2 at 30%
#: against 43.3 without compensation, and 62.8 at 50% against 107.3; ``sequential=True`` adds
#: 0.1 at 30% for about 6x the time. The library's own default stays ``'none'``
#: (:func:`llmrank_graph.prune_model`): the refit needs the second moments, ``8 m^2`` bytes per
#: layer (566 MB for SmolLM2-135M, 31 GB for a 7B Llama), too much to collect unasked.
RECOMMENDED_COMPENSATION = "lstsq"

_SECOND_MOMENTS_HINT = ("collect them with llmrank_graph.calibrate(model, tokenizer, second_moments=True) "
                        "(the CLI's `prune --compensate lstsq` does)")


# ----------------------------------------------------------------------------- kernels
def relative_damp(moment: torch.Tensor, ridge: float) -> float:
    """``ridge * mean(diag moment)``, or ``ridge`` itself where that mean is 0 (all-dead neurons)."""
    scale = float(moment.diagonal().mean()) if moment.numel() else 0.0
    return ridge * scale if scale > 0 else ridge


def token_ridge(ridge: float, n_tokens: int, n_kept: int) -> float:
    """The relative ridge of a refit of ``n_kept`` columns from ``n_tokens`` calibration tokens.

    ``ridge + TOKEN_RIDGE * n_kept / n_tokens``: the base ``ridge`` (:data:`DEFAULT_RIDGE`)
    plus a term that grows as the tokens become few against the unknowns. With ``n_tokens``
    below ``n_kept`` the Gram matrix ``G_KK`` is singular and a small ridge fits the
    calibration tokens' noise; a large one shrinks the refit towards the unrefitted columns
    (``W_K``). At 16k tokens the term is small (0.07 for SmolLM2's 1075 kept neurons at 30%),
    at 512 it dominates (2.1). Stats without a token count (``n_tokens`` 0) get ``ridge``.

    Example
    -------
    >>> token_ridge(1e-2, n_tokens=512, n_kept=1024)
    2.01
    >>> token_ridge(1e-2, n_tokens=0, n_kept=1024)
    0.01
    """
    return ridge + TOKEN_RIDGE * n_kept / n_tokens if n_tokens > 0 else ridge


def _cholesky(a: torch.Tensor) -> torch.Tensor:
    """Lower Cholesky factor of a symmetric positive (semi-)definite matrix, with a growing jitter if needed."""
    factor, info = torch.linalg.cholesky_ex(a)
    if int(info) == 0:
        return factor
    scale = float(a.diagonal().abs().mean()) or 1.0
    eye = torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
    for exponent in range(-10, 1):
        jitter = scale * 10.0**exponent
        factor, info = torch.linalg.cholesky_ex(a + jitter * eye)
        if int(info) == 0:
            logger.debug("Cholesky needed a jitter of %.3g", jitter)
            return factor
    raise InvalidArgumentError("the second-moment matrix is not positive semi-definite even with a jitter "
                               "(NaN or inf in the statistics?)")


def bias_term(weight: torch.Tensor, mean: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """FLAP's bias ``W_R mu_R``: the removed neurons' mean contribution, (d,).

    Parameters
    ----------
    weight : torch.Tensor
        down_proj's weight, (d, m).
    mean : torch.Tensor
        ``E[h]``, (m,).
    keep : torch.Tensor
        bool, (m,): True for the kept neurons.
    """
    drop = ~keep
    return weight[:, drop] @ mean[drop]


def ridge_refit(weight: torch.Tensor, moment: torch.Tensor, keep: torch.Tensor, damp: float) -> torch.Tensor:
    """Least-squares refit of the kept columns: ``W_K + W_R A_RK (A_KK + damp I)^-1``, (d, k).

    ``A`` is ``E[h h^T]`` (or the covariance, for a fit with a bias). Solved with a Cholesky
    factorisation of ``A_KK + damp I``; no inverse is formed.

    Parameters
    ----------
    weight : torch.Tensor
        (d, m), float64.
    moment : torch.Tensor
        (m, m), float64, symmetric positive semi-definite.
    keep : torch.Tensor
        bool, (m,).
    damp : float
        Absolute ridge (see :func:`relative_damp`).
    """
    drop = ~keep
    w_keep, w_drop = weight[:, keep], weight[:, drop]
    if w_drop.shape[1] == 0:
        return w_keep.clone()
    a_kk = moment[keep][:, keep]
    a_kk = a_kk + damp * torch.eye(a_kk.shape[0], dtype=a_kk.dtype, device=a_kk.device)
    rhs = moment[keep][:, drop] @ w_drop.T  # (k, d) = A_KR W_R^T
    x = torch.cholesky_solve(rhs, _cholesky(a_kk))  # (k, d) = (A_KK + damp I)^-1 A_KR W_R^T
    return w_keep + x.T


@dataclass(frozen=True)
class ObsResult:
    """What :func:`obs_greedy` returns.

    Attributes
    ----------
    order : torch.Tensor
        int64, (n_remove,): neurons in the order they were removed.
    costs : torch.Tensor
        float64, (n_remove,): the increase of ``E||y - y'||^2`` that each removal caused,
        with the remaining columns refitted after every step.
    weight : torch.Tensor
        float64, (d, m): down_proj's weight after the removals: the removed columns are 0, the
        others hold the refit ``W_K + W_R H_RK H_KK^-1`` with ``H = A + damp I``.
    """

    order: torch.Tensor
    costs: torch.Tensor
    weight: torch.Tensor


def obs_greedy(weight: torch.Tensor, moment: torch.Tensor, damp: float, n_remove: int | None = None,
               block: int = 64) -> ObsResult:
    """Greedy structured OBS on down_proj (as ZipLM and SlimGPT): remove columns one at a time.

    With ``H = A + damp I`` and ``Hinv = H^-1``, removing neuron j and refitting the rest
    optimally costs ``||W[:, j]||^2 / Hinv[j, j]``. The cheapest is removed, then
    ``W <- W - W[:, j] Hinv[j, :] / Hinv[j, j]`` and
    ``Hinv <- Hinv - Hinv[:, j] Hinv[j, :] / Hinv[j, j]`` (rank-1 updates), and so on.

    The rank-1 updates are applied lazily, ``block`` at a time, as one matrix product (as
    SparseGPT batches its updates): between two flushes a step reads only row j of ``Hinv``
    and column j of ``W`` (corrected by the pending updates) and keeps every column's squared
    norm and ``Hinv`` diagonal up to date in O(d m). One inverse per layer; the matrices are
    compacted to the remaining neurons at each flush.

    Parameters
    ----------
    weight : torch.Tensor
        (d, m), float64.
    moment : torch.Tensor
        (m, m), float64: ``E[h h^T]``.
    damp : float
        Absolute ridge added to the diagonal.
    n_remove : int, optional
        Number of neurons to remove (default: all m, which ranks every neuron).
    block : int
        Rank-1 updates batched per flush.

    Returns
    -------
    ObsResult

    Notes
    -----
    On the CPU the loop is thousands of small products, for which torch's intra-op threads
    cost more than they give (and stall when the cores are shared): it runs fastest with one
    thread. The library does not change torch's process-wide thread count; a program that
    runs OBS on the CPU sets it for itself (``torch.set_num_threads(1)``, or
    ``OMP_NUM_THREADS=1`` in the environment).

    Example
    -------
    >>> import torch
    >>> w = torch.tensor([[1.0, 0.1, 2.0], [0.5, 0.0, 1.0]], dtype=torch.float64)
    >>> result = obs_greedy(w, torch.eye(3, dtype=torch.float64), damp=0.0, n_remove=1)
    >>> result.order.tolist(), result.weight[:, 1].tolist()
    ([1], [0.0, 0.0])
    """
    return _obs_greedy(weight, moment, damp, n_remove, block)


def _obs_greedy(weight, moment, damp, n_remove, block) -> ObsResult:
    d, m = weight.shape
    n_remove = m if n_remove is None else int(n_remove)
    dev, dt = weight.device, weight.dtype
    h = moment + damp * torch.eye(m, dtype=moment.dtype, device=moment.device)
    hinv = torch.cholesky_inverse(_cholesky(h))  # (a, a): Hinv at the last flush, alive columns only
    w = weight.clone()  # (d, a): W at the last flush
    alive = torch.arange(m, device=dev)  # original index of each local column
    dead = torch.zeros(m, dtype=torch.bool, device=dev)
    norms = w.square().sum(0)  # (a,) current ||W[:, i]||^2
    diag = hinv.diagonal().clone()  # (a,) current Hinv[i, i]
    u = torch.empty(m, block, dtype=dt, device=dev)  # pending Hinv updates: Hinv -= u u^T
    c = torch.empty(m, block, dtype=dt, device=dev)  # pending W updates: W -= wc c^T
    wc = torch.empty(d, block, dtype=dt, device=dev)
    nb = 0
    out_w = torch.zeros_like(weight)
    order, costs = [], []
    tiny = torch.finfo(dt).tiny
    for _ in range(n_remove):
        cost = norms / diag.clamp_min(tiny)
        cost.masked_fill_(dead, float("inf"))
        j = int(torch.argmin(cost))
        order.append(int(alive[j]))
        costs.append(float(cost[j]))
        row = hinv[j] - u[:, :nb] @ u[j, :nb]  # (a,) current Hinv[j, :]
        pivot = row[j].clamp_min(tiny)
        wj = w[:, j] - wc[:, :nb] @ c[j, :nb]  # (d,) current W[:, j]
        dots = w.T @ wj - c[:, :nb] @ (wc[:, :nb].T @ wj)  # (a,) current W[:, i] . W[:, j]
        cj = row / pivot
        norms += cj * (cj * (wj @ wj) - 2 * dots)
        diag -= row * cj
        u[:, nb], c[:, nb], wc[:, nb] = row / pivot.sqrt(), cj, wj
        nb += 1
        dead[j] = True
        norms[j], diag[j] = 0.0, 1.0
        if nb == block:
            w, hinv, alive, dead, norms, diag = _obs_flush(w, hinv, u, c, wc, nb, alive, dead, out_w)
            nb = 0
    w, hinv, alive, dead, norms, diag = _obs_flush(w, hinv, u, c, wc, nb, alive, dead, out_w)
    out_w[:, alive] = w
    return ObsResult(torch.tensor(order, dtype=torch.long), torch.tensor(costs, dtype=torch.float64), out_w)


def _obs_flush(w, hinv, u, c, wc, nb, alive, dead, out_w):
    """Apply the pending rank-1 updates as two products, drop the removed columns, resynchronise."""
    if nb:
        hinv = hinv - u[:, :nb] @ u[:, :nb].T
        w = w - wc[:, :nb] @ c[:, :nb].T
    keep = ~dead
    out_w[:, alive[dead]] = 0
    alive, w, hinv = alive[keep], w[:, keep], hinv[keep][:, keep]
    if u.shape[0] != alive.numel():
        u.resize_(alive.numel(), u.shape[1])
        c.resize_(alive.numel(), c.shape[1])
    return (w, hinv, alive, torch.zeros(alive.numel(), dtype=torch.bool, device=w.device), w.square().sum(0),
            hinv.diagonal().clone())


def fluctuation(weight: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """FLAP's fluctuation metric ``Var(h_j) ||W[:, j]||^2``, (m,).

    It is the expected squared error that the bias compensation leaves when neuron j alone is
    removed: ``E||W[:, j] (h_j - mu_j)||^2``.
    """
    return variance * weight.square().sum(0)


# ----------------------------------------------------------------------------- checks
def check_ridge(ridge) -> float:
    """A positive finite float (relative to ``mean(diag G_KK)``).

    Example
    -------
    >>> check_ridge(1e-2)
    0.01
    """
    return check_float("ridge", ridge, 0.0, min_open=True)


#: The constraints of ``compensate=`` and ``ridge=``, shared by the parameter tables of
#: :func:`llmrank_graph.apply_mask`, :func:`llmrank_graph.prune_model` and the sequential mode.
COMPENSATION_CONSTRAINTS = {"compensate": OneOf(*COMPENSATIONS),
                            "ridge": Check(lambda arg, value: check_ridge(value), "a positive finite float")}


def needs_second_moments(compensate: str) -> bool:
    """Whether ``compensate`` refits by least squares (and so needs the Gram matrices)."""
    return compensate in ("lstsq", "lstsq+bias")


def uses_bias(compensate: str) -> bool:
    """Whether ``compensate`` stores a bias in down_proj (and so needs a family that can hold one)."""
    return compensate in ("bias", "lstsq+bias")


def check_compensation_options(model: nn.Module, compensate: str, ridge: float = DEFAULT_RIDGE) -> None:
    """The checks of :func:`check_compensation` that need no statistics: the choice, the ridge, the bias.

    Raises
    ------
    InvalidArgumentError
        Unknown ``compensate``; a ridge that is not positive; ``bias`` on a family whose MLP
        cannot hold a bias (suggesting ``lstsq``).
    """
    validate(COMPENSATION_CONSTRAINTS, {"compensate": compensate, "ridge": ridge})
    if uses_bias(compensate):
        check_bias_possible(model)


def check_compensation(model: nn.Module, stats, compensate: str, ridge: float = DEFAULT_RIDGE) -> None:
    """Refuse, before any work, a compensation that cannot be done on ``model`` with ``stats``.

    Parameters
    ----------
    model : transformers model of a registered architecture
    stats : ActivationStats or None
        Statistics of ``model`` as it is now (before the neurons are removed).
    compensate : {'none', 'bias', 'lstsq', 'lstsq+bias'}
    ridge : float
        Must be positive.

    Raises
    ------
    InvalidArgumentError
        Unknown ``compensate``; a ridge that is not positive; no stats, or stats without the
        means or second moments it needs (saying how to collect them); ``bias`` on a family
        whose MLP cannot hold a bias (suggesting ``lstsq``).
    InvalidArgumentTypeError
        ``stats`` of the wrong type.
    """
    check_compensation_options(model, compensate, ridge)
    if compensate != "none" and stats is not None and not isinstance(stats, ActivationStats):
        raise fail_type("stats", "an ActivationStats or None", stats)
    check_compensation_stats(model, stats, compensate)


def check_compensation_stats(model: nn.Module, stats: ActivationStats | None, compensate: str) -> None:
    """The checks of :func:`check_compensation` that read the statistics, on a checked ``compensate``.

    What an entry point that has validated ``compensate`` (and the type of ``stats``) calls:
    the statistics must hold, for every layer's down_proj, the means (and, for ``lstsq``, the
    finite Gram matrices) that the compensation needs.

    Raises
    ------
    InvalidArgumentError
        No stats, or stats without what ``compensate`` needs (saying how to collect them).
    """
    if compensate == "none":
        return
    if stats is None:
        raise InvalidArgumentError(f"compensate={compensate!r} needs calibration statistics of the model (means"
                                   + (" and second moments" if needs_second_moments(compensate) else "")
                                   + f" of the down_proj inputs); {_SECOND_MOMENTS_HINT}")
    for mlp in mlp_layers(model):
        s = stats[mlp.down_name] if mlp.down_name in stats else None
        if s is None:
            raise InvalidArgumentError(f"`stats` do not match the model: no statistics for module {mlp.down_name!r}")
        if s.input_sum is None:
            raise InvalidArgumentError(f"compensate={compensate!r} needs the mean of every down_proj input, which "
                                       f"`stats` lack ({mlp.down_name!r}); they were not made by "
                                       f"llmrank_graph.calibrate: {_SECOND_MOMENTS_HINT}")
        if needs_second_moments(compensate):
            if s.input_gram is None:
                raise InvalidArgumentError(f"compensate={compensate!r} needs the second moments (Gram matrices) of "
                                           f"the down_proj inputs, which `stats` lack ({mlp.down_name!r}); "
                                           f"{_SECOND_MOMENTS_HINT}")
            if not torch.isfinite(s.input_gram).all():
                raise InvalidArgumentError(f"`stats` for module {mlp.down_name!r} contain NaN or inf in the Gram "
                                           "matrix")


def check_bias_possible(model: nn.Module) -> None:
    """Refuse a bias compensation on a family whose down_proj has no bias and no MLP-bias option.

    Raises
    ------
    InvalidArgumentError
        Naming the family and suggesting ``compensate='lstsq'`` (a ValueError).
    """
    spec = get_architecture(model)
    if spec.mlp_bias is not None:
        return
    for mlp in mlp_layers(model):
        if getattr(mlp.down, "bias", None) is None:
            raise InvalidArgumentError(
                f"compensate='bias' stores a bias in down_proj, but family {spec.name!r} has no bias there and no "
                f"MLP-bias option in its config, so the saved model would not load in transformers; use "
                f"compensate='lstsq', which refits the kept columns without a bias")


# ----------------------------------------------------------------------------- model layer
@dataclass(frozen=True)
class DownUpdate:
    """The new down_proj of one layer, computed before anything is changed.

    Attributes
    ----------
    layer : int
    weight : torch.Tensor or None
        (d, k) float64: new kept columns (None: unchanged).
    bias : torch.Tensor or None
        (d,) float64: added to down_proj's bias (None: no bias change).
    """

    layer: int
    weight: torch.Tensor | None
    bias: torch.Tensor | None


def column_update(layer: int, weight: torch.Tensor, s, keep: torch.Tensor, compensate: str,
                  ridge: float) -> DownUpdate:
    """The compensation of one projection that loses input columns: down_proj, or o_proj after head pruning.

    ``weight`` is the (out, in) weight, ``s`` the :class:`~llmrank_graph.data.stats.ModuleStats`
    of its input (the means, and the second moment for the refits), ``keep`` the bool mask of the
    kept input columns; ``ridge`` the base of :func:`token_ridge`.
    """
    w = weight.detach().to(torch.float64)
    device = w.device
    keep = keep.to(device)
    mean = s.input_mean.to(device)
    if compensate == "bias":
        return DownUpdate(layer, None, bias_term(w, mean, keep))
    moment = s.input_second_moment.to(device)
    if compensate == "lstsq+bias":
        moment = moment - torch.outer(mean, mean)  # covariance C
    damp = relative_damp(moment[keep][:, keep], token_ridge(ridge, s.n_tokens, int(keep.sum())))
    w_keep = ridge_refit(w, moment, keep, damp)
    bias = (w @ mean - w_keep @ mean[keep]) if compensate == "lstsq+bias" else None
    return DownUpdate(layer, w_keep, bias)


def _layer_update(mlp: MLPModules, stats, keep: torch.Tensor, compensate: str, ridge: float) -> DownUpdate:
    return column_update(mlp.layer, mlp.weight("down"), stats[mlp.down_name], keep, compensate, ridge)


def down_updates(model: nn.Module, keep, stats, compensate: str, ridge: float = DEFAULT_RIDGE,
                 layers: list[MLPModules] | None = None) -> dict[int, DownUpdate]:
    """The compensation of every pruned layer, computed without changing the model.

    Parameters
    ----------
    model : transformers model of a registered architecture, not yet pruned
    keep : NeuronMask or mapping of int -> torch.Tensor
        The neurons kept in each layer (bool, (m_l,)).
    stats : ActivationStats
        Statistics of ``model`` (checked by :func:`check_compensation`).
    compensate : str
        One of :data:`COMPENSATIONS` other than ``'none'``.
    ridge : float
        The base relative ridge; each layer's refit uses :func:`token_ridge` of it, of the
        statistics' token count and of the layer's kept neurons.
    layers : list of MLPModules, optional
        Only these layers (the sequential mode passes one at a time).

    Returns
    -------
    dict of int -> DownUpdate
        One entry per layer that loses neurons.
    """
    keeps = getattr(keep, "intermediate", keep)
    out = {}
    with torch.no_grad():
        for mlp in layers if layers is not None else mlp_layers(model):
            k = keeps[mlp.layer]
            if k.all():
                continue
            out[mlp.layer] = _layer_update(mlp, stats, k, compensate, ridge)
    return out


def enable_down_bias(model: nn.Module) -> None:
    """Give every MLP Linear of ``model`` a bias (zeros where it had none) and set the config flag.

    Only where the family needs it (:attr:`ArchitectureSpec.mlp_bias`); GPT-2 and OPT keep their
    own biases. Gate and up get zero biases as well, because the flag gives one to every MLP
    Linear when transformers builds the model.
    """
    spec = get_architecture(model)
    mlps = mlp_layers(model)
    if all(getattr(m.down, "bias", None) is not None for m in mlps):
        return
    if spec.mlp_bias is None:
        check_bias_possible(model)
    for mlp in mlps:
        for mod in mlp.named_modules().values():
            if getattr(mod, "bias", None) is None:
                w = mod.weight
                out_features = w.shape[1] if mlp.conv1d else w.shape[0]
                mod.bias = nn.Parameter(torch.zeros(out_features, dtype=w.dtype, device=w.device),
                                        requires_grad=w.requires_grad)
    setattr(model.config, spec.mlp_bias, True)
    logger.debug("turned on %s=True: zero biases on every MLP Linear", spec.mlp_bias)


def apply_updates(model: nn.Module, updates: dict[int, DownUpdate],
                  keep: dict[int, torch.Tensor] | None = None) -> None:
    """Write :func:`down_updates` into ``model``, whose layers are already pruned.

    Parameters
    ----------
    model : transformers model
    updates : dict of int -> DownUpdate
    keep : dict of int -> torch.Tensor, optional
        For models pruned with ``how='zero'`` (down_proj still has every column): the layer's
        keep-mask, saying which columns get the new weights. None after ``how='remove'``.
    """
    if any(u.bias is not None for u in updates.values()):
        enable_down_bias(model)
    mlps = {m.layer: m for m in mlp_layers(model)}
    with torch.no_grad():
        for layer, u in updates.items():
            mlp = mlps[layer]
            down = mlp.down
            if u.weight is not None:
                w = mlp.weight("down")  # (d, k) or (d, m) view, transposed for Conv1D
                new = u.weight.to(dtype=w.dtype, device=w.device)
                if keep is None:
                    w.copy_(new)
                else:
                    k = keep[layer].to(w.device)
                    w[:, k] = new
            if u.bias is not None:
                down.bias.add_(u.bias.to(dtype=down.bias.dtype, device=down.bias.device))
