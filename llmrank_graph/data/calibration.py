"""Activation statistics of every MLP Linear module (and attention output projection), from one calibration pass.

For each module (keyed by its qualified name) :class:`~llmrank_graph.data.stats.ActivationStats`
keeps the sum of squares of each input and output feature over all calibration tokens, the sum of the
per-batch L2 norms (what the LLM-Rank reference code averages) and the sum of each input
feature. With ``second_moments=True``, :func:`calibrate` also keeps, for every down
projection, the Gram matrix ``sum_t h_t h_t^T`` of its input (the intermediate activation),
which compensation after pruning needs (:mod:`llmrank_graph.compensation.algebra`). Hooks live in a
context manager and are removed even when the forward pass fails.

With ``attention=True`` the same pass also records every layer's attention output projection
(:attr:`~llmrank_graph.models.attention.AttentionModules.o`: ``o_proj``, ``out_proj``, GPT-2's
``Conv1D`` ``c_proj``), under its qualified name ``AttentionModules.names['o']``, with exactly the
statistics of a down projection: its input is the concatenation of the heads' outputs, so query
head ``h`` owns input features ``h * head_dim : (h + 1) * head_dim``
(:func:`~llmrank_graph.data.stats.head_norms`). With ``second_moments=True`` it gets its input's
Gram matrix too (``(H hd)^2 * 8`` bytes per layer: 2.7 MB for SmolLM2-135M's 576), which the
least-squares refit of the kept output columns needs after head pruning. The value projection
(GPT-2's fused ``c_attn``) is recorded too, under ``names['v']`` (``names['qkv']``): its input
is the attention's input, which an exported graph with heads needs. Every layer's
attention runs before its MLP, so stopping after the last MLP loses nothing.

Two more statistics are opt-in: ``gradients=True`` adds the loss gradients of the calibration
text (:mod:`llmrank_graph.data.gradients`: a backward pass, about 3x the time) and
``residual=True`` the residual stream entering each MLP before its norm (the norm's input).

Calibration stops after the last decoder layer's MLP: the final norm and the LM head (a fifth
of SmolLM2-135M's compute) are never run, since no statistic needs them (but the gradients). The hooks' per-column
sums read each activation once (:func:`~llmrank_graph.data.sums.column_sums`, a numba kernel on
the CPU).

Cost of the second moments
--------------------------
One m x m float64 matrix per layer: ``8 m^2`` bytes. SmolLM2-135M (30 layers, m = 1536):
30 x 18.9 MB = 566 MB. A 7B Llama (32 layers, m = 11008): 32 x 969 MB = 31 GB in memory and
on disk. Use the sequential mode of :func:`llmrank_graph.prune_model`, which holds one layer's
matrix at a time (969 MB for the 7B model), where that does not fit.

The products run in the activations' float32 (no float64 copy; half the cost of float64
products) on chunks of at most ``_GRAM_ROWS`` tokens, and only for the upper triangle, one
block of rows at a time (``_GRAM_BLOCKS`` blocks: 9/16 of a full product, about ``1.1 m^2``
flops per token and layer); each chunk's float32 product is added to the float64 total, and
the lower triangle is mirrored when the statistics are read. The relative error to a float64
product stays near 1e-7 (Frobenius; ``tests/test_calibration_gram.py``). The products run at
full float32 precision even where ``torch.set_float32_matmul_precision`` allows bfloat16 or
TF32 (1e-3 relative error).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Sized

import torch
from torch import nn

from ..base.params import Boolean, Interval, validated
from ..base.progress import progress as base_progress
from ..errors import InvalidArgumentError, LLMRankGraphError
from ..models.architectures import MODEL, MLPModules, mlp_layers
from ..models.attention import AttentionModules, attention_layers
from .gradients import GradientRecorder
from .stats import ActivationStats, ModuleStats, residual_modules
from .sums import column_sums
from .texts import TEXTS, source_blocks

logger = logging.getLogger(__name__)

__all__ = ["ModuleStats", "ActivationStats", "calibrate", "record_activations", "StopForward", "hook_mlps",
           "check_batch", "vocab_size"]

#: Tokens per float32 Gram product, added to the float64 total after each: the float32 sum of
#: 8192 activation rows stays near 1e-7 relative (measured 2e-8 to 1e-7 Frobenius, 4e-7 on the
#: diagonal, from 256 to 32768 rows), and it takes a batch of 16 x 512 tokens in one product.
_GRAM_ROWS = 8192

#: Row blocks of the Gram matrix's upper triangle, multiplied one at a time: 8 blocks compute
#: (8 + 1) / 16 of the full product. Measured on SmolLM2's m = 1536 with 2048 tokens, one
#: thread: 8 blocks 1.72x a (2048, 576) x (576, 1536) product, 6 blocks 1.77x, 16 blocks 2.15x,
#: the full float32 product 2.68x, scipy's ssyrk 1.80x, the float64 product about 5x.
_GRAM_BLOCKS = 8
_GRAM_MIN_BLOCK = 64  # narrower blocks cost more in calls than they save in flops


@contextlib.contextmanager
def _full_float32_matmul() -> Iterator[None]:
    """Float32 products at full precision inside, whatever ``torch.set_float32_matmul_precision`` says.

    "high" and "medium" let matmuls run in TF32 or bfloat16 (about 1e-3 relative error), which
    the Gram matrix must not suffer; the setting is restored on exit.
    """
    before = torch.get_float32_matmul_precision()
    if before == "highest":
        yield
        return
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


class _Gram:
    """``sum_t x_t x_t^T`` of the rows added, in float64, from float32 products of the upper triangle.

    The row blocks ``[i, j)`` of the upper block triangle (``x[:, i:j]^T x[:, i:]``) are
    multiplied in float32, one chunk of at most ``_GRAM_ROWS`` rows at a time, into a scratch
    matrix shared by every ``_Gram`` of the same size and device (the hooks run one at a time),
    and added to the float64 total. Float64 rows are multiplied in float64 straight into the
    total; other dtypes (bfloat16, float16) are converted to float32, exactly.
    :meth:`full` mirrors the upper triangle into the lower one and returns the total.
    """

    def __init__(self, m: int, device: torch.device, scratch: dict):
        self.total = torch.zeros(m, m, dtype=torch.float64, device=device)
        width = max(-(-m // _GRAM_BLOCKS), _GRAM_MIN_BLOCK)
        self.blocks = [(i, min(i + width, m)) for i in range(0, m, width)]
        self._scratch = scratch

    def add(self, x: torch.Tensor) -> None:
        """Accumulate ``x^T x`` of ``x`` (tokens, m)."""
        if x.dtype == torch.float64:
            with _full_float32_matmul():
                for i, j in self.blocks:
                    self.total[i:j, i:].addmm_(x[:, i:j].T, x[:, i:])
            return
        x = x.float()  # no copy for float32
        m = x.shape[1]
        key = (m, self.total.device)
        if key not in self._scratch:
            self._scratch[key] = torch.empty(m, m, dtype=torch.float32, device=self.total.device)
        part = self._scratch[key]
        with _full_float32_matmul():
            for lo in range(0, x.shape[0], _GRAM_ROWS):
                chunk = x[lo : lo + _GRAM_ROWS]
                for i, j in self.blocks:
                    block = part[i:j, i:]
                    block.addmm_(chunk[:, i:j].T, chunk[:, i:], beta=0)  # beta=0: the scratch is not read
                    self.total[i:j, i:] += block

    def full(self) -> torch.Tensor:
        """The full symmetric total (the lower triangle mirrored from the upper one, in place)."""
        g = self.total
        with torch.inference_mode():  # the total is an inference tensor when calibration made it
            for i, j in self.blocks:
                g[j:, i:j] = g[i:j, j:].T
                diag = g[i:j, i:j]
                diag.copy_(diag.triu() + diag.triu(1).T)
        return g


class _SharedInput:
    """Column sums of the last input seen, reused by the next module fed the same tensor (gate and up)."""

    def __init__(self):
        self.tensor: torch.Tensor | None = None
        self.sums: tuple[torch.Tensor, torch.Tensor] | None = None

    def sums_of(self, x: torch.Tensor, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.tensor is not x:
            self.tensor, self.sums = x, column_sums(flat)
        return self.sums


class _Recorder:
    """Accumulates the statistics of one module from its forward hook.

    Sums are kept on the activations' device while recording and moved to the CPU by
    :meth:`result`. ``gram`` also accumulates ``x^T x`` of the input in float64 (:class:`_Gram`,
    whose float32 scratch matrices are shared through ``scratch``).
    """

    def __init__(self, gram: bool = False, shared: _SharedInput | None = None, scratch: dict | None = None):
        self.gram = gram
        self.shared = shared or _SharedInput()
        self._scratch = {} if scratch is None else scratch
        self._acc: dict[str, torch.Tensor] | None = None
        self._gram: _Gram | None = None
        self.n_batches = 0
        self.n_tokens = 0

    def __call__(self, module, inputs, output):
        x = inputs[0].detach()
        y = output.detach() if isinstance(output, torch.Tensor) else output[0].detach()
        flat = x.reshape(-1, x.shape[-1])  # (tokens, in)
        xs, xl = self.shared.sums_of(inputs[0], flat)  # the hook's own object: detach() makes a new one
        ys, _ = column_sums(y.reshape(-1, y.shape[-1]), linear=False)  # (out,)
        new = {"input_sumsq": xs, "output_sumsq": ys, "input_batch_norm_sum": xs.sqrt(),
               "output_batch_norm_sum": ys.sqrt(), "input_sum": xl}
        if self._acc is None:
            self._acc = {k: v.clone() for k, v in new.items()}
            if self.gram:
                self._gram = _Gram(flat.shape[1], flat.device, self._scratch)
        else:
            for k, v in new.items():
                self._acc[k] += v
        if self._gram is not None:
            self._gram.add(flat)
        self.n_batches += 1
        self.n_tokens += flat.shape[0]

    def result(self) -> ModuleStats | None:
        """The statistics recorded so far, on the CPU (None before the first batch)."""
        if self._acc is None:
            return None
        acc = {k: v.cpu() for k, v in self._acc.items()}
        gram = None if self._gram is None else self._gram.full().cpu()
        return ModuleStats(acc["input_sumsq"], acc["output_sumsq"], acc["input_batch_norm_sum"],
                           acc["output_batch_norm_sum"], self.n_batches, self.n_tokens, acc["input_sum"], gram)


class StopForward(LLMRankGraphError):
    """Raised by a forward hook to end a forward pass once the last statistic is recorded.

    Control flow, not an error: the code that installs the hook catches it around
    ``model(...)``, so it never reaches a user. It derives from the package's base exception
    like every public exception class of the package.

    The final norm and the LM head (a fifth of SmolLM2-135M's compute) are never needed for
    calibration statistics; a hook on the last module that matters raises this, and the caller
    catches it around ``model(...)``. Sequential pruning uses it to stop after one layer.
    """


def _stop_after(module: nn.Module):
    """A forward-hook handle on ``module`` that ends the forward pass (see :class:`StopForward`)."""

    def stop(mod, inputs, output):
        raise StopForward

    return module.register_forward_hook(stop)


def hook_mlps(mlps, second_moments: bool, attention: list[AttentionModules] | None = None,
              residual: dict[str, nn.Module] | None = None) -> tuple[dict[str, _Recorder], list]:
    """Put a statistics recorder on every Linear of ``mlps``.

    The caller owns the hooks: remove every handle in a ``finally`` (or use
    :func:`record_activations`, which does).

    Parameters
    ----------
    mlps : iterable of MLPModules
        The MLPs to hook (from :func:`llmrank_graph.models.architectures.mlp_layers`).
    second_moments : bool
        Also accumulate the Gram matrix of each down projection's input (and of each hooked
        attention output projection's).
    attention : list of AttentionModules, optional
        Also record the output projection of these attention layers
        (:func:`llmrank_graph.models.attention.attention_layers`), under ``names['o']``, and
        their value projection (GPT-2: the fused ``c_attn``), under ``names['v']`` (``'qkv'``),
        whose input is the attention's.
    residual : dict of str -> nn.Module, optional
        Also record these modules (:func:`~llmrank_graph.data.stats.residual_modules`: the norm
        before each MLP, whose input is the residual stream entering it), under these names.

    Returns
    -------
    recorders : dict of str -> recorder
        Module name -> recorder; ``recorder.result()`` gives its :class:`ModuleStats`.
    handles : list of torch.utils.hooks.RemovableHandle
        The hook handles, to remove.
    """
    recorders: dict[str, _Recorder] = {}
    handles = []
    scratch: dict = {}  # float32 Gram products, shared by the down projections (hooks run one at a time)
    for mlp in mlps:
        shared = _SharedInput()  # gate and up read the same normalised hidden states
        for name, mod in mlp.named_modules().items():
            gram = second_moments and name == mlp.down_name
            rec = recorders[name] = _Recorder(gram, shared if name != mlp.down_name else None, scratch)
            handles.append(mod.register_forward_hook(rec))
    for att in attention or ():
        rec = recorders[att.names["o"]] = _Recorder(second_moments, None, scratch)
        handles.append(att.o.register_forward_hook(rec))
        # The attention's input (what the graph's residual nodes before the heads carry): the
        # value projection's, or the fused projection's in GPT-2.
        fused = att.v is None
        rec = recorders[att.names["qkv" if fused else "v"]] = _Recorder(False, None, scratch)
        handles.append((att.qkv if fused else att.v).register_forward_hook(rec))
    for name, mod in (residual or {}).items():
        rec = recorders[name] = _Recorder(False, None, scratch)
        handles.append(mod.register_forward_hook(rec))
    return recorders, handles


@validated({"second_moments": Boolean()})
@contextlib.contextmanager
def record_activations(model: nn.Module, *, second_moments: bool = False,
                       layers: Iterable[int] | None = None) -> Iterator[dict[str, _Recorder]]:
    """Context manager: forward hooks on every MLP Linear; removed on exit, even on error.

    Parameters
    ----------
    model : transformers model of a registered architecture
    second_moments : bool
        Also accumulate the Gram matrix of every down projection's input.
    layers : iterable of int, optional
        Hook only these decoder layers (default: all).

    Yields
    ------
    dict of str -> recorder
        Module name -> recorder; ``recorder.result()`` gives its :class:`ModuleStats`.

    Example
    -------
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> _ = torch.manual_seed(0)
    >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=12, num_hidden_layers=2,
    ...                                      num_attention_heads=2, num_key_value_heads=2)).eval()
    >>> with record_activations(model, layers=[1]) as recorders:
    ...     _ = model(input_ids=torch.tensor([[1, 2, 3, 4]]))
    >>> stats = recorders["model.layers.1.mlp.down_proj"].result()
    >>> stats.input_sumsq.shape, stats.n_tokens
    (torch.Size([12]), 4)
    """
    mlps = mlp_layers(model)
    if layers is not None:
        wanted = set(layers)
        mlps = [m for m in mlps if m.layer in wanted]
    with _hooked(mlps, second_moments) as recorders:
        yield recorders


@contextlib.contextmanager
def _hooked(mlps: list[MLPModules], second_moments: bool, attention: list[AttentionModules] | None = None,
            residual: dict[str, nn.Module] | None = None) -> Iterator[dict[str, _Recorder]]:
    """:func:`hook_mlps` as a context manager: every hook is removed on exit, even on error."""
    handles = []
    try:
        recorders, handles = hook_mlps(mlps, second_moments, attention, residual)
        yield recorders
    finally:
        for h in handles:
            h.remove()


def _batches(ids: torch.Tensor, batch_size: int) -> Iterable[torch.Tensor]:
    for i in range(0, ids.shape[0], batch_size):
        yield ids[i : i + batch_size]


_CALIBRATE_PARAMS = {
    "model": MODEL,
    "texts": TEXTS,
    "n_samples": Interval(int, 1),
    "seq_len": Interval(int, 1),
    "batch_size": Interval(int, 1),
    "progress": Boolean(),
    "second_moments": Boolean(),
    "attention": Boolean(),
    "gradients": Boolean(),
    "residual": Boolean(),
}


@validated(_CALIBRATE_PARAMS)
def calibrate(
    model: nn.Module,
    tokenizer=None,
    texts=None,
    input_ids: Iterable[torch.Tensor] | torch.Tensor | None = None,
    n_samples: int = 32,
    seq_len: int = 512,
    batch_size: int = 4,
    progress: bool = False,
    second_moments: bool = False,
    attention: bool = False,
    gradients: bool = False,
    residual: bool = False,
) -> ActivationStats:
    """Run calibration text through ``model`` and collect MLP activation statistics.

    Each forward pass stops after the last decoder layer's MLP: the final norm and the LM head
    are not run.

    Parameters
    ----------
    model : transformers model of a registered architecture.
    tokenizer : tokenizer, optional
        Needed unless ``input_ids`` is given.
    texts : None, list of str, str path, or dataset name
        None: the embedded Wikipedia calibration articles (disjoint from the evaluation ones,
        see :func:`llmrank_graph.data.texts.wikipedia_articles`). A str is a path to a
        .txt/.jsonl file or to a directory of them, or a ``datasets`` name (see
        :func:`llmrank_graph.data.texts.load_texts`); one text goes in a list.
    input_ids : LongTensor (n, seq) or iterable of LongTensor (batch, seq), optional
        Pre-tokenised batches; then ``tokenizer``, ``texts``, ``n_samples`` and ``seq_len``
        are not used (giving ``texts`` as well is an error).
    n_samples, seq_len : int
        Number of blocks of ``seq_len`` tokens cut from the text.
    batch_size : int
        Blocks per forward pass.
    progress : bool
        Show a tqdm progress bar.
    second_moments : bool
        Also accumulate, in float64, the Gram matrix of every down projection's input (m x m
        per layer; see the module docstring for the cost), which ``compensate='lstsq'`` and the
        ``obs`` scorer need (and, with ``attention``, that of every attention output projection).
    attention : bool
        Also record every layer's attention output projection, under its qualified name
        (``AttentionModules.names['o']``), in the same pass: what the head scorers and head
        pruning read (:func:`~llmrank_graph.data.stats.head_norms`). Refused, before any forward
        pass, for a family without attention support (UnsupportedArchitectureError).
    gradients : bool
        Also take, for every batch, the gradient of the summed next-token loss (labels: the
        next tokens) with respect to every down projection's input and output, and keep
        ``input_taylor`` (``sum_t x dL/dx``, the ``taylor`` scorer) and ``output_grad_sumsq``
        (the ``gradient`` seed of the output-seeded graph scorers). The pass then runs the
        whole model, the LM head included, and a backward pass: about 3x the time, and the
        memory of training without parameter gradients, 2.4 MB per token of a batch for
        SmolLM2-135M (:mod:`llmrank_graph.data.gradients`).
    residual : bool
        Also record the residual stream entering every MLP, before its norm: the input of the
        norm of :func:`~llmrank_graph.data.stats.residual_modules`, under that module's name
        (:meth:`ActivationStats.residual_norms` reads it), which
        ``residual='measured'`` graphs need.

    Returns
    -------
    ActivationStats

    Raises
    ------
    InvalidArgumentError
        On bad sizes, on both ``texts`` and ``input_ids``, without any input, on empty
        sequences or token ids outside the model's vocabulary (a ValueError).
    InvalidArgumentTypeError
        On arguments of the wrong type (a TypeError): ``model`` not an nn.Module, ``texts``
        a str that is neither an existing path nor a dataset name (one long text, say).

    Example
    -------
    A tiny random Llama (no download), calibrated on pre-tokenised ids:

    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> _ = torch.manual_seed(0)
    >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=12, num_hidden_layers=2,
    ...                                      num_attention_heads=2, num_key_value_heads=2)).eval()
    >>> stats = calibrate(model, input_ids=torch.randint(0, 32, (4, 16)), batch_size=2, second_moments=True)
    >>> stats
    ActivationStats(6 modules, n_tokens=64)
    >>> stats["model.layers.0.mlp.down_proj"].input_gram.shape
    torch.Size([12, 12])
    >>> heads = calibrate(model, input_ids=torch.randint(0, 32, (2, 8)), attention=True)
    >>> heads["model.layers.1.self_attn.o_proj"].input_sumsq.shape  # 2 heads of head_dim 4
    torch.Size([8])
    """
    if input_ids is not None and texts is not None:
        raise InvalidArgumentError("give either `texts` or `input_ids`, not both")
    heads = attention_layers(model) if attention else None  # a family without heads is refused first
    if input_ids is None:
        ids = source_blocks(tokenizer, texts, n_samples, seq_len, split="calibration")
        batches, source = list(_batches(ids, batch_size)), "texts"
    else:
        batches, source = _given_batches(input_ids, batch_size), "input_ids"
    stream = residual_modules(model) if residual else None
    recorded, n = _run(model, batches, second_moments, progress, heads, stream, gradients)
    extra = {k: True for k, v in (("gradients", gradients), ("residual", residual)) if v}
    stats = ActivationStats(recorded, meta={"source": source, "n_batches": n, "second_moments": second_moments,
                                            "attention": attention, **extra,
                                            "model": getattr(getattr(model, "config", None), "_name_or_path", "")})
    _check_finite_stats(stats)
    logger.info("calibrated %d modules on %d tokens", len(stats), stats.n_tokens)
    return stats


def _given_batches(input_ids, batch_size: int) -> Iterable[torch.Tensor]:
    """The batches of ``input_ids``: a (n, seq) tensor cut into batches, or the caller's iterable as it is."""
    if not isinstance(input_ids, torch.Tensor):
        return input_ids
    if input_ids.dim() != 2:
        raise InvalidArgumentError(f"`input_ids` must be a (batch, seq) LongTensor; got shape "
                                   f"{tuple(input_ids.shape)}")
    return list(_batches(input_ids, batch_size))


