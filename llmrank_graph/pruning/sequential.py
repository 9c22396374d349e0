"""Layer-wise (sequential) pruning: each layer is pruned on the outputs of the already-pruned layers.

:func:`prune_sequential` (``prune_model(..., sequential=True)``) keeps the hidden states that
enter layer l for every calibration token and, for each layer in order (docs/design.md section 6):

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

Checks
------
:func:`prune_sequential` checks everything at its entry, once: its parameter table, the model
and statistics (:func:`~llmrank_graph.pruning.core.check_model_and_stats`), then, in
:func:`plan_sequential`, the scorer, the tokens and the budgets. :func:`prune_sequential_checked`
does the work on checked arguments; :func:`llmrank_graph.prune_model` calls these two after its
own entry checks.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ..base.params import Boolean, Interval, OneOf, validate
from ..base.progress import progress as base_progress
from ..compensation.algebra import (
    COMPENSATION_CONSTRAINTS,
    DEFAULT_RIDGE,
    apply_updates,
    check_bias_possible,
    down_updates,
    needs_second_moments,
    uses_bias,
)
from ..data.calibration import ActivationStats, ModuleStats, StopForward, calibrate, check_batch, hook_mlps, vocab_size
from ..errors import InvalidArgumentError
from ..models.architectures import MLPModules, get_architecture, mlp_layers
from ..models.saved_format import original_intermediate_size, record_sizes
from ..scoring.registry import NeuronScores, Scorer, get_scorer
from .allocation import ALLOCATIONS, keep_all_but_lowest
from .core import HOWS, STATS, PruneResult, check_model_and_stats, zero_mlp
from .masks import AMOUNT, MIN_KEEP, NeuronMask, allocate_checked, check_reference_floor

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
            raise StopForward  # the final norm and LM head are not needed
        return h

    with torch.no_grad():
        returns_tuple = _returns_tuple(model, layers[0], batches[0].to(model_device))

        def record_any(i, h, a, kw):
            result = record(i, h, a, kw)
            return (result,) if returns_tuple else result

        with _stubbed(layers, record_any):
            for b in batches:
                try:
                    model(input_ids=b.to(model_device), use_cache=False)
                except StopForward:
                    pass
    return LayerInputs(hidden, args, kwargs, returns_tuple)


def _returns_tuple(model: nn.Module, layer0: nn.Module, batch: torch.Tensor) -> bool:
    """Whether a decoder layer returns a tuple (older transformers): one real call of layer 0 on one batch."""
    first: dict = {}

    def grab(mod, a, kw):
        first["args"], first["kwargs"] = a, kw
        raise StopForward

    handle = layer0.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        model(input_ids=batch, use_cache=False)
    except StopForward:
        pass
    finally:
        handle.remove()
    return isinstance(layer0(*first["args"], **first["kwargs"]), tuple)


def _run_layer(layer: nn.Module, inputs: LayerInputs, index: int, stop_after: nn.Module | None = None,
               update: bool = False) -> None:
    """Run ``layer`` on every batch of ``inputs.hidden``; with ``update``, replace them by its outputs."""
    for b, h in enumerate(inputs.hidden):
        if stop_after is not None:
            handle = stop_after.register_forward_hook(_raise_stop)
        try:
            out = layer(h, *inputs.args[index][b], **inputs.kwargs[index][b])
        except StopForward:
            out = None
        finally:
            if stop_after is not None:
                handle.remove()
        if update:
            inputs.hidden[b] = out[0] if isinstance(out, tuple) else out


def _raise_stop(mod, inp, out):
    raise StopForward


def _layer_stats(model, inputs: LayerInputs, layer_index: int, layer: nn.Module,
                 second_moments: bool) -> ActivationStats:
    """Statistics of one layer's MLP modules, from one pass of that layer over the hidden states."""
    mlp = mlp_layers(model)[layer_index]
    recorders, handles = hook_mlps([mlp], second_moments)
    try:
        _run_layer(layer, inputs, layer_index, stop_after=mlp.down)
    finally:
        for h in handles:
            h.remove()
    return ActivationStats({k: r.result() for k, r in recorders.items()})


def _without_gram(s: ModuleStats) -> ModuleStats:
    return ModuleStats(s.input_sumsq, s.output_sumsq, s.input_batch_norm_sum, s.output_batch_norm_sum, s.n_batches,
                       s.n_tokens, s.input_sum, None)


