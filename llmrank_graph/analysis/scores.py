"""Scores as arrays over the graph's nodes: score tables, pruning baselines, centralities by name.

Every analysis takes scores as a mapping ``name -> values`` (an array with one number per
node, a :class:`~llmrank_graph.CentralityResult`, or :class:`~llmrank_graph.NeuronScores`
for the intermediate neurons only) or as a list of names of score columns stored with the
graph; :func:`score_table` turns either into float64 arrays of one value per node (NaN where
a score says nothing, such as a baseline on the hidden nodes).

Centralities are computed by name from their entries in :mod:`llmrank_graph.centrality.registry`
(the library's defaults, the stored column name); the baselines come from the graph's blocks
when its export options keep them (:func:`available_baselines`), or from the model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from ..base.checks import fail, fail_type
from ..base.params import Boolean, validated
from ..centrality import CentralityResult
from ..centrality.registry import centrality_entry, centrality_names
from ..errors import InvalidArgumentError
from ..graph.export import export_options
from ..graph.mlpgraph import MLPGraph
from ..graph.scores import stored_scores
from ..scoring import score_neurons
from ..scoring.graph import PAGERANK_EXPORT
from .common import GRAPH, names_in, progress_bar

__all__ = ["CENTRALITIES", "DEFAULT_CENTRALITIES", "BASELINES", "score_table", "layer_values",
           "intermediate_by_layer", "available_baselines", "baseline_scores", "baseline_reasons",
           "baseline_unavailable", "graph_baselines",
           "centrality_scores", "compute_centralities", "scores_from_model", "pagerank_departures",
           "describe_departures"]

#: Centralities :func:`inspect_graph` can compute (the registry of :mod:`llmrank_graph.centrality`).
CENTRALITIES: tuple[str, ...] = centrality_names()
#: Computed by ``inspect`` unless told otherwise: the ones that run block by block at any scale.
DEFAULT_CENTRALITIES: tuple[str, ...] = ("pagerank", "katz", "strength")
#: Pruning baselines compared with the centralities (:mod:`llmrank_graph.scoring`).
BASELINES: tuple[str, ...] = ("magnitude", "activation", "wanda-sp")


# ---------------------------------------------------------------------------- score tables
def intermediate_by_layer(graph: MLPGraph) -> dict[int, Any]:
    """Layer -> the partition of its intermediate neurons."""
    return {p.layer: p for p in graph.intermediate_partitions()}


def _from_neuron_scores(graph: MLPGraph, name: str, intermediate: Mapping) -> np.ndarray:
    out = np.full(graph.n_nodes, np.nan)
    parts = intermediate_by_layer(graph)
    for layer, v in intermediate.items():
        p = parts.get(int(layer))
        t = np.asarray(torch.as_tensor(v).detach().cpu().double())
        if p is None or t.shape != (p.size,):
            raise InvalidArgumentError(f"`scores[{name!r}]` has {t.size} scores for layer {layer}, which the graph "
                                       f"has {'no' if p is None else p.size} intermediate neurons for")
        out[p.offset:p.stop] = t
    return out


def to_node_array(graph: MLPGraph, name: str, values) -> np.ndarray:
    """One score as a float64 array (n_nodes,); errors name it ``scores[name]``."""
    n = graph.n_nodes
    if isinstance(values, CentralityResult):
        values = values.scores
    intermediate = getattr(values, "intermediate", None)
    if isinstance(intermediate, Mapping):  # NeuronScores: intermediate neurons only
        return _from_neuron_scores(graph, name, intermediate)
    if torch.is_tensor(values):
        values = values.detach().cpu().numpy()
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise fail_type(f"scores[{name!r}]", f"an array of {n} numbers, a CentralityResult or NeuronScores",
                        values) from None
    if arr.shape != (n,):
        raise InvalidArgumentError(f"`scores[{name!r}]` must have one value per node: length {n}; got shape "
                                   f"{arr.shape}")
    return arr


def score_table(graph: MLPGraph, scores) -> dict[str, np.ndarray]:
    """Scores as ``name -> float64 array (n_nodes,)``, from a mapping or names of stored columns.

    >>> import llmrank_graph as lg
    >>> g = lg.graph.toy_graph()             # H0 -> I0 (2 neurons) -> H1
    >>> score_table(g, {"in": lg.strength(g)})["in"]
    array([0., 1., 2., 2.])
    """
    what = "a mapping of name -> scores, or a list of stored score names"
    if isinstance(scores, (str, bytes)):
        raise fail_type("scores", what, scores)
    if isinstance(scores, Mapping):
        table = {str(k): to_node_array(graph, str(k), v) for k, v in scores.items()}
    elif isinstance(scores, Iterable):
        table = {k: np.asarray(v, dtype=np.float64) for k, v in stored_scores(graph, list(scores)).items()}
    else:
        raise fail_type("scores", what, scores)
    if not table:
        raise fail("scores", "at least one score", scores)
    return table


def layer_values(graph: MLPGraph, table: dict[str, np.ndarray]) -> dict[int, dict[str, np.ndarray]]:
    """layer -> name -> scores of the layer's intermediate neurons."""
    return {layer: {k: v[p.offset:p.stop] for k, v in table.items()}
            for layer, p in sorted(intermediate_by_layer(graph).items())}


