"""The one factory of tiny random Hugging Face models used by the tests (no downloads).

The conftest fixtures ``tiny_llama`` and ``tiny_gpt2`` call these with their own sizes; tests
that need other sizes or seeds call them directly.
"""

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM


def tiny_llama(seed=0, layers=3, d=8, m=12, vocab=64, **config):
    """A random LlamaForCausalLM in eval mode (2 heads; extra ``config`` keys go to LlamaConfig)."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=d, intermediate_size=m, num_hidden_layers=layers,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64, **config)
    return LlamaForCausalLM(cfg).eval()


def tiny_gpt2(seed=0, layers=2, d=8, vocab=64, **config):
    """A random GPT2LMHeadModel in eval mode (2 heads; extra ``config`` keys go to GPT2Config)."""
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab, n_embd=d, n_layer=layers, n_head=2, n_positions=64, **config)
    return GPT2LMHeadModel(cfg).eval()


#: The vocabulary of the tests' word-level tokenizer (and the words of their little texts).
WORDS = "the cat sat on a mat and the dog ran to the park while birds sang over green hills".split()


_ALL_WORDS = (" ".join(WORDS),)


def word_tokenizer(texts=_ALL_WORDS, specials=("[UNK]", "</s>")):
    """A WordLevel tokenizer trained on ``texts``, as a transformers fast tokenizer ('</s>' is EOS if listed)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(list(texts), trainers.WordLevelTrainer(special_tokens=list(specials)))
    eos = {"eos_token": "</s>"} if "</s>" in specials else {}
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", **eos)


def save_tiny_model(directory, **sizes):
    """A tiny Llama (``tiny_llama(vocab=64, **sizes)``) and the word tokenizer, saved as a Hugging Face directory."""
    tiny_llama(**{"vocab": 64, **sizes}).save_pretrained(directory)
    word_tokenizer().save_pretrained(directory)
    return directory


def write_corpus(path, n_words=3000, seed=0):
    """A text file of ``n_words`` words of WORDS drawn with a fixed seed (the tiny tokenizer knows them all)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    path.write_text(" ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (n_words,), generator=g)))
    return path
