"""Layer-wise (sequential) pruning: each layer is pruned on the outputs of the already-pruned layers.

:func:`prune_sequential` (``prune_model(..., sequential=True)``) keeps the hidden states that
enter layer l for every calibration token and, for each layer in order (DESIGN.md section 6):

1. runs layer l on those states, collecting its MLP statistics (with the Gram matrix of its
   down_proj input when the compensation or the scorer needs it);
2. scores, chooses, removes and compensates layer l's neurons;
3. runs the pruned layer l again, producing the states that enter layer l + 1.

Only one decoder layer and the hidden states (tokens x d floats) need to be on ``device`` at a
time: each layer is moved there, run and moved back. The layers' keyword arguments (attention
masks, rotary embeddings, which may differ between layers) are captured once by a pass in which
every layer is replaced by a stub that records its arguments, so no layer runs twice in it.

Budgets and criteria
--------------------
- ``allocation='local'`` with a per-layer scorer (``activation``, ``wanda-sp``, ``magnitude``,
  ``flap``, ``obs``): layer l is scored on its own sequential statistics and loses
  ``amount`` of its neurons; no other pass is needed.
- ``allocation='global'`` or ``'standardized'``: one threshold over all layers needs every
  layer's scores before the first layer is pruned, which the sequential statistics cannot give.
  The per-layer budgets therefore come from a first, dense pass (the ``stats`` given, or a
  layer-by-layer pass over the same tokens without pruning): the scorer ranks the dense model,
  the allocation fixes how many neurons each layer loses, and the sequential pass then chooses
  *which* ones, on the pruned inputs.
- whole-model scorers (``pagerank`` and the other graph centralities, the reference
  reproductions, ``random``) score every layer at once: their scores come from the dense pass,
  and only the compensation uses the sequential statistics.

The paper mode (``prune_hidden=True``) allocates hidden channels of the residual stream across
all layers at once, which a layer-by-layer pass cannot honour: it is refused.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ..base.checks import check_bool, check_positive_int
from .core import HOWS, PruneResult, zero_mlp
from ..models.architectures import get_architecture, mlp_layers
from ..data.calibration import ActivationStats, ModuleStats, _check_batch, _hook_mlps, _StopForward, _vocab_size, calibrate
from ..compensation.algebra import DEFAULT_RIDGE, apply_updates, check_compensation_options, down_updates, needs_second_moments
from ..errors import InvalidArgumentError
from .masks import NeuronMask, allocate, prune_lowest

logger = logging.getLogger(__name__)

#: Blocks per batch when the tokens come as one tensor: calibrate's own default.
_CALIBRATE_BATCH: int = inspect.signature(calibrate).parameters["batch_size"].default

__all__ = ["prune_sequential", "LayerInputs", "capture_layer_inputs"]


@dataclass
class LayerInputs:
    """What the decoder layers are called with, for each calibration batch.

    Attributes
    ----------
    hidden : list of torch.Tensor
        The hidden states entering the current layer, one (batch, seq, d) tensor per batch.
    args, kwargs : list of list
        ``args[l][b]`` / ``kwargs[l][b]``: the positional arguments after the hidden states,
        and the keyword arguments, of layer l for batch b.
    returns_tuple : bool
        Whether a decoder layer returns a tuple (older transformers) rather than a tensor.
    """

    hidden: list[torch.Tensor]
    args: list[list[tuple]]
    kwargs: list[list[dict]]
    returns_tuple: bool = False


def _to(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, tuple):
        return tuple(_to(o, device) for o in obj)
    if isinstance(obj, list):
        return [_to(o, device) for o in obj]
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj


def _decoder_layers(model: nn.Module) -> nn.ModuleList:
    spec = get_architecture(model)
    obj = model
    for part in spec.layers.split("."):
        obj = getattr(obj, part)
    return obj


@contextlib.contextmanager
def _stubbed(layers: nn.ModuleList, record) -> Iterator[None]:
    """Replace every layer's forward by a stub that records its arguments and returns its input."""
    try:
        for i, layer in enumerate(layers):
            def stub(hidden, *args, _i=i, **kwargs):
                return record(_i, hidden, args, kwargs)
            layer.forward = stub  # an instance attribute: nn.Module.__call__ finds it first
        yield
    finally:
        for layer in layers:
            layer.__dict__.pop("forward", None)


