import json

import pytest
import torch
from _tiny import WORDS, tiny_gpt2, tiny_llama, word_tokenizer

import llmrank_graph as lg
from llmrank_graph.data.calibration import record_activations
from llmrank_graph.models.architectures import mlp_layers


def _ids(n=4, seq=12, seed=0):
    return torch.randint(0, 64, (n, seq), generator=torch.Generator().manual_seed(seed))


def _manual_inputs(model, ids):
    """Inputs and outputs of every MLP Linear, captured independently of the library."""
    got = {}

    def hook(name):
        def f(mod, inp, out):
            got.setdefault(name, []).append((inp[0].reshape(-1, inp[0].shape[-1]).double(),
                                             out.reshape(-1, out.shape[-1]).double()))
        return f

    hs = [mod.register_forward_hook(hook(name)) for m in mlp_layers(model) for name, mod in m.named_modules().items()]
    try:
        with torch.no_grad():
            for b in ids.split(2):
                model(input_ids=b)
    finally:
        for h in hs:
            h.remove()
    return got


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2])
def test_norms_match_manual(make):
    model = make()
    ids = _ids()
    stats = lg.calibrate(model, input_ids=ids, batch_size=2)
    manual = _manual_inputs(model, ids)
    assert set(stats) == set(manual)
    for name, batches in manual.items():
        x = torch.cat([b[0] for b in batches])
        y = torch.cat([b[1] for b in batches])
        s = stats[name]
        torch.testing.assert_close(s.input_norm, x.norm(dim=0))
        torch.testing.assert_close(s.output_norm, y.norm(dim=0))
        # the reference code's statistic: per-batch L2 norm, averaged over batches
        torch.testing.assert_close(s.input_norm_batch_mean, torch.stack([b[0].norm(dim=0) for b in batches]).mean(0))
        torch.testing.assert_close(s.output_norm_batch_mean, torch.stack([b[1].norm(dim=0) for b in batches]).mean(0))
        assert s.n_tokens == ids.numel() and s.n_batches == 2


def test_iterable_batches_equal_tensor():
    model = tiny_llama()
    ids = _ids()
    a = lg.calibrate(model, input_ids=ids, batch_size=2)
    b = lg.calibrate(model, input_ids=iter(list(ids.split(2))))
    for name in a:
        torch.testing.assert_close(a[name].input_norm, b[name].input_norm)


def test_hooks_removed_even_on_error():
    model = tiny_llama()
    mods = [mod for m in mlp_layers(model) for mod in m.named_modules().values()]
    with pytest.raises(RuntimeError, match="boom"):
        with record_activations(model):
            assert all(len(m._forward_hooks) == 1 for m in mods)
            raise RuntimeError("boom")
    assert all(len(m._forward_hooks) == 0 for m in mods)
    with pytest.raises(ValueError, match="integer"):
        lg.calibrate(model, input_ids=[torch.ones(2, 4)])
    assert all(len(m._forward_hooks) == 0 for m in mods)


def test_save_load_round_trip(tmp_path):
    model = tiny_llama()
    stats = lg.calibrate(model, input_ids=_ids())
    path = stats.save(tmp_path / "stats.safetensors")
    back = lg.ActivationStats.load(path)
    assert list(back) == list(stats) and back.n_tokens == stats.n_tokens
    for name in stats:
        torch.testing.assert_close(back[name].input_sumsq, stats[name].input_sumsq)
        torch.testing.assert_close(back[name].output_norm_batch_mean, stats[name].output_norm_batch_mean)
    assert not any(p.suffix == ".tmp" for p in tmp_path.iterdir())
    with pytest.raises(FileNotFoundError, match="`path`"):
        lg.ActivationStats.load(tmp_path / "missing.safetensors")


def test_from_norms_and_model_check():
    model = tiny_llama(m=12)
    norms = {}
    for m in mlp_layers(model):
        for name, mod in m.named_modules().items():
            norms[name] = (torch.rand(mod.in_features), torch.rand(mod.out_features))
    stats = lg.ActivationStats.from_norms(norms)
    stats.check_model(model)
    name = next(iter(norms))
    torch.testing.assert_close(stats[name].input_norm, norms[name][0].double())
    with pytest.raises(ValueError, match="do not match"):
        stats.check_model(tiny_llama(m=16))
    with pytest.raises(ValueError, match="finite and non-negative"):
        lg.ActivationStats.from_norms({name: (torch.tensor([float("nan")]), torch.ones(2))})


def test_bad_arguments():
    model = tiny_llama()
    with pytest.raises(ValueError, match="`n_samples` must be a positive int; got 0"):
        lg.calibrate(model, input_ids=_ids(), n_samples=0)
    with pytest.raises(ValueError, match="either `texts` or `input_ids`"):
        lg.calibrate(model, texts=["a"], input_ids=_ids())
    with pytest.raises(ValueError, match="`tokenizer` is required"):
        lg.calibrate(model)


def test_token_ids_outside_the_vocabulary_and_empty_batches():
    model = tiny_llama()  # vocabulary of 64
    outside = r"batch 0 has token ids from 0 to 64, outside the model's vocabulary \[0, 64\)"
    with pytest.raises(ValueError, match=outside):
        lg.calibrate(model, input_ids=torch.tensor([[0, 64]]))
    with pytest.raises(ValueError, match="from -1 to"):
        lg.calibrate(model, input_ids=torch.tensor([[-1, 3]]))
    with pytest.raises(ValueError, match=r"batch 0 is empty \(shape \(2, 0\)\)"):
        lg.calibrate(model, input_ids=[torch.zeros(2, 0, dtype=torch.long)])


def test_damaged_stats_file_names_the_file(tmp_path):
    from llmrank_graph.errors import FileFormatError, OutputExistsError

    stats = lg.calibrate(tiny_llama(), input_ids=_ids())
    path = stats.save(tmp_path / "stats.safetensors")
    with pytest.raises(OutputExistsError, match="already exists; pass overwrite=True"):
        stats.save(path)
    stats.save(path, overwrite=True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError, match="stats.safetensors' is not a readable ActivationStats file"):
        lg.ActivationStats.load(path)


def test_a_directory_of_texts_calibrates_as_its_files_in_name_order(tmp_path):
    tok, model = word_tokenizer(), tiny_llama()
    first, second = " ".join(WORDS[:10] * 3), " ".join(WORDS[10:] * 3)
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": second}) + "\n")
    (tmp_path / "a.txt").write_text(first)
    from_dir = lg.calibrate(model, tok, texts=tmp_path, n_samples=2, seq_len=16)
    from_list = lg.calibrate(model, tok, texts=[first, second], n_samples=2, seq_len=16)
    name = mlp_layers(model)[0].down_name
    assert torch.equal(from_dir[name].input_sumsq, from_list[name].input_sumsq)


@pytest.mark.parametrize("texts", ["Once upon a time there was a model. " * 20, "x" * 300, "one\ntwo"])
def test_one_long_str_as_texts_says_what_texts_accepts(texts):
    from llmrank_graph.errors import InvalidArgumentTypeError

    with pytest.raises(TypeError, match=r"`texts` must be None, a list of str, or a path to a \.txt/\.jsonl file or "
                                        r"to a directory of them, or a `datasets` dataset name \(.*one text goes in a "
                                        r"list: \[text\]\); got ") as e:
        lg.calibrate(tiny_llama(), word_tokenizer(), texts=texts)
    assert isinstance(e.value, InvalidArgumentTypeError)
