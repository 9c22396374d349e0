"""Shared fixtures: tiny random Hugging Face models, the real default model, and markers.

Tests marked ``slow`` run only with ``--run-slow``; tests marked ``gpu`` run only when CUDA
is available.
"""

from __future__ import annotations

import pytest
import torch


def pytest_addoption(parser):
    parser.addoption(
        "--run-slow", action="store_true", default=False,
        help="run tests marked slow (they load the real embedded model)",
    )


def pytest_configure(config):
    # Also declared in pyproject.toml; repeated so the markers exist whatever the rootdir.
    config.addinivalue_line("markers", "slow: loads the real embedded model or runs long")
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped without one)")
    config.addinivalue_line("markers", "browser: drives headless Chromium with Playwright (skipped without them)")


@pytest.fixture(autouse=True)
def _evaluation_cache_in_tmp(tmp_path_factory, monkeypatch):
    """Keep the tests' cached dense perplexities out of the user's cache directory.

    The models stay where they are (the real model's converted weights are reused), but the
    evaluation cache of ``prune`` (:mod:`llmrank_graph.data.cache`) is a fresh directory per test.
    """
    from llmrank_graph.data import cache

    evaluations = tmp_path_factory.mktemp("evaluations")
    monkeypatch.setattr(cache, "cache_dir", lambda: evaluations)


def chromium_executable() -> str | None:
    """The system Chromium: $LLMRANK_GRAPH_CHROMIUM, else `chromium` or `chromium-browser` on PATH."""
    import os
    import shutil

    return os.environ.get("LLMRANK_GRAPH_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _browser_missing() -> str | None:
    """Why the browser tests cannot run here (None when they can)."""
    import importlib.util

    if importlib.util.find_spec("playwright") is None:
        return "needs Playwright: pip install 'llmrank-graph[browser]'"
    if chromium_executable() is None:
        return ("needs Chromium from the system packages (apt-get install chromium), or its path in "
                "LLMRANK_GRAPH_CHROMIUM")
    return None


def pytest_collection_modifyitems(config, items):
    skip_slow = pytest.mark.skip(reason="slow test: pass --run-slow to run it")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    run_slow = config.getoption("--run-slow")
    has_gpu = torch.cuda.is_available()
    no_browser = _browser_missing() if any("browser" in item.keywords for item in items) else None
    for item in items:
        if "browser" in item.keywords and no_browser:
            item.add_marker(pytest.mark.skip(reason=f"browser test: {no_browser}"))
        if "slow" in item.keywords and not run_slow:
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip_gpu)


@pytest.fixture
def tiny_llama():
    """A random 3-layer LlamaForCausalLM (d=16, m=24, vocab 128) in eval mode."""
    from _tiny import tiny_llama as make

    return make(seed=0, layers=3, d=16, m=24, vocab=128)


@pytest.fixture
def tiny_gpt2():
    """A random 2-layer GPT2LMHeadModel (d=16, vocab 128) in eval mode."""
    from _tiny import tiny_gpt2 as make

    return make(seed=0, layers=2, d=16, vocab=128)


@pytest.fixture(scope="session")
def real_model():
    """(model, tokenizer) of the embedded default model, loaded once per session (slow)."""
    from llmrank_graph.models.loading import load_model

    return load_model()