#: The parameter constraints of :func:`prune_sequential`, checked once at its entry (in this order).
SEQUENTIAL_CONSTRAINTS = {"amount": AMOUNT, "allocation": OneOf(*ALLOCATIONS), "how": OneOf(*HOWS),
                          "batch_size": Interval(int, 1), "progress": Boolean(), **COMPENSATION_CONSTRAINTS,
                          "stats": STATS, "min_keep": MIN_KEEP}


def prune_sequential(model: nn.Module, input_ids, method: str = "pagerank", amount: float = 0.3,
                     allocation: str = "local", how: str = "remove", *, stats: ActivationStats | None = None,
                     compensate: str = "none", ridge: float = DEFAULT_RIDGE, min_keep=None,
                     batch_size: int = _CALIBRATE_BATCH, device=None, mode: str = "chained", progress: bool = False,
                     **method_params) -> PruneResult:
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

    Raises
    ------
    ValueError
        As :func:`llmrank_graph.prune_model`; also tokens outside the model's vocabulary.
        Everything is checked before the model is modified.

    Example
    -------
    >>> import torch
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=20,
    ...                                      num_hidden_layers=2, num_attention_heads=2)).eval()
    >>> ids = torch.randint(0, 32, (4, 16))
    >>> result = prune_sequential(model, ids, "activation", 0.25, compensate="lstsq")
    >>> result.masks.sizes(), sorted(result.stats)[:1]
    ([15, 15], ['model.layers.0.mlp.down_proj'])
    """
    v = validate(SEQUENTIAL_CONSTRAINTS, {"amount": amount, "allocation": allocation, "how": how,
                                          "batch_size": batch_size, "progress": progress, "compensate": compensate,
                                          "ridge": ridge, "stats": stats, "min_keep": min_keep})
    check_model_and_stats(model, stats)
    if uses_bias(v["compensate"]):
        check_bias_possible(model)
    plan = plan_sequential(model, input_ids, method, mode, method_params, v["amount"], v["allocation"], v["min_keep"],
                           v["batch_size"])
    return prune_sequential_checked(model, plan, v["amount"], v["allocation"], v["how"], stats=stats,
                                    compensate=v["compensate"], ridge=v["ridge"], min_keep=v["min_keep"],
                                    device=device, progress=v["progress"])


@dataclass(frozen=True)
class SequentialPlan:
    """What the entry checks of the sequential mode produce: the scorer and the calibration batches."""

    scorer: Scorer
    batches: list[torch.Tensor]


def plan_sequential(model: nn.Module, input_ids, method: str, mode: str, method_params: dict, amount: float,
                    allocation: str, min_keep, batch_size: int = _CALIBRATE_BATCH) -> SequentialPlan:
    """The entry checks of the sequential mode that need the scorer, on otherwise checked arguments.

    Builds the scorer, checks the tokens against the model's vocabulary, and checks the budgets:
    a local allocation of dummy scores raises exactly what the real one would (sizes and
    floors are all it depends on), before any weight changes.
    """
    scorer = get_scorer(method, mode=mode, **method_params)
    check_reference_floor(scorer.rounding, min_keep)
    batches = check_tokens(input_ids, batch_size, model)
    sizes = {m.layer: m.intermediate_size for m in mlp_layers(model)}
    allocate_checked({l: torch.zeros(n, dtype=torch.float64) for l, n in sizes.items()}, amount, allocation,
                     min_keep, scorer.rounding)
    return SequentialPlan(scorer, batches)


def prune_sequential_checked(model: nn.Module, plan: SequentialPlan, amount: float, allocation: str, how: str, *,
                             stats: ActivationStats | None, compensate: str, ridge: float, min_keep, device=None,
                             progress: bool = False) -> PruneResult:
    """:func:`prune_sequential` on checked arguments (:func:`plan_sequential`): nothing is re-checked."""
    scorer = plan.scorer
    device = torch.device(device) if device is not None else next(model.parameters()).device
    need_gram = needs_second_moments(compensate) or scorer.needs_second_moments()
    original = original_intermediate_size(model)
    layers = _decoder_layers(model)
    # no_grad, not inference_mode: the pruned layers' new parameters must stay ordinary tensors.
    with torch.no_grad():
        inputs = capture_layer_inputs(model, plan.batches, device)
        dense_mask, dense_scores = None, None
        if allocation != "local" or not scorer.layerwise:
            if stats is None:
                stats = _dense_pass(model, inputs, layers, device, scorer.needs_second_moments(), progress)
            # The entry checked the model and the statistics given; the dense pass's own are fresh.
            dense_scores = scorer.score(model, stats, check_input=False)
            dense_mask = allocate_checked(dense_scores, amount, allocation, min_keep, scorer.rounding)
        keep_all, scores_all, stats_all = {}, {}, {}
        for l in _layer_bar(len(layers), progress, "pruning layer by layer"):
            layer = layers[l]
            home = next(layer.parameters()).device
            layer.to(device)
            mlp = mlp_layers(model)[l]
            layer_stats = _layer_stats(model, inputs, l, layer, need_gram)
            s = scorer.score_layer(mlp, layer_stats) if scorer.layerwise else dense_scores.intermediate[l]
            keep = _layer_keep(l, s, dense_mask, scorer, amount, min_keep)
            _prune_layer(model, mlp, keep, layer_stats, how, compensate, ridge)
            _run_layer(layer, inputs, l, update=True)
            layer.to(home)
            keep_all[l], scores_all[l] = keep, s
            stats_all.update({k: _without_gram(v) for k, v in layer_stats.items()})
            del layer_stats
            logger.debug("sequential: layer %d keeps %d of %d", l, int(keep.sum()), keep.numel())
    if how == "remove":
        record_sizes(model, original)
    mask = NeuronMask(keep_all, None, {"amount": amount, "allocation": allocation, "rounding": scorer.rounding,
                                       "min_keep": min_keep, "method": scorer.name})
    scores = NeuronScores(scores_all, None, scorer.name, scorer.get_params())
    return PruneResult(model, mask, scores, ActivationStats(stats_all, {"source": "sequential"}))


def _layer_keep(l: int, s: torch.Tensor, dense_mask: NeuronMask | None, scorer: Scorer, amount: float,
                min_keep) -> torch.Tensor:
    """Layer l's keep-mask: its own local allocation, or the dense pass's budget (or choice)."""
    if dense_mask is None:
        return allocate_checked({l: s}, amount, "local", min_keep, scorer.rounding).intermediate[l]
    if scorer.layerwise:
        return keep_all_but_lowest(s.detach().to("cpu", torch.float64).numpy(), dense_mask.n_pruned(l))
    return dense_mask.intermediate[l]


def _prune_layer(model: nn.Module, mlp: MLPModules, keep: torch.Tensor, layer_stats: ActivationStats, how: str,
                 compensate: str, ridge: float) -> None:
    """Remove or zero one layer's neurons, compensating from the statistics of its pruned inputs."""
    updates = (down_updates(model, {mlp.layer: keep}, layer_stats, compensate, ridge, layers=[mlp])
               if compensate != "none" else {})
    if how == "remove":
        if not keep.all():
            mlp.keep_neurons(keep.nonzero().flatten())
        apply_updates(model, updates)
    else:
        zero_mlp(mlp, keep, None)
        apply_updates(model, updates, keep={mlp.layer: keep})


