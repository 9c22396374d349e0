import pandas as pd
import pytest
import torch

import llmrank_graph as lg
from llmrank_graph.cli import main

from _tiny import tiny_llama

WORDS = "the cat sat on a mat and the dog ran to the park while birds sang over green hills".split()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny Llama with a WordLevel tokenizer saved as a Hugging Face directory."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([" ".join(WORDS)], trainers.WordLevelTrainer(special_tokens=["[UNK]", "</s>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="</s>")
    d = tmp_path_factory.mktemp("tiny") / "model"
    tiny_llama(vocab=64, m=16).save_pretrained(d)
    fast.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    g = torch.Generator().manual_seed(0)
    words = [WORDS[i] for i in torch.randint(0, len(WORDS), (3000,), generator=g)]
    p = tmp_path_factory.mktemp("text") / "corpus.txt"
    p.write_text(" ".join(words))
    return p


def test_export_then_rank(model_dir, tmp_path, capsys):
    out = tmp_path / "graph"
    assert main(["export", "--model", str(model_dir), "--out", str(out)]) == 0
    g = lg.read_graph(out)
    assert g.n_edges == 3 * 2 * 8 * 16
    scores = tmp_path / "scores.parquet"
    assert main(["rank", "--graph", str(out), "--out", str(scores), "--direction", "reverse", "--backend", "scipy"]) == 0
    df = pd.read_parquet(scores)
    ref = lg.pagerank(g, direction="reverse", backend="scipy")
    assert list(df.columns[:5]) == ["vertex", "layer", "kind", "index", "activation"]
    assert df["pagerank"].to_numpy() == pytest.approx(ref.scores, abs=1e-12)
    assert "backend=scipy" in capsys.readouterr().out


def test_rank_from_model_to_csv_with_calibration(model_dir, text_file, tmp_path):
    out = tmp_path / "scores.csv"
    rc = main(["rank", "--model", str(model_dir), "--out", str(out), "--personalization", "activation",
               "--weighting", "abs_x_input", "--texts", str(text_file), "--n-samples", "2", "--seq-len", "16"])
    assert rc == 0
    df = pd.read_csv(out)
    assert df["activation"].notna().all() and df["pagerank"].sum() == pytest.approx(1.0)


def test_refuses_existing_out(model_dir, tmp_path, capsys):
    out = tmp_path / "graph"
    out.mkdir()
    with pytest.raises(SystemExit, match="--overwrite"):
        main(["export", "--model", str(model_dir), "--out", str(out)])


def test_bad_rank_suffix(model_dir, tmp_path):
    with pytest.raises(SystemExit, match=".parquet or .csv"):
        main(["rank", "--model", str(model_dir), "--out", str(tmp_path / "scores.txt")])


def test_missing_model_is_a_clear_error(tmp_path, capsys):
    assert main(["export", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "g")]) == 2
    assert "`path`" in capsys.readouterr().err


def test_prune_end_to_end(model_dir, text_file, tmp_path, capsys):
    out = tmp_path / "pruned"
    args = ["prune", "--model", str(model_dir), "--out", str(out), "--amount", "0.25", "--texts", str(text_file),
            "--eval-texts", str(text_file), "--n-samples", "2", "--seq-len", "16", "--eval-samples", "2",
            "--method", "wanda-sp"]
    assert main(args) == 0
    text = capsys.readouterr().out
    for row in ("MLP parameters", "total parameters", "perplexity", "tokens/s", "stage times"):
        assert row in text
    model, tok = lg.load_model(out)
    assert tok is not None
    assert [m.intermediate_size for m in lg.architectures.mlp_layers(model)] == [12, 12, 12]
    mask = lg.NeuronMask.load(out / "llmrank_graph" / "neuron_mask.safetensors")
    assert mask.n_pruned() == 12
    with pytest.raises(SystemExit, match="--overwrite"):
        main(args)


def test_prune_unknown_method_lists_registry(model_dir, text_file, tmp_path, capsys):
    rc = main(["prune", "--model", str(model_dir), "--out", str(tmp_path / "p"), "--method", "nope",
               "--texts", str(text_file), "--n-samples", "1", "--seq-len", "8"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "pagerank" in err and "wanda-sp" in err
    assert not (tmp_path / "p").exists()


def test_backends_command(capsys):
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    assert "sweep" in out and "scipy" in out and "cugraph" in out