def capture_layer_inputs(model: nn.Module, batches: list[torch.Tensor], device=None) -> LayerInputs:
    """Run the embeddings of ``model`` on ``batches`` and record every decoder layer's arguments.

    No decoder layer, final norm or LM head is run: each layer is a stub for the duration.

    Parameters
    ----------
    model : transformers model of a registered architecture
    batches : list of LongTensor (batch, seq)
    device : torch.device, optional
        Where the recorded tensors are kept (default: where the embeddings ran).

    Returns
    -------
    LayerInputs
    """
    layers = _decoder_layers(model)
    n = len(layers)
    model_device = next(model.parameters()).device
    args = [[] for _ in range(n)]
    kwargs = [[] for _ in range(n)]
    hidden: list[torch.Tensor] = []

    def record(i, h, a, kw):
        if i == 0:
            hidden.append(h.detach().to(device or h.device))
        args[i].append(_to(a, device) if device is not None else a)
        kwargs[i].append(_to(kw, device) if device is not None else kw)
        if i == n - 1:
            raise _StopForward  # the final norm and LM head are not needed
        return h

    # Learn the layers' return convention from one real call of layer 0 on batch 0.
    first: dict = {}

    def grab(mod, a, kw):
        first["args"], first["kwargs"] = a, kw
        raise _StopForward

    with torch.no_grad():
        handle = layers[0].register_forward_pre_hook(grab, with_kwargs=True)
        try:
            model(input_ids=batches[0].to(model_device), use_cache=False)
        except _StopForward:
            pass
        finally:
            handle.remove()
        out = layers[0](*first["args"], **first["kwargs"])
        returns_tuple = isinstance(out, tuple)
        del out, first

        def record_any(i, h, a, kw):
            result = record(i, h, a, kw)
            return (result,) if returns_tuple else result

        with _stubbed(layers, record_any):
            for b in batches:
                try:
                    model(input_ids=b.to(model_device), use_cache=False)
                except _StopForward:
                    pass
    return LayerInputs(hidden, args, kwargs, returns_tuple)


def _run_layer(layer: nn.Module, inputs: LayerInputs, index: int, stop_after: nn.Module | None = None,
               update: bool = False) -> None:
    """Run ``layer`` on every batch of ``inputs.hidden``; with ``update``, replace them by its outputs."""
    for b, h in enumerate(inputs.hidden):
        if stop_after is not None:
            handle = stop_after.register_forward_hook(_raise_stop)
        try:
            out = layer(h, *inputs.args[index][b], **inputs.kwargs[index][b])
        except _StopForward:
            out = None
        finally:
            if stop_after is not None:
                handle.remove()
        if update:
            inputs.hidden[b] = out[0] if isinstance(out, tuple) else out


def _raise_stop(mod, inp, out):
    raise _StopForward


def _layer_stats(model, inputs: LayerInputs, layer_index: int, layer: nn.Module, second_moments: bool) -> ActivationStats:
    """Statistics of one layer's MLP modules, from one pass of that layer over the hidden states."""
    mlp = mlp_layers(model)[layer_index]
    recorders, handles = _hook_mlps([mlp], second_moments)
    try:
        _run_layer(layer, inputs, layer_index, stop_after=mlp.down)
    finally:
        for h in handles:
            h.remove()
    return ActivationStats({k: r.result() for k, r in recorders.items()})


def _without_gram(s: ModuleStats) -> ModuleStats:
    return ModuleStats(s.input_sumsq, s.output_sumsq, s.input_batch_norm_sum, s.output_batch_norm_sum, s.n_batches,
                       s.n_tokens, s.input_sum, None)