def _run(model: nn.Module, batches: Iterable, second_moments: bool, progress: bool,
         attention: list[AttentionModules] | None = None, residual: dict[str, nn.Module] | None = None,
         gradients: bool = False) -> tuple[dict, int]:
    """Forward every batch with recorders on every MLP (and ``attention``'s output projections,
    ``residual``'s modules); returns ``(name -> ModuleStats, batches run)``.

    Each pass stops after the last layer's down projection (:class:`StopForward`); with
    ``gradients`` it runs to the loss instead, and a backward pass follows (:class:`GradientRecorder`).
    """
    device = next(model.parameters()).device
    vocab = vocab_size(model)
    batches = base_progress(batches, progress, "calibrating", "batch",
                            total=len(batches) if isinstance(batches, Sized) else None)
    n = 0
    mlps = mlp_layers(model)
    grads = GradientRecorder(mlps) if gradients else None
    with (torch.inference_mode() if grads is None else contextlib.nullcontext(),
          _hooked(mlps, second_moments, attention, residual) as recs,
          grads.hooked(model) if grads is not None else contextlib.nullcontext()):
        stop = _stop_after(mlps[-1].down) if grads is None else None  # after the recorder: it records, then stops
        try:
            for b in batches:
                b = torch.as_tensor(b)
                check_batch(b, n, vocab)
                if grads is not None:
                    grads.step(model, b.to(device))
                else:
                    with contextlib.suppress(StopForward):
                        model(input_ids=b.to(device), use_cache=False)
                n += 1
        finally:
            if stop is not None:
                stop.remove()
    if n == 0:
        raise InvalidArgumentError("`input_ids` is empty: no calibration batch")
    out = {k: r.result() for k, r in recs.items()}
    for name, (taylor, sumsq) in (grads.result() if grads is not None else {}).items():
        out[name].input_taylor, out[name].output_grad_sumsq = taylor, sumsq
    return out, n


