"""A model directory checked against its weights before any model is built.

``config.json`` says how big a model is; the safetensors headers say what the weights are.
:func:`check_checkpoint` reads the headers only (no weight) and refuses a config that lies: a
layer count, hidden or intermediate size or head count that the tensors do not have, a
tensor of another shape (a transposed ``down_proj``), a missing tensor (transformers would
fill it with random values) or integer weights (quantised models load from a .gguf file).
Each refusal names the field, the tensor and the shape the config asks for.

The expected shapes come from two places. The MLP tensors, layer by layer, from the family's
:class:`~llmrank_graph.models.architectures.ArchitectureSpec` (a pruned model's saved sizes
included); every other tensor from the model transformers builds from the config on the
``meta`` device, which has shapes but no storage (milliseconds, whatever the sizes). The
layer count is checked first, so that a config of a billion layers is refused before
transformers is asked to build it.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import FileFormatError
from .architectures import (
    ArchitectureSpec,
    MLPModules,
    UnsupportedArchitectureError,
    get_architecture,
    mlp_layers,
)
from .attention import set_head_counts
from .saved_format import PRUNED_CONFIG_KEY, PrunedEntry, _is_int
from .weights import TensorHeader, checkpoint_headers

logger = logging.getLogger(__name__)

__all__ = ["check_checkpoint"]

# The size fields of a config, by transformers' common names (a family's config class maps
# them to its own, e.g. GPT-2's n_layer / n_embd / n_head, through its ``attribute_map``).
_SIZES = ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size")
_NEVER_RANDOM = "llmrank_graph never fills a missing tensor with random values"


@dataclass(frozen=True)
class _Checkpoint:
    """The directory under check: its config, its weights' headers and the names of its fields."""

    directory: Path
    config_file: Path
    raw: Mapping  # the parsed config.json
    spec: ArchitectureSpec
    tensors: dict[str, TensorHeader]  # by the model's key (base-model prefix added where the file omits it)
    file_keys: dict[str, str]  # model key -> the name in the file
    fields: dict[str, str]  # common name (and the intermediate attribute) -> the name in config.json
    nullable: frozenset[str]  # fields that may be null: transformers derives them (GPT-2's n_inner)
    entry: PrunedEntry | None

    def cfg(self) -> str:
        return repr(str(self.config_file))

    def where(self, key: str) -> str:
        return repr(str(self.tensors[key].file))

    def weights(self) -> str:
        files = sorted({t.file for t in self.tensors.values()})
        if len(files) == 1:
            return repr(str(files[0]))
        return f"the {len(files)} safetensors files of {str(self.directory)!r}"

    def name(self, key: str) -> str:
        return repr(self.file_keys.get(key, key))

    def says(self, common: str, value) -> str:
        """``num_hidden_layers=2``, in the config's own field name."""
        return f"{self.fields.get(common, common)}={value}"


