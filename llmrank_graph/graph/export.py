"""From a model to the parts of its whole-MLP graph: the graph options and the export itself.

:class:`ExportOptions` is the one value that says how a graph is built (mode, gate, residual,
weighting, keep, attention) and the one place that checks those options; :func:`export_parts`
reads a model's MLP weights (and, with ``attention=True``, its attention's value and output
weights: :mod:`llmrank_graph.graph.heads`) into the partitions and blocks of the graph
(docs/design.md section 1),
and :func:`llmrank_graph.export_graph` builds the :class:`~llmrank_graph.MLPGraph` from them.
:func:`mlp_partitions` is the partition layout shared with the safetensors export
(:mod:`llmrank_graph.graph.streaming`).

>>> [p.name for p in mlp_partitions(2, 4, [8, 8], "chained")]
['H0', 'I0', 'H1', 'I1', 'H2']
>>> [p.name for p in mlp_partitions(2, 4, [8, 8], "chained", heads=[2, 2])]
['R0', 'A0', 'H0', 'I0', 'R1', 'A1', 'H1', 'I1', 'R2']
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from ..base.checks import check_bool, check_choice, check_keep, check_residual, fail
from ..errors import InvalidArgumentError
from ..models.architectures import MLPModules, mlp_layers
from ..models.attention import AttentionModules, attention_layers
from .blocks import Block, DiagonalBlock, Partition, SparseBlock, WeightBlock
from .heads import HeadBlock, attention_activations, head_weights
from .parts import GraphParts

__all__ = ["ExportOptions", "DEFAULT_EXPORT", "CALIBRATED_EXPORT", "default_export", "MODES", "GATES", "WEIGHTINGS",
           "ACTIVATION_WEIGHTINGS", "RESIDUAL_WEIGHTS", "EXPORT_FORMATS", "export_options", "mlp_partitions",
           "layer_partitions", "export_parts"]

MODES = ("chained", "isolated")
GATES = ("up", "gate", "sum", "max")
WEIGHTINGS = ("abs", "abs_x_input", "activation_share")
#: Weightings that need calibration statistics.
ACTIVATION_WEIGHTINGS = ("abs_x_input", "activation_share")
#: How the skip edges weigh each feature: the constant ``residual`` (times the source's
#: activation under the activation weightings), or ``residual`` times the measured norm of the
#: residual stream entering the MLP, before its norm (``calibrate(..., residual=True)``).
RESIDUAL_WEIGHTS = ("constant", "measured")
#: What ``llmrank-graph export --format`` writes: the full graph directory, or a thresholded
#: subgraph for viewers (:mod:`llmrank_graph.graph.viewer`).
EXPORT_FORMATS = ("parquet", "graphml", "gexf")


@dataclass(frozen=True)
class ExportOptions:
    """How the whole-MLP graph is built from a model: the options of :func:`~llmrank_graph.export_graph`.

    One frozen, validated value shared by :func:`~llmrank_graph.export_graph`, the graph
    scorers and the CLI (whose defaults are read from the instances below). It is the one
    check of the graph options: every entry point that takes them builds one.

    Attributes
    ----------
    mode : {'chained', 'isolated'}
        One graph through all layers, or one 3-partite component per MLP.
    gate : {'up', 'gate', 'sum', 'max'}
        Input edges of a gated MLP: ``|W_up|`` (the paper), ``|W_gate|``, their sum or max.
    residual : float >= 0 or 'measured'
        Weight of the skip edges ``H_l,i -> H_{l+1},i`` (0: none). ``'measured'`` stands for
        ``residual=1.0, residual_weights='measured'``.
    weighting : {'abs', 'abs_x_input', 'activation_share'}
        See :func:`~llmrank_graph.export_graph`.
    keep : None, int >= 1 or float in (0, 1]
        Sparsification: top-k in-edges per node, or a global weight quantile.
    attention : bool
        Add the attention heads: one node per query head of every layer, between the residual
        stream as the attention reads it and as the MLP reads it (``mode='chained'`` only;
        docs/design.md section 1, "Attention heads in the graph"). Recorded in ``meta.json``
        (and in :meth:`as_dict`) only when true, so a graph without heads is exactly as before.
    residual_weights : {'constant', 'measured'}
        ``'constant'``: each skip edge weighs ``residual`` (times ``a_i`` under the activation
        weightings). ``'measured'``: ``residual`` times ``rho_l,i``, the L2 norm over the
        calibration tokens of feature ``i`` of the residual stream entering MLP ``l`` before
        its norm (``stats.residual_norms(model)``, from ``calibrate(..., residual=True)``):
        the scale of what the skip carries past the MLP, in the units of the MLP's output.
        Needs ``residual > 0`` and no heads. Recorded only when ``'measured'``.

    Example
    -------
    >>> ExportOptions(weighting="activation_share").needs_stats
    True
    >>> ExportOptions(mode="stacked")
    Traceback (most recent call last):
    ...
    llmrank_graph.errors.InvalidArgumentError: `mode` must be one of 'chained', 'isolated'; got 'stacked'
    """

    mode: str = "chained"
    gate: str = "up"
    residual: float = 0.0
    weighting: str = "abs"
    keep: int | float | None = None
    attention: bool = False
    residual_weights: str = "constant"

    def __post_init__(self):
        check_choice("mode", self.mode, MODES)
        check_choice("gate", self.gate, GATES)
        if isinstance(self.residual, str):
            if self.residual != "measured":
                raise fail("residual", "a float >= 0 or 'measured'", self.residual)
            object.__setattr__(self, "residual", 1.0)
            object.__setattr__(self, "residual_weights", "measured")
        object.__setattr__(self, "residual", check_residual(self.residual))
        check_choice("residual_weights", self.residual_weights, RESIDUAL_WEIGHTS)
        check_choice("weighting", self.weighting, WEIGHTINGS)
        object.__setattr__(self, "keep", check_keep(self.keep))
        object.__setattr__(self, "attention", check_bool("attention", self.attention))
        if self.attention and self.mode != "chained":
            raise InvalidArgumentError(f"`attention=True` needs mode='chained' (heads sit between the residual stream "
                                       f"as the attention reads it and as the MLP reads it); got mode={self.mode!r}")
        if self.residual_weights == "measured" and (self.residual == 0 or self.attention):
            raise InvalidArgumentError("`residual_weights='measured'` weighs the skip edges beside the MLPs: it needs "
                                       f"residual > 0 and attention=False; got residual={self.residual!r}, "
                                       f"attention={self.attention!r}")

    @property
    def needs_stats(self) -> bool:
        """True when the weighting (or the measured skip edges) uses calibration statistics."""
        return self.weighting in ACTIVATION_WEIGHTINGS or self.residual_weights == "measured"

    def as_dict(self) -> dict:
        """The options as a plain dict (the keys of ``meta.json``); ``attention`` only when true,
        ``residual_weights`` only when ``'measured'``.

        >>> list(ExportOptions().as_dict()), ExportOptions(attention=True).as_dict()["attention"]
        (['mode', 'gate', 'residual', 'weighting', 'keep'], True)
        >>> opts = ExportOptions(residual="measured")
        >>> opts.residual, opts.as_dict()["residual_weights"]
        (1.0, 'measured')
        """
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if not self.attention:
            del out["attention"]
        if self.residual_weights == "constant":
            del out["residual_weights"]
        return out

    def replace(self, **changes) -> ExportOptions:
        """A copy with some options changed (validated again)."""
        return replace(self, **changes)


#: The options of a plain export (``export_graph(model)``): the paper's graph.
DEFAULT_EXPORT = ExportOptions()
#: The options of an export with calibration statistics (``export_graph(model, stats)``,
#: ``llmrank-graph export --calibrate``): the graph the ``pagerank`` scorer ranks, whose edges
#: carry activation shares, so that every command ranks a calibrated graph as ``prune`` does.
#: :data:`llmrank_graph.scoring.PAGERANK_EXPORT` is built from it (the one place of that default).
CALIBRATED_EXPORT = DEFAULT_EXPORT.replace(weighting="activation_share")


def default_export(has_stats: bool) -> ExportOptions:
    """The default graph options: :data:`CALIBRATED_EXPORT` with calibration statistics, else :data:`DEFAULT_EXPORT`.

    The activation weightings need statistics, so a graph without them keeps plain ``|W|`` edges.

    >>> default_export(True).weighting, default_export(False).weighting
    ('activation_share', 'abs')
    """
    return CALIBRATED_EXPORT if has_stats else DEFAULT_EXPORT


def export_options(graph) -> ExportOptions | None:
    """The :class:`ExportOptions` recorded in a graph's ``meta``, or None for a graph built elsewhere.

    >>> import pandas as pd, llmrank_graph as lg
    >>> nodes = pd.DataFrame({"vertex": [0, 1], "layer": [0, 0], "kind": ["hidden", "intermediate"]})
    >>> edges = pd.DataFrame({"src": [0], "dst": [1], "weight": [1.0]})
    >>> export_options(lg.MLPGraph.from_edgelist(nodes, edges)) is None
    True
    """
    try:
        optional = {"attention": False, "residual_weights": "constant"}  # recorded only when not these
        given = {f.name: graph.meta.get(f.name, optional[f.name]) if f.name in optional else graph.meta[f.name]
                 for f in fields(ExportOptions)}
        return ExportOptions(**given)
    except (KeyError, ValueError, TypeError):
        return None


def mlp_partitions(n_layers: int, hidden_size: int, intermediate_sizes: list[int], mode: str,
                   heads: list[int] | None = None) -> list[Partition]:
    """The partitions of the whole-MLP graph, in topological order, with their vertex offsets.

    ``mode="chained"``: ``H0, I0, H1, ..., I{L-1}, HL``; ``"isolated"``: ``H{l}_in, I{l},
    H{l}_out`` for every layer. ``mode`` is trusted (checked by :class:`ExportOptions`). With
    ``heads`` (query heads per layer; chained only) every layer starts with ``R{l}`` (the
    residual stream as the attention reads it) and ``A{l}`` (its heads, kind ``'head'``), and
    the last partition is ``R{L}``.

    >>> [(p.name, p.offset, p.size) for p in mlp_partitions(1, 2, [3], "isolated")]
    [('H0_in', 0, 2), ('I0', 2, 3), ('H0_out', 5, 2)]
    """
    parts: list[Partition] = []
    off = 0

    def add(name, layer, kind, size):
        nonlocal off
        parts.append(Partition(len(parts), name, layer, kind, off, size))
        off += size

    if mode == "chained":
        for l in range(n_layers):
            if heads is not None:
                add(f"R{l}", l, "hidden", hidden_size)
                add(f"A{l}", l, "head", heads[l])
            add(f"H{l}", l, "hidden", hidden_size)
            add(f"I{l}", l, "intermediate", intermediate_sizes[l])
        add(f"{'H' if heads is None else 'R'}{n_layers}", n_layers, "hidden", hidden_size)
    else:
        for l in range(n_layers):
            add(f"H{l}_in", l, "hidden", hidden_size)
            add(f"I{l}", l, "intermediate", intermediate_sizes[l])
            add(f"H{l}_out", l, "hidden", hidden_size)
    return parts


def _sparsify(blocks: list[Block], keep) -> list[Block]:
    """Top-k in-edges per node within each weight block, or one global weight quantile.

    Residual (diagonal) blocks are kept whole: they are not weights of the model.
    """
    out: list[Block] = []
    weight_blocks = [b for b in blocks if b.role != "residual"]
    threshold = None
    if isinstance(keep, float):
        allw = np.concatenate([b.dense(torch.float32, "cpu").numpy().ravel() for b in weight_blocks])
        threshold = np.quantile(allw, 1.0 - keep, method="higher") if keep < 1 else -np.inf
        del allw
    for b in blocks:
        if b.role == "residual":
            out.append(b)
            continue
        dense = b.dense(torch.float32, "cpu")
        if threshold is not None:
            rows, cols = np.nonzero((dense >= threshold).numpy())
        else:
            k = min(int(keep), dense.shape[1])
            cols = torch.topk(dense, k, dim=1).indices.numpy().ravel()
            rows = np.repeat(np.arange(dense.shape[0]), k)
        vals = dense.numpy()[rows, cols]
        out.append(SparseBlock(b.src, b.dst, b.layer, b.role, rows, cols, vals))
    return out


def _layer_activation(act: np.ndarray, stats, m: MLPModules, h_in: Partition, inter: Partition, h_out: Partition,
                      last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill the node activations of one MLP from ``stats``; returns the input norms of up and down."""
    a_in = stats.input_norm(m.up_name).to(torch.float64)
    a_mid = stats.input_norm(m.down_name).to(torch.float64)
    act[h_in.offset:h_in.stop] = a_in.numpy()
    act[inter.offset:inter.stop] = a_mid.numpy()
    if last:  # H_{l+1} is the next layer's input otherwise
        act[h_out.offset:h_out.stop] = stats.output_norm(m.down_name).to(torch.float64).numpy()
    return a_in, a_mid


