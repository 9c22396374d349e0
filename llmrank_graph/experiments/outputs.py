"""What a sweep's run leaves besides its numbers: the score and mask files, and the summaries of them in its JSON.

:func:`save_outputs` writes the files a grid asks for (``save_scores``, ``save_masks``);
:func:`score_quantiles`, :func:`neuron_counts` and :func:`head_counts` are the
``score_quantiles``, ``neurons`` and ``heads`` entries of the run's JSON (see
:mod:`llmrank_graph.experiments.runner`). A run of heads (``target='attention'`` or ``'both'``)
saves its :class:`~llmrank_graph.pruning.heads.HeadMask` beside its neuron mask
(``<stem>.heads.safetensors``) and its head scores in its score file (``heads.<layer>``); a run
of ``'attention'`` has no neuron mask, neuron scores or ``neurons`` entry.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..base.files import save_safetensors_atomic
from ..errors import OutputExistsError
from ..models.architectures import UnsupportedArchitectureError
from ..models.attention import attention_layers, attention_spec
from ..models.saved_format import read_config
from ..pruning.heads import removed_parameters
from .grid import Grid
from .results import RUNS_DIR, SCORES_DIR
from .settings import DEFAULT_TARGET, RunConfig

__all__ = ["SCORE_QUANTILES", "save_outputs", "score_quantiles", "neuron_counts", "head_counts",
           "check_attention_support"]

#: Quantiles of each layer's scores kept in every run's JSON (for the score-distribution plot).
SCORE_QUANTILES: tuple[float, ...] = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


def score_quantiles(scores) -> dict[str, list] | None:
    """Quantiles :data:`SCORE_QUANTILES` of each layer's intermediate scores, each layer scaled by its mean |score|.

    None without neuron scores (a run of ``target='attention'``).

    >>> import torch
    >>> from types import SimpleNamespace
    >>> q = score_quantiles(SimpleNamespace(intermediate={0: torch.tensor([1.0, 2.0, 3.0])}))
    >>> q["layers"]["0"][0], q["layers"]["0"][-1]
    (0.5, 1.5)
    """
    if scores is None:
        return None
    layers = {}
    for layer, s in sorted(scores.intermediate.items()):
        s = s.double()
        scale = float(s.abs().mean())
        v = s / scale if scale > 0 else s
        layers[str(layer)] = torch.quantile(v, torch.tensor(SCORE_QUANTILES, dtype=torch.float64)).tolist()
    return {"q": list(SCORE_QUANTILES), "normalised_by": "mean absolute score of the layer", "layers": layers}


def _save_scores(res, path: Path, run: RunConfig) -> None:
    """One file per scorer configuration, shared by its runs: the first run to get there writes it."""
    if path.is_file():
        return
    tensors = {}
    if res.scores is not None:
        tensors.update({f"intermediate.{l}": s.contiguous() for l, s in res.scores.intermediate.items()})
        tensors.update({f"hidden.{l}": s.contiguous() for l, s in (res.scores.hidden or {}).items()})
    if res.head_scores is not None:
        tensors.update({f"heads.{l}": s.contiguous() for l, s in res.head_scores.heads.items()})
    meta = {"format": "llmrank_graph.NeuronScores", "method": run.method, "label": run.label, "target": run.target,
            "params": json.dumps(dict(run.params)), "mode": run.mode, "model": json.dumps(run.model)}
    try:
        save_safetensors_atomic(tensors, path, meta)
    except OutputExistsError:  # written meanwhile by another sweep on this directory
        pass


def save_outputs(res, run: RunConfig, directory: Path, grid: Grid) -> dict[str, str | None]:
    """The scores and the masks, where the grid asks for them; their paths relative to ``directory``.

    ``mask`` is the neuron mask (None for a run of ``target='attention'``); ``head_mask``, only for
    a run of heads, the head mask.
    """
    files: dict[str, str | None] = {"scores": None, "mask": None}
    if grid.save_scores:
        rel = Path(SCORES_DIR) / f"{run.scorer_id}.safetensors"
        _save_scores(res, directory / rel, run)
        files["scores"] = rel.as_posix()
    if res.head_mask is not None:
        files["head_mask"] = None
    if grid.save_masks:
        for key, mask, suffix in (("mask", res.masks, "mask"), ("head_mask", res.head_mask, "heads")):
            if mask is not None:
                rel = Path(RUNS_DIR) / f"{run.stem}.{suffix}.safetensors"
                mask.save(directory / rel, overwrite=True)
                files[key] = rel.as_posix()
    return files


def neuron_counts(masks) -> dict | None:
    """The ``neurons`` entry of a run's JSON: totals, pruned and kept per layer, from its mask (None without one)."""
    if masks is None:
        return None
    return {"total": masks.n_total(), "pruned": masks.n_pruned(), "fraction": masks.fraction, "layers": masks.layers,
            "layer_total": [int(k.numel()) for k in masks.intermediate.values()], "layer_kept": masks.sizes(),
            "hidden_pruned": masks.n_hidden_pruned()}


def head_counts(mask, dense) -> dict:
    """``{"heads": ...}``, the ``heads`` entry of a run of heads' JSON; ``{}`` without a head mask.

    Totals, pruned, the exact fraction removed, heads kept per layer; each layer's head cost
    (parameters of one query head and of one key/value group,
    :meth:`~llmrank_graph.models.attention.AttentionModules.head_cost`, of the ``dense`` model);
    the attention parameters removed; and, for ``target='both'``, the accounting of the MLP +
    attention parameters (``parameters``: ``total_parameters``, ``mlp_removed``,
    ``attention_removed``, ``removed``, ``fraction``).
    """
    if mask is None:
        return {}
    costs = [att.head_cost() for att in attention_layers(dense)]
    return {"heads": {
        "total": mask.n_total(), "pruned": mask.n_pruned(), "fraction": mask.fraction, "layers": mask.layers,
        "layer_total": [int(k.numel()) for k in mask.heads.values()], "layer_kept": mask.sizes(),
        "head_cost": {kind: [c[kind] for c in costs] for kind in ("query_head", "kv_group")},
        "parameters_removed": removed_parameters(dense, mask), "parameters": mask.meta.get("parameters")}}


def check_attention_support(source, targets) -> None:
    """Refuse, from its config alone, a model whose family has no attention support when a target prunes heads.

    ``source`` is :func:`~llmrank_graph.models.loading.check_model_path`'s answer. The embedded
    model (a Llama) has heads; a GGUF file is checked once loaded (by the calibration).
    """
    heads = sorted({t for t in targets if t != DEFAULT_TARGET})
    if not heads or source.kind not in ("directory", "pruned"):
        return
    try:
        attention_spec(read_config(source.path / "config.json").get("model_type"))
    except UnsupportedArchitectureError as e:
        raise UnsupportedArchitectureError(f"the grid's target(s) {', '.join(map(repr, heads))} prune attention "
                                           f"heads of model {str(source.path)!r}, but {e}") from None
