"""The cache of the dense model's perplexity (llmrank_graph.data.cache) and `prune`'s use of it.

References: a fresh :func:`perplexity` computation; every part of the key is changed in turn.
Each test has its own cache directory ($LLMRANK_GRAPH_CACHE).
"""

import json
import logging
import re
import shutil

import pytest
import torch
from _tiny import save_tiny_model, tiny_llama, write_corpus

import llmrank_graph.data.cache as cache
from llmrank_graph.cli import main
from llmrank_graph.data.cache import (
    CACHE_SUBDIRECTORY,
    cached_perplexity,
    model_fingerprint,
    perplexity_key,
    read_cached,
    write_cached,
)
from llmrank_graph.data.evaluation import perplexity
from llmrank_graph.models.loading import cache_dir as models_cache_dir
from llmrank_graph.models.loading import check_model_path


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    home = tmp_path / "cache"
    monkeypatch.setenv("LLMRANK_GRAPH_CACHE", str(home))
    monkeypatch.setattr(cache, "cache_dir", models_cache_dir)  # the conftest moved it aside; here it is the real one
    return home


def _entries(home):
    return sorted((home / CACHE_SUBDIRECTORY).glob("*.json")) if (home / CACHE_SUBDIRECTORY).is_dir() else []


def _ids(seed=0, n=4, seq=16):
    return torch.randint(0, 64, (n, seq), generator=torch.Generator().manual_seed(seed))


def test_a_hit_is_the_fresh_value(cache_home):
    model, ids = tiny_llama(), _ids()
    fresh = perplexity(model, input_ids=ids, batch_size=2)
    first, hit1 = cached_perplexity(model, ids, fingerprint="m", batch_size=2)
    second, hit2 = cached_perplexity(model, ids, fingerprint="m", batch_size=2)
    assert (hit1, hit2) == (False, True)
    assert first == fresh and second == fresh  # exactly: JSON keeps every bit of a float
    assert len(_entries(cache_home)) == 1


def test_no_cache_neither_reads_nor_writes(cache_home):
    model, ids = tiny_llama(), _ids()
    value, hit = cached_perplexity(model, ids, fingerprint="m", use_cache=False)
    assert not hit and _entries(cache_home) == []
    cached_perplexity(model, ids, fingerprint="m")
    write_cached(perplexity_key(model, ids, fingerprint="m", batch_size=4), 123.0)  # a value it would not give
    assert cached_perplexity(model, ids, fingerprint="m", use_cache=False) == (value, False)


def _changed_keys(model, ids, monkeypatch):
    """Each part of the key changed alone (model bytes, text, seq_len, batch, dtype, device, threads, code)."""
    base = {"fingerprint": "m", "batch_size": 4}
    yield "model", perplexity_key(model, ids, **{**base, "fingerprint": "other"})
    yield "input ids", perplexity_key(model, _ids(seed=1), **base)
    yield "seq_len", perplexity_key(model, ids[:, :8], **base)
    yield "windows", perplexity_key(model, ids[:2], **base)
    yield "batch size", perplexity_key(model, ids, **{**base, "batch_size": 2})
    yield "dtype", perplexity_key(tiny_llama().to(torch.bfloat16), ids, **base)
    yield "device", perplexity_key(tiny_llama().to("meta"), ids, **base)
    before = torch.get_num_threads()
    torch.set_num_threads(before + 1)
    try:
        yield "threads", perplexity_key(model, ids, **base)
    finally:
        torch.set_num_threads(before)
    monkeypatch.setattr(cache, "__version__", "9.9.9")
    yield "package version", perplexity_key(model, ids, **base)


def test_any_change_of_the_key_misses(monkeypatch):
    model, ids = tiny_llama(), _ids()
    key = perplexity_key(model, ids, fingerprint="m", batch_size=4)
    write_cached(key, 12.5)
    assert read_cached(key) == 12.5
    for what, other in _changed_keys(model, ids, monkeypatch):
        assert other != key, what
        assert read_cached(other) is None, what


@pytest.mark.parametrize("damage", ["{not json", json.dumps({"format": "something else", "version": 1}),
                                    "value -1", "another key", "\xff"])
