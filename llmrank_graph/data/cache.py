"""A cache of what a model gives every run: its perplexity on given evaluation windows.

``llmrank-graph prune`` evaluates the dense model before it evaluates the pruned one; for one
model, one text and one set of settings the dense perplexity is the same number every run, so
:func:`cached_perplexity` computes it once and reads it back afterwards. (Tokens/s is measured
alternately with the pruned model, under the load of the moment: it is never cached.)

An entry is one small JSON file in ``evaluations/`` under the model cache directory
(:func:`llmrank_graph.models.loading.cache_dir`, ``$LLMRANK_GRAPH_CACHE`` to move it), written
atomically (:func:`llmrank_graph.base.files.write_json_atomic`). Its name is a hash of its key,
and the file holds the whole key, which must equal the one asked for: a key is

- ``model``: :func:`model_fingerprint`, the sha256 of the files the weights are read from (the
  GGUF file of the embedded model, else ``config.json`` and the safetensors weights);
- ``input_ids``: the sha256 of the evaluation token ids, and their shape (windows, seq_len);
- ``batch_size``, the model's ``dtype`` and ``device``, torch's thread count (the float sums of
  a forward pass depend on how they are split);
- ``code``: the versions of llmrank_graph, torch and transformers, and a hash of the source of
  :func:`~llmrank_graph.data.evaluation.perplexity`.

Any change of any part is a miss. An entry that cannot be read, is not of this format, holds
another key or a value that is not a positive finite float is ignored with a warning, and
rewritten once the value is computed. A cache directory that cannot be written costs a warning,
never the run.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._version import __version__
from ..base.checks import fail_type
from ..base.files import write_json_atomic
from ..base.params import Boolean, Interval, validated
from ..errors import LLMRankGraphError
from ..models.loading import ModelSource, cache_dir
from ..models.weights import safetensors_files
from .evaluation import perplexity

logger = logging.getLogger(__name__)

__all__ = ["CACHE_FORMAT", "CACHE_SUBDIRECTORY", "model_fingerprint", "tensor_digest", "perplexity_key",
           "read_cached", "write_cached", "cached_perplexity"]

#: The ``format`` of every entry (with ``version`` 1).
CACHE_FORMAT = "llmrank_graph.evaluation-cache"
#: The directory of the entries, under :func:`~llmrank_graph.models.loading.cache_dir`.
CACHE_SUBDIRECTORY = "evaluations"
_VERSION = 1


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def model_fingerprint(source: ModelSource) -> str:
    """The sha256 of the files a model's weights are read from, with their names and sizes.

    The embedded model and a GGUF model: the GGUF file (the converted copy is made from it).
    A directory: its ``config.json`` and its safetensors weights (as the loader chooses them).
    Every byte is hashed (about 0.4 s for SmolLM2-135M's 540 MB): two models of the same
    sizes, such as two pruned copies, never share a fingerprint.

    Parameters
    ----------
    source : ModelSource
        :func:`llmrank_graph.models.loading.check_model_path`'s answer.

    Returns
    -------
    str
        64 hex digits.
    """
    if not isinstance(source, ModelSource):
        raise fail_type("source", "a ModelSource (llmrank_graph.models.loading.check_model_path)", source)
    if source.file is not None:
        files = [source.file]
    else:
        files = [source.path / "config.json", *safetensors_files(source.path)]
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.name}\0{f.stat().st_size}\0{_file_sha256(f)}\0".encode())
    return h.hexdigest()


def tensor_digest(t: torch.Tensor) -> str:
    """The sha256 of a tensor's dtype, shape and values (on the CPU, contiguous).

    >>> tensor_digest(torch.arange(4)) == tensor_digest(torch.arange(4))
    True
    >>> tensor_digest(torch.arange(4)) == tensor_digest(torch.arange(4).reshape(2, 2))
    False
    """
    if not isinstance(t, torch.Tensor):
        raise fail_type("t", "a torch.Tensor", t)
    h = hashlib.sha256(f"{t.dtype}\0{tuple(t.shape)}\0".encode())
    h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _code_version() -> dict[str, str]:
    import transformers

    source = hashlib.sha256(inspect.getsource(perplexity).encode()).hexdigest()[:16]
    return {"llmrank_graph": __version__, "perplexity": source, "torch": torch.__version__,
            "transformers": transformers.__version__}


def perplexity_key(model: nn.Module, input_ids: torch.Tensor, *, fingerprint: str, batch_size: int) -> dict:
    """The key of ``perplexity(model, input_ids=input_ids, batch_size=batch_size)`` (see the module docstring).

    ``fingerprint`` is the model's :func:`model_fingerprint`; the dtype and device are read
    from ``model``'s first parameter.
    """
    p = next(model.parameters())
    return {"what": "perplexity", "model": str(fingerprint), "input_ids": tensor_digest(input_ids),
            "shape": list(input_ids.shape), "batch_size": int(batch_size), "dtype": str(p.dtype).replace("torch.", ""),
            "device": str(p.device), "torch_threads": torch.get_num_threads(), "code": _code_version()}


def _entry_path(key: Mapping[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return cache_dir() / CACHE_SUBDIRECTORY / f"{key.get('what', 'value')}-{digest}.json"


def read_cached(key: Mapping[str, Any]) -> float | None:
    """The value cached under ``key``, or None: none cached, or an entry that is damaged (with a warning).

    Parameters
    ----------
    key : mapping
        JSON-serialisable; compared whole with the key stored in the entry.
    """
    path = _entry_path(key)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        logger.warning("ignoring the cache entry %s, which cannot be read (%s); computing the value again", path, e)
        return None
    why = _damage(text, key)
    if why is not None:
        logger.warning("ignoring the damaged cache entry %s (%s); computing the value again", path, why)
        return None
    return float(json.loads(text)["value"])


def _damage(text: str, key: Mapping[str, Any]) -> str | None:
    """What is wrong with the text of an entry asked for under ``key`` (None: nothing)."""
    try:
        entry = json.loads(text)
    except ValueError as e:
        return f"not JSON: {e}"
    if not isinstance(entry, dict) or entry.get("format") != CACHE_FORMAT or entry.get("version") != _VERSION:
        return f"not a {CACHE_FORMAT} entry of version {_VERSION}"
    if entry.get("key") != json.loads(json.dumps(key)):
        return "it holds another key"
    value = entry.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        return f"its value is not a positive finite number: {value!r}"
    return None


def write_cached(key: Mapping[str, Any], value: float) -> Path | None:
    """Store ``value`` under ``key`` (replacing any entry); the path, or None when it cannot be written (a warning)."""
    path = _entry_path(key)
    entry = {"format": CACHE_FORMAT, "version": _VERSION, "key": dict(key), "value": float(value)}
    try:
        os.makedirs(path.parent, exist_ok=True)
        return write_json_atomic(path, entry, overwrite=True, arg="cache entry")
    except (OSError, LLMRankGraphError) as e:
        logger.warning("could not write the cache entry %s (%s); the value is not cached", path, e)
        return None


@validated({"batch_size": Interval(int, 1), "use_cache": Boolean(), "progress": Boolean()})
def cached_perplexity(model: nn.Module, input_ids: torch.Tensor, *, fingerprint: str, batch_size: int = 4,
                      use_cache: bool = True, progress: bool = False) -> tuple[float, bool]:
    """:func:`~llmrank_graph.data.evaluation.perplexity` of ``model`` on ``input_ids``, read from the cache when there.

    Parameters
    ----------
    model : causal LM
    input_ids : LongTensor (n, seq)
        The evaluation windows.
    fingerprint : str
        The model's :func:`model_fingerprint` (the caller knows which files it was loaded from).
    batch_size : int
    use_cache : bool
        False: compute, and neither read nor write the cache.
    progress : bool
        A progress bar while computing.

    Returns
    -------
    (float, bool)
        The perplexity, and whether it came from the cache.

    Example
    -------
    >>> import tempfile
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> _ = torch.manual_seed(0)
    >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=12, num_hidden_layers=2,
    ...                                      num_attention_heads=2, num_key_value_heads=2)).eval()
    >>> ids = torch.randint(0, 32, (2, 16))
    >>> scratch = tempfile.TemporaryDirectory()
    >>> os.environ["LLMRANK_GRAPH_CACHE"], before = scratch.name, os.environ.get("LLMRANK_GRAPH_CACHE")
    >>> first, hit = cached_perplexity(model, ids, fingerprint="tiny")
    >>> second, hit2 = cached_perplexity(model, ids, fingerprint="tiny")
    >>> hit, hit2, first == second
    (False, True, True)
    >>> _ = os.environ.pop("LLMRANK_GRAPH_CACHE") if before is None else os.environ.update(LLMRANK_GRAPH_CACHE=before)
    >>> scratch.cleanup()
    """
    if not use_cache:
        return perplexity(model, input_ids=input_ids, batch_size=batch_size, progress=progress), False
    key = perplexity_key(model, input_ids, fingerprint=fingerprint, batch_size=batch_size)
    value = read_cached(key)
    if value is not None:
        logger.info("dense perplexity read from the cache (%s)", _entry_path(key))
        return value, True
    value = perplexity(model, input_ids=input_ids, batch_size=batch_size, progress=progress)
    if math.isfinite(value):
        write_cached(key, value)
    return value, False
