"""Loss gradients of the calibration text: the statistics of ``calibrate(..., gradients=True)``.

With ``L`` the next-token cross-entropy of the calibration tokens, **summed** over every
predicted token of every batch (so that the totals do not depend on the batching), the pass
records for every MLP down projection, with ``x`` its input (the intermediate activations)
and ``y`` its output:

- ``input_taylor[j] = sum_t x_t,j dL/dx_t,j`` (signed): the first-order change of ``L`` when
  neuron ``j`` is scaled by ``1 + eps``, per ``eps``. Removing the neuron changes the loss by
  about ``-input_taylor[j]``, and ``|input_taylor[j]|`` is LLM-Pruner's first-order importance
  of the channel: it equals ``|sum_i W_down[i, j] dL/dW_down[i, j]|``, the vector-wise Taylor
  criterion of the down_proj column (``dL/dW[i, j] = sum_t dL/dy_t,i x_t,j``).
- ``output_grad_sumsq[i] = sum_t (dL/dy_t,i)^2``: the squared L2 norm over the tokens of the
  loss gradient at each output feature. At the last layer ``y`` is added to the residual
  stream just before the final norm, so this is the gradient at the final hidden state (the
  graph's last hidden partition), the ``gradient`` seed of the output-seeded scorers.

The gradients are taken with ``torch.autograd.grad`` with respect to these activations only:
no parameter gradient is computed or stored, and the model is not changed (when no parameter
requires a gradient, the input embeddings' output is made to require one, so that the graph
exists). Dropout is whatever the model's mode says: calibrate a model in ``eval()`` mode.

Cost
----
One forward pass through the whole model, the LM head included (the statistics-only pass
stops after the last MLP), then a backward pass without the weight gradients, about as costly
as the forward. Measured on the CPU: 3.2 times the time of a calibration without gradients
for SmolLM2-135M (74 s against 23 s for 8 x 512 tokens in batches of 4, two shared cores;
its LM head and loss over a 49,152-word vocabulary weigh more than in a larger model), 2.2
times for a tiny Llama. The memory is that of training without parameter gradients: every
activation autograd saves, for one batch at a time. For SmolLM2-135M (30 layers, d = 576,
m = 1536) in float32, from the shapes: about 12 d + 5 m = 14,600 floats per token and layer
(norms, q/k/v, attention output, gate, up, their product), 58 KB, so 1.8 MB over 30 layers,
plus three vocabulary-sized rows for the logits and the loss (0.6 MB): 2.4 MB per token, and
2.38 MB measured (the tensors autograd saves, with SDPA attention, which keeps no
``seq x seq`` scores; the eager attention adds ``heads x seq^2`` floats per layer and
sequence). A batch of 4 x 512 tokens holds 4.9 GB; halve ``batch_size`` to halve it, the
statistics do not depend on it.

:func:`output_weights` weighs the features of the final hidden state (by the LM head's column
norms, or by these gradients): the seeds of the output-seeded graph scorers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..base.checks import check_choice
from ..errors import InvalidArgumentError
from ..models.architectures import MLPModules, mlp_layers

__all__ = ["GradientRecorder", "OUTPUT_WEIGHTS", "output_weights"]


class GradientRecorder:
    """The loss-gradient statistics of every down projection of ``mlps``, one batch at a time.

    :meth:`hooked` puts forward hooks on the down projections (and on the input embeddings,
    when the model's parameters do not require gradients); :meth:`step` runs one batch forward,
    computes the summed next-token loss and its gradients with respect to the hooked
    activations, and adds them to the totals; :meth:`result` gives the totals.

    Parameters
    ----------
    mlps : list of MLPModules

    Example
    -------
    >>> import torch
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> from llmrank_graph.models.architectures import mlp_layers
    >>> _ = torch.manual_seed(0)
    >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=12,
    ...                                      num_hidden_layers=2, num_attention_heads=2)).eval()
    >>> rec = GradientRecorder(mlp_layers(model))
    >>> with rec.hooked(model):
    ...     rec.step(model, torch.randint(0, 32, (2, 8)))
    >>> taylor, grad_sumsq = rec.result()["model.layers.1.mlp.down_proj"]
    >>> taylor.shape, grad_sumsq.shape, taylor.dtype
    (torch.Size([12]), torch.Size([8]), torch.float64)
    """

    def __init__(self, mlps: list[MLPModules]):
        self.names = [m.down_name for m in mlps]
        self._modules = {m.down_name: m.down for m in mlps}
        self._seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._taylor: dict[str, torch.Tensor] = {}
        self._grad_sumsq: dict[str, torch.Tensor] = {}

    def _hook(self, name: str):
        def hook(module, inputs, output):
            self._seen[name] = (inputs[0], output if isinstance(output, torch.Tensor) else output[0])

        return hook

    @contextlib.contextmanager
    def hooked(self, model: nn.Module) -> Iterator[GradientRecorder]:
        """Hooks on the down projections (and the embeddings if needed) inside; removed on exit, even on error."""
        handles = [mod.register_forward_hook(self._hook(name)) for name, mod in self._modules.items()]
        try:
            if not any(p.requires_grad for p in model.parameters()):
                handles.append(model.get_input_embeddings().register_forward_hook(_requiring_grad))
            yield self
        finally:
            for h in handles:
                h.remove()
            self._seen.clear()

    def step(self, model: nn.Module, ids: torch.Tensor) -> None:
        """Forward ``ids`` (batch, seq), take the gradients of the summed next-token loss, add the statistics."""
        self._seen.clear()
        with torch.inference_mode(False), torch.enable_grad():  # whatever mode the caller is in
            ids = ids.clone()  # not an inference tensor: the embedding saves it for its backward
            logits = model(input_ids=ids, use_cache=False).logits
            logits = logits[:, :-1].flatten(0, 1)  # in float32 at least (float64 models keep theirs)
            loss = F.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)),
                                   ids[:, 1:].flatten().to(logits.device), reduction="sum")
            names = [n for n in self.names if n in self._seen]
            xs = [self._seen[n][0] for n in names]
            ys = [self._seen[n][1] for n in names]
            grads = torch.autograd.grad(loss, xs + ys, allow_unused=True)
        self._seen.clear()
        for i, name in enumerate(names):
            x, gx, gy = xs[i], grads[i], grads[len(names) + i]
            gx = torch.zeros_like(x) if gx is None else gx
            gy = torch.zeros_like(ys[i]) if gy is None else gy
            taylor = (x.detach().double() * gx.double()).reshape(-1, x.shape[-1]).sum(0)
            sumsq = gy.double().square().reshape(-1, gy.shape[-1]).sum(0)
            if name in self._taylor:
                self._taylor[name] += taylor
                self._grad_sumsq[name] += sumsq
            else:
                self._taylor[name], self._grad_sumsq[name] = taylor, sumsq

    def result(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Down projection name -> ``(input_taylor, output_grad_sumsq)``, float64 on the CPU."""
        return {n: (self._taylor[n].cpu(), self._grad_sumsq[n].cpu()) for n in self._taylor}