def check_tokens(input_ids, batch_size: int, model: nn.Module) -> list[torch.Tensor]:
    """The calibration tokens of the sequential mode as a list of (batch, seq) LongTensors, checked.

    Raises
    ------
    InvalidArgumentError
        No tokens, a tensor that is not 2-D, an empty list, or a token outside the model's
        vocabulary (a ValueError).
    """
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
    vocab = vocab_size(model)
    for i, b in enumerate(batches):
        check_batch(b, i, vocab)
    return batches


def _layer_bar(n: int, progress: bool, desc: str):
    """``range(n)``, behind a tqdm bar over layers when ``progress`` (the CLI asks for one)."""
    return base_progress(range(n), progress, desc, "layer")


def _dense_pass(model, inputs: LayerInputs, layers, device, second_moments: bool,
                progress: bool = False) -> ActivationStats:
    """Statistics of the unpruned model, one layer at a time over the captured hidden states."""
    inputs = LayerInputs(list(inputs.hidden), inputs.args, inputs.kwargs, inputs.returns_tuple)  # a copy to advance
    out = {}
    for l in _layer_bar(len(layers), progress, "dense pass"):
        layer = layers[l]
        home = next(layer.parameters()).device
        layer.to(device)
        mlp = mlp_layers(model)[l]
        recorders, handles = hook_mlps([mlp], second_moments)
        try:
            _run_layer(layer, inputs, l, update=True)
        finally:
            for h in handles:
                h.remove()
        layer.to(home)
        out.update({k: r.result() for k, r in recorders.items()})
    return ActivationStats(out, {"source": "sequential dense pass"})
