"""Where the MLPs (and the attention heads) are in each supported model family.

An :class:`ArchitectureSpec` names the attribute path of the decoder layers and the
Linear modules of each layer's MLP. :func:`mlp_layers` resolves it on a model and returns
one :class:`MLPModules` per decoder layer, in order. Its ``attention`` field, an
:class:`AttentionSpec`, says where each layer's attention projections are and how the config
counts heads; :mod:`llmrank_graph.models.attention` resolves it (None: the family's heads
cannot be pruned).

To support a new family, describe it and register it::

    from llmrank_graph.models.architectures import ArchitectureSpec, register_architecture
    register_architecture(ArchitectureSpec(
        name="my-family", model_types=("mymodel",), layers="model.blocks",
        up="ffn.w_in", down="ffn.w_out", gate="ffn.w_gate"))
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..base.checks import check_choice
from ..base.params import InstanceOf, validated
from ..errors import InvalidArgumentError, LLMRankGraphError

logger = logging.getLogger(__name__)

__all__ = [
    "ArchitectureSpec",
    "AttentionSpec",
    "MLPModules",
    "register_architecture",
    "architectures",
    "get_architecture",
    "mlp_layers",
    "intermediate_sizes",
    "check_finite_weights",
    "UnsupportedArchitectureError",
    "MODEL",
]


class UnsupportedArchitectureError(LLMRankGraphError, ValueError):
    """The model's family is not in the architecture registry, or not laid out as registered."""


#: The constraint of every ``model`` argument: a torch module (whose family :func:`mlp_layers`
#: then checks); a path or a name is refused with a TypeError that says what is accepted.
MODEL = InstanceOf(nn.Module, "a torch.nn.Module (a causal language model of a supported family; load one "
                              "with llmrank_graph.load_model)")


@dataclass(frozen=True)
class AttentionSpec:
    """Where the attention projections of one model family live, and how its config counts heads.

    Query head ``h`` owns rows ``h * head_dim : (h + 1) * head_dim`` of the query projection
    and the same columns of the output projection; key/value head ``g`` owns those rows of the
    key and value projections and serves the query heads ``g * G : (g + 1) * G``, where
    ``G = num_heads // num_key_value_heads`` (transformers' ``repeat_kv``).

    Parameters
    ----------
    module : str
        Dotted path, relative to a decoder layer, of the attention module (``self_attn``,
        ``attn``).
    o : str
        Path, relative to the attention module, of the output projection (``o_proj``,
        ``out_proj``, ``c_proj``).
    q, k, v : str or None
        Paths of the separate query/key/value projections; None when they are fused.
    qkv : str or None
        Path of a fused projection whose output features are the query, key and value
        features in that order (GPT-2's ``c_attn``).
    conv1d : bool
        True when the modules are GPT-2 style ``Conv1D`` (weight stored as in x out).
    heads_attr : str
        ``config.json`` field of the number of query heads (GPT-2: ``n_head``).
    kv_heads_attr : str or None
        ``config.json`` field of the number of key/value heads; None for a family whose
        attention has one key/value head per query head (GPT-2, OPT).
    head_dim_attr : str or None
        ``config.json`` field of the head size; None where transformers derives it as
        ``hidden_size // num_heads`` (GPT-2, OPT).
    """

    module: str
    o: str
    q: str | None = None
    k: str | None = None
    v: str | None = None
    qkv: str | None = None
    conv1d: bool = False
    heads_attr: str = "num_attention_heads"
    kv_heads_attr: str | None = "num_key_value_heads"
    head_dim_attr: str | None = "head_dim"