def check_checkpoint(directory: str | Path, config: Mapping, files: list[Path],
                     entry: PrunedEntry | None = None):
    """Check ``config`` against the headers of the weights ``files`` of ``directory``; read no weight.

    Parameters
    ----------
    directory : str or path-like
        The model directory (its ``config.json`` is named in the messages).
    config : mapping
        The parsed ``config.json``, of a registered family.
    files : list of pathlib.Path
        The weights, as :func:`~llmrank_graph.models.weights.safetensors_files` gives them.
    entry : PrunedEntry or None
        The pruning entry of a pruned model, whose per-layer sizes are then the expected ones.

    Returns
    -------
    transformers.PretrainedConfig or None
        The config as transformers reads it (with the largest saved size for a pruned model);
        None for a family transformers does not know (loaded with remote code), which is not
        checked.

    Raises
    ------
    FileFormatError
        A field of the wrong type, a layer count, size or head count the tensors do not have,
        a tensor of another shape than the config asks for, a missing tensor or non-floating
        weights; the message names the field, the tensor and the expected shape.

    Example
    -------
    >>> import json, tempfile
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> scratch = tempfile.TemporaryDirectory()
    >>> LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=12, num_hidden_layers=2,
    ...                              num_attention_heads=2, num_key_value_heads=2)).save_pretrained(scratch.name)
    >>> config = json.loads(Path(scratch.name, "config.json").read_text())
    >>> files = [Path(scratch.name, "model.safetensors")]
    >>> check_checkpoint(scratch.name, config, files).num_hidden_layers
    2
    >>> try:
    ...     check_checkpoint(scratch.name, dict(config, num_hidden_layers=10**9), files)
    ... except ValueError as e:
    ...     print(str(e).replace(scratch.name, "DIR"))  # doctest: +ELLIPSIS
    'DIR/config.json' says num_hidden_layers=1000000000 but 'DIR/model.safetensors' holds layers 0..1 (...)
    >>> scratch.cleanup()
    """
    directory = Path(directory)
    spec = get_architecture(config.get("model_type"))
    classes = _transformers_classes(config["model_type"])
    if classes is None and entry is not None:
        raise UnsupportedArchitectureError(f"transformers has no class for model_type={config['model_type']!r}: "
                                           f"the pruned model in {str(directory)!r} cannot be rebuilt")
    if classes is None:
        logger.debug("transformers has no class for model_type=%r; its weights are not checked against "
                     "its config", config["model_type"])
        return None
    config_class, model_class = classes
    tensors = checkpoint_headers(directory, files)
    ck = _checkpoint(directory, config, spec, tensors, config_class, model_class.base_model_prefix, entry)
    _check_fields(ck)
    hf_config = _read_config(ck, config_class)
    _check_layer_count(ck, hf_config.num_hidden_layers)
    model = _meta_model(ck, model_class, hf_config)
    if entry is not None and entry.heads is not None:
        set_head_counts(model, entry.heads.counts)
    layers = mlp_layers(model)
    sizes = list(entry.intermediate_sizes) if entry is not None else [m.intermediate_size for m in layers]
    expected = {key: tuple(t.shape) for key, t in model.state_dict().items()}
    for mlp, size in zip(layers, sizes):
        _check_mlp(ck, mlp, size, expected, hf_config)
    _check_others(ck, model, expected, hf_config)
    return hf_config


# --------------------------------------------------------------------------- reading


def _transformers_classes(model_type: str):
    """The config class and the ``*ForCausalLM`` class of a family, or None if transformers lacks them."""
    from transformers import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    try:
        config_class = CONFIG_MAPPING[model_type]
        return config_class, MODEL_FOR_CAUSAL_LM_MAPPING[config_class]
    except KeyError:
        return None


def _checkpoint(directory, raw, spec, headers, config_class, prefix, entry) -> _Checkpoint:
    # A checkpoint of the base model omits its prefix ("h.0.mlp.c_fc.weight" for GPT-2's
    # "transformer.h.0..."); transformers then matches keys without it, and so does this check.
    omitted = bool(prefix) and not any(k.startswith(prefix + ".") for k in headers)
    tensors, file_keys = {}, {}
    for name, header in headers.items():
        # Every *ForCausalLM of transformers keeps its head, outside the base model, as lm_head.
        key = f"{prefix}.{name}" if omitted and not name.startswith("lm_head.") else name
        tensors[key], file_keys[key] = header, name
    names = dict(getattr(config_class, "attribute_map", {}) or {})
    # The family's own name of a field, unless config.json uses the common one instead.
    fields = {c: c if names.get(c, c) not in raw and c in raw else names.get(c, c)
              for c in _SIZES}
    fields[spec.intermediate_attr] = spec.intermediate_attr
    try:
        defaults = inspect.signature(config_class.__init__).parameters
    except (TypeError, ValueError):
        defaults = {}
    nullable = frozenset(f for f in fields.values() if f in defaults and defaults[f].default is None)
    return _Checkpoint(directory, directory / "config.json", raw, spec, tensors, file_keys, fields, nullable, entry)


def _layer_tensors(ck: _Checkpoint) -> dict[int, list[str]]:
    """The tensors of each decoder layer present in the weights: layer index -> keys."""
    pattern = re.compile(re.escape(ck.spec.layers) + r"\.(\d+)\.")
    layers: dict[int, list[str]] = {}
    for key in ck.tensors:
        match = pattern.match(key)
        if match:
            layers.setdefault(int(match.group(1)), []).append(key)
    return layers


def _first_up(ck: _Checkpoint) -> tuple[str, TensorHeader] | None:
    """The up weight of the lowest layer in the weights, which shows the hidden and intermediate sizes."""
    for i in sorted(_layer_tensors(ck)):
        key = f"{ck.spec.layers}.{i}.{ck.spec.up}.weight"
        if key in ck.tensors and len(ck.tensors[key].shape) == 2:
            return key, ck.tensors[key]
    return None


# --------------------------------------------------------------------------- the fields


