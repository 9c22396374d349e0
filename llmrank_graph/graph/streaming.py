"""Score a model directory straight from its safetensors shards, without building the model.

:func:`export_graph_from_safetensors` returns the same :class:`~llmrank_graph.MLPGraph` as
:func:`~llmrank_graph.export_graph` (same partitions, vertex ids and edge weights) but its
blocks hold only tensor *names*: each block reads its weight matrix from disk (memory-mapped)
when a kernel asks for it and drops it afterwards. With the ``sweep`` backend, PageRank and
Katz then read every MLP weight exactly once with about one layer in memory, so a model
larger than RAM or GPU memory can be ranked on one GPU or a CPU::

    graph = export_graph_from_safetensors("path/to/Llama-2-70b-hf")
    res = pagerank(graph, backend="sweep", device="cuda")

Only the file headers are read up front (to find the tensors and their shapes). With
``attention=True`` the value and output projections of every layer are read the same way, into
the head blocks of :mod:`llmrank_graph.graph.heads`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from ..base.params import InstanceOf, Optional, validated
from ..errors import FileFormatError, MissingInputError
from ..models.architectures import get_architecture
from ..models.attention import attention_spec
from .blocks import Block, DiagonalBlock, WeightBlock
from .export import ExportOptions, layer_partitions, mlp_partitions
from .heads import HeadBlock
from .mlpgraph import MLPGraph

logger = logging.getLogger(__name__)

__all__ = ["export_graph_from_safetensors", "SafetensorsBlock", "SafetensorsHeadBlock", "safetensors_index"]


def safetensors_index(path: str | os.PathLike) -> dict[str, Path]:
    """Tensor name -> shard file for a model directory (or a single ``.safetensors`` file).

    Uses ``model.safetensors.index.json`` when present, else reads the header of every
    ``*.safetensors`` file in the directory.

    Raises
    ------
    MissingInputError
        No safetensors file at ``path``.
    """
    from safetensors import safe_open

    path = Path(path)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        index = path / "model.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            return {k: path / v for k, v in weight_map.items()}
        files = sorted(path.glob("*.safetensors"))
    else:
        raise MissingInputError(f"`path` {str(path)!r} does not exist")
    if not files:
        raise MissingInputError(f"`path` {str(path)!r} holds no .safetensors file")
    out: dict[str, Path] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as h:
            for k in h.keys():
                out[k] = f
    return out


def _shape(file: Path, name: str) -> tuple[int, ...]:
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as h:
        return tuple(h.get_slice(name).get_shape())


def _device_arg(device) -> str:
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        return f"cuda:{dev.index if dev.index is not None else torch.cuda.current_device()}"
    return "cpu"


class SafetensorsBlock(WeightBlock):
    """A weight block read lazily from safetensors: ``combine(|W0|, |W1|)``, W of (dst, src).

    ``entries`` are ``(file, tensor name, transpose)``; transpose is True for GPT-2 style
    ``Conv1D`` weights, stored (in, out). Nothing is kept in memory: every operation reads
    the tensors from disk (memory-mapped), and :meth:`loaded` reads them once for several.
    """

    resident = False

    def __init__(self, src, dst, layer, role, entries: list[tuple[Path, str, bool]], combine: str = "single"):
        super().__init__(src, dst, layer, role, None, combine, None)
        del self.weights  # the weights stay on disk
        self.entries = entries

    def raw_weights(self, device=None) -> list[torch.Tensor]:
        """The stored tensors of this block as (dst.size, src.size), loaded onto ``device``."""
        from safetensors import safe_open

        out = []
        for file, name, transpose in self.entries:
            with safe_open(str(file), framework="pt", device=_device_arg(device)) as h:
                t = h.get_tensor(name)
            t = t.t() if transpose else t
            if tuple(t.shape) != self.shape:
                raise FileFormatError(f"layer {self.layer}: tensor {name!r} in {file.name} has shape "
                                      f"{tuple(t.shape)}, expected {self.shape}")
            if not torch.isfinite(t).all():
                raise FileFormatError(f"layer {self.layer}: tensor {name!r} in {file.name} has NaN or inf")
            out.append(t)
        return out

    def version(self):
        # The files may be rewritten between two uses: their size and mtime say so.
        return tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f, _, _ in self.entries)

    @contextlib.contextmanager
    def loaded(self, device=None):
        yield WeightBlock(self.src, self.dst, self.layer, self.role, self.raw_weights(device), self.combine, None)


class SafetensorsHeadBlock(HeadBlock):
    """A head block (:class:`~llmrank_graph.graph.heads.HeadBlock`) whose weight is read from safetensors on demand.

    ``entry`` is ``(file, tensor name, transpose)`` as in :class:`SafetensorsBlock`; ``rows``
    the (start, stop) rows of the (out, in) weight that belong to the value projection (GPT-2's
    fused ``c_attn``), None for the whole tensor.
    """

    resident = False

    def __init__(self, src, dst, layer, role, entry: tuple[Path, str, bool], rows: tuple[int, int] | None,
                 head_dim: int, group_size: int = 1):
        super().__init__(src, dst, layer, role, None, head_dim, group_size)
        self.entry, self.rows = entry, rows

    def raw_weight(self, device=None) -> torch.Tensor:
        from safetensors import safe_open

        file, name, transpose = self.entry
        with safe_open(str(file), framework="pt", device=_device_arg(device)) as h:
            t = h.get_tensor(name)
        t = t.t() if transpose else t
        t = t if self.rows is None else t[self.rows[0]:self.rows[1]]
        if not torch.isfinite(t).all():
            raise FileFormatError(f"layer {self.layer}: tensor {name!r} in {file.name} has NaN or inf")
        return t

    def _weight_version(self):
        file = self.entry[0]
        return (str(file), file.stat().st_mtime_ns, file.stat().st_size)

    @contextlib.contextmanager
    def loaded(self, device=None):
        yield WeightBlock(self.src, self.dst, self.layer, self.role, [self.reduced(self.raw_weight(device))], "single",
                          None)


def _layer_prefix(index: dict, spec) -> str:
    """The tensor-name prefix of the decoder layers (``model.layers``; ``h`` for bare GPT-2 files)."""
    parts = spec.layers.split(".")
    for k in range(len(parts)):
        prefix = ".".join(parts[k:])
        if f"{prefix}.0.{spec.up}.weight" in index:
            return prefix
    raise FileFormatError(f"no tensor named {spec.layers}.0.{spec.up}.weight (or without its leading prefixes) in the "
                     f"checkpoint; is it a {spec.name!r} model?")


def _read_config(path: Path, model_type: str | None) -> tuple[dict, str]:
    """``config.json`` next to the weights (``{}`` when there is none) and the model type."""
    if not path.exists():
        raise MissingInputError(f"`path` {str(path)!r} does not exist")
    cfg: dict = {}
    cfg_file = (path if path.is_dir() else path.parent) / "config.json"
    if cfg_file.is_file():
        cfg = json.loads(cfg_file.read_text())
    model_type = model_type or cfg.get("model_type")
    if model_type is None:
        raise MissingInputError(f"`path` {str(path)!r} has no config.json; pass `model_type` (e.g. 'llama')")
    return cfg, model_type


class _Checkpoint:
    """The MLP tensors of one checkpoint: where each is, and the sizes they give."""

    def __init__(self, path: Path, spec):
        self.spec = spec
        self.index = safetensors_index(path)
        self.prefix = _layer_prefix(self.index, spec)

    def entry(self, layer: int, module: str) -> tuple[Path, str, bool]:
        name = f"{self.prefix}.{layer}.{module}.weight"
        if name not in self.index:
            raise FileFormatError(f"layer {layer}: tensor {name!r} is missing from the checkpoint")
        return self.index[name], name, self.spec.conv1d

    def sizes(self, path: Path) -> tuple[int, list[int]]:
        """The hidden size and every layer's intermediate size, read from the up projections' headers."""
        L = 0
        while f"{self.prefix}.{L}.{self.spec.up}.weight" in self.index:
            L += 1
        sizes, d = [], None
        for l in range(L):
            f, name, tr = self.entry(l, self.spec.up)
            shp = _shape(f, name)
            m_l, d_l = (shp[1], shp[0]) if tr else (shp[0], shp[1])
            if d is not None and d_l != d:
                raise FileFormatError(f"layer {l}: hidden size {d_l} differs from layer 0's {d}")
            d = d_l
            sizes.append(m_l)
        if L == 0:
            raise FileFormatError(f"`path` {str(path)!r} has no MLP layers")
        return d, sizes

    def attention(self):
        """The family's AttentionSpec (UnsupportedArchitectureError, naming the supported ones, if none)."""
        return attention_spec(self.spec.model_types[0])[1]

    def heads(self, n_layers: int, cfg: dict, d: int) -> tuple[int, list[tuple[int, int]]]:
        """The head size and every layer's (query heads, key/value heads), from config.json and the headers."""
        att = self.attention()
        n_cfg = cfg.get(att.heads_attr)
        hd = cfg.get(att.head_dim_attr) if att.head_dim_attr else None
        hd = hd or (d // n_cfg if isinstance(n_cfg, int) and n_cfg > 0 else None)
        if not isinstance(hd, int) or hd < 1:
            raise MissingInputError(f"attention=True needs the head size: config.json has no {att.heads_attr!r}"
                                    + (f" or {att.head_dim_attr!r}" if att.head_dim_attr else ""))
        counts = []
        for l in range(n_layers):
            f, name, tr = self.entry(l, f"{att.module}.{att.o}")
            shp = _shape(f, name)
            n = (shp[0] if tr else shp[1]) // hd
            f, name, tr = self.entry(l, f"{att.module}.{att.qkv or att.v}")
            shp = _shape(f, name)
            out = shp[1] if tr else shp[0]
            counts.append((n, (out - n * hd) // (2 * hd) if att.qkv else out // hd))
        return hd, counts

    def attention_blocks(self, l: int, r_in, heads, h_mlp, hd: int, kv: int, residual: float) -> list[Block]:
        """Layer ``l``'s value, output and residual blocks, as :func:`~llmrank_graph.export_graph` lays them out."""
        att = self.attention()
        n = heads.size
        v_entry = self.entry(l, f"{att.module}.{att.qkv or att.v}")
        rows = ((n + kv) * hd, (n + 2 * kv) * hd) if att.qkv else None
        blocks: list[Block] = [
            SafetensorsHeadBlock(r_in, heads, l, "value", v_entry, rows, hd, n // kv),
            SafetensorsHeadBlock(heads, h_mlp, l, "output", self.entry(l, f"{att.module}.{att.o}"), None, hd)]
        if residual > 0:
            blocks.append(DiagonalBlock(r_in, h_mlp, l, residual))
        return blocks

    def blocks(self, parts: list, n_layers: int, options: ExportOptions, heads=None) -> list[Block]:
        """The blocks of every layer, as :func:`~llmrank_graph.export_graph` lays them out.

        ``heads`` is :meth:`heads`' answer with ``options.attention``.
        """
        spec, entry = self.spec, self.entry
        blocks: list[Block] = []
        for l in range(n_layers):
            h_in, inter, h_out = layer_partitions(parts, l, options.mode, options.attention)
            if options.attention:
                blocks += self.attention_blocks(l, parts[4 * l], parts[4 * l + 1], h_in, heads[0], heads[1][l][1],
                                                options.residual)
            if not spec.gated or options.gate == "up":
                blocks.append(SafetensorsBlock(h_in, inter, l, "up", [entry(l, spec.up)]))
            elif options.gate == "gate":
                blocks.append(SafetensorsBlock(h_in, inter, l, "gate", [entry(l, spec.gate)]))
            else:
                blocks.append(SafetensorsBlock(h_in, inter, l, f"gate_{options.gate}_up",
                                               [entry(l, spec.up), entry(l, spec.gate)], options.gate))
            blocks.append(SafetensorsBlock(inter, h_out, l, "down", [entry(l, spec.down)]))
            if options.residual > 0:
                blocks.append(DiagonalBlock(h_in, h_out, l, options.residual))
        return blocks


@validated({"path": InstanceOf((str, os.PathLike), "a str or a path"),
            "model_type": Optional(InstanceOf(str, "a model type such as 'llama'"))})
def export_graph_from_safetensors(path: str | os.PathLike, mode: str = "chained", gate: str = "up",
                                  residual: float = 0.0, model_type: str | None = None, *,
                                  attention: bool = False) -> MLPGraph:
    """The whole-MLP graph of a model directory, read lazily from its safetensors shards.

    Same graph as ``export_graph(model, mode=mode, gate=gate, residual=residual,
    attention=attention)`` for the model saved in ``path`` (no calibration statistics:
    ``weighting='abs'``, no ``keep``).

    Parameters
    ----------
    path : str or PathLike
        A Hugging Face model directory (``config.json`` and ``*.safetensors``, sharded or not).
    mode : {'chained', 'isolated'}
    gate : {'up', 'gate', 'sum', 'max'}
    residual : float >= 0
        Weight of the skip edges ``H_l,i -> H_{l+1},i``.
    model_type : str, optional
        ``config.model_type`` when ``path`` has no ``config.json``.
    attention : bool
        Add the attention heads (their value and output projections are read lazily too);
        needs the head count (or size) in ``config.json``.

    Returns
    -------
    MLPGraph
        Its blocks read the weights from disk on demand (see the module docstring).

    Raises
    ------
    MissingInputError
        No config.json (and no ``model_type``) or no safetensors files.
    UnsupportedArchitectureError
        The model family is not registered.
    ValueError
        Bad options, or tensors missing or of inconsistent shapes.

    Example
    -------
    >>> import tempfile
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> from llmrank_graph import pagerank
    >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16,
    ...                                      num_hidden_layers=2, num_attention_heads=2))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     model.save_pretrained(tmp)
    ...     graph = export_graph_from_safetensors(tmp)
    ...     print(graph.n_nodes, graph.resident, pagerank(graph, backend="sweep").converged)
    56 False True
    """
    options = ExportOptions(mode=mode, gate=gate, residual=residual, attention=attention)  # the one check of them
    path = Path(path)
    cfg, model_type = _read_config(path, model_type)
    checkpoint = _Checkpoint(path, get_architecture(model_type))
    d, sizes = checkpoint.sizes(path)
    heads = checkpoint.heads(len(sizes), cfg, d) if options.attention else None
    parts = mlp_partitions(len(sizes), d, sizes, options.mode, [n for n, _ in heads[1]] if heads else None)
    blocks = checkpoint.blocks(parts, len(sizes), options, heads)
    meta = {"model": cfg.get("_name_or_path") or str(path), "model_type": model_type, **options.as_dict(),
            "n_layers": len(sizes), "hidden_size": d, "intermediate_sizes": sizes, "has_stats": False,
            "source": "safetensors"}
    if heads:
        meta.update(num_heads=[n for n, _ in heads[1]], num_key_value_heads=[kv for _, kv in heads[1]],
                    head_dim=heads[0])
    g = MLPGraph(parts, blocks, np.full(parts[-1].stop, np.nan), meta)
    logger.debug("streamed %r from %s", g, path)
    return g
