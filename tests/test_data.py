"""Tests for llmrank_graph.data.texts: the embedded corpus split, local text files, token blocks."""

from __future__ import annotations

import json

import pytest
import torch
from _tiny import word_tokenizer as make_word_tokenizer

from llmrank_graph.data.texts import load_texts, token_blocks, wikipedia_articles

SENTENCES = [
    "the cat sat on the mat .",
    "a dog ran in the park and the cat sat still .",
    "graphs have nodes and edges , and pagerank ranks the nodes .",
]


@pytest.fixture(scope="module")
def word_tokenizer():
    """A WordLevel tokenizer over a tiny vocabulary, wrapped as a transformers fast tokenizer."""
    return make_word_tokenizer(SENTENCES)


# ----------------------------------------------------------------------------- corpus


def test_split_is_disjoint_complete_and_nonempty():
    calib = wikipedia_articles("calibration")
    evaluation = wikipedia_articles("evaluation")
    everything = wikipedia_articles("all")
    assert calib and evaluation
    assert set(calib).isdisjoint(evaluation)
    assert sorted(calib + evaluation) == sorted(everything)
    assert len(everything) > 100
    # The rule: every 4th article (index % 4 == 3) is evaluation.
    assert evaluation == everything[3::4]


def test_split_is_deterministic():
    assert wikipedia_articles("evaluation") == wikipedia_articles("evaluation")
    first = wikipedia_articles("calibration")
    first.append("mutating the returned list must not change the next call")
    assert wikipedia_articles("calibration") != first


def test_articles_are_readable_text():
    articles = wikipedia_articles("all")
    assert not any(a.lower().startswith("#redirect") for a in articles)
    joined = "\n".join(articles[:10])
    assert "'''" not in joined and "[[" not in joined and "{{" not in joined
    assert any(c.isupper() for c in joined) and "." in joined and "," in joined


def test_evaluation_split_is_large_enough():
    # Needs >= 16 blocks of 512 tokens; real tokenizers give more tokens than words.
    n_words = sum(len(a.split()) for a in wikipedia_articles("evaluation"))
    assert n_words >= 16 * 512


def test_bad_split_raises():
    with pytest.raises(ValueError, match=r"`split`.*calibration.*evaluation.*all.*got 'train'"):
        wikipedia_articles("train")
    with pytest.raises(ValueError, match="`split`"):
        load_texts(split="validation")


def test_load_texts_default_is_wikipedia():
    assert load_texts() == wikipedia_articles("calibration")
    assert load_texts(split="evaluation") == wikipedia_articles("evaluation")


# ----------------------------------------------------------------------------- files


def test_load_texts_txt(tmp_path):
    one = tmp_path / "one.txt"
    one.write_text("a single document\nspanning two lines\n", encoding="utf-8")
    assert load_texts(one) == ["a single document\nspanning two lines"]

    many = tmp_path / "many.txt"
    many.write_text("first doc\n\nsecond doc\nline two\n\n\n  \nthird doc\n", encoding="utf-8")
    assert load_texts(str(many)) == ["first doc", "second doc\nline two", "third doc"]