def _requiring_grad(module, inputs, output):
    """Forward hook: the embeddings' output as a leaf that requires a gradient, so that the loss has a graph."""
    return output if output.requires_grad else output.detach().requires_grad_()


#: The weights :func:`output_weights` gives the features of the final hidden state.
OUTPUT_WEIGHTS: tuple[str, ...] = ("uniform", "unembedding", "gradient")


def output_weights(model: nn.Module, stats, which: str) -> torch.Tensor:
    """A weight per feature of the final hidden state (the residual stream after the last MLP), float64 (d,).

    ``'uniform'``: 1. ``'unembedding'``: the L2 norm of the LM head's column for the feature,
    how strongly the logits read it (the final norm's weight is not folded in, as no graph edge
    folds a norm). ``'gradient'``: ``sqrt(sum_t (dL/dh_t,i)^2)``, the norm over the
    calibration tokens of the loss gradient at the final hidden state, which is the last down
    projection's ``output_grad_sumsq`` (``calibrate(..., gradients=True)``).

    Raises
    ------
    InvalidArgumentError
        An unknown ``which``, a model without an LM head, or stats without the gradients.

    Example
    -------
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=12,
    ...                                      num_hidden_layers=1, num_attention_heads=2))
    >>> w = output_weights(model, None, "unembedding")
    >>> w.shape, bool(torch.allclose(w, model.lm_head.weight.double().norm(dim=0)))
    (torch.Size([8]), True)
    """
    check_choice("which", which, OUTPUT_WEIGHTS)
    last = mlp_layers(model)[-1]
    if which == "uniform":
        return torch.ones(last.hidden_size, dtype=torch.float64)
    if which == "unembedding":
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if head is None:
            raise InvalidArgumentError("the 'unembedding' weights need a model with an output embedding (LM head)")
        return head.weight.detach().to("cpu", torch.float64).norm(dim=0)
    s = stats[last.down_name] if stats is not None and last.down_name in stats else None
    if s is None or s.output_grad_sumsq is None:
        raise InvalidArgumentError(f"the 'gradient' weights need the loss gradients of the calibration text, which "
                                   f"`stats` lack ({last.down_name!r}); calibrate with "
                                   "llmrank_graph.calibrate(model, ..., gradients=True)")
    return s.output_grad_sumsq.to(torch.float64).sqrt()
