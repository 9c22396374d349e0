"""`inspect --model ... --attention`: the graph `export --attention` writes, inspected without the directory.

The model and the text are test_inspect_heads's (a tiny Llama with grouped-query attention);
the refusals run under test_cli_errors's ``no_work`` (no model loaded, no calibration, no export).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from test_cli_errors import _error, no_work  # noqa: F401 (fixture)
from test_inspect_heads import HEADS, _export, inspect_json, model_dir, text_file  # noqa: F401 (fixtures)

import llmrank_graph.models.architectures as arch
from llmrank_graph.analysis.inspect import HEAD_COLUMNS
from llmrank_graph.cli import main


def _calibration(texts) -> list[str]:
    return ["--calibrate", "--texts", str(texts), "--n-samples", "2", "--seq-len", "16"]


def test_inspect_model_attention_calibrate_equals_export_then_inspect(model_dir, text_file, tmp_path,  # noqa: F811
                                                                       capsys):
    rep = inspect_json(capsys, "--model", str(model_dir), "--attention", *_calibration(text_file),
                       "--top-heads", str(HEADS))
    graph = _export(model_dir, tmp_path / "g", "--attention", *_calibration(text_file))
    capsys.readouterr()
    want = inspect_json(capsys, "--graph", str(graph), "--top-heads", str(HEADS))
    # the graph of `export --attention --calibrate`: heads, the pagerank scorer's edges, activations
    assert rep["graph"]["attention"] is True and rep["graph"]["weighting"] == "activation_share"
    assert {k: v for k, v in rep["graph"].items() if k != "source"} == \
        {k: v for k, v in want["graph"].items() if k != "source"}
    got, ref = pd.DataFrame(rep["top_heads"]), pd.DataFrame(want["top_heads"])
    assert list(got.columns) == list(HEAD_COLUMNS) and len(got) == 3 * HEADS  # 3 layers, every head
    # ranked by the PageRank teleporting by activation: the heads' activations come from the calibration
    assert set(got.score) == {"pagerank_reverse_a0.85_activation"}
    exact = [c for c in HEAD_COLUMNS if c not in ("value", "share")]
    pd.testing.assert_frame_equal(got[exact], ref[exact])
    np.testing.assert_allclose(got[["value", "share"]].to_numpy(float), ref[["value", "share"]].to_numpy(float),
                               rtol=1e-12)
    assert len(set(got.value)) > 1  # not a uniform ranking


def _head_table(text: str) -> str:
    at = text.index("heads per layer by")
    return text[text.rindex("\n", 0, at) + 1:]


def test_inspect_model_text_shows_the_top_heads(model_dir, tmp_path, capsys):  # noqa: F811
    argv = ["--centralities", "pagerank", "--top-heads", "2"]
    assert main(["inspect", "--model", str(model_dir), *argv]) == 0
    assert "the graph has no head nodes" in capsys.readouterr().out  # without --attention
    assert main(["inspect", "--model", str(model_dir), "--attention", *argv]) == 0
    text = capsys.readouterr().out
    graph = _export(model_dir, tmp_path / "g", "--attention")
    assert main(["inspect", "--graph", str(graph), *argv]) == 0
    want = _head_table(capsys.readouterr().out)
    assert want.startswith("top 2 heads per layer by pagerank_reverse_a0.85")
    assert _head_table(text) == want and want.count("\n") >= 2 + 3 * 2  # title, header, 2 heads x 3 layers


# ----------------------------------------------------------------------------- refused before any work
def test_attention_with_graph_is_refused(model_dir, tmp_path, no_work, capsys):  # noqa: F811
    graph = tmp_path / "g"
    graph.mkdir()  # refused before --graph is even read
    assert main(["inspect", "--graph", str(graph), "--attention"]) == 2
    assert _error(capsys.readouterr().err).startswith("error: --attention applies to --model only")
    assert no_work == []


@pytest.mark.parametrize("command", [["inspect"], ["export", "--out", "OUT"]])
@pytest.mark.parametrize("calibrate", [[], ["--calibrate"]])
def test_attention_on_a_family_without_heads_is_refused(model_dir, text_file, tmp_path, monkeypatch, no_work,  # noqa: F811
                                                         capsys, command, calibrate):
    spec = arch.get_architecture("llama")
    monkeypatch.setitem(arch._REGISTRY, "llama", dataclasses.replace(spec, attention=None))
    out = tmp_path / "g"
    argv = [str(out) if a == "OUT" else a for a in command]
    texts = ["--texts", str(text_file)] if calibrate else []
    assert main([*argv, "--model", str(model_dir), "--attention", *calibrate, *texts]) == 2
    err = _error(capsys.readouterr().err)
    assert err.startswith(f"error: `--attention` adds the attention heads of model {str(model_dir)!r}, but the "
                          "'llama' family (llama) has no attention-head support"), err
    assert no_work == [] and not out.exists()
    monkeypatch.setitem(arch._REGISTRY, "llama", spec)  # with heads, the same command gets past the check
    assert main([*argv, "--model", str(model_dir), "--attention", *calibrate, *texts]) == 1
    assert no_work == ["load_model"] and "load_model was called before" in capsys.readouterr().err


def test_attention_with_isolated_mode_is_refused(model_dir, no_work, capsys):  # noqa: F811
    assert main(["inspect", "--model", str(model_dir), "--attention", "--mode", "isolated"]) == 2
    err = _error(capsys.readouterr().err)
    assert "`--attention` needs --mode chained" in err and "got --mode isolated" in err, err
    assert no_work == []
