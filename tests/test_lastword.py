"""The offline last-word task: examples, its lm-eval task directory, and the real harness."""

import json
import math

import pytest
import torch
from _tiny import WORDS
from test_experiments import model_dir  # noqa: F401  (fixture)

from llmrank_graph.data.evaluation import (
    LASTWORD_TASK,
    lastword_accuracy,
    lastword_examples,
    lm_eval,
    prepare_tasks,
    task_metrics,
    write_lastword_task,
)
from llmrank_graph.errors import MissingInputError

PARAGRAPH = ("The cat sat on the mat while the dog ran to the park. Birds sang over green hills and the cat "
             "watched them from the mat. The dog came back from the park and sat on the mat with the cat. "
             "Then it rained.")


def test_examples_cut_at_sentence_ends_and_predict_the_last_word():
    ex = lastword_examples([PARAGRAPH, "too short. Only a few words here."], min_words=20)
    assert ex == [{"context": "The cat sat on the mat while the dog ran to the park. Birds sang over green hills "
                              "and the cat watched them from the", "target": " mat"}]


@pytest.mark.parametrize("text", [
    "One two three four five six seven eight nine ten eleven twelve in 1945.",   # a number
    "One two three four five six seven eight nine ten eleven twelve at e-mail.",  # not a plain word
    "One two three four five six seven eight nine ten eleven twelve by X.",       # too short a word
])
def test_paragraphs_without_a_plain_last_word_give_none(text):
    with pytest.raises(ValueError, match="no last-word example"):
        lastword_examples([text], min_words=10)


def test_max_words_and_limit():
    long = " ".join(["word"] * 200) + " end."
    assert lastword_examples([long, PARAGRAPH], min_words=20) == lastword_examples([PARAGRAPH], min_words=20)
    assert len(lastword_examples([PARAGRAPH, PARAGRAPH], min_words=20, limit=1)) == 1
    with pytest.raises(ValueError, match="`max_words` must be an int >= 20"):
        lastword_examples([PARAGRAPH], min_words=20, max_words=10)


def test_default_examples_come_from_held_out_articles_only():
    from llmrank_graph.data.texts import wikipedia_articles

    ex = lastword_examples()
    assert len(ex) > 500 and ex == lastword_examples()  # deterministic
    held_out = "\n".join(wikipedia_articles("evaluation"))
    calibration = "\n".join(wikipedia_articles("calibration"))
    for e in ex[::50]:
        assert e["target"][0] == " " and e["target"][1:].isalpha()
        assert e["context"] in " ".join(held_out.split()) and e["context"][:120] not in calibration


def test_task_directory(tmp_path):
    ex = lastword_examples([PARAGRAPH], min_words=20)
    d = write_lastword_task(tmp_path / "task", ex)
    assert d.is_absolute()
    yaml = (d / f"{LASTWORD_TASK}.yaml").read_text()
    assert f"task: {LASTWORD_TASK}" in yaml and json.dumps(str(d / "test.jsonl")) in yaml
    assert [json.loads(line) for line in (d / "test.jsonl").read_text().splitlines()] == ex
    with pytest.raises(FileExistsError):
        write_lastword_task(d, ex)
    with pytest.raises(ValueError, match=r"`examples\[0\]` must be a dict"):
        write_lastword_task(tmp_path / "t2", [{"context": "x"}])


def test_task_metrics_keep_numbers_only():
    results = {"t": {"alias": "t", "acc,none": 0.5, "acc_stderr,none": 0.1, "perplexity,none": 7.0,
                     "exact_match,strict": 0.2, "sample_len": 3}}
    assert task_metrics(results) == {"t": {"acc": 0.5, "perplexity": 7.0, "exact_match/strict": 0.2}}


def tiny_examples():
    # contexts of known words, so that the tiny tokenizer encodes each target as one token
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(12):
        words = [WORDS[i] for i in torch.randint(0, len(WORDS), (9,), generator=g)]
        out.append({"context": " ".join(words[:-1]), "target": " " + words[-1]})
    return out


def test_native_accuracy_counts_greedy_hits(model_dir):  # noqa: F811
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    ex = tiny_examples()
    res = lastword_accuracy(model, tok, ex)
    hits, lls = 0, []
    with torch.no_grad():
        for e in ex:
            ids = tok.encode(e["context"] + e["target"])
            logits = model(input_ids=torch.tensor([ids[:-1]])).logits[0, -1]
            hits += int(logits.argmax()) == ids[-1]
            lls.append(float(torch.log_softmax(logits, -1)[ids[-1]]))
    assert res["n"] == 12 and res["acc"] == hits / 12
    assert res["perplexity"] == pytest.approx(math.exp(-sum(lls) / 12), rel=1e-6)


