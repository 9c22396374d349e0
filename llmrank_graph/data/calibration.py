"""Activation statistics of every MLP Linear module, from one calibration pass.

For each module (keyed by its qualified name) :class:`ActivationStats` keeps the sum of
squares of each input and output feature over all calibration tokens, the sum of the
per-batch L2 norms (what the LLM-Rank reference code averages) and the sum of each input
feature. With ``second_moments=True``, :func:`calibrate` also keeps, for every down
projection, the Gram matrix ``sum_t h_t h_t^T`` of its input (the intermediate activation),
which compensation after pruning needs (:mod:`llmrank_graph.compensation.algebra`). Hooks live in a
context manager and are removed even when the forward pass fails.

Calibration stops after the last decoder layer's MLP: the final norm and the LM head (a fifth
of SmolLM2-135M's compute) are never run, since no statistic needs them.

Cost of the second moments
--------------------------
One m x m float64 matrix per layer: ``8 m^2`` bytes. SmolLM2-135M (30 layers, m = 1536):
30 x 18.9 MB = 566 MB. A 7B Llama (32 layers, m = 11008): 32 x 969 MB = 31 GB in memory and
on disk; accumulating them costs ``2 m^2`` float64 flops per token and layer, about as much
as the MLP's own forward pass in float32 (``6 d m``) for d = 4096. Use the sequential mode of
:func:`llmrank_graph.prune_model`, which holds one layer's matrix at a time (969 MB for the
7B model), where that does not fit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sized
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..base.checks import check_bool, check_positive_int, fail_type
from ..base.files import save_safetensors_atomic
from ..models.architectures import mlp_layers
from ..errors import FileFormatError, InvalidArgumentError, InvalidArgumentTypeError, MissingInputError

logger = logging.getLogger(__name__)

__all__ = ["ModuleStats", "ActivationStats", "calibrate", "record_activations"]

_FORMAT = "llmrank_graph.ActivationStats"


@dataclass
class ModuleStats:
    """Per-feature statistics of one Linear module.

    Attributes
    ----------
    input_sumsq, output_sumsq : torch.Tensor
        float64, (in_features,) and (out_features,): sum over tokens of x_i^2.
    input_batch_norm_sum, output_batch_norm_sum : torch.Tensor
        float64: sum over batches of each feature's L2 norm within the batch.
    n_batches, n_tokens : int
    input_sum : torch.Tensor or None
        float64, (in_features,): sum over tokens of x_i (None in stats built from norms alone).
    input_gram : torch.Tensor or None
        float64, (in_features, in_features): sum over tokens of x x^T. Only down projections
        have it, and only when calibrated with ``second_moments=True``.
    """

    input_sumsq: torch.Tensor
    output_sumsq: torch.Tensor
    input_batch_norm_sum: torch.Tensor
    output_batch_norm_sum: torch.Tensor
    n_batches: int = 0
    n_tokens: int = 0
    input_sum: torch.Tensor | None = None
    input_gram: torch.Tensor | None = None

    @property
    def input_norm(self) -> torch.Tensor:
        """L2 norm of each input feature over all calibration tokens, (in_features,)."""
        return self.input_sumsq.sqrt()

    @property
    def output_norm(self) -> torch.Tensor:
        """L2 norm of each output feature over all calibration tokens, (out_features,)."""
        return self.output_sumsq.sqrt()

    @property
    def input_norm_batch_mean(self) -> torch.Tensor:
        """Per-batch L2 norm of each input feature, averaged over batches (reference code)."""
        return self.input_batch_norm_sum / max(self.n_batches, 1)

    @property
    def output_norm_batch_mean(self) -> torch.Tensor:
        """Per-batch L2 norm of each output feature, averaged over batches (reference code)."""
        return self.output_batch_norm_sum / max(self.n_batches, 1)

    @property
    def input_mean(self) -> torch.Tensor | None:
        """Mean of each input feature over the calibration tokens, (in_features,), or None."""
        return None if self.input_sum is None else self.input_sum / max(self.n_tokens, 1)

    @property
    def input_second_moment(self) -> torch.Tensor | None:
        """``E[x x^T]`` over the calibration tokens, (in_features, in_features), or None."""
        return None if self.input_gram is None else self.input_gram / max(self.n_tokens, 1)

    @property
    def input_variance(self) -> torch.Tensor | None:
        """Variance of each input feature over the calibration tokens, (in_features,), or None."""
        mean = self.input_mean
        if mean is None:
            return None
        return (self.input_sumsq / max(self.n_tokens, 1) - mean * mean).clamp_min(0)

    def add(self, other: "ModuleStats") -> None:
        """Accumulate ``other`` (statistics of more tokens of the same module) into this one, in place."""
        self.input_sumsq += other.input_sumsq
        self.output_sumsq += other.output_sumsq
        self.input_batch_norm_sum += other.input_batch_norm_sum
        self.output_batch_norm_sum += other.output_batch_norm_sum
        self.n_batches += other.n_batches
        self.n_tokens += other.n_tokens
        if self.input_sum is not None and other.input_sum is not None:
            self.input_sum += other.input_sum
        if self.input_gram is not None and other.input_gram is not None:
            self.input_gram += other.input_gram


class ActivationStats(Mapping):
    """Mapping ``module name -> ModuleStats`` for every MLP Linear module of a model.

    Example
    -------
    >>> stats = calibrate(model, tokenizer, n_samples=8, seq_len=128)   # doctest: +SKIP
    >>> stats.input_norm("model.layers.0.mlp.down_proj").shape          # doctest: +SKIP
    torch.Size([1536])
    """

    def __init__(self, modules: Mapping[str, ModuleStats] | None = None, meta: dict | None = None):
        self._modules: dict[str, ModuleStats] = dict(modules or {})
        self.meta: dict = dict(meta or {})

    # Mapping protocol
    def __getitem__(self, name: str) -> ModuleStats:
        try:
            return self._modules[name]
        except KeyError:
            raise KeyError(f"no activation statistics for module {name!r}; stats hold "
                           f"{len(self._modules)} modules, e.g. {list(self._modules)[:3]}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def __len__(self) -> int:
        return len(self._modules)

    def __repr__(self) -> str:
        return f"ActivationStats({len(self)} modules, n_tokens={self.n_tokens})"

    @property
    def n_tokens(self) -> int:
        return max((s.n_tokens for s in self._modules.values()), default=0)

    def input_norm(self, name: str) -> torch.Tensor:
        return self[name].input_norm

    def has_second_moments(self, names=None) -> bool:
        """Whether the modules ``names`` (default: every module that has any) carry a Gram matrix and a mean.

        Stats calibrated with ``second_moments=True`` have them for every down projection.
        """
        if names is None:
            return any(s.input_gram is not None for s in self._modules.values())
        return all(n in self._modules and self._modules[n].input_gram is not None
                   and self._modules[n].input_sum is not None for n in names)

    def output_norm(self, name: str) -> torch.Tensor:
        return self[name].output_norm

    @classmethod
    def from_norms(cls, norms: Mapping[str, tuple[torch.Tensor, torch.Tensor]], n_tokens: int = 1) -> "ActivationStats":
        """Build stats from ``{module_name: (input_norm, output_norm)}`` computed elsewhere."""
        mods = {}
        for name, pair in norms.items():
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise InvalidArgumentTypeError(f"`norms[{name!r}]` must be a pair (input_norm, output_norm); "
                                               f"got {type(pair).__name__}")
            inp, out = (torch.as_tensor(t, dtype=torch.float64).detach().cpu().reshape(-1) for t in pair)
            for what, t in (("input_norm", inp), ("output_norm", out)):
                if not torch.isfinite(t).all() or (t < 0).any():
                    raise InvalidArgumentError(f"`norms[{name!r}]` {what} must be finite and non-negative")
            mods[name] = ModuleStats(inp**2, out**2, inp.clone(), out.clone(), n_batches=1, n_tokens=n_tokens)
        return cls(mods)

    def check_model(self, model: nn.Module) -> None:
        """Raise InvalidArgumentError (a ValueError) if these stats do not describe ``model``'s MLP modules."""
        for mlp in mlp_layers(model):
            for name, mod in mlp.named_modules().items():
                if name not in self._modules:
                    raise InvalidArgumentError(f"`stats` do not match the model: no statistics for module {name!r}")
                w = mlp.weight({mlp.up_name: "up", mlp.down_name: "down", mlp.gate_name: "gate"}[name])
                out_f, in_f = w.shape
                s = self._modules[name]
                got = (s.input_sumsq.numel(), s.output_sumsq.numel())
                if got != (in_f, out_f):
                    raise InvalidArgumentError(
                        f"`stats` do not match the model: module {name!r} has (in, out) features "
                        f"{(in_f, out_f)} in the model but {got} in the stats"
                    )
                for what, t in (("input", s.input_sumsq), ("output", s.output_sumsq)):
                    if not torch.isfinite(t).all():
                        raise InvalidArgumentError(f"`stats` for module {name!r} contain NaN or inf in the {what} "
                                                   "statistics")
                if s.input_sum is not None and s.input_sum.shape != (in_f,):
                    raise InvalidArgumentError(f"`stats` do not match the model: module {name!r} has {in_f} input "
                                               f"features but an input sum of shape {tuple(s.input_sum.shape)}")
                if s.input_gram is not None and s.input_gram.shape != (in_f, in_f):
                    raise InvalidArgumentError(f"`stats` do not match the model: module {name!r} has {in_f} input "
                                               f"features but a Gram matrix of shape {tuple(s.input_gram.shape)}")

    # Persistence: safetensors + JSON metadata, no pickle.
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write to a ``.safetensors`` file, atomically (:func:`llmrank_graph.base.files.atomic_file`).

        Parameters
        ----------
        path : str or path-like
            The file to write; parent directories are created.
        overwrite : bool
            Replace an existing file.

        Returns
        -------
        pathlib.Path
            The written path.

        Raises
        ------
        OutputExistsError
            If ``path`` exists and ``overwrite`` is False, or is a directory.
        """
        tensors, counts = {}, {}
        for name, s in self._modules.items():
            tensors[f"{name}::input_sumsq"] = s.input_sumsq.contiguous()
            tensors[f"{name}::output_sumsq"] = s.output_sumsq.contiguous()
            tensors[f"{name}::input_batch_norm_sum"] = s.input_batch_norm_sum.contiguous()
            tensors[f"{name}::output_batch_norm_sum"] = s.output_batch_norm_sum.contiguous()
            if s.input_sum is not None:
                tensors[f"{name}::input_sum"] = s.input_sum.contiguous()
            if s.input_gram is not None:
                tensors[f"{name}::input_gram"] = s.input_gram.contiguous()
            counts[name] = [s.n_batches, s.n_tokens]
        from .._version import __version__

        meta = {"format": _FORMAT, "version": __version__,
                "counts": json.dumps(counts), "meta": json.dumps(self.meta)}
        return save_safetensors_atomic(tensors, path, meta, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ActivationStats":
        """Read stats written by :meth:`save`.

        Raises
        ------
        MissingInputError
            If ``path`` does not exist (a FileNotFoundError).
        FileFormatError
            If the file is not an ActivationStats file, or is damaged or truncated (a
            ValueError naming the file).
        """
        from safetensors import SafetensorError, safe_open

        if not isinstance(path, (str, os.PathLike)):
            raise fail_type("path", "a str or a path", path)
        path = Path(path).expanduser()
        if not path.is_file():
            raise MissingInputError(f"`path` {str(path)!r} does not exist")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("format") != _FORMAT:
                    raise FileFormatError(f"`path` {str(path)!r} is not an llmrank_graph ActivationStats file")
                counts = json.loads(meta["counts"])
                keys = set(f.keys())
                mods = {}
                for name, (nb, nt) in counts.items():
                    optional = {field: f.get_tensor(f"{name}::{field}") if f"{name}::{field}" in keys else None
                                for field in ("input_sum", "input_gram")}
                    mods[name] = ModuleStats(
                        f.get_tensor(f"{name}::input_sumsq"), f.get_tensor(f"{name}::output_sumsq"),
                        f.get_tensor(f"{name}::input_batch_norm_sum"), f.get_tensor(f"{name}::output_batch_norm_sum"),
                        n_batches=int(nb), n_tokens=int(nt), **optional,
                    )
            return cls(mods, json.loads(meta.get("meta", "{}")))
        except FileFormatError:
            raise
        except (SafetensorError, OSError, KeyError, TypeError, ValueError) as e:
            # ValueError covers JSONDecodeError and a bad (n_batches, n_tokens) pair.
            raise FileFormatError(f"`path` {str(path)!r} is not a readable ActivationStats file (truncated or "
                                  f"damaged?): {type(e).__name__}: {e}") from None


#: Rows summed in the activations' own float32 before the float64 accumulation: a chunk's
#: rounding error stays near 1e-7 relative, and the hooks avoid a float64 copy of every
#: activation (which made calibration 1.3-1.45x a plain forward pass).
_CHUNK = 256


def _column_sums(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column sum of squares and sum of a (tokens, features) tensor, both float64."""
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    n, f = x.shape
    full = n - n % _CHUNK
    sq = torch.zeros(f, dtype=torch.float64, device=x.device)
    lin = torch.zeros(f, dtype=torch.float64, device=x.device)
    if full:
        chunks = x[:full].reshape(-1, _CHUNK, f)  # (chunks, rows, f)
        sq += torch.linalg.vecdot(chunks, chunks, dim=1).sum(0, dtype=torch.float64)  # no squared copy
        lin += chunks.sum(1).sum(0, dtype=torch.float64)
    if full < n:
        rest = x[full:]
        sq += rest.square().sum(0, dtype=torch.float64)
        lin += rest.sum(0, dtype=torch.float64)
    return sq, lin


