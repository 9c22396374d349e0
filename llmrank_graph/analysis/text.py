"""The readable text of an inspect report (what ``llmrank-graph inspect`` prints).

:func:`render_text` joins one section per table of the report; each section is a function of
the report that returns its lines (none when the report has no such table).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .correlations import CORRELATIONS, pair_matrix

__all__ = ["render_text", "fmt"]

_CELL = 26  # width of one "median [5%, 95%]" cell of the per-layer table


def fmt(x) -> str:
    """A number in 3 significant digits (scientific from 1e4), ``'nan'`` for None and non-finite.

    >>> fmt(0.123456), fmt(123456.0), fmt(None), fmt(7)
    ('0.123', '1.235e+05', 'nan', '7')
    """
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "nan"
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.3e}"
    return str(x)


def _indent(text: str, pad: str = "  ") -> str:
    return "\n".join(pad + line for line in text.splitlines())


def _wrap(items: list[str], width: int, pad: str) -> list[str]:
    lines, cur = [], pad
    for it in items:
        if len(cur) + len(it) + 2 > width and cur.strip():
            lines.append(cur.rstrip())
            cur = pad
        cur += it + "  "
    if cur.strip():
        lines.append(cur.rstrip())
    return lines


def _graph_lines(rep) -> list[str]:
    info = rep.info
    opts = ", ".join(f"{k}={info[k]!r}" for k in ("mode", "gate", "residual", "weighting", "keep", "attention")
                     if k in info)
    out = [f"graph: {info.get('model')} ({opts or 'built from an edge list'})",
           f"  {info['n_nodes']:,} nodes, {info['n_edges']:,} edges, {info['n_partitions']} partitions, "
           f"{info['n_blocks']} blocks, {info['n_layers']} layers; block density {info['block_density']:.3g}, "
           f"density {info['density']:.3g}" + ("; streamed" if info.get("streamed") else "")]
    sizes = rep.partitions.groupby(["kind", "size"]).size()
    out.append("  partitions: " + "; ".join(f"{c} {kind} of {size:,}" for (kind, size), c in sizes.items()))
    if info.get("stored_scores"):
        out.append("  stored scores: " + ", ".join(info["stored_scores"]))
    return out + [""]


def _cell(sel: pd.DataFrame) -> str:
    if sel.empty:
        return ""
    r = sel.iloc[0]
    return f"{fmt(r['q0.5'])} [{fmt(r['q0.05'])}, {fmt(r['q0.95'])}]" if "q0.5" in r else ""


def _layer_lines(rep) -> list[str]:
    st = rep.layer_stats
    if not len(st):
        return []
    out = ["per layer (median [5%, 95%]):",
           f"  {'layer':>5}  {'weight up':>{_CELL}}  {'weight down':>{_CELL}}  {'I in-strength':>{_CELL}}  "
           f"{'I out-strength':>{_CELL}}"]
    for layer in sorted(st.layer.unique()):
        s = st[st.layer == layer]
        w = s[s.quantity == "weight"]
        up = w[w.of.str.contains("->I")]
        down = w[w.of.str.startswith("I")]
        si = s[(s.quantity == "in_strength") & (s.kind == "intermediate")]
        so = s[(s.quantity == "out_strength") & (s.kind == "intermediate")]
        if up.empty and down.empty and si.empty:
            continue
        out.append(f"  {layer:>5}  {_cell(up):>{_CELL}}  {_cell(down):>{_CELL}}  {_cell(si):>{_CELL}}  "
                   f"{_cell(so):>{_CELL}}")
    return out + [""]


def _score_lines(rep) -> list[str]:
    out = ["scores: " + ", ".join(f"{k} ({v})" for k, v in rep.sources.items())]
    out += [f"  note: {note}" for note in rep.notes]
    out.append("")
    tn = rep.top_neurons
    tn = tn[~tn.score.map(lambda nm: rep.sources.get(nm, "").startswith("baseline"))]  # CSV/JSON have all
    if len(tn):
        out.append(f"top {int(tn['rank'].max())} intermediate neurons per layer (index), per centrality:")
        for name, g in tn.groupby("score", sort=False):
            out.append(f"  {name}:")
            for layer, gl in g.groupby("layer"):
                out.append(f"    L{layer:<3} " + " ".join(str(i) for i in gl.sort_values("rank")["index"]))
        out.append("")
    return out


def _matrix_text(m: pd.DataFrame, short: dict[str, str]) -> str:
    m = m.rename(index=short, columns=short)
    return _indent(m.to_string(float_format=lambda x: f"{x:.3f}"))


def _comparison_lines(rep) -> list[str]:
    """The key of the matrices, the rank correlations and the overlap of the pruned sets."""
    names = list(rep.sources)
    short = {nm: f"[{i}]" for i, nm in enumerate(names, 1)}  # matrix labels; the key is printed once
    corr, ov = rep.correlations, rep.overlap
    out = []
    if len(corr) or len(ov):
        out += ["key: " + "; ".join(f"{short[nm]} {nm}" for nm in names), ""]
    if len(corr):
        for method in CORRELATIONS:
            if method not in corr.columns:
                continue
            out.append(f"{method} rank correlation, all layers (per-layer normalised scores):")
            out += [_matrix_text(pair_matrix(corr[corr.scope == "all"], names, method), short), ""]
        per = corr[corr.scope == "layer"]
        if len(per):
            out.append("spearman per layer: median [min, max] over layers")
            for (a, b), g in per.groupby(["a", "b"], sort=False):
                v = g["spearman"].to_numpy(dtype=float)
                out.append(f"  {a} ~ {b}: {fmt(float(np.nanmedian(v)))} [{fmt(float(np.nanmin(v)))}, "
                           f"{fmt(float(np.nanmax(v)))}]" if np.isfinite(v).any() else f"  {a} ~ {b}: nan")
            out.append("")
    if len(ov):
        out.append(f"Jaccard overlap of the neurons pruned at amount={rep.amount:g} (local allocation), all layers:")
        out += [_matrix_text(pair_matrix(ov[ov.scope == "all"], names, "jaccard"), short), ""]
    return out


def _mass_lines(rep, width: int) -> list[str]:
    if not len(rep.mass):
        return []
    out = []
    for name, g in rep.mass.groupby("score", sort=False):
        kinds = ["intermediate", "head", "hidden"] if (g.kind == "head").any() else ["intermediate", "hidden"]
        out.append(f"{name}: share of the mass per layer ({' / '.join(kinds)} partitions)")
        top = g.sort_values("share", ascending=False).head(5).itertuples()
        out.append("  " + ", ".join(f"{k} {g[g.kind == k].share.sum():.3f}" for k in kinds) + " of the mass; "
                   "top partitions: " + ", ".join(f"{r.name} {r.share:.3f}" for r in top))
        lines = []
        for layer, gl in g.groupby("layer"):
            shares = [gl[gl.kind == k].share for k in kinds]
            lines.append(f"L{layer} " + "/".join(f"{s.sum():.3f}" if len(s) else "-" for s in shares))
        out += _wrap(lines, width, "  ") + [""]
    return out


def _path_lines(rep) -> list[str]:
    if rep.paths is None:
        return []
    out = ["heaviest paths (product of w(u,v)/s(u)):"]
    parts = rep.partitions
    # A graph with heads has two hidden partitions per layer (R{l}, H{l}): name hops by their partition.
    stops = np.cumsum(parts["size"].to_numpy()) if (parts.kind == "head").any() else None
    for r in rep.paths.itertuples(index=False):
        if stops is None:
            hops = " -> ".join(f"{'H' if kind == 'hidden' else 'I'}{layer}:{idx}" for layer, kind, idx in r.path)
        else:
            at = np.searchsorted(stops, r.vertices, side="right")
            hops = " -> ".join(f"{parts.name.iat[i]}:{idx}" for i, (_, _, idx) in zip(at, r.path))
        out.append(f"  #{r.rank} score {r.score:.4g} ({r.length} edges): {hops}")
    if rep.paths.empty:
        out.append("  (no path with a positive score)")
    return out + [""]


def render_text(rep, width: int = 100) -> str:
    """The text of an :class:`~llmrank_graph.analysis.inspect.InspectReport` (the mass lines wrap at ``width``)."""
    out = [*_graph_lines(rep), *_layer_lines(rep), *_score_lines(rep), *_comparison_lines(rep),
           *_mass_lines(rep, width), *_path_lines(rep)]
    return "\n".join(out).rstrip() + "\n"