# ---------------------------------------------------------------------------- baselines
@validated({"graph": GRAPH})
def available_baselines(graph: MLPGraph) -> dict[str, str | None]:
    """Which baselines :func:`baseline_scores` can compute from this graph's blocks: name -> None or why not.

    ``activation`` needs node activations (a graph exported with calibration statistics);
    ``magnitude`` (L2 norm of the up row) needs plain ``|W|`` up edges (``weighting='abs'``,
    ``gate='up'``, no ``keep``); ``wanda-sp`` (``sum_i |W_down[i, j]| * ||x_j||``) needs the
    full down edges with ``weighting='abs'`` and activations, or ``weighting='abs_x_input'``.
    With the model at hand, :func:`inspect_graph` computes them with
    :func:`llmrank_graph.score_neurons` instead.
    """
    return baseline_reasons(graph)


def baseline_reasons(graph: MLPGraph) -> dict[str, str | None]:
    """:func:`available_baselines` of a checked graph."""
    opts = export_options(graph)
    out: dict[str, str | None] = {}
    act = None if graph.has_activation else "the graph has no node activations (export it with calibration stats)"
    out["activation"] = act
    if opts is None:
        why = "the graph records no export options (it was not exported from a model)"
        out["magnitude"] = out["wanda-sp"] = why
        return out
    if opts.keep is not None:
        why = f"the graph is sparsified (keep={opts.keep!r}): its blocks no longer hold every weight"
        out["magnitude"] = out["wanda-sp"] = why
        return out
    roles = {b.role for b in graph.blocks}
    out["magnitude"] = (None if opts.weighting == "abs" and "up" in roles else
                        f"the up edges are not plain |W_up| (weighting={opts.weighting!r}, gate={opts.gate!r})")
    if opts.weighting == "abs_x_input":
        out["wanda-sp"] = None
    elif opts.weighting == "abs":
        out["wanda-sp"] = act
    else:
        out["wanda-sp"] = f"the down edges are not |W_down| times a column scale (weighting={opts.weighting!r})"
    return out


@validated({"graph": GRAPH, "names": names_in(lambda: BASELINES, "baselines"), "progress": Boolean()})
def baseline_scores(graph: MLPGraph, names: Iterable[str] = BASELINES, *, progress: bool = False
                    ) -> dict[str, np.ndarray]:
    """Pruning baselines computed from the graph's blocks, as arrays (n_nodes,) (NaN on hidden nodes).

    The same numbers as :func:`llmrank_graph.score_neurons` with ``magnitude`` (which='up',
    ord=2), ``activation`` and ``wanda-sp``, for graphs whose export options keep them (see
    :func:`available_baselines`).

    Raises
    ------
    InvalidArgumentError
        An unknown name, or a baseline this graph cannot give (the message says why).
    """
    return graph_baselines(graph, names, baseline_reasons(graph), progress)