def _layer_blocks(l: int, m: MLPModules, h_in: Partition, inter: Partition, h_out: Partition, opts: ExportOptions,
                  a_in: torch.Tensor | None, a_mid: torch.Tensor | None, rho: torch.Tensor | None) -> list[Block]:
    """The up (or gate), down and residual blocks of MLP ``l``; ``a_in``/``a_mid`` scale their columns,
    ``rho`` (the measured stream norms) the skip edges when given."""
    scale_in = a_in if opts.needs_stats else None
    scale_mid = a_mid if opts.needs_stats else None
    if m.gate is None or opts.gate == "up":
        up = WeightBlock(h_in, inter, l, "up", [m.weight("up").detach()], "single", scale_in)
    elif opts.gate == "gate":
        up = WeightBlock(h_in, inter, l, "gate", [m.weight("gate").detach()], "single", scale_in)
    else:
        up = WeightBlock(h_in, inter, l, f"gate_{opts.gate}_up",
                         [m.weight("up").detach(), m.weight("gate").detach()], opts.gate, scale_in)
    down = WeightBlock(inter, h_out, l, "down", [m.weight("down").detach()], "single", scale_mid)
    _share(opts, [up, down])
    blocks: list[Block] = [up, down]
    if opts.residual > 0:
        blocks.append(DiagonalBlock(h_in, h_out, l, opts.residual, scale_in if rho is None else rho))
    return blocks