def test_missing_task_data_is_named(tmp_path):
    pytest.importorskip("lm_eval", reason="needs the `eval` extra (lm-eval)")
    d = write_lastword_task(tmp_path / "task", tiny_examples())
    (d / "test.jsonl").unlink()
    with pytest.raises(MissingInputError, match=rf"task '{LASTWORD_TASK}': its data could not be loaded"):
        prepare_tasks([LASTWORD_TASK], d)


@pytest.mark.slow
def test_unknown_task_suggests_names(tmp_path):
    pytest.importorskip("lm_eval", reason="needs the `eval` extra (lm-eval)")
    d = write_lastword_task(tmp_path / "task", tiny_examples())
    with pytest.raises(ValueError, match=r"does not know the task\(s\) 'wikipedia_lastwrd' \(did you mean "
                                         r"'wikipedia_lastword'"):
        prepare_tasks(["wikipedia_lastwrd"], d)


@pytest.mark.slow
def test_harness_agrees_with_the_direct_computation_on_a_tiny_model(model_dir, tmp_path):  # noqa: F811
    pytest.importorskip("lm_eval", reason="needs the `eval` extra (lm-eval)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    ex = tiny_examples()
    manager = prepare_tasks([LASTWORD_TASK], write_lastword_task(tmp_path / "task", ex))
    got = task_metrics(lm_eval(model, tok, [LASTWORD_TASK], batch_size=4, task_manager=manager))[LASTWORD_TASK]
    direct = lastword_accuracy(model, tok, ex)
    assert got["acc"] == direct["acc"]
    assert got["perplexity"] == pytest.approx(direct["perplexity"], rel=1e-4)


@pytest.mark.slow
def test_lastword_through_the_real_harness_on_the_real_model(real_model, tmp_path):
    """The held-out last-word task, registered with lm-eval as a local task, on SmolLM2-135M."""
    pytest.importorskip("lm_eval", reason="needs the `eval` extra (lm-eval)")
    model, tok = real_model
    ex = lastword_examples(limit=24)
    manager = prepare_tasks([LASTWORD_TASK], write_lastword_task(tmp_path / "task", ex))
    got = task_metrics(lm_eval(model, tok, [LASTWORD_TASK], batch_size=8, task_manager=manager))[LASTWORD_TASK]
    direct = lastword_accuracy(model, tok, ex)
    assert got["acc"] == direct["acc"]
    assert got["perplexity"] == pytest.approx(direct["perplexity"], rel=1e-3)
    # a small model still gets some of Wikipedia's last words right, and far from all
    assert 0.05 < got["acc"] < 0.9


@pytest.mark.slow
def test_sweep_reports_task_accuracy_beside_perplexity(model_dir, tmp_path, capsys):  # noqa: F811
    """`sweep --tasks wikipedia_lastword` on a tiny model: accuracy of dense and pruned, in the CSV and the report."""
    pytest.importorskip("lm_eval", reason="needs the `eval` extra (lm-eval)")
    import pandas as pd

    from llmrank_graph.cli import main

    g = torch.Generator().manual_seed(0)
    lines = []
    for _ in range(40):  # paragraphs of sentences of the tokenizer's words
        sentences = [" ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (8,), generator=g)).capitalize() + "."
                     for _ in range(5)]
        lines.append(" ".join(sentences))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(lines))
    out = tmp_path / "res"
    argv = ["sweep", "--out", str(out), "--model", str(model_dir), "--methods", "activation", "--amounts", "0.25",
            "0.5", "--texts", str(corpus), "--eval-texts", str(corpus), "--n-samples", "2", "--seq-len", "16",
            "--eval-samples", "2", "--throughput-rounds", "1", "--tasks", LASTWORD_TASK, "--task-limit", "10"]
    assert main(argv) == 0
    df = pd.read_csv(out / "results.csv")
    for col in (f"{LASTWORD_TASK}.acc", f"dense.{LASTWORD_TASK}.acc", f"{LASTWORD_TASK}.perplexity", "perplexity"):
        assert df[col].notna().all() and col in df.columns
    assert ((df[f"{LASTWORD_TASK}.acc"] >= 0) & (df[f"{LASTWORD_TASK}.acc"] <= 1)).all()
    assert main(["report", str(out)]) == 0
    assert (out / f"quality-{LASTWORD_TASK}-acc.png").stat().st_size > 5000
    assert f"{LASTWORD_TASK} acc" in (out / "report.html").read_text()