@dataclass(frozen=True)
class ArchitectureSpec:
    """Where the MLP Linear modules of one model family live.

    Parameters
    ----------
    name : str
        Registry name of the family.
    model_types : tuple of str
        Values of ``config.model_type`` this spec applies to.
    layers : str
        Dotted attribute path from the ``*ForCausalLM`` model to the list of decoder layers.
    up : str
        Dotted path, relative to a decoder layer, of the input projection (``up_proj``,
        ``fc1``, ``c_fc``). Its output features are the intermediate neurons.
    down : str
        Dotted path of the output projection (``down_proj``, ``fc2``, ``c_proj``).
    gate : str or None
        Dotted path of the gate projection of a gated MLP, ``None`` for a plain MLP.
    conv1d : bool
        True when the modules are GPT-2 style ``Conv1D`` (weight stored as in x out).
    intermediate_attr : str
        Config attribute holding the intermediate size.
    mlp_bias : str or None
        Config flag that gives the MLP's Linear modules a bias (Llama's ``mlp_bias``), which
        ``compensate='bias'`` turns on; None when the family's config has no such flag (its
        down projection then needs a bias of its own, as GPT-2's and OPT's have).
    attention : AttentionSpec or None
        Where the attention heads are (:mod:`llmrank_graph.models.attention`); None for a
        family whose heads are not supported.
    """

    name: str
    model_types: tuple[str, ...]
    layers: str
    up: str
    down: str
    gate: str | None = None
    conv1d: bool = False
    intermediate_attr: str = "intermediate_size"
    mlp_bias: str | None = None
    attention: AttentionSpec | None = None

    @property
    def gated(self) -> bool:
        return self.gate is not None


_REGISTRY: dict[str, ArchitectureSpec] = {}


@validated({"spec": InstanceOf(ArchitectureSpec, "an ArchitectureSpec")})
def register_architecture(spec: ArchitectureSpec) -> ArchitectureSpec:
    """Add (or replace) a family in the registry and return it."""
    _REGISTRY[spec.name] = spec
    return spec


def architectures() -> dict[str, ArchitectureSpec]:
    """The registered families, by name."""
    return dict(_REGISTRY)


_LLAMA_LIKE = dict(layers="model.layers", gate="mlp.gate_proj", up="mlp.up_proj", down="mlp.down_proj",
                   attention=AttentionSpec(module="self_attn", q="q_proj", k="k_proj", v="v_proj", o="o_proj"))
for _name, _types, _bias in [
    ("llama", ("llama",), "mlp_bias"),
    ("mistral", ("mistral",), None),
    ("qwen2", ("qwen2", "qwen3"), None),
    ("gemma", ("gemma", "gemma2", "gemma3_text"), None),
]:
    register_architecture(ArchitectureSpec(name=_name, model_types=_types, mlp_bias=_bias, **_LLAMA_LIKE))
register_architecture(
    ArchitectureSpec(
        name="gpt2", model_types=("gpt2",), layers="transformer.h", up="mlp.c_fc", down="mlp.c_proj",
        conv1d=True, intermediate_attr="n_inner",
        attention=AttentionSpec(module="attn", qkv="c_attn", o="c_proj", conv1d=True, heads_attr="n_head",
                                kv_heads_attr=None, head_dim_attr=None),
    )
)
register_architecture(
    ArchitectureSpec(name="opt", model_types=("opt",), layers="model.decoder.layers", up="fc1", down="fc2",
                     intermediate_attr="ffn_dim",
                     attention=AttentionSpec(module="self_attn", q="q_proj", k="k_proj", v="v_proj", o="out_proj",
                                             kv_heads_attr=None, head_dim_attr=None))
)


def get_architecture(model_or_type) -> ArchitectureSpec:
    """The registered spec for a model, a config, or a ``model_type`` string.

    Raises
    ------
    UnsupportedArchitectureError
        If the family is not registered; the message lists the supported ones.
    """
    if isinstance(model_or_type, str):
        model_type = model_or_type
    else:
        config = getattr(model_or_type, "config", model_or_type)
        model_type = getattr(config, "model_type", None)
    for spec in _REGISTRY.values():
        if model_type in spec.model_types:
            return spec
    supported = ", ".join(f"{s.name} ({'/'.join(s.model_types)})" for s in _REGISTRY.values())
    raise UnsupportedArchitectureError(
        f"`model` has an unsupported architecture: model_type={model_type!r}. Supported families: "
        f"{supported}. Describe a new one with llmrank_graph.models.architectures.ArchitectureSpec "
        "(path of the decoder layers and of the up/gate/down Linear modules) and "
        "register_architecture(spec)."
    )


