"""One exception policy: every error raised on purpose derives from LLMRankGraphError and says how the CLI exits."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import numpy as np
import pytest

import llmrank_graph
from llmrank_graph.errors import (
    FAILURE_EXIT_STATUS,
    USAGE_EXIT_STATUS,
    FileFormatError,
    InvalidArgumentError,
    LLMRankGraphError,
    MissingInputError,
    WorkFailedError,
)


def _exception_classes() -> dict[str, type]:
    """Every public exception class defined in the package, by qualified name."""
    found = {}
    for info in pkgutil.walk_packages(llmrank_graph.__path__, "llmrank_graph."):
        if info.name.endswith("__main__"):  # importing it runs the CLI
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == module.__name__
                    and not name.startswith("_")):  # private ones are control flow that never escapes
                found[f"{module.__name__}.{name}"] = obj
    return found


def test_every_public_exception_class_derives_from_the_base():
    classes = _exception_classes()
    assert "llmrank_graph.centrality._kernels.ConvergenceError" in classes  # the walk finds them
    outside = [name for name, cls in classes.items() if not issubclass(cls, LLMRankGraphError)]
    assert outside == [], f"derive these from llmrank_graph.errors.LLMRankGraphError: {outside}"


def test_exit_status_is_1_for_failures_during_the_work_and_2_for_everything_else():
    from llmrank_graph.centrality import ConvergenceError, GPUMemoryError

    assert (USAGE_EXIT_STATUS, FAILURE_EXIT_STATUS) == (2, 1)
    failures = {name for name, cls in _exception_classes().items() if cls.exit_status == FAILURE_EXIT_STATUS}
    assert failures == {"llmrank_graph.errors.WorkFailedError", "llmrank_graph.centrality._kernels.ConvergenceError",
                        "llmrank_graph.centrality.cugraph_backend.GPUMemoryError",
                        "llmrank_graph.errors.WriteFailedError"}
    assert all(cls.exit_status == USAGE_EXIT_STATUS for cls in _exception_classes().values()
               if not issubclass(cls, WorkFailedError))
    # and the built-in each one also is, so that `except RuntimeError` keeps working
    assert issubclass(ConvergenceError, RuntimeError) and issubclass(GPUMemoryError, MemoryError)


def test_errors_that_used_to_be_bare_builtins(tmp_path):
    from llmrank_graph.centrality import CentralityResult
    from llmrank_graph.graph.streaming import safetensors_index

    with pytest.raises(MissingInputError, match="does not exist"):
        safetensors_index(tmp_path / "nope")
    with pytest.raises(MissingInputError, match="holds no .safetensors file"):
        safetensors_index(tmp_path)
    result = CentralityResult(np.ones(3) / 3, True, 1, "scipy")
    with pytest.raises(InvalidArgumentError, match="`graph` has"):
        result.to_frame(llmrank_graph.MLPGraph.from_edgelist(
            *_two_node_tables()))


def _two_node_tables():
    import pandas as pd

    nodes = pd.DataFrame({"vertex": [0, 1], "layer": [0, 0], "kind": ["hidden", "intermediate"], "index": [0, 0]})
    edges = pd.DataFrame({"src": [0], "dst": [1], "weight": [1.0]})
    return nodes, edges


def test_read_graph_of_a_missing_directory_is_an_input_error(tmp_path):
    with pytest.raises(MissingInputError, match="does not exist"):
        llmrank_graph.read_graph(tmp_path / "nope")
    (tmp_path / "g").mkdir()
    with pytest.raises(FileFormatError, match="meta.json is missing"):
        llmrank_graph.read_graph(tmp_path / "g")


def test_check_text_source_and_check_model_path_read_nothing_heavy(tmp_path):
    from llmrank_graph.data.texts import check_text_source
    from llmrank_graph.models.loading import check_model_path

    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n')
    assert check_text_source(tmp_path / "a.txt") == "txt"
    assert check_text_source(str(tmp_path / "a.jsonl")) == "jsonl"
    with pytest.raises(MissingInputError, match="`--texts` file .* is not a file"):
        (tmp_path / "dir.txt").mkdir()
        check_text_source(tmp_path / "dir.txt", arg="--texts")
    with pytest.raises(MissingInputError, match="does not exist"):
        check_text_source("~/no/such/corpus-llmrank")
    with pytest.raises(MissingInputError, match="`--model`"):
        check_model_path(tmp_path / "nope", arg="--model")