def _evidence(ck: _Checkpoint, common: str) -> str:
    """What the weights say a size field should be, e.g. ``the weights have 16: ... has shape (16, 8)``."""
    if common == "num_hidden_layers":
        layers = _layer_tensors(ck)
        return f" (the weights hold {max(layers) + 1} layers)" if layers else ""
    up = _first_up(ck)
    if up is None or common not in ("hidden_size", ck.spec.intermediate_attr):
        return ""
    key, header = up
    rows, cols = header.shape[::-1] if ck.spec.conv1d else header.shape
    value = cols if common == "hidden_size" else rows
    return f" (the weights have {value}: {ck.name(key)} has shape {header.shape})"


def _check_fields(ck: _Checkpoint) -> None:
    """Every size field of config.json is a positive int (or null where transformers derives it)."""
    checked = [*_SIZES, ck.spec.intermediate_attr]
    if ck.entry is not None:  # its sizes are the entry's; the field may hold the hint string
        checked.remove(ck.spec.intermediate_attr)
    for common in checked:
        field = ck.fields[common]
        if field not in ck.raw:
            continue  # transformers' default
        value = ck.raw[field]
        if _is_int(value) and value > 0 or value is None and field in ck.nullable:
            continue
        what = "a positive int" + (" or null" if field in ck.nullable else "")
        raise FileFormatError(f"{ck.cfg()}: field {field!r} must be {what}{_evidence(ck, common)}; got {value!r}")
    heads, kv = (ck.raw.get(ck.fields[c]) for c in ("num_attention_heads", "num_key_value_heads"))
    if _is_int(heads) and _is_int(kv) and heads % kv:
        raise FileFormatError(f"{ck.cfg()}: {ck.says('num_attention_heads', heads)} must be a multiple of "
                              f"{ck.says('num_key_value_heads', kv)} (each key/value head serves a group of "
                              "query heads)")


def _config_errors() -> tuple[type[BaseException], ...]:
    try:
        from huggingface_hub.errors import StrictDataclassError
    except ImportError:  # an older huggingface_hub, whose configs validate nothing
        return (TypeError, ValueError, KeyError)
    return (TypeError, ValueError, KeyError, StrictDataclassError)


def _read_config(ck: _Checkpoint, config_class):
    values = dict(ck.raw)
    if ck.entry is not None:
        # Built at the largest saved size (a valid int for the config); each layer is checked at its own.
        values[ck.spec.intermediate_attr] = max(ck.entry.intermediate_sizes)
    try:
        return config_class.from_dict(values)
    except _config_errors() as e:
        raise FileFormatError(f"{ck.cfg()} is not a valid {ck.raw['model_type']} config: {e}") from None


# --------------------------------------------------------------------------- the tensors


def _check_layer_count(ck: _Checkpoint, n_layers: int) -> None:
    """The weights hold layers 0..n-1, as the config says (before a model of n layers is built)."""
    field = ck.fields["num_hidden_layers"]
    said = (f"says {field}={n_layers}" if field in ck.raw
            else f"leaves {field} unset (transformers' default: {n_layers})")
    layers = _layer_tensors(ck)
    if not layers:
        raise FileFormatError(f"{ck.cfg()} {said} but {ck.weights()} holds no tensor of a decoder layer "
                              f"({ck.spec.layers}.0. ...)")
    top = max(layers)
    if top != n_layers - 1:
        up = f"{ck.spec.layers}.{top}.{ck.spec.up}.weight"
        last = up if up in ck.tensors else max(layers[top])
        raise FileFormatError(f"{ck.cfg()} {said} but {ck.weights()} holds layers 0..{top} ({ck.name(last)} is "
                              "the last)")
    if ck.entry is not None and len(ck.entry.intermediate_sizes) != n_layers:
        raise FileFormatError(f"{ck.cfg()} does not match the model: '{PRUNED_CONFIG_KEY}' has "
                              f"{len(ck.entry.intermediate_sizes)} intermediate sizes but the config has "
                              f"{n_layers} layers")


# Build errors of a config that passed the field checks but that transformers cannot build.
_BUILD_ERRORS = (TypeError, ValueError, RuntimeError, ZeroDivisionError, OverflowError, KeyError, AttributeError,
                 IndexError)


def _meta_model(ck: _Checkpoint, model_class, hf_config) -> nn.Module:
    """The model of the config on the meta device: every tensor's shape, no storage."""
    try:
        with torch.device("meta"):
            return model_class(hf_config)
    except _BUILD_ERRORS as e:
        raise FileFormatError(f"transformers cannot build a {ck.raw['model_type']} model from {ck.cfg()}: "
                              f"{type(e).__name__}: {e}") from None