def _check_finite_stats(stats: ActivationStats) -> None:
    """NaN or inf in the statistics come from the weights (the inputs are token ids)."""
    for name, s in stats.items():
        for what, t in (("input", s.input_sumsq), ("output", s.output_sumsq)):
            if not torch.isfinite(t).all():
                raise InvalidArgumentError(f"calibration produced NaN or inf in the {what} of module {name!r}; "
                                           "check the model weights")


def vocab_size(model: nn.Module) -> int | None:
    """Number of rows of ``model``'s input embedding, or None when the model does not say.

    Token ids at or above it would index past the embedding (a CUDA assert, or garbage on
    some backends), so :func:`check_batch` refuses them with a message instead.

    >>> from torch import nn
    >>> vocab_size(nn.Linear(2, 2)) is None
    True
    """
    try:
        embeddings = model.get_input_embeddings()  # transformers' PreTrainedModel API
    except (AttributeError, NotImplementedError):
        return None
    return getattr(embeddings, "num_embeddings", None)


def check_batch(b: torch.Tensor, i: int, vocab: int | None) -> None:
    """Refuse a calibration batch that is not a non-empty (batch, seq) integer tensor of ids in ``[0, vocab)``.

    Parameters
    ----------
    b : torch.Tensor
        The batch of token ids.
    i : int
        Its position among the batches, for the message.
    vocab : int or None
        The vocabulary size (:func:`vocab_size`); None skips the range check.

    Raises
    ------
    InvalidArgumentError
        Naming the batch and what is wrong with it.

    >>> check_batch(torch.tensor([[1, 2, 3]]), 0, 10)
    >>> check_batch(torch.tensor([[1, 12]]), 3, 10)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    llmrank_graph.errors.InvalidArgumentError: `input_ids` batch 3 has token ids from 1 to 12, outside ... [0, 10); ...
    """
    if b.dim() != 2 or b.dtype not in (torch.int64, torch.int32):
        raise InvalidArgumentError(f"`input_ids` batches must be (batch, seq) integer tensors; got {b.dtype} "
                                   f"{tuple(b.shape)} (batch {i})")
    if b.numel() == 0:
        raise InvalidArgumentError(f"`input_ids` batch {i} is empty (shape {tuple(b.shape)}); every sequence "
                                   "needs at least one token")
    lo, hi = int(b.min()), int(b.max())
    if lo < 0 or (vocab is not None and hi >= vocab):
        raise InvalidArgumentError(f"`input_ids` batch {i} has token ids from {lo} to {hi}, outside the model's "
                                   f"vocabulary [0, {vocab}); were they made by another model's tokenizer?")