def _resolve(root: nn.Module, path: str, what: str) -> nn.Module:
    obj = root
    for part in path.split("."):
        if not hasattr(obj, part):
            raise UnsupportedArchitectureError(
                f"{what}: attribute path {path!r} not found on {type(root).__name__} (missing {part!r})"
            )
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class MLPModules:
    """The MLP of one decoder layer.

    ``up``/``gate`` weights are read as (m, d) and ``down`` as (d, m) whatever the module type
    (GPT-2's Conv1D stores them transposed); use :meth:`weight` to get them in that layout.
    ``block`` is the module that holds ``up`` (e.g. ``LlamaMLP``), whose recorded
    ``intermediate_size``, if any, :meth:`keep_neurons` keeps truthful.
    """

    layer: int
    up: nn.Module
    down: nn.Module
    gate: nn.Module | None
    up_name: str
    down_name: str
    gate_name: str | None
    conv1d: bool = False
    block: nn.Module | None = None

    def weight(self, which: str) -> torch.Tensor:
        """Weight of ``'up'``, ``'gate'`` or ``'down'`` as (out, in): (m, d) or (d, m)."""
        check_choice("which", which, ("up", "gate", "down") if self.gate is not None else ("up", "down"))
        w = getattr(self, which).weight
        return w.t() if self.conv1d else w

    @property
    def hidden_size(self) -> int:
        return self.weight("up").shape[1]

    @property
    def intermediate_size(self) -> int:
        return self.weight("up").shape[0]

    def named_modules(self) -> dict[str, nn.Module]:
        """Qualified name -> module for every Linear of this MLP (gate first when present)."""
        out = {}
        if self.gate is not None:
            out[self.gate_name] = self.gate
        out[self.up_name] = self.up
        out[self.down_name] = self.down
        return out

    def keep_neurons(self, idx: torch.Tensor) -> None:
        """Keep only the intermediate neurons ``idx`` of this MLP, in place.

        Slices the rows of gate and up (and their biases) and the columns of down together,
        transpose-aware for ``Conv1D``, and updates the modules' recorded sizes. This is the one
        layout primitive under pruning's surgery and under the loader of pruned models (which
        shrinks a freshly built model to its saved sizes before loading the weights).

        Parameters
        ----------
        idx : torch.Tensor
            1-D int64, ascending, distinct indices in ``[0, intermediate_size)``.

        Raises
        ------
        InvalidArgumentError
            An index out of range or an empty ``idx`` (naming the layer).
        """
        idx = torch.as_tensor(idx, dtype=torch.long).flatten().to(self.up.weight.device)
        m = self.intermediate_size
        if idx.numel() == 0:
            raise InvalidArgumentError(f"`idx` must keep at least one neuron of layer {self.layer} ({self.up_name})")
        if int(idx.min()) < 0 or int(idx.max()) >= m:
            raise InvalidArgumentError(f"`idx` must be in [0, {m}) for layer {self.layer} ({self.up_name}); "
                                       f"got indices from {int(idx.min())} to {int(idx.max())}")
        for mod in (self.gate, self.up):
            if mod is not None:
                _slice_out(mod, idx, self.conv1d)
        _slice_in(self.down, idx, self.conv1d)
        # Llama-style MLP modules record their size; keep it truthful.
        if isinstance(getattr(self.block, "intermediate_size", None), int):
            self.block.intermediate_size = len(idx)


