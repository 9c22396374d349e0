"""A tiny model directory for examples and doctests: what :func:`llmrank_graph.load_model` reads.

Nothing is downloaded: the model is a random two-layer Llama built from a config, the
tokenizer a word-level one over :data:`TOY_WORDS`.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["TOY_WORDS", "toy_model_directory"]

#: The toy tokenizer's vocabulary: ``[UNK]``, the end of sequence ``</s>`` and six words.
TOY_WORDS = ("[UNK]", "</s>", "the", "cat", "sat", "on", "a", "mat")


def toy_model_directory(directory: str | os.PathLike) -> Path:
    """Save a random Llama (2 layers, hidden 8, intermediate 12, 2 heads) and its tokenizer.

    Parameters
    ----------
    directory : str or path-like
        Where to save them (created if needed).

    Returns
    -------
    pathlib.Path
        ``directory``.

    Example
    -------
    >>> import tempfile, llmrank_graph as lg
    >>> with tempfile.TemporaryDirectory() as d:
    ...     model, tok = lg.load_model(lg.models.toy_model_directory(d))
    >>> lg.models.intermediate_sizes(model), tok("the cat sat")["input_ids"]
    ([12, 12], [2, 3, 4])
    """
    # transformers and tokenizers load in seconds: only when a toy model is asked for
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    directory = Path(directory)
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(TOY_WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="</s>").save_pretrained(directory)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(TOY_WORDS), hidden_size=8, intermediate_size=12,
                                 num_hidden_layers=2, num_attention_heads=2)).save_pretrained(directory)
    return directory
