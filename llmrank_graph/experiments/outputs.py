"""What a sweep's run leaves besides its numbers: the score and mask files, and the summaries of them in its JSON.

:func:`save_outputs` writes the files a grid asks for (``save_scores``, ``save_masks``);
:func:`score_quantiles` and :func:`neuron_counts` are the ``score_quantiles`` and
``neurons`` entries of the run's JSON (see :mod:`llmrank_graph.experiments.runner`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..base.files import save_safetensors_atomic
from ..errors import OutputExistsError
from .grid import Grid
from .results import RUNS_DIR, SCORES_DIR
from .settings import RunConfig

__all__ = ["SCORE_QUANTILES", "save_outputs", "score_quantiles", "neuron_counts"]

#: Quantiles of each layer's scores kept in every run's JSON (for the score-distribution plot).
SCORE_QUANTILES: tuple[float, ...] = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


def score_quantiles(scores) -> dict[str, list]:
    """Quantiles :data:`SCORE_QUANTILES` of each layer's intermediate scores, each layer scaled by its mean |score|.

    >>> import torch
    >>> from types import SimpleNamespace
    >>> q = score_quantiles(SimpleNamespace(intermediate={0: torch.tensor([1.0, 2.0, 3.0])}))
    >>> q["layers"]["0"][0], q["layers"]["0"][-1]
    (0.5, 1.5)
    """
    layers = {}
    for layer, s in sorted(scores.intermediate.items()):
        s = s.double()
        scale = float(s.abs().mean())
        v = s / scale if scale > 0 else s
        layers[str(layer)] = torch.quantile(v, torch.tensor(SCORE_QUANTILES, dtype=torch.float64)).tolist()
    return {"q": list(SCORE_QUANTILES), "normalised_by": "mean absolute score of the layer", "layers": layers}


def _save_scores(scores, path: Path, run: RunConfig) -> None:
    """One file per scorer configuration, shared by its runs: the first run to get there writes it."""
    if path.is_file():
        return
    tensors = {f"intermediate.{l}": s.contiguous() for l, s in scores.intermediate.items()}
    for l, s in (scores.hidden or {}).items():
        tensors[f"hidden.{l}"] = s.contiguous()
    meta = {"format": "llmrank_graph.NeuronScores", "method": run.method, "label": run.label,
            "params": json.dumps(dict(run.params)), "mode": run.mode, "model": json.dumps(run.model)}
    try:
        save_safetensors_atomic(tensors, path, meta)
    except OutputExistsError:  # written meanwhile by another sweep on this directory
        pass


def save_outputs(res, run: RunConfig, directory: Path, grid: Grid) -> dict[str, str | None]:
    """The scores and the mask, where the grid asks for them; their paths relative to ``directory``."""
    files: dict[str, str | None] = {"scores": None, "mask": None}
    if grid.save_scores:
        rel = Path(SCORES_DIR) / f"{run.scorer_id}.safetensors"
        _save_scores(res.scores, directory / rel, run)
        files["scores"] = rel.as_posix()
    if grid.save_masks:
        rel = Path(RUNS_DIR) / f"{run.stem}.mask.safetensors"
        res.masks.save(directory / rel, overwrite=True)
        files["mask"] = rel.as_posix()
    return files


def neuron_counts(masks) -> dict:
    """The ``neurons`` entry of a run's JSON: totals, pruned and kept per layer, from its mask."""
    return {"total": masks.n_total(), "pruned": masks.n_pruned(), "fraction": masks.fraction, "layers": masks.layers,
            "layer_total": [int(k.numel()) for k in masks.intermediate.values()], "layer_kept": masks.sizes(),
            "hidden_pruned": masks.n_hidden_pruned()}
