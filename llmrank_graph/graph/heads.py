"""Attention heads as nodes of the graph: their blocks, their activations, and their scores.

With ``ExportOptions(attention=True)`` every decoder layer adds two partitions before its MLP:
the residual stream as the attention reads it (``R{l}``) and one node per query head
(``A{l}``, kind ``'head'``); the MLP's input partition (``H{l}``) then follows the heads
(docs/design.md section 1, "Attention heads in the graph"). A head's edges come from its
value/output path:

- ``R{l},i -> A{l},h``: the sum of ``|W_V|`` over the ``head_dim`` rows of the key/value group
  of head ``h`` (the heads of one group share those rows, hence their in-edges);
- ``A{l},h -> H{l},j``: the sum of ``|W_O|`` over the ``head_dim`` columns of head ``h``.

:class:`HeadBlock` is the block of either kind: it views the model's parameter, as a
:class:`~llmrank_graph.graph.blocks.WeightBlock` does, and reduces it to one float32 entry
per (node, head) when an operation needs it, so the graph sees in-place changes of the model
(``zero_heads``) and its caches notice. :func:`head_scores` maps a centrality vector back to
per-layer head scores, as the intermediate slices map neuron scores.

>>> import torch
>>> from llmrank_graph.graph.blocks import Partition
>>> r = Partition(0, "R0", 0, "hidden", 0, 2)
>>> a = Partition(1, "A0", 0, "head", 2, 2)
>>> w_v = torch.tensor([[1.0, -2.0], [0.5, 0.0]])  # one key/value group of head_dim 2, shared by 2 heads
>>> HeadBlock(r, a, 0, "value", w_v, head_dim=2, group_size=2).dense()
tensor([[1.5000, 2.0000],
        [1.5000, 2.0000]], dtype=torch.float64)
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Iterator

import numpy as np
import torch

from ..errors import InvalidArgumentError
from .blocks import Block, Partition, WeightBlock

__all__ = ["HeadBlock", "HEAD_ROLES", "head_weights", "attention_activations", "check_finite_attention",
           "head_scores"]

#: The roles of head blocks: ``'value'`` (residual stream -> heads) and ``'output'`` (heads -> stream).
HEAD_ROLES = ("value", "output")


class HeadBlock(Block):
    """The edges between a residual-stream partition and one layer's heads, from a value or output weight.

    Parameters
    ----------
    src, dst : Partition
        ``R{l} -> A{l}`` for ``role='value'``, ``A{l} -> H{l}`` for ``role='output'``.
    layer : int
    role : {'value', 'output'}
    weight : torch.Tensor or None
        The weight in (out features, in features) layout, a view of the model's parameter
        (nothing is copied): the value projection, ``(num_key_value_heads * head_dim, d)``, or
        the output projection, ``(d, num_heads * head_dim)``. None in subclasses that read it
        elsewhere (:meth:`raw_weight`).
    head_dim : int
    group_size : int
        Query heads per key/value group (``role='value'``; 1 for the output projection).
    col_scale : torch.Tensor, optional
        (src.size,) float64 scale of each column, as :class:`~llmrank_graph.graph.blocks.WeightBlock`'s.

    Notes
    -----
    The block's matrix is ``S * col_scale``, where ``S`` is float32: each weight converted to
    float32, its absolute value summed over the head's ``head_dim`` features in float64 and
    rounded to float32 once. Every operation goes through one
    :class:`~llmrank_graph.graph.blocks.WeightBlock` over ``S`` (the one edge-weight rule then
    applies the scale), rebuilt only when the weight or the scale changes.
    """

    def __init__(self, src: Partition, dst: Partition, layer: int, role: str, weight: torch.Tensor | None,
                 head_dim: int, group_size: int = 1, col_scale: torch.Tensor | None = None):
        super().__init__(src, dst, layer, role)
        if role not in HEAD_ROLES:  # internal: the export chose it
            raise ValueError(f"`role` must be one of {', '.join(map(repr, HEAD_ROLES))}; got {role!r}")
        self.weight = weight
        self.head_dim = int(head_dim)
        self.group_size = int(group_size)
        self.col_scale = col_scale
        self._built: tuple | None = None  # (key, WeightBlock over S)

    # -- the reduced matrix ------------------------------------------------------------
    def raw_weight(self, device=None) -> torch.Tensor:
        """The weight in (out, in) layout, on ``device`` (no copy when already there)."""
        w = self.weight
        return w if device is None or w.device == torch.device(device) else w.to(device)

    def _weight_version(self) -> Hashable:
        return (self.weight._version, self.weight.data_ptr())

    def version(self) -> Hashable:
        v = (self._weight_version(),)
        if self.col_scale is not None:
            v += ((self.col_scale._version, self.col_scale.data_ptr()),)
        return v

    def reduced(self, w: torch.Tensor) -> torch.Tensor:
        """``S``: the (dst.size, src.size) float32 sums of ``|w|`` over each head's features."""
        hd, rows, cols = self.head_dim, self.dst.size, self.src.size
        a = w.to(torch.float32)
        a = a.abs() if a is w else a.abs_()
        if self.role == "value":  # (kv * hd, d) -> (kv, d), one row per group, repeated for its heads
            if tuple(w.shape) != (rows // self.group_size * hd, cols):
                raise InvalidArgumentError(f"layer {self.layer}: the value weight has shape {tuple(w.shape)}; "
                                           f"{rows} heads in groups of {self.group_size} of head_dim {hd} over "
                                           f"{cols} features need {(rows // self.group_size * hd, cols)}")
            s = a.reshape(rows // self.group_size, hd, cols).sum(1, dtype=torch.float64)
            s = s.repeat_interleave(self.group_size, dim=0)
        else:  # (d, n * hd) -> (d, n)
            if tuple(w.shape) != (rows, cols * hd):
                raise InvalidArgumentError(f"layer {self.layer}: the output weight has shape {tuple(w.shape)}; "
                                           f"{cols} heads of head_dim {hd} into {rows} features need "
                                           f"{(rows, cols * hd)}")
            s = a.reshape(rows, cols, hd).sum(2, dtype=torch.float64)
        return s.to(torch.float32).contiguous()

    def _inner(self, device=None) -> WeightBlock:
        """The WeightBlock over ``S`` (and the column scale), built once per version and device."""
        key = (self.version(), str(device))
        if self._built is None or self._built[0] != key:
            s = self.reduced(self.raw_weight(device))
            self._built = (key, WeightBlock(self.src, self.dst, self.layer, self.role, [s], "single", self.col_scale))
        return self._built[1]

    @contextlib.contextmanager
    def loaded(self, device=None) -> Iterator[Block]:
        yield self._inner(device)

    # -- the protocol, on S --------------------------------------------------------------
    def out_strength(self, dtype=torch.float64, device=None):
        with self.loaded(device) as b:
            return b.out_strength(dtype, device)

    def in_strength(self, dtype=torch.float64, device=None):
        with self.loaded(device) as b:
            return b.in_strength(dtype, device)

    def matmul(self, v):
        with self.loaded(v.device) as b:
            return b.matmul(v)

    def rmatmul(self, v):
        with self.loaded(v.device) as b:
            return b.rmatmul(v)

    def product(self, forward=True, device=None):
        if not self.resident:
            return None
        return self._inner(device).product(forward, device)

    def chunks(self, dtype=torch.float64, device=None):
        with self.loaded(device) as b:
            yield from b.chunks(dtype, device)

    def coo(self):
        with self.loaded() as b:
            return b.coo()

    def write_coo(self, src, dst, w):
        with self.loaded() as b:
            return b.write_coo(src, dst, w)

    def out_degree(self):
        return np.full(self.src.size, float(self.dst.size))

    def in_degree(self):
        return np.full(self.dst.size, float(self.src.size))


# ---------------------------------------------------------------------------- from a model
def head_weights(att) -> tuple[torch.Tensor, torch.Tensor]:
    """The value and output weights of one layer's attention in (out, in) layout, as views.

    ``att`` is an :class:`~llmrank_graph.models.attention.AttentionModules`. GPT-2's fused
    ``c_attn`` (a ``Conv1D``, stored in x out) gives its value columns, transposed.

    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> from llmrank_graph.models.attention import attention_layers
    >>> att = attention_layers(GPT2LMHeadModel(GPT2Config(n_embd=8, n_layer=1, n_head=2, vocab_size=16)))[0]
    >>> [tuple(w.shape) for w in head_weights(att)]
    [(8, 8), (8, 8)]
    """
    n, kv, hd = att.num_heads, att.num_key_value_heads, att.head_dim
    if att.qkv is not None:
        w = att.qkv.weight.detach()
        w = w.t() if att.conv1d else w
        v = w[(n + kv) * hd:(n + 2 * kv) * hd]
    else:
        v = att.v.weight.detach()
        v = v.t() if att.conv1d else v
    o = att.o.weight.detach()
    return v, (o.t() if att.conv1d else o)


def check_finite_attention(atts, arg: str = "model") -> None:
    """Raise InvalidArgumentError naming the first value or output weight of ``atts`` that holds NaN or inf."""
    for att in atts:
        for role, w in zip(("value", "output"), head_weights(att)):
            if not torch.isfinite(w).all():
                name = att.names["qkv" if role == "value" and att.qkv is not None else "v" if role == "value" else "o"]
                raise InvalidArgumentError(f"`{arg}` has NaN or inf in {name}.weight (the attention {role} weight of "
                                           f"layer {att.layer}); use a model with finite weights")


def _input_entry(att, stats) -> str | None:
    """The module whose input is the attention's input (the same tensor feeds q, k and v)."""
    return next((att.names[r] for r in ("v", "qkv", "k", "q") if r in att.names and att.names[r] in stats), None)


def attention_activations(atts, stats, weighting: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, the calibration norms of the attention's input features and of each head's output.

    The input norm (``R{l}``) is the input of the value projection (the residual stream after
    the layer's input norm), as ``H{l}``'s is the input of up_proj. A head's norm (``A{l}``) is
    the L2 norm, over all calibration tokens, of its ``head_dim`` features at the input of the
    output projection: ``sqrt(sum of input_sumsq over the head's columns)``.

    Raises
    ------
    InvalidArgumentError
        ``stats`` lack either entry for a layer, or hold one of another size; the message names
        ``weighting``, the module and how to calibrate.
    """
    out = []
    for att in atts:
        o_name, in_name = att.names["o"], _input_entry(att, stats)
        missing = [what for name, what in ((o_name, f"{o_name!r} (each head's output norm)"),
                                           (in_name, f"{att.names.get('v', att.names.get('qkv'))!r} (the attention "
                                                     "input's norm: its input statistics)"))
                   if name is None or name not in stats]
        if missing:
            raise InvalidArgumentError(
                f"`stats` lack the attention statistics that attention=True with weighting={weighting!r} needs: no "
                f"entry for {' and '.join(missing)} of layer {att.layer}; calibrate with "
                "llmrank_graph.calibrate(model, ..., attention=True) where it records both, or export without "
                "`stats`")
        n, hd = att.num_heads, att.head_dim
        o_in = stats[o_name].input_sumsq.to(torch.float64)
        a_in = stats[in_name].input_sumsq.to(torch.float64)
        if o_in.numel() != n * hd or a_in.numel() != att.hidden_size:
            raise InvalidArgumentError(
                f"`stats` do not match the model: layer {att.layer} has {n} heads of {hd} features over "
                f"{att.hidden_size} hidden features, but the stats of {o_name!r} and {in_name!r} have "
                f"{o_in.numel()} and {a_in.numel()} input features")
        out.append((a_in.sqrt(), o_in.view(n, hd).sum(1).sqrt()))
    return out


# ---------------------------------------------------------------------------- scores
def head_scores(graph, node_scores) -> dict[int, torch.Tensor]:
    """Per-layer head scores from a vector of node scores: ``{layer: tensor (num_heads,)}``, float64.

    The slice of every head partition (``A{l}``), as the graph scorers slice the intermediate
    partitions for neuron scores.

    Parameters
    ----------
    graph : MLPGraph
        A graph with head nodes (``graph.has_heads``).
    node_scores : array, tensor or CentralityResult
        One value per node.

    Raises
    ------
    InvalidArgumentError
        A graph without head nodes, or scores of another length.

    Example
    -------
    >>> import llmrank_graph as lg
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=4, num_hidden_layers=2,
    ...                                      num_attention_heads=4, num_key_value_heads=2))
    >>> g = lg.export_graph(model, attention=True)
    >>> {l: s.shape for l, s in head_scores(g, lg.pagerank(g).scores).items()}
    {0: torch.Size([4]), 1: torch.Size([4])}
    """
    values = getattr(node_scores, "scores", node_scores)
    arr = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if arr.shape != (graph.n_nodes,):
        raise InvalidArgumentError(f"`node_scores` must have one value per node of the graph ({graph.n_nodes}); got "
                                   f"shape {arr.shape}")
    parts = graph.head_partitions()
    if not parts:
        raise InvalidArgumentError("`graph` has no head nodes: export it with attention=True "
                                   "(llmrank-graph export --attention)")
    return {p.layer: torch.from_numpy(np.array(arr[p.offset:p.stop], dtype=np.float64)) for p in parts}