class _SharedInput:
    """Column sums of the last input seen, reused by the next module fed the same tensor (gate and up)."""

    def __init__(self):
        self.tensor: torch.Tensor | None = None
        self.sums: tuple[torch.Tensor, torch.Tensor] | None = None

    def sums_of(self, x: torch.Tensor, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.tensor is not x:
            self.tensor, self.sums = x, _column_sums(flat)
        return self.sums


class _Recorder:
    """Accumulates the statistics of one module from its forward hook.

    Sums are kept on the activations' device while recording and moved to the CPU by
    :meth:`result`. ``gram`` also accumulates ``x^T x`` of the input in float64.
    """

    def __init__(self, gram: bool = False, shared: _SharedInput | None = None):
        self.gram = gram
        self.shared = shared or _SharedInput()
        self._acc: dict[str, torch.Tensor] | None = None
        self.n_batches = 0
        self.n_tokens = 0

    def __call__(self, module, inputs, output):
        x = inputs[0].detach()
        y = output.detach() if isinstance(output, torch.Tensor) else output[0].detach()
        flat = x.reshape(-1, x.shape[-1])  # (tokens, in)
        xs, xl = self.shared.sums_of(inputs[0], flat)  # the hook's own object: detach() makes a new one
        ys, _ = _column_sums(y.reshape(-1, y.shape[-1]))  # (out,)
        new = {"input_sumsq": xs, "output_sumsq": ys, "input_batch_norm_sum": xs.sqrt(),
               "output_batch_norm_sum": ys.sqrt(), "input_sum": xl}
        if self._acc is None:
            self._acc = {k: v.clone() for k, v in new.items()}
            if self.gram:
                self._acc["input_gram"] = torch.zeros(flat.shape[1], flat.shape[1], dtype=torch.float64,
                                                      device=flat.device)
        else:
            for k, v in new.items():
                self._acc[k] += v
        if self.gram:
            h = flat.to(torch.float64)
            self._acc["input_gram"].addmm_(h.T, h)  # (in, in)
        self.n_batches += 1
        self.n_tokens += flat.shape[0]

    def result(self) -> ModuleStats | None:
        """The statistics recorded so far, on the CPU (None before the first batch)."""
        if self._acc is None:
            return None
        acc = {k: v.cpu() for k, v in self._acc.items()}
        return ModuleStats(acc["input_sumsq"], acc["output_sumsq"], acc["input_batch_norm_sum"],
                           acc["output_batch_norm_sum"], self.n_batches, self.n_tokens, acc["input_sum"],
                           acc.get("input_gram"))

    @property
    def stats(self) -> ModuleStats | None:
        """Alias of :meth:`result`."""
        return self.result()


class _StopForward(Exception):
    """Raised by a hook to end a forward pass once the last statistic is recorded."""


def _stop_after(module: nn.Module):
    """A forward-hook handle on ``module`` that ends the forward pass (see :class:`_StopForward`)."""

    def stop(mod, inputs, output):
        raise _StopForward

    return module.register_forward_hook(stop)


def _hook_mlps(mlps, second_moments: bool) -> tuple[dict[str, _Recorder], list]:
    """Recorders (and their hook handles) on every Linear of ``mlps``; Gram matrices on down projections."""
    recorders: dict[str, _Recorder] = {}
    handles = []
    for mlp in mlps:
        shared = _SharedInput()  # gate and up read the same normalised hidden states
        for name, mod in mlp.named_modules().items():
            gram = second_moments and name == mlp.down_name
            rec = recorders[name] = _Recorder(gram, shared if name != mlp.down_name else None)
            handles.append(mod.register_forward_hook(rec))
    return recorders, handles


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
    """
    check_bool("second_moments", second_moments)
    mlps = mlp_layers(model)
    if layers is not None:
        wanted = set(layers)
        mlps = [m for m in mlps if m.layer in wanted]
    handles = []
    try:
        recorders, handles = _hook_mlps(mlps, second_moments)
        yield recorders
    finally:
        for h in handles:
            h.remove()


def _batches(ids: torch.Tensor, batch_size: int) -> Iterable[torch.Tensor]:
    for i in range(0, ids.shape[0], batch_size):
        yield ids[i : i + batch_size]


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
) -> ActivationStats:
    """Run calibration text through ``model`` and collect MLP activation statistics.

    Each forward pass stops after the last decoder layer's MLP: the final norm and the LM head
    are not run.

    Parameters
    ----------
    model : transformers model of a registered architecture.
    tokenizer : tokenizer, optional
        Needed unless ``input_ids`` is given.
    texts : None, str path, dataset name, or list of str
        None: the embedded Wikipedia calibration articles (disjoint from the evaluation ones,
        see :func:`llmrank_graph.data.texts.wikipedia_articles`). A str is a .txt/.jsonl path or a
        ``datasets`` name (see :func:`llmrank_graph.data.texts.load_texts`).
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
        ``obs`` scorer need.

    Returns
    -------
    ActivationStats

    Raises
    ------
    InvalidArgumentError
        On bad sizes, on both ``texts`` and ``input_ids``, without any input, on empty
        sequences or token ids outside the model's vocabulary (a ValueError).
    InvalidArgumentTypeError
        On arguments of the wrong type (a TypeError).
    """
    for arg, v in (("n_samples", n_samples), ("seq_len", seq_len), ("batch_size", batch_size)):
        check_positive_int(arg, v)
    check_bool("progress", progress)
    check_bool("second_moments", second_moments)
    if input_ids is not None and texts is not None:
        raise InvalidArgumentError("give either `texts` or `input_ids`, not both")
    if input_ids is None:
        if tokenizer is None:
            raise InvalidArgumentError("`tokenizer` is required unless `input_ids` is given")
        from .texts import load_texts, token_blocks

        if texts is None or isinstance(texts, (str, os.PathLike)):
            texts = load_texts(texts, split="calibration")
        ids = token_blocks(tokenizer, texts, n_samples, seq_len)
        batches: Iterable[torch.Tensor] = list(_batches(ids, batch_size))
        source = "texts"
    else:
        if isinstance(input_ids, torch.Tensor):
            if input_ids.dim() != 2:
                raise InvalidArgumentError(f"`input_ids` must be a (batch, seq) LongTensor; got shape "
                                           f"{tuple(input_ids.shape)}")
            batches = list(_batches(input_ids, batch_size))
        else:
            batches = input_ids
        source = "input_ids"
    device = next(model.parameters()).device
    vocab = _vocab_size(model)
    total = len(batches) if isinstance(batches, Sized) else None
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=total, desc="calibrating", unit="batch")
    n = 0
    last_down = mlp_layers(model)[-1].down
    with torch.inference_mode(), record_activations(model, second_moments=second_moments) as recs:
        stop = _stop_after(last_down)  # registered after the recorder: it records, then stops
        try:
            for b in batches:
                b = torch.as_tensor(b)
                _check_batch(b, n, vocab)
                try:
                    model(input_ids=b.to(device), use_cache=False)
                except _StopForward:
                    pass
                n += 1
        finally:
            stop.remove()
    if n == 0:
        raise InvalidArgumentError("`input_ids` is empty: no calibration batch")
    stats = ActivationStats({k: r.result() for k, r in recs.items()},
                            meta={"source": source, "n_batches": n, "second_moments": second_moments,
                                  "model": getattr(getattr(model, "config", None), "_name_or_path", "")})
    for name, s in stats.items():
        for what, t in (("input", s.input_sumsq), ("output", s.output_sumsq)):
            if not torch.isfinite(t).all():
                raise InvalidArgumentError(f"calibration produced NaN or inf in the {what} of module {name!r}; "
                                 "check the model weights")
    logger.info("calibrated %d modules on %d tokens", len(stats), stats.n_tokens)
    return stats


def _vocab_size(model: nn.Module) -> int | None:
    try:
        embeddings = model.get_input_embeddings()  # transformers' PreTrainedModel API
    except (AttributeError, NotImplementedError):
        return None
    return getattr(embeddings, "num_embeddings", None)


def _check_batch(b: torch.Tensor, i: int, vocab: int | None) -> None:
    """A (batch, seq) integer batch, not empty, with ids inside the vocabulary."""
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
