"""The report: PNGs and one self-contained HTML page from a tiny sweep, checked in a real browser."""

import base64
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file
from scipy.stats import kendalltau, spearmanr
from test_experiments import model_dir, text_file, tiny_grid  # noqa: F401  (fixtures)

from llmrank_graph.experiments import report as rp
from llmrank_graph.experiments.report import rank_correlations, write_report
from llmrank_graph.experiments.runner import run_sweep

IMG = re.compile(r'<img src="data:image/png;base64,([^"]+)"')


@pytest.fixture(scope="module")
def reported(model_dir, text_file, tmp_path_factory):  # noqa: F811
    """A tiny sweep with saved scores, and its report: (results dir, html path)."""
    out = tmp_path_factory.mktemp("rep") / "results"
    grid = tiny_grid(model_dir, text_file, methods=["activation", "magnitude", "random"], params={"seed": [0]})
    run_sweep(grid, out)
    return out, write_report(out)


def test_report_writes_nonempty_pngs_and_one_page(reported):
    out, page = reported
    assert page == out / "report.html"
    pngs = sorted(out.glob("*.png"))
    assert {p.name for p in pngs} == {"quality.png", "layers.png", "scores.png", "correlations.png"}
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    text = page.read_text()
    embedded = [base64.b64decode(m) for m in IMG.findall(text)]
    # every PNG is embedded, byte for byte: the page needs no file beside it
    assert sorted(embedded) == sorted(p.read_bytes() for p in pngs)


def test_page_fetches_nothing(reported):
    _, page = reported
    text = page.read_text().lower()
    for needle in ("http://", "https://", "<script", "<link", "src=\"/", "url("):
        assert needle not in text


def test_best_method_in_bold_is_the_lowest_perplexity(reported):
    out, page = reported
    df = pd.read_csv(out / "results.csv")
    text = page.read_text()
    bold = re.findall(r'<b class="best">([^<]+)</b>', text)
    expected = [rp._fmt(g["perplexity"].min()) for _, g in df.groupby(["allocation", "amount"])]
    # one bold cell per (allocation, amount), unless two methods tie to the last digit
    assert sorted(set(expected)) == sorted(set(bold)) and len(bold) >= len(expected)


def test_best_table_bolds_the_best_at_each_amount():
    df = pd.DataFrame({
        "label": ["a", "a", "b", "b"], "amount": [0.1, 0.5, 0.1, 0.5], "status": ["complete"] * 4,
        "perplexity": [30.0, 400.0, 25.0, 900.0], "dense_perplexity": [20.0] * 4, "error": [None] * 4,
    })
    html = rp._best_table(df, "perplexity", "dense_perplexity", higher_is_better=False)
    assert re.findall(r'<b class="best">([^<]+)</b>', html) == ["400.0", "25.00"]
    html = rp._best_table(df, "perplexity", "dense_perplexity", higher_is_better=True)
    assert re.findall(r'<b class="best">([^<]+)</b>', html) == ["30.00", "900.0"]
    assert "dense model" in html


@pytest.mark.parametrize("values, scale", [([21.0, 25.0, 40.0], "linear"), ([21.0, 300.0, 9e4], "log")])
def test_log_axis_where_values_span_decades(values, scale):
    df = pd.DataFrame({"label": ["m"] * 3, "amount": [0.1, 0.3, 0.5], "status": ["complete"] * 3,
                       "perplexity": values, "dense_perplexity": [20.0] * 3, "allocation": ["local"] * 3,
                       "how": ["remove"] * 3, "mode": ["chained"] * 3})
    fig = rp._quality_figure(df, "perplexity", "dense_perplexity", "perplexity", {"m": "red"}, "t")
    ax = fig.axes[0]
    assert ax.get_yscale() == scale
    assert any(line.get_linestyle() == "--" and list(line.get_ydata()) == [20.0, 20.0] for line in ax.get_lines())


