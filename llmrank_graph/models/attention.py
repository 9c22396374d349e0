"""Where the attention heads are in each supported family, and the one primitive that removes them.

The family's :class:`~llmrank_graph.models.architectures.AttentionSpec` (the ``attention``
field of its :class:`~llmrank_graph.models.architectures.ArchitectureSpec`) names the modules;
:func:`attention_layers` resolves it on a model and returns one :class:`AttentionModules` per
decoder layer, which reads the layer's head counts from its weights' shapes.

Query head ``h`` of a layer owns ``head_dim`` rows of the query projection (and their bias)
and the same columns of the output projection. Key/value head ``g`` owns those rows of the key
and value projections and serves the query heads ``g * G .. (g + 1) * G - 1``, where
``G = num_heads // num_key_value_heads``: transformers' attention repeats every key/value head
by this one factor per layer (``repeat_kv``). Hence the rule that
:meth:`AttentionModules.plan` enforces: a layer keeps the same number of query heads in every
key/value group it keeps, and a group that keeps none is removed whole (its key/value rows
too). Families with one key/value head per query head (GPT-2, OPT, multi-head Llama) can
lose any heads; a layer with a single key/value group (Gemma's multi-query layers) can lose
only query heads.

Supported: Llama, Mistral, Qwen2/Qwen3 and Gemma/Gemma2/Gemma3 (separate ``q/k/v/o_proj``,
Qwen2's q/k/v biases), GPT-2 (the fused ``c_attn`` Conv1D and ``c_proj``) and OPT
(``q/k/v/out_proj`` with biases).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InvalidArgumentError
from .architectures import (
    ArchitectureSpec,
    AttentionSpec,
    UnsupportedArchitectureError,
    _resolve,
    _slice_in,
    _slice_out,
    architectures,
    get_architecture,
)

__all__ = ["AttentionModules", "attention_spec", "attention_layers", "head_counts", "set_head_counts",
           "COUNT_ATTRIBUTES"]

#: The attributes of an attention module that transformers' forward reads and that
#: :meth:`AttentionModules.keep_heads` keeps truthful, wherever a module has them as ints:
#: ``num_key_value_groups`` (the ``repeat_kv`` factor of Llama-like families), ``num_heads``
#: (OPT's and GPT-2's reshapes), ``split_size`` (GPT-2's split of the fused ``c_attn`` output)
#: and ``num_attention_heads`` / ``num_key_value_heads`` where a module records them. The
#: head size, the scaling and GPT-2's ``embed_dim`` (the hidden size) do not change.
COUNT_ATTRIBUTES: tuple[str, ...] = ("num_heads", "num_attention_heads", "num_key_value_heads",
                                     "num_key_value_groups", "split_size")


def attention_spec(model_or_type) -> tuple[ArchitectureSpec, AttentionSpec]:
    """The family spec of a model, config or ``model_type``, and its attention spec.

    Raises
    ------
    UnsupportedArchitectureError
        The family is not registered, or its attention heads are not supported; the message
        names the family and the supported ones.

    Example
    -------
    >>> attention_spec("gpt2")[1].qkv
    'c_attn'
    """
    spec = get_architecture(model_or_type)
    if spec.attention is None:
        supported = ", ".join(f"{s.name} ({'/'.join(s.model_types)})" for s in architectures().values()
                              if s.attention is not None)
        raise UnsupportedArchitectureError(
            f"the {spec.name!r} family ({'/'.join(spec.model_types)}) has no attention-head support: its "
            f"ArchitectureSpec has no AttentionSpec. Families whose heads can be pruned: {supported}")
    return spec, spec.attention


def _units(units: torch.Tensor, head_dim: int) -> torch.Tensor:
    """The feature indices of heads ``units``: ``head_dim`` consecutive ones each, in order."""
    return (units[:, None] * head_dim + torch.arange(head_dim)[None, :]).flatten()


@dataclass(frozen=True)
class AttentionModules:
    """The attention of one decoder layer: its modules and the head layout of its weights.

    ``q``, ``k`` and ``v`` are None in a family whose projections are fused into ``qkv``
    (GPT-2's ``c_attn``); ``block`` is the attention module itself, whose recorded counts
    (:data:`COUNT_ATTRIBUTES`) :meth:`keep_heads` keeps truthful. ``names`` maps ``'q'``,
    ``'k'``, ``'v'``, ``'qkv'`` and ``'o'`` to qualified module names (those present).
    """

    layer: int
    block: nn.Module
    o: nn.Module
    q: nn.Module | None
    k: nn.Module | None
    v: nn.Module | None
    qkv: nn.Module | None
    names: dict
    conv1d: bool = False

    @property
    def head_dim(self) -> int:
        """Features per head (the module's ``head_dim``)."""
        return int(self.block.head_dim)

    def _features(self, module: nn.Module) -> tuple[int, int]:
        """(out, in) features of a projection, whatever its type."""
        rows, cols = module.weight.shape
        return (cols, rows) if self.conv1d else (rows, cols)

    @property
    def hidden_size(self) -> int:
        return self._features(self.o)[0]

    @property
    def num_heads(self) -> int:
        """Query heads of this layer now."""
        return self._features(self.o)[1] // self.head_dim

    @property
    def num_key_value_heads(self) -> int:
        """Key/value heads (groups) of this layer now."""
        if self.qkv is not None:
            return (self._features(self.qkv)[0] - self.num_heads * self.head_dim) // (2 * self.head_dim)
        return self._features(self.k)[0] // self.head_dim

    @property
    def group_size(self) -> int:
        """Query heads per key/value head (the ``repeat_kv`` factor)."""
        return self.num_heads // self.num_key_value_heads

    def head_cost(self) -> dict[str, int]:
        """Parameters one query head and one key/value group hold in this layer.

        ``query_head``: its query rows (and bias) and output columns; ``kv_group``: its key and
        value rows (and biases). Removing ``n`` query heads and ``g`` whole groups removes
        ``n * query_head + g * kv_group`` parameters (in a family with one key/value head per
        query head, removing a head removes its group too).
        """
        d, hd = self.hidden_size, self.head_dim
        if self.qkv is not None:
            bias = hd if getattr(self.qkv, "bias", None) is not None else 0
            q_bias, kv_bias = bias, 2 * bias
        else:
            q_bias = hd if getattr(self.q, "bias", None) is not None else 0
            kv_bias = sum(hd for m in (self.k, self.v) if getattr(m, "bias", None) is not None)
        return {"query_head": 2 * d * hd + q_bias, "kv_group": 2 * d * hd + kv_bias}

    def plan(self, keep) -> tuple[torch.Tensor, torch.Tensor]:
        """The query heads and key/value groups that the keep-mask ``keep`` keeps, checked.

        Parameters
        ----------
        keep : bool tensor of shape (num_heads,)
            ``True`` keeps the query head.

        Returns
        -------
        heads, groups : torch.Tensor
            Ascending int64 indices of the kept query heads and of the kept key/value groups.

        Raises
        ------
        InvalidArgumentError
            A mask of the wrong size, one that keeps no head of the layer, or one that keeps
            different numbers of query heads in two kept groups (the message states the rule).
        """
        keep = torch.as_tensor(keep).to("cpu", torch.bool).flatten()
        n, kv = self.num_heads, self.num_key_value_heads
        where = f"layer {self.layer} ({self.names['o']})"
        if keep.numel() != n:
            raise InvalidArgumentError(f"the head mask does not match the model: {where} has {n} query heads in the "
                                       f"model but {keep.numel()} in the mask")
        if not keep.any():
            raise InvalidArgumentError(f"the head mask keeps no head of {where}: a layer must keep at least one "
                                       f"query head (of {n})")
        per_group = keep.view(kv, n // kv).sum(1)
        kept = per_group[per_group > 0]
        if (kept != kept[0]).any():
            raise InvalidArgumentError(
                f"the head mask is uneven in {where}: its {kv} key/value groups of {n // kv} query heads keep "
                f"{per_group.tolist()} heads; transformers' attention repeats every key/value head by one factor "
                "per layer, so a layer must keep the same number of query heads in every group it keeps (a group "
                "that keeps none is removed whole, with its key/value rows)")
        return keep.nonzero().flatten(), (per_group > 0).nonzero().flatten()

    def keep_heads(self, heads) -> None:
        """Keep only the query heads ``heads`` of this layer, in place, as :meth:`plan` allows.

        Slices the query rows of the kept heads, the key/value rows of the kept groups (with
        their biases; the fused ``c_attn`` column blocks of GPT-2) and the output columns of
        the kept heads, and updates the module's :data:`COUNT_ATTRIBUTES`. This is the one
        layout primitive under head removal and under the loader of head-pruned models (which
        shrinks a freshly built model to its saved counts before loading the weights). Works on
        the ``meta`` device too.

        Parameters
        ----------
        heads : sequence of int or int tensor
            Distinct indices in ``[0, num_heads)``.

        Raises
        ------
        InvalidArgumentError
            An index out of range, or a set of heads that :meth:`plan` refuses.
        """
        heads = torch.as_tensor(heads, dtype=torch.long).flatten().cpu()
        n = self.num_heads
        if heads.numel() and (int(heads.min()) < 0 or int(heads.max()) >= n):
            raise InvalidArgumentError(f"`heads` must be in [0, {n}) for layer {self.layer} ({self.names['o']}); "
                                       f"got indices from {int(heads.min())} to {int(heads.max())}")
        keep = torch.zeros(n, dtype=torch.bool)
        keep[heads] = True
        heads, groups = self.plan(keep)
        hd, kv = self.head_dim, self.num_key_value_heads
        q_rows, kv_rows = _units(heads, hd), _units(groups, hd)
        device = self.o.weight.device
        if self.qkv is not None:
            columns = torch.cat([q_rows, n * hd + kv_rows, (n + kv) * hd + kv_rows])
            _slice_out(self.qkv, columns.to(device), self.conv1d)
        else:
            _slice_out(self.q, q_rows.to(device), self.conv1d)
            for module in (self.k, self.v):
                _slice_out(module, kv_rows.to(device), self.conv1d)
        _slice_in(self.o, q_rows.to(device), self.conv1d)
        counts = {"num_heads": len(heads), "num_attention_heads": len(heads), "num_key_value_heads": len(groups),
                  "num_key_value_groups": len(heads) // len(groups), "split_size": len(heads) * hd}
        for name in COUNT_ATTRIBUTES:
            value = getattr(self.block, name, None)
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(self.block, name, counts[name])

    def zero_heads(self, keep) -> None:
        """Zero the output columns of the query heads that ``keep`` drops, in place (checked by :meth:`plan`).

        A head whose output columns are zero adds nothing to the residual stream, exactly as if
        removed. (Zeroing its query rows would not silence it: its scores would all be equal, and
        the softmax would still average the values.)
        """
        heads, _ = self.plan(keep)
        dropped = torch.ones(self.num_heads, dtype=torch.bool)
        dropped[heads] = False
        columns = _units(dropped.nonzero().flatten(), self.head_dim).to(self.o.weight.device)
        with torch.no_grad():
            if self.conv1d:
                self.o.weight[columns, :] = 0
            else:
                self.o.weight[:, columns] = 0


def attention_layers(model: nn.Module) -> list[AttentionModules]:
    """One :class:`AttentionModules` per decoder layer of ``model``, in order.

    Raises
    ------
    UnsupportedArchitectureError
        The family is not registered or has no attention support (:func:`attention_spec`).

    Example
    -------
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=12,
    ...                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
    >>> att = attention_layers(model)[0]
    >>> att.num_heads, att.num_key_value_heads, att.head_dim, att.names["q"]
    (4, 2, 4, 'model.layers.0.self_attn.q_proj')
    >>> att.keep_heads([0, 2])  # one query head of each group
    >>> head_counts(model)
    [(2, 2), (4, 2)]
    """
    spec, att = attention_spec(model)
    out = []
    for i, layer in enumerate(_resolve(model, spec.layers, f"architecture {spec.name!r}")):
        block = _resolve(layer, att.module, f"layer {i}")
        prefix = f"{spec.layers}.{i}.{att.module}"
        modules = {role: _resolve(block, getattr(att, role), f"layer {i}")
                   for role in ("q", "k", "v", "qkv", "o") if getattr(att, role) is not None}
        out.append(AttentionModules(layer=i, block=block, o=modules["o"], q=modules.get("q"), k=modules.get("k"),
                                    v=modules.get("v"), qkv=modules.get("qkv"),
                                    names={r: f"{prefix}.{getattr(att, r)}" for r in modules}, conv1d=att.conv1d))
    return out


def head_counts(model_or_layers: nn.Module | Sequence[AttentionModules]) -> list[tuple[int, int]]:
    """(query heads, key/value heads) of every layer of ``model`` now, in layer order."""
    layers = attention_layers(model_or_layers) if isinstance(model_or_layers, nn.Module) else model_or_layers
    return [(a.num_heads, a.num_key_value_heads) for a in layers]


def set_head_counts(model: nn.Module, counts: Sequence[tuple[int, int]]) -> None:
    """Shrink each layer to ``counts[layer] = (query heads, key/value heads)``, keeping the first ones.

    Keeps the first key/value groups and, in each, its first query heads: the layout in which a
    head-pruned model's weights are saved (a kept head's index is its rank). The loader of
    pruned models calls it on a freshly built model, as it calls
    :meth:`~llmrank_graph.models.architectures.MLPModules.keep_neurons` for the MLP sizes.

    Raises
    ------
    InvalidArgumentError
        A count list of another length than the layers, or counts that the layer cannot reach
        (more heads or groups than it has, or heads not a multiple of the groups).
    """
    layers = attention_layers(model)
    if len(counts) != len(layers):
        raise InvalidArgumentError(f"`counts` has {len(counts)} entries but the model has {len(layers)} layers")
    for att, (n, kv) in zip(layers, counts):
        if (n, kv) == (att.num_heads, att.num_key_value_heads):
            continue
        if kv < 1 or n % kv or kv > att.num_key_value_heads or n // kv > att.group_size:
            raise InvalidArgumentError(
                f"layer {att.layer} has {att.num_heads} query heads in {att.num_key_value_heads} key/value groups; "
                f"it cannot keep {n} query heads in {kv} groups")
        att.keep_heads([g * att.group_size + j for g in range(kv) for j in range(n // kv)])
