"""Structured pruning of MLP neurons: apply a mask, save and load pruned models.

``apply_mask(model, mask, how="remove")`` slices the rows of up/gate and the columns of down
(transpose-aware for GPT-2's ``Conv1D``), so the layers really shrink; ``how="zero"`` zeroes
the same weights in place (and, in the reference's paper mode, the down rows of pruned hidden
channels). :func:`prune_model` is the one-call pipeline: score, allocate, apply.

Saved format
------------
:func:`save_pruned` writes an ordinary Hugging Face directory (``config.json``, safetensors
weights, tokenizer) whose ``config.json`` carries an ``"llmrank_graph"`` entry::

    "llmrank_graph": {"format": 1, "version": "0.1.0", "architecture": "llama",
                      "intermediate_attr": "intermediate_size",
                      "intermediate_sizes": [1152, 1098, ...], "original_intermediate_size": 1536}

:func:`llmrank_graph.load_model` sees that key and calls :func:`load_pruned`, which builds the
model, shrinks every layer's MLP to its saved size and then loads the weights strictly.

When every layer has the same size, the config's intermediate size is that int and a plain
``transformers.AutoModelForCausalLM.from_pretrained(dir)`` loads the directory too. When the
sizes differ, no registered transformers family can build the model (their MLPs read one
``config.intermediate_size``), so the intermediate-size field is written as a *string* that
says so. transformers (>= 5, whose configs are strict dataclasses) rejects it as soon as it
reads the config, and its error quotes the value, which tells the user to load the directory
with ``llmrank_graph.load_model(dir)``.

In memory, a model pruned non-uniformly keeps an int in its config (the largest layer's size;
configs validate their fields) and the per-layer sizes in ``config.llmrank_graph``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._version import __version__
from .architectures import MLPModules, get_architecture, mlp_layers
from .masks import ALLOCATIONS, NeuronMask, allocate, check_amount

logger = logging.getLogger(__name__)

__all__ = ["HOWS", "PruneResult", "apply_mask", "prune_model", "save_pruned", "load_pruned",
           "intermediate_sizes", "PRUNED_CONFIG_KEY"]

#: Ways to apply a mask.
HOWS: tuple[str, ...] = ("remove", "zero")
#: Key of the pruning metadata in ``config.json`` (and attribute of ``model.config``).
PRUNED_CONFIG_KEY = "llmrank_graph"
_FORMAT_VERSION = 1


def _check_choice(arg: str, value, allowed) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"`{arg}` must be one of {', '.join(map(repr, allowed))}; got {value!r}")


def _load_hint(sizes: list[int]) -> str:
    return (f"llmrank_graph pruned model with per-layer MLP sizes {sizes}, which transformers cannot "
            f"build: load this directory with llmrank_graph.load_model(dir)")


# ---------------------------------------------------------------------------- surgery
def _parameter(old: nn.Parameter, data: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(data.contiguous().clone(), requires_grad=old.requires_grad)


def _slice_out(module: nn.Module, idx: torch.Tensor, conv1d: bool) -> None:
    """Keep output features ``idx`` of ``module`` (rows of a Linear, columns of a Conv1D)."""
    w = module.weight
    with torch.no_grad():
        module.weight = _parameter(w, w[:, idx] if conv1d else w[idx])
        if getattr(module, "bias", None) is not None:
            module.bias = _parameter(module.bias, module.bias[idx])
    if conv1d:
        module.nf = len(idx)
    else:
        module.out_features = len(idx)


def _slice_in(module: nn.Module, idx: torch.Tensor, conv1d: bool) -> None:
    """Keep input features ``idx`` of ``module`` (columns of a Linear, rows of a Conv1D)."""
    w = module.weight
    with torch.no_grad():
        module.weight = _parameter(w, w[idx] if conv1d else w[:, idx])
    if conv1d:
        module.nx = len(idx)
    else:
        module.in_features = len(idx)


def _shrink_mlp(model: nn.Module, mlp: MLPModules, idx: torch.Tensor) -> None:
    """Keep intermediate neurons ``idx`` (ascending, int64) of one MLP."""
    idx = idx.to(mlp.up.weight.device)
    for mod in (mlp.gate, mlp.up):
        if mod is not None:
            _slice_out(mod, idx, mlp.conv1d)
    _slice_in(mlp.down, idx, mlp.conv1d)
    # Llama-style MLP modules record their size; keep it truthful.
    parent = model.get_submodule(mlp.up_name.rsplit(".", 1)[0])
    if isinstance(getattr(parent, "intermediate_size", None), int):
        parent.intermediate_size = len(idx)


def _zero_mlp(mlp: MLPModules, keep: torch.Tensor, hidden_keep: torch.Tensor | None) -> None:
    c = mlp.conv1d
    with torch.no_grad():
        drop = (~keep).to(mlp.up.weight.device)
        for mod in (mlp.gate, mlp.up):
            if mod is not None:
                if c:
                    mod.weight[:, drop] = 0
                else:
                    mod.weight[drop] = 0
                if getattr(mod, "bias", None) is not None:
                    mod.bias[drop] = 0
        if c:
            mlp.down.weight[drop] = 0
        else:
            mlp.down.weight[:, drop] = 0
        if hidden_keep is not None:
            # Paper mode: zero the down rows (output channels) as ln_structured on "weight"
            # does; the bias, if any, is left alone like there.
            hdrop = (~hidden_keep).to(mlp.down.weight.device)
            if c:
                mlp.down.weight[:, hdrop] = 0
            else:
                mlp.down.weight[hdrop] = 0


def intermediate_sizes(model: nn.Module) -> list[int]:
    """Current intermediate size of every MLP layer of ``model``, in layer order."""
    return [m.intermediate_size for m in mlp_layers(model)]


def _original_size(model: nn.Module) -> int:
    config = model.config
    meta = getattr(config, PRUNED_CONFIG_KEY, None)
    if isinstance(meta, dict) and isinstance(meta.get("original_intermediate_size"), int):
        return meta["original_intermediate_size"]
    value = getattr(config, get_architecture(model).intermediate_attr, None)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return max(intermediate_sizes(model))  # e.g. GPT-2's n_inner=None (4 * n_embd)


def _pruned_meta(model: nn.Module, sizes: list[int], original: int) -> dict:
    spec = get_architecture(model)
    return {"format": _FORMAT_VERSION, "version": __version__, "architecture": spec.name,
            "intermediate_attr": spec.intermediate_attr, "intermediate_sizes": list(sizes),
            "original_intermediate_size": int(original)}


def _update_config(model: nn.Module, original: int) -> None:
    sizes = intermediate_sizes(model)
    attr = get_architecture(model).intermediate_attr
    # Configs validate field types: keep an int (the size when uniform, else the largest).
    setattr(model.config, attr, sizes[0] if len(set(sizes)) == 1 else max(sizes))
    setattr(model.config, PRUNED_CONFIG_KEY, _pruned_meta(model, sizes, original))


def apply_mask(model: nn.Module, mask: NeuronMask, how: str = "remove") -> nn.Module:
    """Prune ``model``'s MLP neurons in place as ``mask`` says.

    Parameters
    ----------
    model : transformers model of a registered architecture
    mask : NeuronMask
        One keep-tensor per layer, of the layer's current intermediate size.
    how : {'remove', 'zero'}
        ``remove`` slices gate/up rows (and biases) and down columns, so the modules shrink,
        and updates the config (see the module docstring). ``zero`` sets those weights to 0
        and, with ``mask.hidden`` (paper mode), also the down rows of pruned hidden channels.

    Returns
    -------
    torch.nn.Module
        ``model`` itself.

    Raises
    ------
    ValueError
        Unknown ``how``; a mask that does not fit the model (naming the layer and both sizes);
        ``how='remove'`` with a mask that prunes hidden channels (residual-stream channels
        cannot be removed from one MLP: use ``how='zero'``). The model is untouched then.

    Example
    -------
    >>> mask = allocate(scores, 0.3)                    # doctest: +SKIP
    >>> model = apply_mask(model, mask, how="remove")   # doctest: +SKIP
    """
    _check_choice("how", how, HOWS)
    if not isinstance(mask, NeuronMask):
        raise TypeError(f"`mask` must be a NeuronMask; got {type(mask).__name__}")
    mask.check_model(model)
    if how == "remove" and mask.n_hidden_pruned():
        raise ValueError(f"how='remove' cannot prune hidden channels ({mask.n_hidden_pruned()} down_proj rows "
                         "in the mask): they belong to the residual stream shared by every layer; "
                         "use how='zero' for the paper mode")
    mlps = mlp_layers(model)
    if how == "zero":
        for mlp in mlps:
            hk = mask.hidden.get(mlp.layer) if mask.hidden is not None else None
            _zero_mlp(mlp, mask.intermediate[mlp.layer], hk)
        logger.debug("zeroed %d intermediate neurons and %d hidden channels", mask.n_pruned(),
                     mask.n_hidden_pruned())
        return model
    original = _original_size(model)
    for mlp in mlps:
        keep = mask.intermediate[mlp.layer]
        if keep.all():
            continue
        _shrink_mlp(model, mlp, keep.nonzero().flatten())
    _update_config(model, original)
    logger.debug("removed %d intermediate neurons; sizes now %s", mask.n_pruned(), intermediate_sizes(model))
    return model


# ---------------------------------------------------------------------------- pipeline
@dataclass
class PruneResult:
    """What :func:`prune_model` returns.

    Attributes
    ----------
    model : torch.nn.Module
        The pruned model (the same object that was passed in, pruned in place).
    masks : NeuronMask
        The neurons kept.
    scores : NeuronScores
        The scores the masks came from.
    """

    model: nn.Module
    masks: NeuronMask
    scores: Any


def _check_finite_weights(model: nn.Module) -> None:
    for mlp in mlp_layers(model):
        for name, mod in mlp.named_modules().items():
            for pname in ("weight", "bias"):
                p = getattr(mod, pname, None)
                if p is not None and not torch.isfinite(p).all():
                    raise ValueError(f"`model` has NaN or inf in {name}.{pname}; prune a model with finite weights")


def prune_model(model: nn.Module, stats, method: str = "pagerank", amount: float = 0.3, allocation: str = "local",
                how: str = "remove", mode: str = "chained", prune_hidden: bool = False, graph=None, *,
                min_keep: int | float | None = None, **method_params) -> PruneResult:
    """Score the MLP neurons of ``model``, choose the lowest-scored ones and prune them in place.

    Parameters
    ----------
    model : transformers model of a registered architecture
    stats : ActivationStats or None
        Calibration statistics of ``model`` (:func:`llmrank_graph.calibrate`); ``None`` only for
        weight-only scorers.
    method : str
        A scorer of :func:`llmrank_graph.scoring.scorers`.
    amount : float
        Fraction of intermediate neurons to prune, in [0, 1).
    allocation : {'local', 'global'}
        See :func:`llmrank_graph.masks.allocate`.
    how : {'remove', 'zero'}
        See :func:`apply_mask`.
    mode : {'chained', 'isolated'}
        Graph / reference pipeline over the whole stack or per MLP.
    prune_hidden : bool
        The reference's paper mode: also zero the down_proj rows of the lowest-scored hidden
        channels. Needs ``how='zero'``.
    graph : MLPGraph, optional
        A graph already exported from ``model``, passed to the scorer.
    min_keep : int, float or None
        Per-layer floor, see :func:`llmrank_graph.masks.allocate`.
    **method_params
        Further parameters of the scorer.

    Returns
    -------
    PruneResult
        ``.model`` (pruned in place), ``.masks``, ``.scores``.

    Raises
    ------
    ValueError
        Bad ``amount``/``allocation``/``how``; unknown ``method`` (listing the registry); stats
        from another model (naming the module and both shapes); NaN or inf in weights or stats;
        an allocation that would empty a layer. Everything is checked before the model is
        modified, so on error the model is unchanged.

    Notes
    -----
    Each scorer says how its counts are rounded (``Scorer.rounding``): the reference
    reproductions (``wpr``, ``mpr``, ``channel-wanda``, ``norm``) with ``'reference'``, the other
    methods with ``'round'``. The paper mode (``prune_hidden=True``) always rounds as the reference.

    Example
    -------
    >>> stats = llmrank_graph.calibrate(model, tokenizer)                      # doctest: +SKIP
    >>> result = llmrank_graph.prune_model(model, stats, "pagerank", amount=0.3)  # doctest: +SKIP
    >>> result.masks.fraction                                                  # doctest: +SKIP
    0.3
    """
    amount = check_amount(amount)
    _check_choice("allocation", allocation, ALLOCATIONS)
    _check_choice("how", how, HOWS)
    if not isinstance(prune_hidden, bool):
        raise ValueError(f"`prune_hidden` must be a bool; got {prune_hidden!r}")
    if prune_hidden and how == "remove":
        raise ValueError("`prune_hidden=True` zeroes down_proj rows (hidden channels of the residual stream), "
                         "which cannot be removed; pass how='zero'")
    get_architecture(model)
    if stats is not None:
        if not hasattr(stats, "check_model"):
            raise TypeError(f"`stats` must be an ActivationStats or None; got {type(stats).__name__}")
        stats.check_model(model)
    _check_finite_weights(model)

    from .scoring import score_neurons, scorer_class  # scoring pulls in the graph and centrality stack

    if graph is not None:
        method_params["graph"] = graph
    scores = score_neurons(model, stats, method, mode=mode, prune_hidden=prune_hidden, **method_params)
    rounding = "reference" if prune_hidden else scorer_class(method).rounding
    masks = allocate(scores, amount, allocation, min_keep=min_keep, rounding=rounding)
    masks.meta.update({"method": method, "how": how, "mode": mode, "prune_hidden": prune_hidden})
    apply_mask(model, masks, how=how)
    logger.info("pruned %d of %d intermediate neurons (%s, %s, %s)", masks.n_pruned(), masks.n_total(),
                method, allocation, how)
    return PruneResult(model, masks, scores)


# ---------------------------------------------------------------------------- save / load
def save_pruned(model: nn.Module, tokenizer, directory: str | os.PathLike, overwrite: bool = False) -> Path:
    """Save a (pruned) model, and its tokenizer, so that :func:`llmrank_graph.load_model` restores it.

    The directory is written under a temporary name next to ``directory`` and renamed at the
    end, so an interrupted save leaves nothing at ``directory``.

    Parameters
    ----------
    model : transformers model of a registered architecture
    tokenizer : tokenizer or None
        Saved alongside when not None.
    directory : str or path-like
        Target directory; must not exist unless ``overwrite``.
    overwrite : bool
        Replace an existing directory.

    Returns
    -------
    pathlib.Path
        ``directory``.

    Raises
    ------
    FileExistsError
        If ``directory`` exists and ``overwrite`` is False, or is a file.

    Example
    -------
    >>> save_pruned(result.model, tokenizer, "pruned-model")   # doctest: +SKIP
    >>> model, tokenizer = llmrank_graph.load_model("pruned-model")   # doctest: +SKIP
    """
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"`directory` must be a str or a path; got {type(directory).__name__}")
    if not isinstance(overwrite, bool):
        raise TypeError(f"`overwrite` must be a bool; got {overwrite!r}")
    target = Path(directory).expanduser()
    if target.exists():
        if not target.is_dir():
            raise FileExistsError(f"`directory` {str(target)!r} exists and is not a directory")
        if not overwrite:
            raise FileExistsError(f"`directory` {str(target)!r} already exists; pass overwrite=True to replace it")
    spec = get_architecture(model)
    sizes = intermediate_sizes(model)
    meta = _pruned_meta(model, sizes, _original_size(model))

    target.parent.mkdir(parents=True, exist_ok=True)
    # A sibling temporary directory (same filesystem, so the final rename is atomic); made with
    # mkdir rather than mkdtemp so that it gets the umask's permissions, not 0700.
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        config_file = tmp / "config.json"
        config = json.loads(config_file.read_text(encoding="utf-8"))
        config[PRUNED_CONFIG_KEY] = meta
        config[spec.intermediate_attr] = sizes[0] if len(set(sizes)) == 1 else _load_hint(sizes)
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:12]}"
            os.replace(target, old)
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(old, target)  # put the previous copy back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("saved the pruned model (MLP sizes %s) to %s", sizes, target)
    return target


def _resolve_dtype(dtype, config: dict) -> torch.dtype:
    if dtype is None:
        dtype = config.get("dtype") or config.get("torch_dtype") or torch.float32
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"`dtype` must be a floating torch.dtype, its name or None; got {dtype!r}")
    return dtype


def _dtype_kwargs(dtype: torch.dtype) -> dict:
    # transformers renamed `torch_dtype` to `dtype` in 4.56.
    import transformers
    from packaging.version import Version

    return {"dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype": dtype}


def _read_meta(path: Path, config: dict) -> dict:
    meta = config.get(PRUNED_CONFIG_KEY)
    sizes = meta.get("intermediate_sizes") if isinstance(meta, dict) else None
    if (not isinstance(sizes, list) or not sizes
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes)):
        raise ValueError(f"{str(path / 'config.json')!r} has no valid '{PRUNED_CONFIG_KEY}' entry: it must hold "
                         "'intermediate_sizes', a list of positive ints (one per layer), as save_pruned writes")
    return meta


def load_pruned(path: str | os.PathLike, dtype: torch.dtype | str | None = None,
                device: str | torch.device | None = None) -> tuple[nn.Module, Any]:
    """Load a directory written by :func:`save_pruned`, with its per-layer MLP sizes.

    The model is built from the config, each layer's MLP is shrunk to its saved size, and
    then the safetensors weights are loaded strictly. Never runs code shipped with a model.

    Parameters
    ----------
    path : str or path-like
        The saved directory.
    dtype : torch.dtype, str or None
        Parameter dtype; ``None`` uses the dtype recorded in the config (else float32).
    device : str, torch.device or None
        Device to move the model to; ``None`` leaves it on the CPU.

    Returns
    -------
    model : torch.nn.Module
        In eval mode.
    tokenizer : tokenizer or None
        None when the directory holds no tokenizer.

    Raises
    ------
    FileNotFoundError
        No ``config.json`` or no ``.safetensors`` file.
    ValueError
        Missing or invalid ``"llmrank_graph"`` entry; sizes that do not match the number of
        layers; weights whose shapes do not match the sizes (naming the tensor and both
        shapes); missing or unexpected weights.

    Example
    -------
    >>> model, tokenizer = load_pruned("pruned-model")   # doctest: +SKIP
    """
    from safetensors.torch import load_file
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM

    p = Path(path).expanduser()
    config_file = p / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"`path` {str(p)!r} must be a directory written by save_pruned; it has no config.json")
    config_dict = json.loads(config_file.read_text(encoding="utf-8"))
    meta = _read_meta(p, config_dict)
    sizes = meta["intermediate_sizes"]
    spec = get_architecture(config_dict.get("model_type"))
    torch_dtype = _resolve_dtype(dtype, config_dict)
    files = sorted(p.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"`path` {str(p)!r} holds no .safetensors weights")

    # Build at the largest size (a valid int for the config), then shrink each layer.
    config_dict = dict(config_dict)
    config_dict[spec.intermediate_attr] = max(sizes)
    config = CONFIG_MAPPING[config_dict["model_type"]].from_dict(config_dict)
    n_layers = config.num_hidden_layers
    if len(sizes) != n_layers:
        raise ValueError(f"{str(config_file)!r} does not match the model: '{PRUNED_CONFIG_KEY}' has "
                         f"{len(sizes)} intermediate sizes but the config has {n_layers} layers")
    model = AutoModelForCausalLM.from_config(config, **_dtype_kwargs(torch_dtype))
    mlps = mlp_layers(model)
    for mlp, size in zip(mlps, sizes):
        if size != mlp.intermediate_size:
            _shrink_mlp(model, mlp, torch.arange(size))
    _update_config(model, int(meta.get("original_intermediate_size") or max(sizes)))

    state = {}
    for f in files:
        state.update(load_file(str(f)))
    expected = model.state_dict()
    for key, tensor in state.items():
        if key in expected and tuple(expected[key].shape) != tuple(tensor.shape):
            raise ValueError(f"the weights in {str(p)!r} do not match the saved MLP sizes {sizes}: {key!r} "
                             f"has shape {tuple(tensor.shape)} in the file but {tuple(expected[key].shape)} in the model")
    result = model.load_state_dict(state, strict=False)
    # A tied parameter (lm_head = embeddings) is saved once; it is loaded with its twin.
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded = {id(params[k]) for k in state if k in params}
    missing = [k for k in result.missing_keys if not (k in params and id(params[k]) in loaded)]
    if missing or result.unexpected_keys:
        raise ValueError(f"the weights in {str(p)!r} do not match the model: missing {missing[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")
    if device is not None:
        model = model.to(device)
    model.eval()

    tokenizer = None
    if any((p / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")):
        from transformers import AutoTokenizer

        # Pass the config: its on-disk intermediate size may be the hint string, which
        # AutoTokenizer's own AutoConfig.from_pretrained would reject.
        tokenizer = AutoTokenizer.from_pretrained(p, config=model.config, local_files_only=True)
    logger.info("loaded pruned model from %s (MLP sizes %s)", p, sizes)
    return model, tokenizer