def test_rank_correlations_match_scipy(reported):
    out, _ = reported
    (corr,) = rank_correlations(out).values()  # one model
    labels = corr["labels"]
    assert labels == ["activation", "magnitude", "random seed=0"]
    for key in ("spearman", "kendall", "spearman_layer_median"):
        m = corr[key]
        assert np.allclose(m, m.T) and np.allclose(np.diag(m), 1) and (np.abs(m) <= 1).all()
    files = {}
    for p in (out / "runs").glob("*.json"):
        rec = json.loads(p.read_text())
        files[rec["config"]["method"]] = out / rec["files"]["scores"]
    a, m = load_file(str(files["activation"])), load_file(str(files["magnitude"]))
    keys = sorted(k for k in a if k.startswith("intermediate."))
    per_layer = [spearmanr(a[k].numpy(), m[k].numpy()).statistic for k in keys]
    assert corr["spearman_layer_median"][0, 1] == pytest.approx(np.median(per_layer), abs=1e-12)
    norm = lambda t: (t / t.abs().mean()).numpy()  # noqa: E731
    overall = kendalltau(np.concatenate([norm(a[k]) for k in keys]), np.concatenate([norm(m[k]) for k in keys]))
    assert corr["kendall"][0, 1] == pytest.approx(overall.statistic, abs=1e-12)


def test_report_into_another_directory_leaves_results_alone(reported, tmp_path):
    out, _ = reported
    before = {p.name for p in out.iterdir()}
    page = write_report(out, tmp_path / "elsewhere")
    assert page.parent == tmp_path / "elsewhere" and {p.name for p in out.iterdir()} == before
    with pytest.raises(FileExistsError, match="not a directory"):
        write_report(out, page)
    with pytest.raises(FileNotFoundError, match=r"'.*report.html' is not a directory; a sweep results directory"):
        write_report(page)


def test_report_of_an_empty_sweep_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a sweep results directory"):
        write_report(tmp_path)


def _corrupt(out, text):
    (out / "grid.json").write_text(text)


@pytest.mark.parametrize("case, args, status, message", [
    ("a file as DIR", lambda d, f: [str(f)], 2, "'{f}' is not a directory; a sweep results directory is expected"),
    ("grid.json not JSON", lambda d, f: _corrupt(d, '{"format": "llmrank_graph.sweep", "grids": [') or [str(d)], 2,
     "'{d}/grid.json' is not valid JSON: Expecting value: line 1"),
    ("grid.json not a grid", lambda d, f: _corrupt(d, "[]") or [str(d)], 2,
     "'{d}/grid.json' is not a sweep grid file (its format is None, not 'llmrank_graph.sweep')"),
    ("a file as --out", lambda d, f: [str(d), "--out", str(f)], 2, "`--out` '{f}' exists and is not a directory"),
])
def test_cli_report_refusals_name_the_file(reported, tmp_path, case, args, status, message):
    """`llmrank-graph report` as a process: each refusal names the path or option at fault, and writes nothing."""
    out = tmp_path / "results"
    shutil.copytree(reported[0], out)  # a real results directory, with runs
    for p in out.glob("*.png"):
        p.unlink()
    (tmp_path / "note.txt").write_text("not a directory")
    proc = subprocess.run([sys.executable, "-m", "llmrank_graph", "report", *args(out, tmp_path / "note.txt")],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == status, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: " + message.format(d=out, f=tmp_path / "note.txt")), proc.stderr
    assert "This is a bug" not in proc.stderr and not list(out.glob("*.png"))


@pytest.mark.browser
def test_page_renders_in_headless_chromium(reported):
    """Every image loads and every table renders, in a real browser, with the network refused."""
    from playwright.sync_api import sync_playwright

    from conftest import chromium_executable

    _, page_path = reported
    requests = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium_executable(),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.route("http*://**", lambda route: route.abort())  # offline: anything fetched would fail
            page.goto(page_path.as_uri())
            page.wait_for_load_state("load")
            images = page.eval_on_selector_all(
                "img",
                "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight, e.getBoundingClientRect().width])")
            tables = page.eval_on_selector_all(
                "table", "els => els.map(t => [t.rows.length, t.getBoundingClientRect().height, t.innerText.length])")
            title = page.title()
        finally:
            browser.close()
    assert len(images) == 4
    for complete, width, height, shown in images:
        assert complete and width > 100 and height > 100 and shown > 100
    assert len(tables) >= 5
    for rows, height, chars in tables:
        assert rows >= 2 and height > 20 and chars > 10
    assert "sweep report" in title
    assert all(u.startswith(("file:", "data:")) for u in requests)