def baseline_unavailable(name: str, reason: str) -> InvalidArgumentError:
    """The error for a baseline the graph cannot give, with the ``reason`` (raise what it returns)."""
    return InvalidArgumentError(f"baseline {name!r} cannot be computed from this graph: {reason}; inspect the model "
                                "(--model) to compute it from the weights and calibration stats")


def graph_baselines(graph: MLPGraph, names: list[str], why: Mapping[str, str | None], progress: bool
                    ) -> dict[str, np.ndarray]:
    """:func:`baseline_scores` on checked names, given :func:`available_baselines`'s reasons ``why``."""
    for name in names:
        if why[name] is not None:
            raise baseline_unavailable(name, why[name])
    out = {name: np.full(graph.n_nodes, np.nan) for name in names}
    if "activation" in out:
        for p in graph.intermediate_partitions():
            out["activation"][p.offset:p.stop] = graph.activation[p.offset:p.stop]
    need = {"up"} if "magnitude" in out else set()
    need |= {"down"} if "wanda-sp" in out else set()
    weighting = export_options(graph).weighting if need else None
    for b in progress_bar([b for b in graph.blocks if b.role in need], progress, "baselines"):
        with b.loaded() as blk:
            if b.role == "up" and b.dst.kind == "intermediate":
                sq = np.zeros(b.dst.size)
                for r0, r1, c in blk.chunks(torch.float64, "cpu"):
                    sq[r0:r1] = (c * c).sum(1).numpy()
                out["magnitude"][b.dst.offset:b.dst.stop] = np.sqrt(sq)
            elif b.role == "down" and b.src.kind == "intermediate":
                s = blk.out_strength(torch.float64).cpu().numpy()
                if weighting == "abs":
                    s = s * graph.activation[b.src.offset:b.src.stop]
                out["wanda-sp"][b.src.offset:b.src.stop] = s
    return out


def scores_from_model(graph: MLPGraph, model, stats, names: list[str], explicit: bool, notes: list[str]
                      ) -> dict[str, np.ndarray]:
    """The baselines ``names`` from the model's weights (and ``stats``), with :func:`llmrank_graph.score_neurons`.

    Baselines that need calibration statistics are an error without them when ``explicit``,
    else left out with a line in ``notes``.
    """
    out = {}
    for name in names:
        needs = name in ("activation", "wanda-sp")
        if needs and stats is None:
            msg = f"baseline {name!r} needs calibration statistics (--calibrate)"
            if explicit:
                raise InvalidArgumentError(msg)
            notes.append(f"{msg}: left out")
            continue
        out[name] = to_node_array(graph, name, score_neurons(model, stats, name))
    return out


# ---------------------------------------------------------------------------- centralities
@validated({"graph": GRAPH, "names": names_in(centrality_names, "centralities"), "use_stored": Boolean(),
            "progress": Boolean()})
def centrality_scores(graph: MLPGraph, names: Iterable[str] = DEFAULT_CENTRALITIES, *, backend: str = "auto",
                      use_stored: bool = True, progress: bool = False) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Centralities with the library's defaults, named as stored columns; stored columns are reused.

    Parameters
    ----------
    names : iterable of str
        Centralities of :data:`CENTRALITIES`.
    backend : str
        Backend for the centralities computed here.
    use_stored : bool
        Take a centrality from the graph's stored columns when one of the same name
        (:func:`llmrank_graph.graph.storage.score_column_name`) is there, instead of computing it.

    Returns
    -------
    (dict, dict)
        ``column name -> scores (n_nodes,)`` and ``column name -> 'stored' | 'computed (backend)'``.

    Raises
    ------
    InvalidArgumentError
        An unknown centrality (the message lists the known ones).

    Example
    -------
    >>> import llmrank_graph as lg
    >>> g = lg.graph.toy_graph()             # H0 -> I0 (2 neurons) -> H1
    >>> scores, sources = centrality_scores(g, ["pagerank", "strength"], backend="scipy")
    >>> sources
    {'pagerank_reverse_a0.85': 'computed (scipy)', 'strength_in': 'computed (scipy)'}
    """
    return compute_centralities(graph, names, backend, use_stored, progress)


def compute_centralities(graph: MLPGraph, names: list[str], backend: str, use_stored: bool, progress: bool
                         ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """:func:`centrality_scores` on checked arguments: each centrality's registry entry computes it."""
    entries = [centrality_entry(name) for name in names]
    scores, sources = {}, {}
    for entry in progress_bar(entries, progress, "centralities", unit="centrality"):
        col, values, source = entry.scores(graph, backend=backend, use_stored=use_stored)
        scores[col] = values
        sources[col] = source
    return scores, sources


