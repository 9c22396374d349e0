"""`prune --threads`, how the default thread count is found, and how the speed ratio is reported.

References: numpy's median and percentiles for the ratio's summary; psutil's count of physical
cores (where installed) for the default; what torch and the kernel options hold while the
command runs.
"""

import functools
import re

import numpy as np
import pytest
import torch
from _tiny import save_tiny_model, write_corpus

import llmrank_graph.cli._common as common
import llmrank_graph.cli.prune as prune_command
from llmrank_graph.cli import main
from llmrank_graph.data.evaluation import summarize_ratios
from llmrank_graph.kernels import current_options


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("threads")
    return save_tiny_model(root / "model", m=16), write_corpus(root / "corpus.txt")


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMRANK_GRAPH_CACHE", str(tmp_path / "cache"))


def _prune(files, out, *extra):
    model_dir, text_file = files
    return main(["prune", "--model", str(model_dir), "--out", str(out), "--overwrite", "--amount", "0.25",
                 "--texts", str(text_file), "--eval-texts", str(text_file), "--n-samples", "2", "--seq-len", "16",
                 "--eval-samples", "2", "--method", "magnitude", "--compensate", "none", *extra])


def _spy_threads(monkeypatch) -> list:
    """(torch's threads, the kernels' threads) while prune_model runs."""
    seen, real = [], prune_command.prune_model

    @functools.wraps(real)  # the parser reads prune_model's defaults from its signature
    def spy(*args, **kwargs):
        seen.append((torch.get_num_threads(), current_options().threads))
        return real(*args, **kwargs)

    monkeypatch.setattr(prune_command, "prune_model", spy)
    return seen


@pytest.mark.parametrize("threads", [1, 3])
def test_threads_set_torch_and_the_kernels_for_the_run_only(files, tmp_path, capsys, monkeypatch, threads):
    seen = _spy_threads(monkeypatch)
    before = torch.get_num_threads()
    assert _prune(files, tmp_path / "p", "--threads", str(threads)) == 0
    assert seen == [(threads, threads)]
    assert torch.get_num_threads() == before and current_options().threads is None
    out = capsys.readouterr().out
    assert f" threads={threads} " in out and f"tokens, {threads} thread{'s' if threads > 1 else ''} (--threads);" in out


def test_default_threads_are_the_physical_cores_unless_omp_num_threads(files, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(common, "physical_cores", lambda: 2)
    seen = _spy_threads(monkeypatch)
    assert _prune(files, tmp_path / "p") == 0
    assert "tokens, 2 threads (physical cores);" in capsys.readouterr().out
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert _prune(files, tmp_path / "p") == 0
    assert "tokens, 1 thread (OMP_NUM_THREADS);" in capsys.readouterr().out
    assert seen == [(2, 2), (1, 1)]


@pytest.mark.parametrize("value", ["0", "-2"])
def test_bad_threads_are_refused_before_loading(files, tmp_path, capsys, value):
    assert _prune(files, tmp_path / "p", "--threads", value) == 2
    err = capsys.readouterr().err
    assert "--threads" in err and "positive int" in err


def test_physical_cores_follow_the_affinity_and_the_quota(monkeypatch):
    monkeypatch.setattr(common, "_cgroup_cpus", lambda: None)
    psutil = pytest.importorskip("psutil")
    import os

    if len(os.sched_getaffinity(0)) == os.cpu_count():  # psutil counts the machine's, not the affinity's
        assert common.physical_cores() == psutil.cpu_count(logical=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert common.physical_cores() == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(os.cpu_count())))
    every = common.physical_cores()
    monkeypatch.setattr(common, "_cgroup_cpus", lambda: 0.5)  # half a CPU: still one thread
    assert common.physical_cores() == 1
    monkeypatch.setattr(common, "_cgroup_cpus", lambda: every + 7.0)  # a quota above the cores changes nothing
    assert common.physical_cores() == every


def test_cgroup_quota_files(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert common._quota_v2(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert common._quota_v2(tmp_path) is None
    (tmp_path / "cpu.cfs_quota_us").write_text("300000\n")
    (tmp_path / "cpu.cfs_period_us").write_text("100000\n")
    assert common._quota_v1(tmp_path) == 3.0
    (tmp_path / "cpu.cfs_quota_us").write_text("-1\n")
    assert common._quota_v1(tmp_path) is None


def test_ratio_summary_is_the_median_and_half_the_interquartile_range():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 8, 13):
        r = rng.normal(1.1, 0.05, n)
        s = summarize_ratios(list(r))
        q1, q3 = np.percentile(r, [25, 75])
        assert s.median == pytest.approx(np.median(r), abs=1e-15) and s.rounds == n
        assert s.spread == pytest.approx((q3 - q1) / 2, abs=1e-15)
        assert str(s) == f"{np.median(r):.2f}x ± {(q3 - q1) / 2:.2f}"
        assert s.within_noise == (n == 1 or (q3 - q1) / 2 >= abs(np.median(r) - 1))


@pytest.mark.parametrize("ratios, noisy", [([0.9, 1.2, 1.0, 1.1, 0.95, 1.05], True),
                                           ([1.08, 1.10, 1.12, 1.11, 1.09, 1.10], False),
                                           ([0.66, 0.64, 0.67, 0.65], False)])
def test_the_speed_ratio_is_printed_with_its_spread_and_its_meaning(files, tmp_path, capsys, monkeypatch, ratios,
                                                                    noisy):
    real = prune_command.compare_throughput

    def measured(*args, **kwargs):
        return {**real(*args, **kwargs), "ratios": ratios}

    monkeypatch.setattr(prune_command, "compare_throughput", measured)
    assert _prune(files, tmp_path / "p") == 0
    out = capsys.readouterr().out
    row = re.search(r"^tokens/s .*$", out, re.M).group(0)
    assert row.endswith(str(summarize_ratios(ratios)))
    assert ("within the noise of 6 rounds: no speed-up can be claimed" in out) == noisy
    assert ("ran slower than the dense one" in out) == (ratios[0] < 0.7)