def _share(opts: ExportOptions, blocks: list) -> None:
    """Under ``activation_share``, turn each block's column scale ``a_u`` into ``a_u / sum_v |W_vu|``.

    Each source sends its activation norm, split over its out-edges in proportion to |W| (one
    read of the block, at export).
    """
    if opts.weighting != "activation_share":
        return
    for b in blocks:
        col = b.col_scale
        b.col_scale = None
        total = b.out_strength(torch.float64)
        b.col_scale = torch.where(total > 0, col / total, torch.zeros_like(col))


def _attention_blocks(att: AttentionModules, r_in: Partition, heads: Partition, h_mlp: Partition,
                      opts: ExportOptions, a_r: torch.Tensor | None, a_h: torch.Tensor | None) -> list[Block]:
    """The value, output and residual blocks of layer ``att.layer``'s attention (``R -> A -> H``, ``R -> H``)."""
    l = att.layer
    scale_r = a_r if opts.needs_stats else None
    w_v, w_o = head_weights(att)
    value = HeadBlock(r_in, heads, l, "value", w_v, att.head_dim, att.group_size, scale_r)
    output = HeadBlock(heads, h_mlp, l, "output", w_o, att.head_dim, 1, a_h if opts.needs_stats else None)
    _share(opts, [value, output])
    blocks: list[Block] = [value, output]
    if opts.residual > 0:
        blocks.append(DiagonalBlock(r_in, h_mlp, l, opts.residual, scale_r))
    return blocks