def test_load_texts_jsonl(tmp_path):
    path = tmp_path / "docs.jsonl"
    rows = [{"text": "alpha beta", "id": 1}, {"text": "gamma"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    assert load_texts(path) == ["alpha beta", "gamma"]


def test_load_texts_jsonl_without_text_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"content": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 1.*'text'"):
        load_texts(path)


def test_load_texts_missing_file(tmp_path):
    for name in ("missing.txt", "missing.jsonl"):
        with pytest.raises(FileNotFoundError, match="`texts`.*does not exist"):
            load_texts(tmp_path / name)


def test_load_texts_empty_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="`source`"):
        load_texts(path)


# ----------------------------------------------------------------------------- token blocks


def test_token_blocks_shape_and_order(word_tokenizer):
    blocks = token_blocks(word_tokenizer, SENTENCES, n_samples=3, seq_len=5)
    assert blocks.shape == (3, 5) and blocks.dtype == torch.long
    eos = word_tokenizer.eos_token_id
    stream = []
    for i, s in enumerate(SENTENCES):
        if i:
            stream.append(eos)
        stream.extend(word_tokenizer(s, add_special_tokens=False)["input_ids"])
    # Consecutive, non-overlapping blocks from the start of the joined stream.
    assert blocks.flatten().tolist() == stream[:15]
    assert eos in blocks.flatten().tolist()


def test_token_blocks_deterministic(word_tokenizer):
    a = token_blocks(word_tokenizer, SENTENCES, n_samples=4, seq_len=6)
    b = token_blocks(word_tokenizer, SENTENCES, n_samples=4, seq_len=6)
    assert torch.equal(a, b)


def test_token_blocks_not_enough_tokens(word_tokenizer):
    n_tokens = sum(len(word_tokenizer(s)["input_ids"]) for s in SENTENCES) + len(SENTENCES) - 1
    with pytest.raises(ValueError, match=rf"{10 * 8}.*{n_tokens} tokens available"):
        token_blocks(word_tokenizer, SENTENCES, n_samples=10, seq_len=8)


@pytest.mark.parametrize(
    "kwargs, name, error",
    [
        # One rule: a wrong type (a float, a bool, a str) is a TypeError, a wrong value a ValueError.
        (dict(n_samples=0, seq_len=4), "n_samples", ValueError),
        (dict(n_samples=2.0, seq_len=4), "n_samples", TypeError),
        (dict(n_samples=True, seq_len=4), "n_samples", TypeError),
        (dict(n_samples=2, seq_len=-1), "seq_len", ValueError),
        (dict(n_samples=2, seq_len="8"), "seq_len", TypeError),
    ],
)
def test_token_blocks_validates_sizes(word_tokenizer, kwargs, name, error):
    with pytest.raises(error, match=rf"`{name}` must be an int >= 1; got"):
        token_blocks(word_tokenizer, SENTENCES, **kwargs)


def test_token_blocks_rejects_bad_texts(word_tokenizer):
    with pytest.raises(ValueError, match="`texts`"):
        token_blocks(word_tokenizer, [], n_samples=1, seq_len=1)
    # a single str is the wrong type (a TypeError under the one rule)
    with pytest.raises(TypeError, match="`texts`"):
        token_blocks(word_tokenizer, "a single string", n_samples=1, seq_len=1)


def test_other_local_files_are_refused_not_sent_to_the_hub(tmp_path, monkeypatch):
    import llmrank_graph.data.texts as data

    def no_hub(source):  # pragma: no cover - reached only on failure
        raise AssertionError(f"{source!r} was sent to the datasets loader")

    monkeypatch.setattr(data, "_read_dataset", no_hub)
    path = tmp_path / "corpus.md"
    path.write_text("# some text")
    with pytest.raises(ValueError, match=r"corpus.md' has an unsupported format \(.md\); supported: .txt, .jsonl"):
        load_texts(path)


@pytest.mark.parametrize("name", ["latin1.txt", "latin1.jsonl"])
def test_non_utf8_text_names_the_file(tmp_path, name):
    from llmrank_graph.errors import FileFormatError

    path = tmp_path / name
    path.write_bytes('{"text": "caf\u00e9"}\n'.encode("latin-1"))
    with pytest.raises(FileFormatError, match=rf"{name}' is not UTF-8 text \(invalid byte at offset 13\)"):
        load_texts(path)


# ----------------------------------------------------------------------------- directories and misplaced texts
@pytest.fixture
def no_datasets(monkeypatch):
    """Fail the test if a source reaches the `datasets` loader."""
    import llmrank_graph.data.texts as data

    def no_hub(source):  # pragma: no cover - reached only on failure
        raise AssertionError(f"{source!r} was sent to the datasets loader")

    monkeypatch.setattr(data, "_read_dataset", no_hub)


def test_a_directory_reads_every_text_file_in_name_order(tmp_path, no_datasets):
    from llmrank_graph.data.texts import check_text_source

    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "third"}) + "\n" + json.dumps({"text": "fourth"}) + "\n")
    (tmp_path / "a.txt").write_text("first\n\nsecond\n")
    assert check_text_source(tmp_path) == "directory"
    assert load_texts(tmp_path) == load_texts(str(tmp_path)) == ["first", "second", "third", "fourth"]


def test_a_directory_holding_a_graph_and_a_note_is_refused_naming_them(tmp_path, no_datasets):
    from llmrank_graph.errors import InvalidArgumentError

    (tmp_path / "edges.parquet").write_bytes(b"PAR1")
    (tmp_path / "notes.txt").write_text("a note")
    (tmp_path / "old").mkdir()
    with pytest.raises(InvalidArgumentError, match=r"`texts` directory '.*' holds entries that are not \.txt or "
                                                   r"\.jsonl files: edges\.parquet, old/;"):
        load_texts(tmp_path)


def test_an_empty_directory_is_refused(tmp_path, no_datasets):
    from llmrank_graph.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match=r"`texts` directory '.*' is empty; it must hold .txt or .jsonl"):
        load_texts(tmp_path)


@pytest.mark.parametrize("text", ["Once upon a time " * 40, "a\nb", "x" * 300, "two words", ""],
                         ids=["long-text", "newline", "long-name", "whitespace", "empty"])
def test_a_text_given_as_a_source_is_a_type_error(text, no_datasets):
    from llmrank_graph.errors import InvalidArgumentTypeError

    with pytest.raises(TypeError, match=r"`texts` must be a path to a \.txt/\.jsonl file or to a directory of them, "
                                        r"or a `datasets` dataset name \(a path must exist;") as e:
        load_texts(text)
    assert isinstance(e.value, InvalidArgumentTypeError)


def test_a_local_path_with_a_split_is_not_sent_to_datasets(tmp_path, monkeypatch, no_datasets):
    from llmrank_graph.errors import InvalidArgumentError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus").mkdir()
    with pytest.raises(InvalidArgumentError, match="`texts` 'corpus:train' names the local path 'corpus' with a "
                                                   "split; local files and directories are read without one"):
        load_texts("corpus:train")


def test_a_dataset_that_datasets_cannot_build_is_an_input_error(monkeypatch):
    datasets = pytest.importorskip("datasets")
    from llmrank_graph.errors import InvalidArgumentError

    def cannot_build(name, split):
        raise datasets.exceptions.DatasetGenerationError("An error occurred while generating the dataset")

    monkeypatch.setattr(datasets, "load_dataset", cannot_build)
    with pytest.raises(InvalidArgumentError, match="`texts` 'someone/corpus' could not be loaded as a `datasets` "
                                                   "dataset: DatasetGenerationError"):
        load_texts("someone/corpus")