def test_a_damaged_entry_is_ignored_with_a_warning_and_rewritten(cache_home, caplog, damage):
    model, ids = tiny_llama(), _ids()
    fresh = perplexity(model, input_ids=ids)
    cached_perplexity(model, ids, fingerprint="m")
    (entry,) = _entries(cache_home)
    good = json.loads(entry.read_text())
    if damage == "value -1":
        entry.write_text(json.dumps({**good, "value": -1}))
    elif damage == "another key":  # as a hash collision would give
        entry.write_text(json.dumps({**good, "key": {**good["key"], "batch_size": 99}, "value": 1.0}))
    elif damage == "\xff":
        entry.write_bytes(b"\xff\xfe")
    else:
        entry.write_text(damage)
    with caplog.at_level(logging.WARNING, logger="llmrank_graph.data.cache"):
        value, hit = cached_perplexity(model, ids, fingerprint="m")
    assert (value, hit) == (fresh, False)
    assert "ignoring the" in caplog.text and str(entry) in caplog.text
    assert json.loads(entry.read_text()) == good  # rewritten
    assert cached_perplexity(model, ids, fingerprint="m") == (fresh, True)


def test_an_unwritable_cache_costs_a_warning_only(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("LLMRANK_GRAPH_CACHE", str(blocker / "cache"))  # under a file: cannot be created
    model, ids = tiny_llama(), _ids()
    with caplog.at_level(logging.WARNING, logger="llmrank_graph.data.cache"):
        assert cached_perplexity(model, ids, fingerprint="m") == (perplexity(model, input_ids=ids), False)
    assert "could not write the cache entry" in caplog.text


def test_the_fingerprint_is_of_the_weights_bytes(tmp_path):
    a = save_tiny_model(tmp_path / "a", m=16)
    copy = tmp_path / "copy"
    shutil.copytree(a, copy)
    other = tmp_path / "other"
    model = tiny_llama(vocab=64, m=16)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] += 1e-3  # same sizes, one value differs
    model.save_pretrained(other)
    fa, fc, fo = (model_fingerprint(check_model_path(p)) for p in (a, copy, other))
    assert fa == fc and fa != fo
    assert re.fullmatch("[0-9a-f]{64}", fa)


def _prune(model_dir, text_file, out, *extra):
    return main(["prune", "--model", str(model_dir), "--out", str(out), "--overwrite", "--amount", "0.25",
                 "--texts", str(text_file), "--eval-texts", str(text_file), "--n-samples", "2", "--seq-len", "16",
                 "--eval-samples", "2", "--method", "magnitude", "--compensate", "none", *extra])


def _dense_perplexity(text: str) -> str:
    return re.search(r"^perplexity +(\S+( \(cached\))?) ", text, re.M).group(1)


def test_prune_reads_the_dense_perplexity_from_the_cache(tmp_path, capsys, cache_home):
    model_dir = save_tiny_model(tmp_path / "model", m=16)
    text_file = write_corpus(tmp_path / "corpus.txt")
    out = tmp_path / "pruned"
    assert _prune(model_dir, text_file, out) == 0
    cold = capsys.readouterr().out
    assert _prune(model_dir, text_file, out) == 0
    warm = capsys.readouterr().out
    assert "(cached)" not in _dense_perplexity(cold) and "perplexity dense " in cold
    assert _dense_perplexity(warm) == _dense_perplexity(cold) + " (cached)"
    assert "perplexity dense (cached)" in warm and "perplexity pruned" in warm
    # The model's own perplexity, computed here, is what the table shows.
    import llmrank_graph as lg
    from llmrank_graph.data.texts import load_texts, token_blocks

    model, tok = lg.load_model(model_dir)
    ids = token_blocks(tok, load_texts(str(text_file)), 2, 16)
    assert _dense_perplexity(cold) == f"{perplexity(model, input_ids=ids):.2f}"
    assert _prune(model_dir, text_file, out, "--no-cache") == 0
    assert "(cached)" not in capsys.readouterr().out
    assert _prune(model_dir, text_file, out, "--eval-samples", "1") == 0  # other evaluation ids: a miss
    assert "(cached)" not in _dense_perplexity(capsys.readouterr().out)
    assert len(_entries(cache_home)) == 2