def _mlp_shape(mlp: MLPModules, which: str, pname: str, meta_shape: tuple, size: int) -> tuple:
    """The shape of an MLP tensor at ``size`` intermediate neurons (transpose-aware for Conv1D)."""
    if pname == "bias":
        return meta_shape if which == "down" else (size,)
    rows, cols = meta_shape
    intermediate_rows = (which != "down") != mlp.conv1d  # up/gate: out features; down: in features
    return (size, cols) if intermediate_rows else (rows, size)


def _check_mlp(ck: _Checkpoint, mlp: MLPModules, size: int, expected: dict, hf_config) -> None:
    """Each MLP tensor of one layer is present, floating and of the shape the config gives it."""
    if ck.entry is not None:
        inner = f"'{PRUNED_CONFIG_KEY}.intermediate_sizes'[{mlp.layer}]={size}"
    else:
        attr = ck.spec.intermediate_attr
        value = ck.raw.get(attr, getattr(hf_config, attr, None))
        inner = f"{attr}={size}" if value == size else f"{attr}={value!r} (so {size})"
    hidden = ck.says("hidden_size", hf_config.hidden_size)
    for which in ("gate", "up", "down"):
        module = getattr(mlp, which)
        if module is None:
            continue
        name = getattr(mlp, f"{which}_name")
        for pname in ("weight", "bias"):
            key = f"{name}.{pname}"
            if key not in expected:
                continue
            shape = _mlp_shape(mlp, which, pname, expected[key], size)
            expected[key] = shape
            role = f"the {which} {pname} of layer {mlp.layer}"
            if key not in ck.tensors:
                raise FileFormatError(f"the weights in {str(ck.directory)!r} lack {ck.name(key)} ({role}, of shape "
                                      f"{shape} by {ck.cfg()}); {_NEVER_RANDOM}")
            _check_dtype(ck, key)
            found = ck.tensors[key].shape
            if found != shape:
                hint = "; it is transposed" if found == shape[::-1] else ""
                raise FileFormatError(f"{ck.name(key)} has shape {found} in {ck.where(key)} ({role}), but "
                                      f"{ck.cfg()} ({hidden}, {inner}) makes it {shape}{hint}")


def _check_dtype(ck: _Checkpoint, key: str) -> None:
    header = ck.tensors[key]
    if not header.floating:
        raise FileFormatError(f"{ck.name(key)} is stored as {header.dtype} in {ck.where(key)}; llmrank_graph "
                              "loads floating-point weights (F16, BF16, F32, F64, F8; mixed is fine), and "
                              "quantised models from a .gguf file")


def _sizes(ck: _Checkpoint, hf_config) -> str:
    """The config's size fields, as the messages list them: ``hidden_size=8, num_attention_heads=2, ...``."""
    commons = (c for c in _SIZES if c != "num_hidden_layers")
    return ", ".join(ck.says(c, getattr(hf_config, c)) for c in commons if ck.fields[c] in ck.raw)


def _check_others(ck: _Checkpoint, model: nn.Module, expected: dict, hf_config) -> None:
    """Every other tensor of the model is present (tied ones once), of its shape; parameters are floating."""
    params = dict(model.named_parameters(remove_duplicate=False))
    tied: dict[int, list[str]] = {}
    for key, p in params.items():
        tied.setdefault(id(p), []).append(key)
    for key, shape in expected.items():
        if key not in ck.tensors:
            if key not in params or any(k in ck.tensors for k in tied[id(params[key])]):
                continue  # a buffer (transformers computes it), or tied to a tensor that is present
            raise FileFormatError(f"the weights in {str(ck.directory)!r} lack {ck.name(key)} (of shape {shape} by "
                                  f"{ck.cfg()}); {_NEVER_RANDOM}")
        if key in params:
            _check_dtype(ck, key)
        found = ck.tensors[key].shape
        if found != shape:
            raise FileFormatError(f"{ck.name(key)} has shape {found} in {ck.where(key)}, but {ck.cfg()} "
                                  f"({_sizes(ck, hf_config)}) makes it {shape}")
    ignored = [re.compile(p) for p in getattr(model, "_keys_to_ignore_on_load_unexpected", None) or []]
    unused = [ck.file_keys[k] for k in ck.tensors if k not in expected and not any(p.search(k) for p in ignored)]
    if unused:
        logger.warning("the weights in %s hold %d tensors that a %s model does not use (ignored): %s",
                       ck.directory, len(unused), ck.raw["model_type"], ", ".join(unused[:5]))
