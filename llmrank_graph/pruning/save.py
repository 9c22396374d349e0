"""Saving a pruned model: an ordinary Hugging Face directory, written atomically.

:func:`save_pruned` writes ``config.json``, safetensors weights, the tokenizer and optionally
the neuron and head masks, in the format described in :mod:`llmrank_graph.models.saved_format`.
:func:`llmrank_graph.load_model` sees the format's entry in ``config.json`` and loads the
directory with :func:`~llmrank_graph.models.loading.load_pruned` (which lives with the loader):
it builds the model, shrinks every layer's MLP to its saved size (and its attention to its saved
head counts) and then loads the weights strictly. A plain ``transformers`` load works too when
every layer has the same size (and the same head counts, in a family whose config can say so).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from torch import nn

from ..base.files import atomic_directory
from ..base.params import Boolean, InstanceOf, Optional, validate
from ..errors import InvalidArgumentError
from ..models.architectures import get_architecture
from ..models.saved_format import (
    HEAD_MASK_FILE,
    MASK_FILE,
    PRUNED_CONFIG_KEY,
    PrunedEntry,
    disk_config,
    is_saved_pruned,
    original_intermediate_size,
    read_config,
)
from .heads import HeadMask
from .masks import NeuronMask

logger = logging.getLogger(__name__)

__all__ = ["save_pruned"]

#: The parameter constraints of :func:`save_pruned`, checked once at its entry.
SAVE_CONSTRAINTS = {"directory": InstanceOf((str, os.PathLike), "a str or a path"), "overwrite": Boolean(),
                    "force": Boolean(), "mask": Optional(InstanceOf(NeuronMask, "a NeuronMask or None")),
                    "head_mask": Optional(InstanceOf(HeadMask, "a HeadMask or None"))}


def save_pruned(model: nn.Module, tokenizer, directory: str | os.PathLike, overwrite: bool = False, *,
                mask: NeuronMask | None = None, force: bool = False, head_mask: HeadMask | None = None) -> Path:
    """Save a (pruned) model, and its tokenizer, so that :func:`llmrank_graph.load_model` restores it.

    The directory is written under a temporary name next to ``directory`` and renamed at the
    end (:func:`llmrank_graph.base.files.atomic_directory`): an interrupted save (exception, Ctrl-C,
    SIGTERM, a full disk) leaves nothing at ``directory``, an interrupted overwrite leaves the
    previous directory, and of concurrent saves to one new path exactly one succeeds. Every file
    gets the umask's permissions (``model.safetensors`` too, which the safetensors library
    creates 0o600).

    Parameters
    ----------
    model : transformers model of a registered architecture
    tokenizer : tokenizer or None
        Saved alongside when not None.
    directory : str or path-like
        Target directory; must not exist unless ``overwrite``.
    overwrite : bool
        Replace an existing directory (never a file).
    mask : NeuronMask, optional
        The mask that produced the model, saved inside the directory (at
        :data:`llmrank_graph.models.saved_format.MASK_FILE`) before the directory is renamed into
        place, so a saved model never lacks its mask.
    head_mask : HeadMask, optional
        The head mask that produced the model (:func:`llmrank_graph.pruning.heads.remove_heads`),
        saved likewise, at :data:`llmrank_graph.models.saved_format.HEAD_MASK_FILE`.
    force : bool
        With ``overwrite``, also replace a directory that ``save_pruned`` did not write (its
        ``config.json`` has no ``"llmrank_graph"`` entry), such as the original model.

    Returns
    -------
    pathlib.Path
        ``directory``.

    Raises
    ------
    OutputExistsError
        If ``directory`` exists (or appears during the save) and ``overwrite`` is False, or
        is a file (a FileExistsError).
    InvalidArgumentError
        ``overwrite`` would replace a directory that ``save_pruned`` did not write, without ``force``.
    InvalidArgumentTypeError
        A ``directory``, ``overwrite``, ``force``, ``mask`` or ``head_mask`` of the wrong type.
    WriteFailedError
        The system refused a write (disk full, file too large, a read-only target), in any file
        of the directory: ``could not write DIRECTORY: REASON``. The temporary directory and the
        parent directories this call created are removed; a previous directory is kept.

    Example
    -------
    >>> import tempfile, torch, llmrank_graph
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=12,
    ...                                      num_hidden_layers=2, num_attention_heads=2)).eval()
    >>> mask = llmrank_graph.NeuronMask({0: torch.arange(12) < 9, 1: torch.arange(12) < 6})
    >>> model = llmrank_graph.apply_mask(model, mask)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = save_pruned(model, None, f"{d}/pruned-model", mask=mask)
    ...     loaded, tokenizer = llmrank_graph.load_model(path)
    >>> llmrank_graph.pruning.intermediate_sizes(loaded), tokenizer
    ([9, 6], None)
    """
    validate(SAVE_CONSTRAINTS, {"directory": directory, "overwrite": overwrite, "force": force, "mask": mask,
                                "head_mask": head_mask})
    spec = get_architecture(model)
    entry = PrunedEntry.for_model(model, original_intermediate_size(model))

    def only_saved_models(existing: Path) -> None:
        if not force and not is_saved_pruned(existing):
            raise InvalidArgumentError(f"`directory` {str(existing)!r} exists and was not written by save_pruned "
                                       f"(its config.json has no '{PRUNED_CONFIG_KEY}' entry); refusing to replace "
                                       "it without force=True")

    with atomic_directory(directory, overwrite=overwrite, arg="directory", check_existing=only_saved_models) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        config_file = tmp / "config.json"
        config = disk_config(read_config(config_file), entry, spec.intermediate_attr)
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if mask is not None:
            mask.save(tmp / MASK_FILE)
        if head_mask is not None:
            head_mask.save(tmp / HEAD_MASK_FILE)
    target = Path(directory).expanduser()
    heads = "" if entry.heads is None else f", heads {list(entry.heads.num_heads)}"
    logger.info("saved the pruned model (MLP sizes %s%s) to %s", list(entry.intermediate_sizes), heads, target)
    return target