def prune_sequential(model: nn.Module, input_ids, method: str = "pagerank", amount: float = 0.3,
                     allocation: str = "local", how: str = "remove", *, stats: ActivationStats | None = None,
                     compensate: str = "none", ridge: float = DEFAULT_RIDGE, min_keep=None,
                     batch_size: int = _CALIBRATE_BATCH, device=None, mode: str = "chained", progress: bool = False, **method_params):
    """Prune ``model`` layer by layer, each layer on the outputs of the already-pruned ones.

    Called by :func:`llmrank_graph.prune_model` with ``sequential=True``; see the module
    docstring for how budgets and whole-model scorers are handled.

    Parameters
    ----------
    model : transformers model of a registered architecture
    input_ids : LongTensor (n, seq) or list of LongTensor (batch, seq)
        The calibration tokens.
    method, amount, allocation, how, min_keep, mode, **method_params
        As :func:`llmrank_graph.prune_model`.
    stats : ActivationStats, optional
        Statistics of the dense model, used for the per-layer budgets (global allocations) and
        for whole-model scorers. Without them a dense layer-by-layer pass computes them when
        needed.
    compensate : {'none', 'bias', 'lstsq', 'lstsq+bias'}
    ridge : float
    batch_size : int
        Blocks per batch when ``input_ids`` is one tensor.
    device : str or torch.device, optional
        Where each layer and the hidden states are processed (default: the model's device).
    progress : bool
        Show a progress bar over layers.

    Returns
    -------
    PruneResult
        ``.stats`` holds the statistics each layer was pruned with (the sequential ones),
        without the Gram matrices, which are freed layer by layer.
    """
    from ..models.saved_format import original_intermediate_size, record_sizes
    from ..scoring.registry import NeuronScores, get_scorer

    from ..base.checks import check_choice
    from .masks import ALLOCATIONS, check_amount

    amount = check_amount(amount)
    check_choice("allocation", allocation, ALLOCATIONS)
    check_choice("how", how, HOWS)
    check_positive_int("batch_size", batch_size)
    check_bool("progress", progress)
    check_compensation_options(model, compensate, ridge)
    scorer = get_scorer(method, mode=mode, **method_params)
    batches = _as_batches(input_ids, batch_size, model)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    mlps = mlp_layers(model)
    sizes = {m.layer: m.intermediate_size for m in mlps}
    rounding = scorer.rounding
    layerwise = scorer.layerwise
    # Budgets and validation before any weight changes: a local allocation of dummy scores raises
    # exactly what the real one would (sizes and floors are all it depends on).
    allocate({l: torch.zeros(n, dtype=torch.float64) for l, n in sizes.items()}, amount, "local"
             if allocation == "local" else allocation, min_keep=min_keep, rounding=rounding)
    need_gram = needs_second_moments(compensate) or scorer.needs_second_moments()
    if stats is not None:
        if not isinstance(stats, ActivationStats):
            from ..base.checks import fail_type

            raise fail_type("stats", "an ActivationStats or None", stats)
        stats.check_model(model)

    original = original_intermediate_size(model)
    layers = _decoder_layers(model)
    # no_grad, not inference_mode: the pruned layers' new parameters must stay ordinary tensors.
    with torch.no_grad():
        inputs = capture_layer_inputs(model, batches, device)
        dense_mask, dense_scores = None, None
        if allocation != "local" or not layerwise:
            if stats is None:
                stats = _dense_pass(model, inputs, layers, device, scorer.needs_second_moments())
            dense_scores = scorer.score(model, stats)
            dense_mask = allocate(dense_scores, amount, allocation, min_keep=min_keep, rounding=rounding)

        keep_all, scores_all, stats_all = {}, {}, {}
        iterator = range(len(layers))
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(iterator, desc="pruning layer by layer", unit="layer")
        for l in iterator:
            layer = layers[l]
            home = next(layer.parameters()).device
            layer.to(device)
            mlp = mlp_layers(model)[l]
            layer_stats = _layer_stats(model, inputs, l, layer, need_gram)
            if layerwise:
                s = scorer.score_layer(mlp, layer_stats)
            else:
                s = dense_scores.intermediate[l]
            if dense_mask is None:
                keep = allocate({l: s}, amount, "local", min_keep=min_keep, rounding=rounding).intermediate[l]
            elif layerwise:
                keep = prune_lowest(s, dense_mask.n_pruned(l))
            else:
                keep = dense_mask.intermediate[l]
            updates = (down_updates(model, {l: keep}, layer_stats, compensate, ridge, layers=[mlp])
                       if compensate != "none" else {})
            if how == "remove":
                if not keep.all():
                    mlp.keep_neurons(keep.nonzero().flatten())
                apply_updates(model, updates)
            else:
                zero_mlp(mlp, keep, None)
                apply_updates(model, updates, keep={l: keep})
            _run_layer(layer, inputs, l, update=True)
            layer.to(home)
            keep_all[l], scores_all[l] = keep, s
            stats_all.update({k: _without_gram(v) for k, v in layer_stats.items()})
            del layer_stats, updates
            logger.debug("sequential: layer %d keeps %d of %d", l, int(keep.sum()), keep.numel())
    if how == "remove":
        record_sizes(model, original)
    mask = NeuronMask(keep_all, None, {"amount": amount, "allocation": allocation, "rounding": rounding,
                                       "min_keep": min_keep, "method": method})
    scores = NeuronScores(scores_all, None, method, scorer.get_params())
    return PruneResult(model, mask, scores, ActivationStats(stats_all, {"source": "sequential"}))


def _as_batches(input_ids, batch_size: int, model) -> list[torch.Tensor]:
    if input_ids is None:
        raise InvalidArgumentError("`sequential=True` needs the calibration tokens: pass `input_ids` (a (n, seq) "
                                   "LongTensor, e.g. llmrank_graph.data.texts.token_blocks(tokenizer, texts, 32, 512))")
    if isinstance(input_ids, torch.Tensor):
        if input_ids.dim() != 2:
            raise InvalidArgumentError(f"`input_ids` must be a (batch, seq) LongTensor; got shape "
                                       f"{tuple(input_ids.shape)}")
        batches = list(input_ids.split(batch_size))
    else:
        batches = [torch.as_tensor(b) for b in input_ids]
    if not batches:
        raise InvalidArgumentError("`input_ids` is empty: no calibration batch")
    vocab = _vocab_size(model)
    for i, b in enumerate(batches):
        _check_batch(b, i, vocab)
    return batches


def _dense_pass(model, inputs: LayerInputs, layers, device, second_moments: bool) -> ActivationStats:
    """Statistics of the unpruned model, one layer at a time over the captured hidden states."""
    inputs = LayerInputs(list(inputs.hidden), inputs.args, inputs.kwargs, inputs.returns_tuple)  # a copy to advance
    out = {}
    for l, layer in enumerate(layers):
        home = next(layer.parameters()).device
        layer.to(device)
        mlp = mlp_layers(model)[l]
        recorders, handles = _hook_mlps([mlp], second_moments)
        try:
            _run_layer(layer, inputs, l, update=True)
        finally:
            for h in handles:
                h.remove()
        layer.to(home)
        out.update({k: r.result() for k, r in recorders.items()})
    return ActivationStats(out, {"source": "sequential dense pass"})