def export_parts(model, stats, options: ExportOptions) -> GraphParts:
    """The partitions, blocks, node activations and meta of ``model``'s whole-MLP graph.

    The work behind :func:`llmrank_graph.export_graph`, which checks the arguments: ``options``
    is a checked :class:`ExportOptions`, and ``stats`` (None or calibration statistics of
    this model) is there when the weighting needs it. The weights are not scanned here: the
    entry that reads them first does it, once per call.
    """
    layers: list[MLPModules] = mlp_layers(model)
    L = len(layers)
    d = layers[0].hidden_size
    sizes = [m.intermediate_size for m in layers]
    atts = attention_layers(model) if options.attention else None
    att_act = attention_activations(atts, stats, options.weighting) if atts and stats is not None else None
    parts = mlp_partitions(L, d, sizes, options.mode, [a.num_heads for a in atts] if atts else None)
    rho = stats.residual_norms(model) if options.residual_weights == "measured" else [None] * L
    act = np.full(parts[-1].stop, np.nan)
    blocks: list[Block] = []
    for l, m in enumerate(layers):
        h_in, inter, h_out = layer_partitions(parts, l, options.mode, atts is not None)
        a_in = a_mid = None
        if stats is not None:
            a_in, a_mid = _layer_activation(act, stats, m, h_in, inter, h_out,
                                            options.mode == "isolated" or l == L - 1)
        blocks += _layer_blocks(l, m, h_in, inter, h_out, options, a_in, a_mid, rho[l])
        if atts:
            r_in, heads = parts[4 * l], parts[4 * l + 1]
            a_r, a_h = att_act[l] if att_act else (None, None)
            if att_act:
                act[r_in.offset:r_in.stop], act[heads.offset:heads.stop] = a_r.numpy(), a_h.numpy()
            blocks += _attention_blocks(atts[l], r_in, heads, h_in, options, a_r, a_h)
    if options.keep is not None:
        blocks = _sparsify(blocks, options.keep)
    cfg = getattr(model, "config", None)
    meta = {
        "model": getattr(cfg, "_name_or_path", "") or type(model).__name__,
        "model_type": getattr(cfg, "model_type", None),
        **options.as_dict(), "n_layers": L, "hidden_size": d, "intermediate_sizes": sizes,
        "has_stats": stats is not None,
    }
    if atts:
        meta.update(num_heads=[a.num_heads for a in atts], num_key_value_heads=[a.num_key_value_heads for a in atts],
                    head_dim=atts[0].head_dim)
    return GraphParts(parts, blocks, act, meta)


def layer_partitions(parts: list[Partition], layer: int, mode: str, heads: bool) -> tuple[Partition, ...]:
    """MLP ``layer``'s input, intermediate and output partitions in the layout of :func:`mlp_partitions`.

    >>> [p.name for p in layer_partitions(mlp_partitions(2, 4, [8, 8], "chained", [2, 2]), 1, "chained", True)]
    ['H1', 'I1', 'R2']
    """
    per_layer, first = (3, 0) if mode == "isolated" else (4, 2) if heads else (2, 0)
    i = per_layer * layer + first
    return parts[i], parts[i + 1], parts[i + 2]
