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


def pytest_collection_modifyitems(config, items):
    skip_slow = pytest.mark.skip(reason="slow test: pass --run-slow to run it")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    run_slow = config.getoption("--run-slow")
    has_gpu = torch.cuda.is_available()
    for item in items:
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
    from llmrank_graph.models import load_model

    return load_model()
