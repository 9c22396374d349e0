"""`llmrank-graph prune` end to end: this tree against a baseline commit, interleaved, stage by stage.

Runs the README's first command with its defaults (``llmrank-graph prune --out DIR --overwrite``,
the embedded SmolLM2-135M-Instruct) as a fresh process, for this tree and for the baseline
commit (default 8835c2c, the commit before issue 17's first change), in one run:

1. this tree with a *cold* evaluation cache (no cached dense perplexity: it computes and
   stores it);
2. ``--rounds`` rounds, each running the baseline and this tree with the now *warm* cache
   (the order alternates from round to round, so a drift of the machine's load does not
   favour one side).

Each run prints its wall time (the whole process: imports, load, calibration, pruning,
evaluation, save), the 1-minute load average before and after it, and the stage times the
command printed; the summary gives the median wall time of each side, their ratio (this tree
over the baseline; the target is <= 0.75 with a warm cache), and each stage side by side.

Both sides use the same Python environment: the baseline is checked out with
``git worktree add --detach /tmp/base-<commit> <commit>`` (once; the working tree and index of
this checkout are not touched; remove it afterwards with ``git worktree remove``) and imported
through ``PYTHONPATH``, which the child process checks. Both read the converted model from a
temporary cache directory ($LLMRANK_GRAPH_CACHE) that links to the real one's model entries, so
the evaluation cache starts empty and the user's cache is left alone. Both get the same
environment (a set OMP_NUM_THREADS reaches both: this tree honours it, torch does for the
baseline).

    python benchmarks/bench_prune_e2e.py                                   # the full default command
    python benchmarks/bench_prune_e2e.py -- --n-samples 4 --eval-samples 2 # smaller, to try it out

Arguments after ``--`` are given to both sides' ``prune``. The full default run takes
about 5 x 2.5 minutes on a 2-core CPU with --rounds 2.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from llmrank_graph.models.loading import cache_dir  # noqa: E402

#: The child process: prune through the package found first on PYTHONPATH, which must be ``root``.
CHILD = """
import sys
import llmrank_graph
from pathlib import Path
root = Path(sys.argv[1]).resolve()
if root not in Path(llmrank_graph.__file__).resolve().parents:
    sys.exit(f"imported {llmrank_graph.__file__}, not the tree at {root}")
from llmrank_graph.cli import main
sys.exit(main(sys.argv[2:]))
"""


def baseline_tree(commit: str, where: Path) -> Path:
    """A worktree of ``commit`` at ``where`` (made once with ``git worktree add --detach``)."""
    if not (where / "llmrank_graph").is_dir():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(where), commit], check=True,
                       stdout=subprocess.DEVNULL)
    return where


def linked_cache(tmp: Path) -> Path:
    """A cache directory whose model entries link to the real cache's, without its evaluations."""
    real, cache = cache_dir(), tmp / "cache"
    cache.mkdir()
    if real.is_dir():
        for entry in real.iterdir():
            if entry.is_dir() and entry.name != "evaluations" and not entry.name.startswith("."):
                (cache / entry.name).symlink_to(entry.resolve(), target_is_directory=True)
    return cache


def run_prune(root: Path, out: Path, cache: Path, extra: list[str]) -> dict:
    """One ``prune`` process of the tree at ``root``: its wall time, load averages, stage times and table."""
    env = {**os.environ, "PYTHONPATH": str(root), "LLMRANK_GRAPH_CACHE": str(cache), "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "-c", CHILD, str(root), "prune", "--out", str(out), "--overwrite", *extra]
    load = os.getloadavg()[0]
    t = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=out.parent, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        sys.exit(f"prune failed in {root} (exit {done.returncode}):\n{done.stderr[-3000:]}")
    text = done.stdout
    stages = re.search(r"^stage times: (.*)$", text, re.M)
    times = {k: float(v) for k, v in re.findall(r"([^,]+?) ([0-9.]+) s(?:,|$)", stages.group(1))} if stages else {}
    rows = [line for line in text.splitlines() if line.startswith(("perplexity", "tokens/s"))]
    return {"wall": wall, "load": (load, os.getloadavg()[0]), "stages": {k.strip(): v for k, v in times.items()},
            "rows": rows}


def show(label: str, r: dict) -> None:
    print(f"{label:26} wall {r['wall']:6.1f} s   load {r['load'][0]:.2f} -> {r['load'][1]:.2f}", flush=True)
    print("    stages: " + ", ".join(f"{k} {v:.1f}" for k, v in r["stages"].items()))
    for row in r["rows"]:
        print("    " + row)


def summary(runs: dict[str, list[dict]]) -> None:
    base, warm, cold = runs["baseline"], runs["current (warm cache)"], runs["current (cold cache)"]
    wb, ww, wc = (statistics.median(r["wall"] for r in rs) for rs in (base, warm, cold))
    print(f"\nwall time, median of {len(base)} interleaved round(s): baseline {wb:.1f} s, current {ww:.1f} s with a "
          f"warm cache, {wc:.1f} s with a cold one (1 run)")
    print(f"ratio current/baseline: {ww / wb:.3f} (warm cache), {wc / wb:.3f} (cold cache); target <= 0.75 warm")
    names = list(dict.fromkeys(k for rs in (base, cold, warm) for r in rs for k in r["stages"]))
    print(f"\n{'stage (median s)':44}{'baseline':>10}{'cold':>10}{'warm':>10}")
    for name in names:
        cells = []
        for rs in (base, cold, warm):
            values = [r["stages"][name] for r in rs if name in r["stages"]]
            cells.append(f"{statistics.median(values):10.1f}" if values else f"{'-':>10}")
        print(f"{name:44}{''.join(cells)}")
    print(f"{'whole process (wall)':44}{wb:10.1f}{wc:10.1f}{ww:10.1f}")


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds of baseline and warm runs (%(default)s)")
    ap.add_argument("--baseline", default="8835c2c", help="baseline commit (default %(default)s)")
    ap.add_argument("--worktree", default=None, help="where its worktree is (default /tmp/base-<commit>)")
    args = ap.parse_args(argv)
    base = baseline_tree(args.baseline, Path(args.worktree or f"/tmp/base-{args.baseline}"))
    print(f"# python benchmarks/bench_prune_e2e.py --rounds {args.rounds} --baseline {args.baseline}"
          + (f" -- {' '.join(extra)}" if extra else ""))
    print(f"# prune --out DIR --overwrite {' '.join(extra)}; {os.cpu_count()} CPUs, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', '(unset)')}; baseline {args.baseline} at {base}; current {REPO}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-prune-"))
    try:
        cache, out = linked_cache(tmp), tmp / "pruned"
        runs = {"baseline": [], "current (warm cache)": [], "current (cold cache)": []}
        r = run_prune(REPO, out, cache, extra)
        runs["current (cold cache)"].append(r)
        show("current (cold cache)", r)
        for i in range(args.rounds):
            order = [("baseline", base), ("current (warm cache)", REPO)]
            for label, root in (order if i % 2 == 0 else order[::-1]):
                r = run_prune(root, out, cache, extra)
                runs[label].append(r)
                show(f"round {i + 1}: {label}", r)
        summary(runs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