# ---------------------------------------------------------------------------- PageRank by name vs the scorer's
def pagerank_departures(graph: MLPGraph) -> dict[str, tuple[Any, Any, bool]]:
    """Where PageRank by name on ``graph`` is not the ``pagerank`` scorer's: option -> (the scorer's, used, why).

    PageRank by name (:func:`centrality_scores`, ``rank --graph``) takes the scorer's
    centrality defaults (:func:`~llmrank_graph.centrality.registry.centrality_entry`) on the
    graph as it was exported. It is the scorer's ranking only on a graph exported with the
    scorer's options (:data:`~llmrank_graph.scoring.PAGERANK_EXPORT`) and node activations.
    The flag is True where the departure comes from the graph having no calibration
    statistics (the activation weightings and teleport need them), False where the graph was
    exported with other options. A graph that records no export options (not exported from a
    model) is compared on its teleport only.

    >>> import torch, transformers, llmrank_graph as lg
    >>> cfg = transformers.LlamaConfig(vocab_size=32, hidden_size=4, intermediate_size=6, num_hidden_layers=2,
    ...                                num_attention_heads=2, num_key_value_heads=2)
    >>> model = transformers.LlamaForCausalLM(cfg)
    >>> pagerank_departures(lg.export_graph(model))
    {'weighting': ('activation_share', 'abs', True), 'personalization': ('activation', 'uniform', True)}
    >>> stats = lg.calibrate(model, input_ids=torch.randint(0, 32, (2, 8)))
    >>> pagerank_departures(lg.export_graph(model, stats))
    {}
    >>> pagerank_departures(lg.export_graph(model, stats, weighting="abs"))
    {'weighting': ('activation_share', 'abs', False)}
    """
    out: dict[str, tuple[Any, Any, bool]] = {}
    no_stats = not graph.has_activation
    opts = export_options(graph)
    if opts is not None:
        for k, want in PAGERANK_EXPORT.as_dict().items():
            have = getattr(opts, k)
            if have != want:
                out[k] = (want, have, no_stats and k == "weighting" and PAGERANK_EXPORT.needs_stats)
    entry = centrality_entry("pagerank")
    used = entry.arguments(graph.has_activation)
    for k, want in entry.defaults.items():
        if used[k] != want:
            out[k] = (want, used[k], True)  # only without_stats replaces a default
    return out


def describe_departures(departures: Mapping[str, tuple[Any, Any, bool]]) -> str:
    """:func:`pagerank_departures` in words, for a warning or a note ('' when there are none).

    >>> describe_departures({"weighting": ("activation_share", "abs", True),
    ...                      "personalization": ("activation", "uniform", True)})
    "no calibration statistics: the pagerank defaults weighting 'activation_share' and personalization \
'activation' need them; using weighting 'abs' and personalization 'uniform' instead"
    >>> describe_departures({"residual": (0.0, 0.3, False)})
    "the graph was exported with residual 0.3, not the pagerank scorer's 0.0; ranking it as exported"
    """
    def words(items, i):
        return " and ".join(f"{k} {v[i]!r}" for k, v in items)

    stats = [(k, v) for k, v in departures.items() if v[2]]
    other = [(k, v) for k, v in departures.items() if not v[2]]
    parts = []
    if stats:
        parts.append(f"no calibration statistics: the pagerank defaults {words(stats, 0)} need them; using "
                     f"{words(stats, 1)} instead")
    if other:
        parts.append(f"the graph was exported with {words(other, 1)}, not the pagerank scorer's "
                     f"{' and '.join(repr(v[0]) for _, v in other)}; ranking it as exported")
    return "; ".join(parts)
