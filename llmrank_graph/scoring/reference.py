"""Faithful reproductions of the LLM-Rank reference code: ``wpr``, ``mpr``, ``channel-wanda``, ``norm``.

They follow the reference's ``BaseScorer.iterate`` (docs/design.md section 5), with its two
pipelines (``mode="chained"``: one chain [up_0, down_0, up_1, ...]; ``"isolated"``: each
[up_l, down_l] on its own) and its "paper mode" scores of the hidden channels
(``prune_hidden=True``). They round allocations as the reference does
(``rounding = "reference"``).

>>> import torch, transformers, llmrank_graph as lg
>>> cfg = transformers.LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=12, num_hidden_layers=2,
...                                num_attention_heads=2)
>>> model = transformers.LlamaForCausalLM(cfg).eval()
>>> stats = lg.calibrate(model, input_ids=torch.randint(0, 32, (2, 8)))
>>> scores = WeightedPageRankScorer(gamma=0.9, prune_hidden=True).score(model, stats)
>>> scores.sizes(), scores.hidden[1].shape          # hidden: the d output rows of down_proj
({0: 12, 1: 12}, torch.Size([8]))
>>> float(scores.intermediate[0].sum())             # each module's scores sum to 1
1.0
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar

import torch

from ..base.params import Constraint, Interval, OneOf
from ..errors import InvalidArgumentError
from ..models.architectures import MLPModules
from .registry import Scorer, _abs64, _vec

__all__ = ["WeightedPageRankScorer", "ModifiedPageRankScorer", "ChannelWandaScorer", "NormScorer"]


def _reference_chains(mlps: list[MLPModules], mode: str) -> list[list[tuple[MLPModules, str]]]:
    """Module sequences of the reference pipelines: one chain [up_0, down_0, up_1, ...] or one per MLP."""
    seq = [[(m, "up"), (m, "down")] for m in mlps]
    if mode == "chained":
        return [[x for pair in seq for x in pair]]
    return seq


def _module_name(m: MLPModules, which: str) -> str:
    return m.up_name if which == "up" else m.down_name


def _normalise(v: torch.Tensor, what: str) -> torch.Tensor:
    total = v.sum()
    if not torch.isfinite(total) or total <= 0:
        raise InvalidArgumentError(f"cannot normalise the scores of {what}: they sum to {float(total):.3g} "
                                   "(all activations or weights zero?)")
    return v / total


class _ReferenceScorer(Scorer):
    """Shared driver of the reference code's ``BaseScorer.iterate`` (docs/design.md section 5).

    For each chain of modules (``mode``): ``s_0`` = in-activation of the first module, normalised
    to sum 1; module k's scores = ``_step(|W_k|, s_{k-1}, in_k, out_k)`` normalised to sum 1.
    In/out activations are the per-batch L2 norms averaged over batches. Intermediate scores of
    layer l are the scores of up_l (its output rows); hidden scores, those of down_l.
    Allocated with the reference's rounding (``rounding = "reference"``).
    """

    supports_hidden = True
    rounding = "reference"

    def _step(self, w_abs: torch.Tensor, prev: torch.Tensor, inp: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _score(self, model, mlps, stats):
        inter: dict[int, torch.Tensor] = {}
        hidden: dict[int, torch.Tensor] = {}
        for chain in _reference_chains(mlps, self.mode):
            prev = None
            for k, (m, which) in enumerate(chain):
                name = _module_name(m, which)
                w = _abs64(m, which)  # (out, in)
                st = stats[name] if stats is not None else None
                inp = _vec(st.input_norm_batch_mean, w) if st is not None else None
                out = _vec(st.output_norm_batch_mean, w) if st is not None else None
                if k == 0:
                    prev = _normalise(inp, f"the input activations of {name!r}") if inp is not None else None
                cur = _normalise(self._step(w, prev, inp, out), f"module {name!r}")
                (inter if which == "up" else hidden)[m.layer] = cur
                prev = cur
                del w
        return inter, (hidden if self.prune_hidden else None)


def _safe_div(v: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """v / d with 0 where d == 0 (the reference's nan_to_num on 0/0 columns)."""
    return torch.where(d != 0, v / torch.where(d != 0, d, torch.ones_like(d)), torch.zeros_like(v))


class WeightedPageRankScorer(_ReferenceScorer):
    """The reference's weighted PageRank (``WeightedPageRankScorer``), layer by layer.

    For module k with weight W (out x in)::

        A   = theta * |W| / colsum|W| + (1 - theta) * 1[W!=0] / colsum(1[W!=0])   (0 on zero columns)
        s_k = gamma * A @ s_{k-1} + (1 - gamma) * out_k / sum(out_k),  then / sum

    Parameters
    ----------
    gamma : float in [0, 1]
        Weight of the propagated term. The reference default 0 ranks by output activation.
    theta : float in [0, 1]
        Trade-off between weights and the 0/1 connectivity pattern.
    mode : {'chained', 'isolated'}
        Reference pipelines: [up_0, down_0, up_1, ...] as one chain, or each [up_l, down_l].
    prune_hidden : bool
        Also return the scores of down_l (hidden channels), the paper mode.

    Example
    -------
    >>> WeightedPageRankScorer(gamma=0.9)
    WeightedPageRankScorer(gamma=0.9, theta=0.5, mode='chained', prune_hidden=False)
    """

    name = "wpr"
    description = "reference weighted PageRank (LLM-Rank), layer-wise"
    _parameter_constraints: ClassVar[Mapping[str, Constraint]] = MappingProxyType({
        **Scorer._parameter_constraints, "gamma": Interval(float, 0, 1), "theta": Interval(float, 0, 1)})

    def __init__(self, *, gamma: float = 0.0, theta: float = 0.5, mode: str = "chained", prune_hidden: bool = False):
        self.gamma = gamma
        self.theta = theta
        self.mode = mode
        self.prune_hidden = prune_hidden

    def _step(self, w, prev, inp, out):
        gamma, theta = float(self.gamma), float(self.theta)
        s = torch.zeros(w.shape[0], dtype=torch.float64, device=w.device)
        if gamma > 0:
            pattern = (w != 0).to(torch.float64)
            # A @ prev without forming A: scale prev by 1/colsum (0 on empty columns).
            prop = theta * (w @ _safe_div(prev, w.sum(0))) + (1 - theta) * (pattern @ _safe_div(prev, pattern.sum(0)))
            s = s + gamma * prop
        if gamma < 1:
            s = s + (1 - gamma) * _normalise(out, "output activations")
        return s


class ModifiedPageRankScorer(_ReferenceScorer):
    """The reference's modified PageRank (``ModifiedPageRankScorer``, z_importance=False).

    ``s_k = (|W_k| @ s_{k-1}) * out_k``, normalised to sum 1.

    Parameters
    ----------
    mode : {'chained', 'isolated'}
    prune_hidden : bool

    Example
    -------
    >>> ModifiedPageRankScorer(mode="isolated").needs_stats()
    True
    """

    name = "mpr"
    description = "reference modified PageRank (LLM-Rank), layer-wise"

    def _step(self, w, prev, inp, out):
        return (w @ prev) * out


class ChannelWandaScorer(_ReferenceScorer):
    """The reference's "wanda (channel)" (``WandaScorer``): ``|W| @ in_activation`` per module.

    Scores of each module are normalised to sum 1 (as the reference does), which matters for
    its global allocation. The same in both modes.

    Parameters
    ----------
    mode : {'chained', 'isolated'}
    prune_hidden : bool

    Example
    -------
    >>> ChannelWandaScorer.check_params(mode="stacked")
    Traceback (most recent call last):
    ...
    llmrank_graph.errors.InvalidArgumentError: `mode` must be one of 'chained', 'isolated'; got 'stacked'
    """

    name = "channel-wanda"
    description = "reference channel Wanda: |W| @ input activation norms, per module"

    def _step(self, w, prev, inp, out):
        return w @ inp


class NormScorer(_ReferenceScorer):
    """The reference's ``NormScorer``: p-norm of each row of W, per module, normalised to sum 1.

    Parameters
    ----------
    p : {1, 2}
        Row norm (the reference default is 1).
    mode : {'chained', 'isolated'}
    prune_hidden : bool

    Example
    -------
    >>> NormScorer(p=2).needs_stats()      # weights only
    False
    """

    name = "norm"
    description = "reference row norm of |W|, per module"
    _parameter_constraints: ClassVar[Mapping[str, Constraint]] = MappingProxyType({
        **Scorer._parameter_constraints, "p": OneOf(1, 2)})

    def __init__(self, *, p: int = 1, mode: str = "chained", prune_hidden: bool = False):
        self.p = p
        self.mode = mode
        self.prune_hidden = prune_hidden

    def needs_stats(self) -> bool:
        return False

    def _step(self, w, prev, inp, out):
        return torch.linalg.vector_norm(w, ord=self.p, dim=1)