def _parameter(old: nn.Parameter, data: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(data.contiguous().clone(), requires_grad=old.requires_grad)


def _slice_out(module: nn.Module, idx: torch.Tensor, conv1d: bool) -> None:
    """Keep output features ``idx`` of ``module`` (rows of a Linear, columns of a Conv1D)."""
    w = module.weight
    with torch.no_grad():
        module.weight = _parameter(w, w[:, idx] if conv1d else w[idx])
        if getattr(module, "bias", None) is not None:
            module.bias = _parameter(module.bias, module.bias[idx])
    if conv1d:
        module.nf = len(idx)
    else:
        module.out_features = len(idx)


def _slice_in(module: nn.Module, idx: torch.Tensor, conv1d: bool) -> None:
    """Keep input features ``idx`` of ``module`` (columns of a Linear, rows of a Conv1D)."""
    w = module.weight
    with torch.no_grad():
        module.weight = _parameter(w, w[idx] if conv1d else w[:, idx])
    if conv1d:
        module.nx = len(idx)
    else:
        module.in_features = len(idx)


def check_finite_weights(model_or_layers: nn.Module | Sequence[MLPModules], arg: str = "model") -> None:
    """Raise InvalidArgumentError naming the first MLP weight or bias that holds NaN or inf.

    The one finite-weight scan. It reads every MLP parameter, so each public entry point runs
    it once, before any work, and passes the checked model inward: export, scoring and pruning
    trust a model their caller has scanned.

    Parameters
    ----------
    model_or_layers : torch.nn.Module or sequence of MLPModules
        A model of a registered family, or its :func:`mlp_layers` (when the caller has them).
    arg : str
        Name of the argument, for the message.

    Raises
    ------
    InvalidArgumentError
        Naming the parameter, its role and its layer (a ValueError).

    Example
    -------
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=12, num_hidden_layers=2,
    ...                                      num_attention_heads=2, num_key_value_heads=2))
    >>> check_finite_weights(model)
    >>> with torch.no_grad():
    ...     model.model.layers[1].mlp.up_proj.weight[0, 0] = float("nan")
    >>> try:
    ...     check_finite_weights(model)
    ... except ValueError as e:
    ...     print(e)  # doctest: +ELLIPSIS
    `model` has NaN or inf in model.layers.1.mlp.up_proj.weight (the up weight of layer 1); use a model ...
    """
    layers = mlp_layers(model_or_layers) if isinstance(model_or_layers, nn.Module) else model_or_layers
    for m in layers:
        for name, mod in m.named_modules().items():
            which = next(k for k in ("gate", "up", "down") if getattr(m, k) is mod)
            for pname in ("weight", "bias"):
                p = getattr(mod, pname, None)
                if p is not None and not torch.isfinite(p).all():
                    raise InvalidArgumentError(f"`{arg}` has NaN or inf in {name}.{pname} (the {which} {pname} of "
                                               f"layer {m.layer}); use a model with finite weights")


def mlp_layers(model: nn.Module) -> list[MLPModules]:
    """One :class:`MLPModules` per decoder layer of ``model``, in order."""
    spec = get_architecture(model)
    layers = _resolve(model, spec.layers, f"architecture {spec.name!r}")
    out = []
    for i, layer in enumerate(layers):
        prefix = f"{spec.layers}.{i}"
        gate = _resolve(layer, spec.gate, f"layer {i}") if spec.gate else None
        block_path = spec.up.rpartition(".")[0]
        out.append(
            MLPModules(
                layer=i,
                up=_resolve(layer, spec.up, f"layer {i}"),
                down=_resolve(layer, spec.down, f"layer {i}"),
                gate=gate,
                up_name=f"{prefix}.{spec.up}",
                down_name=f"{prefix}.{spec.down}",
                gate_name=f"{prefix}.{spec.gate}" if spec.gate else None,
                conv1d=spec.conv1d,
                block=_resolve(layer, block_path, f"layer {i}") if block_path else layer,
            )
        )
    return out


def intermediate_sizes(model: nn.Module) -> list[int]:
    """Current intermediate size of every MLP layer of ``model``, in layer order."""
    return [m.intermediate_size for m in mlp_layers(model)]
