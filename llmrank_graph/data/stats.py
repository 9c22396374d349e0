"""Activation statistics of MLP Linear modules (and attention output projections), and their file format.

:class:`ActivationStats` maps each module's qualified name to its :class:`ModuleStats`: the
sum of squares of each input and output feature over all calibration tokens, the sum of the
per-batch L2 norms (what the LLM-Rank reference code averages), the sum of each input feature
and, for down projections calibrated with ``second_moments=True``, the Gram matrix of the
input. :func:`llmrank_graph.data.calibration.calibrate` fills them; they are saved as
safetensors with JSON metadata (no pickle).

Calibrated with ``attention=True``, the stats also hold every attention output projection,
keyed by its qualified name (``AttentionModules.names['o']``), with the same statistics as a
down projection; :func:`head_norms` reads each query head's output norm from them and
:meth:`ActivationStats.check_attention` checks that they are there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .._version import __version__
from ..base.checks import check_input_file
from ..base.files import save_safetensors_atomic
from ..errors import FileFormatError, InvalidArgumentError, InvalidArgumentTypeError
from ..models.architectures import UnsupportedArchitectureError, get_architecture, mlp_layers
from ..models.attention import AttentionModules, attention_layers

__all__ = ["ModuleStats", "ActivationStats", "head_norms", "residual_modules"]

def _attention_hint(second_moments: bool = False) -> str:
    """How to collect the statistics of the attention output projections."""
    return ("calibrate with llmrank_graph.calibrate(model, ..., attention=True"
            + (", second_moments=True)" if second_moments else ")"))

_FORMAT = "llmrank_graph.ActivationStats"
#: The statistics of ``calibrate(..., gradients=True)`` (down projections only).
_GRADIENT_FIELDS = ("input_taylor", "output_grad_sumsq")
#: The optional tensors of a :class:`ModuleStats`, saved when present.
_OPTIONAL_FIELDS = ("input_sum", "input_gram", *_GRADIENT_FIELDS)


@dataclass
class ModuleStats:
    """Per-feature statistics of one Linear module.

    Attributes
    ----------
    input_sumsq, output_sumsq : torch.Tensor
        float64, (in_features,) and (out_features,): sum over tokens of x_i^2.
    input_batch_norm_sum, output_batch_norm_sum : torch.Tensor
        float64: sum over batches of each feature's L2 norm within the batch.
    n_batches, n_tokens : int
    input_sum : torch.Tensor or None
        float64, (in_features,): sum over tokens of x_i (None in stats built from norms alone).
    input_gram : torch.Tensor or None
        float64, (in_features, in_features): sum over tokens of x x^T. Only down projections
        have it, and only when calibrated with ``second_moments=True``.
    input_taylor : torch.Tensor or None
        float64, (in_features,): ``sum_t x_t,j dL/dx_t,j``, signed, with L the summed next-token
        loss of the calibration tokens. Only down projections calibrated with
        ``gradients=True`` have it (:mod:`llmrank_graph.data.gradients`).
    output_grad_sumsq : torch.Tensor or None
        float64, (out_features,): ``sum_t (dL/dy_t,i)^2``, the same condition.
    """

    input_sumsq: torch.Tensor
    output_sumsq: torch.Tensor
    input_batch_norm_sum: torch.Tensor
    output_batch_norm_sum: torch.Tensor
    n_batches: int = 0
    n_tokens: int = 0
    input_sum: torch.Tensor | None = None
    input_gram: torch.Tensor | None = None
    input_taylor: torch.Tensor | None = None
    output_grad_sumsq: torch.Tensor | None = None

    @property
    def input_norm(self) -> torch.Tensor:
        """L2 norm of each input feature over all calibration tokens, (in_features,)."""
        return self.input_sumsq.sqrt()

    @property
    def output_norm(self) -> torch.Tensor:
        """L2 norm of each output feature over all calibration tokens, (out_features,)."""
        return self.output_sumsq.sqrt()

    @property
    def input_norm_batch_mean(self) -> torch.Tensor:
        """Per-batch L2 norm of each input feature, averaged over batches (reference code)."""
        return self.input_batch_norm_sum / max(self.n_batches, 1)

    @property
    def output_norm_batch_mean(self) -> torch.Tensor:
        """Per-batch L2 norm of each output feature, averaged over batches (reference code)."""
        return self.output_batch_norm_sum / max(self.n_batches, 1)

    @property
    def input_mean(self) -> torch.Tensor | None:
        """Mean of each input feature over the calibration tokens, (in_features,), or None."""
        return None if self.input_sum is None else self.input_sum / max(self.n_tokens, 1)

    @property
    def input_second_moment(self) -> torch.Tensor | None:
        """``E[x x^T]`` over the calibration tokens, (in_features, in_features), or None."""
        return None if self.input_gram is None else self.input_gram / max(self.n_tokens, 1)

    @property
    def input_variance(self) -> torch.Tensor | None:
        """Variance of each input feature over the calibration tokens, (in_features,), or None."""
        mean = self.input_mean
        if mean is None:
            return None
        return (self.input_sumsq / max(self.n_tokens, 1) - mean * mean).clamp_min(0)

    def add(self, other: "ModuleStats") -> None:
        """Accumulate ``other`` (statistics of more tokens of the same module) into this one, in place."""
        self.input_sumsq += other.input_sumsq
        self.output_sumsq += other.output_sumsq
        self.input_batch_norm_sum += other.input_batch_norm_sum
        self.output_batch_norm_sum += other.output_batch_norm_sum
        self.n_batches += other.n_batches
        self.n_tokens += other.n_tokens
        if self.input_sum is not None and other.input_sum is not None:
            self.input_sum += other.input_sum
        if self.input_gram is not None and other.input_gram is not None:
            self.input_gram += other.input_gram
        for k in _GRADIENT_FIELDS:
            mine, theirs = getattr(self, k), getattr(other, k)
            if mine is not None and theirs is not None:
                mine += theirs


class ActivationStats(Mapping):
    """Mapping ``module name -> ModuleStats`` for every MLP Linear module of a model.

    :func:`~llmrank_graph.data.calibration.calibrate` makes them from a model; norms computed
    elsewhere make them too:

    Example
    -------
    >>> stats = ActivationStats.from_norms({"mlp.down_proj": (torch.ones(3), torch.full((2,), 2.0))}, n_tokens=8)
    >>> stats
    ActivationStats(1 modules, n_tokens=8)
    >>> stats.output_norm("mlp.down_proj")
    tensor([2., 2.], dtype=torch.float64)
    """

    def __init__(self, modules: Mapping[str, ModuleStats] | None = None, meta: dict | None = None):
        self._modules: dict[str, ModuleStats] = dict(modules or {})
        self.meta: dict = dict(meta or {})

    # Mapping protocol
    def __getitem__(self, name: str) -> ModuleStats:
        try:
            return self._modules[name]
        except KeyError:
            raise KeyError(f"no activation statistics for module {name!r}; stats hold "
                           f"{len(self._modules)} modules, e.g. {list(self._modules)[:3]}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def __len__(self) -> int:
        return len(self._modules)

    def __repr__(self) -> str:
        return f"ActivationStats({len(self)} modules, n_tokens={self.n_tokens})"

    @property
    def n_tokens(self) -> int:
        return max((s.n_tokens for s in self._modules.values()), default=0)

    def input_norm(self, name: str) -> torch.Tensor:
        return self[name].input_norm

    def has_second_moments(self, names=None) -> bool:
        """Whether the modules ``names`` (default: every module that has any) carry a Gram matrix and a mean.

        Stats calibrated with ``second_moments=True`` have them for every down projection.
        """
        if names is None:
            return any(s.input_gram is not None for s in self._modules.values())
        return all(n in self._modules and self._modules[n].input_gram is not None
                   and self._modules[n].input_sum is not None for n in names)

    def output_norm(self, name: str) -> torch.Tensor:
        return self[name].output_norm

    def residual_norms(self, model: nn.Module) -> list[torch.Tensor]:
        """L2 norm over the calibration tokens of each feature of the residual stream entering each MLP (pre-norm).

        One float64 tensor of ``hidden_size`` values per layer, in layer order; the RMS over
        tokens is this divided by ``sqrt(n_tokens)``. Not divided, as every activation norm
        of the graph (docs/design.md section 1). Recorded by ``calibrate(..., residual=True)``
        on the modules of :func:`residual_modules`.

        Raises
        ------
        InvalidArgumentError
            The stats lack the statistic (saying to calibrate with ``residual=True``), or do
            not fit the model.
        """
        d = mlp_layers(model)[0].hidden_size
        out = []
        for name in residual_modules(model):
            s = self._modules.get(name)
            if s is None:
                raise InvalidArgumentError(f"measured residual weights need the residual stream entering every MLP, "
                                           f"which `stats` lack ({name!r}); calibrate with "
                                           "llmrank_graph.calibrate(model, ..., residual=True)")
            _check_module_stats(name, s, d, d)
            out.append(s.input_norm.to(torch.float64))
        return out

    def has_gradients(self, names) -> bool:
        """Whether every module of ``names`` has the loss-gradient statistics (``calibrate(..., gradients=True)``)."""
        return all(n in self._modules and all(getattr(self._modules[n], k) is not None for k in _GRADIENT_FIELDS)
                   for n in names)

    @classmethod
    def from_norms(cls, norms: Mapping[str, tuple[torch.Tensor, torch.Tensor]], n_tokens: int = 1) -> "ActivationStats":
        """Build stats from ``{module_name: (input_norm, output_norm)}`` computed elsewhere."""
        mods = {}
        for name, pair in norms.items():
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise InvalidArgumentTypeError(f"`norms[{name!r}]` must be a pair (input_norm, output_norm); "
                                               f"got {type(pair).__name__}")
            inp, out = (torch.as_tensor(t, dtype=torch.float64).detach().cpu().reshape(-1) for t in pair)
            for what, t in (("input_norm", inp), ("output_norm", out)):
                if not torch.isfinite(t).all() or (t < 0).any():
                    raise InvalidArgumentError(f"`norms[{name!r}]` {what} must be finite and non-negative")
            mods[name] = ModuleStats(inp**2, out**2, inp.clone(), out.clone(), n_batches=1, n_tokens=n_tokens)
        return cls(mods)

    def check_model(self, model: nn.Module) -> None:
        """Raise InvalidArgumentError (a ValueError) if these stats do not describe ``model``'s MLP modules."""
        for mlp in mlp_layers(model):
            roles = {mlp.gate_name: "gate", mlp.up_name: "up", mlp.down_name: "down"}
            for name in mlp.named_modules():
                if name not in self._modules:
                    raise InvalidArgumentError(f"`stats` do not match the model: no statistics for module {name!r}")
                out_f, in_f = mlp.weight(roles[name]).shape
                _check_module_stats(name, self._modules[name], in_f, out_f)

    def check_attention(self, model_or_layers, *, means: bool = False, second_moments: bool = False,
                        why: str = "attention-head pruning") -> list[AttentionModules]:
        """Raise InvalidArgumentError unless these stats hold every attention output projection of the model.

        Each layer's output projection (``AttentionModules.names['o']``) must have statistics of
        its current input features (``num_heads * head_dim``) and output features, finite, and,
        if asked, the input means (``means``) and the input Gram matrix (``second_moments``).

        Parameters
        ----------
        model_or_layers : transformers model or list of AttentionModules
        means, second_moments : bool
            Also require the input sums, and the finite input Gram matrices.
        why : str
            What needs them, for the message.

        Returns
        -------
        list of AttentionModules
            The model's attention layers.

        Raises
        ------
        InvalidArgumentError
            Naming the module and saying how to collect what is missing (a ValueError).
        UnsupportedArchitectureError
            The family has no attention support.
        """
        layers = attention_layers(model_or_layers) if isinstance(model_or_layers, nn.Module) else model_or_layers
        for att in layers:
            name = att.names["o"]
            s = self._modules.get(name)
            if s is None:
                raise InvalidArgumentError(f"{why} needs the statistics of the attention output projections, which "
                                           f"`stats` lack ({name!r}); {_attention_hint(second_moments)}")
            _check_module_stats(name, s, att.num_heads * att.head_dim, att.hidden_size)
            if (means or second_moments) and s.input_sum is None:
                raise InvalidArgumentError(f"{why} needs the mean of every attention output projection's input, "
                                           f"which `stats` lack ({name!r}); {_attention_hint()}")
            if second_moments and s.input_gram is None:
                raise InvalidArgumentError(f"{why} needs the second moments (Gram matrices) of the attention output "
                                           f"projections' inputs, which `stats` lack ({name!r}); "
                                           f"{_attention_hint(True)}")
            if second_moments and not torch.isfinite(s.input_gram).all():
                raise InvalidArgumentError(f"`stats` for module {name!r} contain NaN or inf in the Gram matrix")
        return layers

    # Persistence: safetensors + JSON metadata, no pickle.
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write to a ``.safetensors`` file, atomically (:func:`llmrank_graph.base.files.atomic_file`).

        Parameters
        ----------
        path : str or path-like
            The file to write; parent directories are created.
        overwrite : bool
            Replace an existing file.

        Returns
        -------
        pathlib.Path
            The written path.

        Raises
        ------
        OutputExistsError
            If ``path`` exists and ``overwrite`` is False, or is a directory.
        WriteFailedError
            The system refused the write (disk full, file too large): nothing is left at
            ``path`` but what was there before.
        """
        tensors, counts = {}, {}
        for name, s in self._modules.items():
            tensors[f"{name}::input_sumsq"] = s.input_sumsq.contiguous()
            tensors[f"{name}::output_sumsq"] = s.output_sumsq.contiguous()
            tensors[f"{name}::input_batch_norm_sum"] = s.input_batch_norm_sum.contiguous()
            tensors[f"{name}::output_batch_norm_sum"] = s.output_batch_norm_sum.contiguous()
            for field in _OPTIONAL_FIELDS:
                if getattr(s, field) is not None:
                    tensors[f"{name}::{field}"] = getattr(s, field).contiguous()
            counts[name] = [s.n_batches, s.n_tokens]
        meta = {"format": _FORMAT, "version": __version__,
                "counts": json.dumps(counts), "meta": json.dumps(self.meta)}
        return save_safetensors_atomic(tensors, path, meta, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ActivationStats":
        """Read stats written by :meth:`save`.

        Raises
        ------
        MissingInputError
            If ``path`` does not exist (a FileNotFoundError).
        FileFormatError
            If the file is not an ActivationStats file, or is damaged or truncated (a
            ValueError naming the file).
        """
        from safetensors import SafetensorError, safe_open

        path = check_input_file("path", path)
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("format") != _FORMAT:
                    raise FileFormatError(f"`path` {str(path)!r} is not an llmrank_graph ActivationStats file")
                counts = json.loads(meta["counts"])
                keys = set(f.keys())
                mods = {}
                for name, (nb, nt) in counts.items():
                    optional = {field: f.get_tensor(f"{name}::{field}") if f"{name}::{field}" in keys else None
                                for field in _OPTIONAL_FIELDS}
                    mods[name] = ModuleStats(
                        f.get_tensor(f"{name}::input_sumsq"), f.get_tensor(f"{name}::output_sumsq"),
                        f.get_tensor(f"{name}::input_batch_norm_sum"), f.get_tensor(f"{name}::output_batch_norm_sum"),
                        n_batches=int(nb), n_tokens=int(nt), **optional,
                    )
            return cls(mods, json.loads(meta.get("meta", "{}")))
        except FileFormatError:
            raise
        except (SafetensorError, OSError, KeyError, TypeError, ValueError) as e:
            # ValueError covers JSONDecodeError and a bad (n_batches, n_tokens) pair.
            raise FileFormatError(f"`path` {str(path)!r} is not a readable ActivationStats file (truncated or "
                                  f"damaged?): {type(e).__name__}: {e}") from None


def _check_module_stats(name: str, s: ModuleStats, in_f: int, out_f: int) -> None:
    """The statistics of module ``name`` fit its (in, out) features and are finite."""
    got = (s.input_sumsq.numel(), s.output_sumsq.numel())
    if got != (in_f, out_f):
        raise InvalidArgumentError(
            f"`stats` do not match the model: module {name!r} has (in, out) features "
            f"{(in_f, out_f)} in the model but {got} in the stats"
        )
    for what, t in (("input", s.input_sumsq), ("output", s.output_sumsq)):
        if not torch.isfinite(t).all():
            raise InvalidArgumentError(f"`stats` for module {name!r} contain NaN or inf in the {what} statistics")
    if s.input_sum is not None and s.input_sum.shape != (in_f,):
        raise InvalidArgumentError(f"`stats` do not match the model: module {name!r} has {in_f} input "
                                   f"features but an input sum of shape {tuple(s.input_sum.shape)}")
    if s.input_gram is not None and s.input_gram.shape != (in_f, in_f):
        raise InvalidArgumentError(f"`stats` do not match the model: module {name!r} has {in_f} input "
                                   f"features but a Gram matrix of shape {tuple(s.input_gram.shape)}")
    for field, size in zip(_GRADIENT_FIELDS, (in_f, out_f)):
        t = getattr(s, field)
        if t is not None and (t.shape != (size,) or not torch.isfinite(t).all()):
            raise InvalidArgumentError(f"`stats` for module {name!r} must have a finite {field} of {size} values; "
                                       f"got shape {tuple(t.shape)}")


def head_norms(stats: ActivationStats, attn: AttentionModules) -> torch.Tensor:
    """Output norm of each query head of one layer over the calibration tokens, float64, (num_heads,).

    Head ``h`` writes input features ``h * head_dim : (h + 1) * head_dim`` of the attention output
    projection, so its norm is ``sqrt(sum_t sum_j x_tj^2)`` over those features: the square root of
    the summed ``input_sumsq``, **not divided by the number of tokens**, as
    :attr:`ModuleStats.input_norm` (an intermediate neuron's activation norm) is defined. It is what
    the ``activation`` head scorer returns, and the head's part in activation-weighted graphs.

    Parameters
    ----------
    stats : ActivationStats
        Calibrated with ``attention=True``.
    attn : AttentionModules
        The layer (:func:`llmrank_graph.models.attention.attention_layers`).

    Raises
    ------
    InvalidArgumentError
        The stats lack the layer's output projection (saying how to collect it), or have another
        number of input features than the layer's heads (a ValueError).

    Example
    -------
    >>> import torch
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> from llmrank_graph import calibrate
    >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=12,
    ...                                      num_hidden_layers=1, num_attention_heads=2)).eval()
    >>> stats = calibrate(model, input_ids=torch.randint(0, 32, (2, 8)), attention=True)
    >>> att = attention_layers(model)[0]
    >>> norms = head_norms(stats, att)
    >>> norms.shape, bool(torch.allclose(norms ** 2, stats[att.names["o"]].input_sumsq.view(2, 4).sum(1)))
    (torch.Size([2]), True)
    """
    name = attn.names["o"]
    if name not in stats:
        raise InvalidArgumentError(f"head norms need the statistics of the attention output projection {name!r}, "
                                   f"which `stats` lack; {_attention_hint()}")
    sumsq = stats[name].input_sumsq.to(torch.float64)
    n, hd = attn.num_heads, attn.head_dim
    if sumsq.numel() != n * hd:
        raise InvalidArgumentError(f"`stats` do not match the model: {name!r} has {n} heads of {hd} features in the "
                                   f"model but {sumsq.numel()} input features in the stats")
    return sumsq.view(n, hd).sum(1).sqrt()


#: The norm before each layer's MLP, whose input is the residual stream entering the MLP: the
#: first of these attributes a decoder layer has. Gemma 2 and 3 norm the attention's output with
#: their ``post_attention_layernorm`` and the MLP's input with ``pre_feedforward_layernorm``;
#: Llama, Mistral, Qwen and Gemma 1 with ``post_attention_layernorm``; GPT-2 ``ln_2``; OPT
#: ``final_layer_norm``.
_MLP_NORMS = ("pre_feedforward_layernorm", "post_attention_layernorm", "ln_2", "final_layer_norm")


def residual_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Qualified name -> the norm before each layer's MLP, whose input is the residual stream entering it.

    What ``calibrate(..., residual=True)`` records (the module's input: the stream before the
    norm) and :meth:`ActivationStats.residual_norms` reads.

    Raises
    ------
    UnsupportedArchitectureError
        A decoder layer without such a norm, or OPT's post-norm variant
        (``do_layer_norm_before=False``), whose MLP reads the stream after a norm of the sum.

    Example
    -------
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=12,
    ...                                      num_hidden_layers=2, num_attention_heads=2))
    >>> list(residual_modules(model))
    ['model.layers.0.post_attention_layernorm', 'model.layers.1.post_attention_layernorm']
    """
    spec = get_architecture(model)
    if getattr(getattr(model, "config", None), "do_layer_norm_before", True) is False:
        raise UnsupportedArchitectureError("`model` norms after the residual addition (do_layer_norm_before=False): "
                                           "the stream entering its MLPs is not the input of a norm")
    layers = model
    for part in spec.layers.split("."):
        layers = getattr(layers, part)
    out = {}
    for i, layer in enumerate(layers):
        attr = next((a for a in _MLP_NORMS if isinstance(getattr(layer, a, None), nn.Module)), None)
        if attr is None:
            raise UnsupportedArchitectureError(f"layer {i} of `model` has none of the norms before an MLP that the "
                                               f"residual statistic knows ({', '.join(_MLP_NORMS)})")
        out[f"{spec.layers}.{i}.{attr}"] = getattr(layer, attr)
    return out

