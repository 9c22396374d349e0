"""PageRank backends side by side on whole-MLP graphs of increasing size.

Graphs (chained, gate='up', |W| edge weights, uniform teleport, alpha 0.85):

- ``tiny``: 4 layers, d=64, m=256 (random weights);
- ``SmolLM2-135M``: the embedded model (30 layers, d=576, m=1536; 53M edges);
- ``1B-shaped``: Llama-3.2-1B's MLP shapes (16 layers, d=2048, m=8192; 537M edges);
- ``7B-shaped``: Llama-2-7B's (32 layers, d=4096, m=11008; 2.9B edges).

The tiny and the synthetic graphs are random bf16 weights written as Llama-style safetensors
shards (one per layer) to a temporary directory and streamed from there
(:func:`llmrank_graph.export_graph_from_safetensors`: one layer in memory at a time).

Backends: ``sweep`` (the exact DAG solver), ``scipy`` (power iteration on CSR, cold = edge
list + CSR + iterations, warm = iterations), ``networkx`` (``nx.pagerank`` on an
``nx.DiGraph``, small graphs only), and ``cupy`` / ``cugraph`` when installed. Each row gives
the time, edges per second, peak resident memory above the start (sampled), the ratio of the
time to the sweep's (cold to cold, warm to warm) and the L1 distance of the scores to the
sweep's. Edge-list backends are skipped above ``--max-edgelist`` edges (they need ~20 bytes
per edge and more for CSR), networkx above ``--max-networkx``; the row says so.

    python benchmarks/centrality.py            # every size, the synthetic ones complete (writes ~7 GB)
    python benchmarks/centrality.py --quick    # synthetic graphs cut to 2 layers: < 2 min on 2 cores
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from _memory import peak_memory  # noqa: E402

import llmrank_graph as lg  # noqa: E402
from llmrank_graph.centrality.backends import backends  # noqa: E402

ALPHA, TOL = 0.85, 1e-10
# name: (layers, d, m); None = the embedded model
SHAPES = {"tiny": (4, 64, 256), "SmolLM2-135M": None, "1B-shaped": (16, 2048, 8192), "7B-shaped": (32, 4096, 11008)}


def write_shards(path: Path, layers: int, d: int, m: int, seed: int = 0) -> int:
    """Llama-style shards (one per layer, up_proj and down_proj in bf16) and config.json; returns bytes."""
    from safetensors.torch import save_file

    path.mkdir(parents=True)
    g = torch.Generator().manual_seed(seed)
    weight_map, total = {}, 0
    for l in range(layers):
        t = {f"model.layers.{l}.mlp.up_proj.weight":
             torch.empty(m, d, dtype=torch.bfloat16).normal_(0, 0.02, generator=g),
             f"model.layers.{l}.mlp.down_proj.weight":
             torch.empty(d, m, dtype=torch.bfloat16).normal_(0, 0.02, generator=g)}
        name = f"model-{l + 1:05d}-of-{layers:05d}.safetensors"
        save_file(t, str(path / name))
        weight_map.update(dict.fromkeys(t, name))
        total += sum(x.numel() * 2 for x in t.values())
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": layers,
                                                  "hidden_size": d, "intermediate_size": m}))
    return total


def measure(fn):
    """(result, seconds, peak extra RSS bytes)."""
    gc.collect()
    with peak_memory() as mem:
        t = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t
    return out, dt, mem["peak_extra"]


def networkx_pagerank(graph):
    import networkx as nx

    edges = graph.edges
    g = nx.DiGraph()
    g.add_nodes_from(range(graph.n_nodes))
    g.add_weighted_edges_from(zip(edges["src"].to_numpy().tolist(), edges["dst"].to_numpy().tolist(),
                                  edges["weight"].to_numpy().tolist()))
    pr = nx.pagerank(g, alpha=ALPHA, tol=TOL, weight="weight")
    return np.array([pr[v] for v in range(graph.n_nodes)])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="synthetic graphs cut to --layers layers")
    ap.add_argument("--layers", type=int, default=2, help="layers of the synthetic graphs in --quick (default 2)")
    ap.add_argument("--sizes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    ap.add_argument("--max-edgelist", type=float, default=6e7, help="edge-list backends up to this many edges")
    ap.add_argument("--max-networkx", type=float, default=2e6, help="networkx up to this many edges")
    ap.add_argument("--device", default=None, help="the sweep's device, e.g. cuda (default: cpu)")
    ap.add_argument("--tmp", default=None, help="where to write the shards (default: the system temp dir)")
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    t_start = time.perf_counter()
    avail = {b["name"]: b for b in backends()}
    for name in ("cupy", "cugraph"):
        if not avail[name]["available"]:
            print(f"{name}: not run ({avail[name]['reason']})")
    print(f"torch threads {torch.get_num_threads()}; alpha {ALPHA}, tol {TOL:g}, uniform teleport, forward\n")
    header = (f"{'graph':<28}{'edges':>14}  {'backend':<28}{'seconds':>9}{'M edges/s':>11}{'peak RSS':>10}"
              f"{'/ sweep':>9}{'L1 vs sweep':>13}")
    print(header)
    print("-" * len(header))
    tmp = Path(tempfile.mkdtemp(prefix="llmrank-centrality-", dir=args.tmp))
    try:
        # The first sweep in a process compiles its kernels: paid once, kept out of the rows.
        write_shards(tmp / "warmup", 2, 8, 16)
        _, t, _ = measure(lambda: lg.pagerank(lg.export_graph_from_safetensors(tmp / "warmup"), backend="sweep",
                                              device=args.device))
        print(f"(first sweep in this process, a 2-layer toy graph: {t:.1f} s, kernel compilation included)")
        for size in args.sizes:
            shape = SHAPES[size]
            note = ""
            if shape is None:
                model, _ = lg.load_model()
                graph = lg.export_graph(model)
                label = size
            else:
                layers, d, m = shape
                if args.quick and size != "tiny" and layers > args.layers:
                    note = f" ({args.layers} of {layers} layers)"
                    layers = args.layers
                t = time.perf_counter()
                nbytes = write_shards(tmp / size, layers, d, m)
                print(f"{'':<28}{'':>14}  (wrote {nbytes / 2**20:,.0f} MiB of bf16 shards in "
                      f"{time.perf_counter() - t:.1f} s)")
                graph = lg.export_graph_from_safetensors(tmp / size)
                label = size + note
            n_edges = graph.n_edges

            def row(backend, seconds, peak, ref_seconds, l1, label=label, n_edges=n_edges):
                ratio = "" if ref_seconds is None else f"{seconds / ref_seconds:8.1f}x"
                l1s = "" if l1 is None else f"{l1:.1e}"
                print(f"{label:<28}{n_edges:>14,}  {backend:<28}{seconds:>9.3f}{n_edges / seconds / 1e6:>11.1f}"
                      f"{peak / 2**20:>6.0f} MiB{ratio:>9}{l1s:>13}", flush=True)

            sweep = lambda graph=graph: lg.pagerank(graph, alpha=ALPHA, backend="sweep", tol=TOL, device=args.device)  # noqa: E731
            ref, t_cold, p = measure(sweep)
            row("sweep, cold", t_cold, p, None, None)
            _, t_warm, p = measure(sweep)
            row("sweep, warm", t_warm, p, None, None)
            if n_edges > args.max_edgelist:
                print(f"{label:<28}{n_edges:>14,}  edge-list backends skipped: more than --max-edgelist "
                      f"{args.max_edgelist:.0e} edges (~{n_edges * 20 / 2**30:.0f} GiB for the list alone)")
            else:
                for backend in ("scipy", "cupy", "cugraph"):
                    if not avail[backend]["available"]:
                        continue
                    run = lambda graph=graph, backend=backend: lg.pagerank(graph, alpha=ALPHA, backend=backend, tol=TOL)  # noqa: E731
                    res, t, p = measure(run)
                    row(f"{backend}, cold ({res.iterations} it)", t, p, t_cold, np.abs(res.scores - ref.scores).sum())
                    res, t, p = measure(run)
                    row(f"{backend}, warm", t, p, t_warm, np.abs(res.scores - ref.scores).sum())
                if n_edges <= args.max_networkx:
                    scores, t, p = measure(lambda graph=graph: networkx_pagerank(graph))
                    row("networkx (incl. DiGraph build)", t, p, t_cold, np.abs(scores - ref.scores).sum())
                else:
                    print(f"{label:<28}{n_edges:>14,}  networkx skipped: more than --max-networkx "
                          f"{args.max_networkx:.0e} edges")
            if note:
                full = SHAPES[size][0]
                print(f"{'':<28}{'':>14}  whole {size} ({full} layers), scaled from {layers}: sweep cold "
                      f"~{t_cold * full / layers:.1f} s, warm ~{t_warm * full / layers:.1f} s")
            graph = None  # free the graph before the next size
            gc.collect()
            if shape is not None:
                shutil.rmtree(tmp / size)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
