"""What every per-layer keep-mask shares: the checks of its entries, its summaries and its file.

:class:`~llmrank_graph.pruning.masks.NeuronMask` (MLP neurons) and
:class:`~llmrank_graph.pruning.heads.HeadMask` (query heads) both map layer -> bool tensor
(``True`` = kept) and derive from :class:`LayerKeeps`, which holds the counting methods over
that main mapping and the reading and writing of the safetensors file (one bool tensor per
layer, named ``<kind>.<layer>``, and the JSON metadata), so that both masks check, count and
round-trip the same way.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import torch
from safetensors import SafetensorError, safe_open

from .._version import __version__
from ..base.checks import check_input_file
from ..base.files import save_safetensors_atomic
from ..errors import FileFormatError, InvalidArgumentError, InvalidArgumentTypeError

__all__ = ["LayerKeeps"]


def _as_keep(t, what: str) -> torch.Tensor:
    try:
        t = torch.as_tensor(t)
    except (TypeError, ValueError, RuntimeError):
        raise InvalidArgumentTypeError(f"{what} must be a bool tensor (True = kept); got {type(t).__name__}") from None
    if t.dtype != torch.bool:
        raise InvalidArgumentTypeError(f"{what} must be a bool tensor (True = kept); got dtype {t.dtype}")
    if t.dim() != 1 or t.numel() == 0:
        raise InvalidArgumentError(f"{what} must be a non-empty 1-D bool tensor; got shape {tuple(t.shape)}")
    return t.detach().to("cpu").clone()


def _as_layer(key, what: str) -> int:
    if isinstance(key, str) and key.lstrip("-").isdigit():
        key = int(key)
    message = f"{what} keys must be non-negative layer indices; got {key!r}"
    if isinstance(key, bool) or not isinstance(key, numbers.Integral):
        raise InvalidArgumentTypeError(message)
    if int(key) < 0:
        raise InvalidArgumentError(message)
    return int(key)


def _same(a: dict | None, b: dict | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def keep_tensors(arg: str, keeps: Mapping, unit: str) -> dict[int, torch.Tensor]:
    """``keeps`` (layer -> bool keep-tensor) checked and copied, in layer order; each layer keeps one at least.

    ``arg`` names the argument in the messages, ``unit`` what one entry is (``'neuron'``, ``'head'``).
    """
    out: dict[int, torch.Tensor] = {}
    for key in sorted(keeps, key=lambda k: _as_layer(k, f"`{arg}`")):
        layer = _as_layer(key, f"`{arg}`")
        keep = _as_keep(keeps[key], f"`{arg}[{layer}]`")
        if not keep.any():
            raise InvalidArgumentError(f"`{arg}[{layer}]` keeps no {unit} of layer {layer} (all {keep.numel()} "
                                       "pruned); a layer must keep at least one")
        out[layer] = keep
    return out


class LayerKeeps:
    """Base of the per-layer keep-masks: counts over the main mapping, and the mask file.

    A subclass names its main mapping (``_KEEPS``: the attribute, and the tensor prefix in the
    file), its file format (``_FORMAT``) and the tensor kinds its files may hold (``_KINDS``),
    and builds itself from the tensors of its file (:meth:`_from_file`).
    """

    _KEEPS: ClassVar[str]
    _FORMAT: ClassVar[str]
    _KINDS: ClassVar[tuple[str, ...]]
    meta: dict

    @property
    def _keeps(self) -> dict[int, torch.Tensor]:
        return getattr(self, self._KEEPS)

    @property
    def layers(self) -> list[int]:
        """Layer indices, in order."""
        return list(self._keeps)

    def sizes(self) -> list[int]:
        """Number kept in each layer, in layer order."""
        return [int(k.sum()) for k in self._keeps.values()]

    def n_total(self, layer: int | None = None) -> int:
        """Number of entries (kept or not), in one layer or in all."""
        return int(sum(k.numel() for k in self._select(layer)))

    def n_kept(self, layer: int | None = None) -> int:
        """Number kept, in one layer or in all."""
        return int(sum(int(k.sum()) for k in self._select(layer)))

    def n_pruned(self, layer: int | None = None) -> int:
        """Number pruned, in one layer or in all."""
        return self.n_total(layer) - self.n_kept(layer)

    @property
    def fraction(self) -> float:
        """Fraction of all entries that are pruned."""
        return self.n_pruned() / self.n_total()

    def kept_indices(self, layer: int) -> torch.Tensor:
        """Indices of the kept entries of ``layer``, ascending (int64)."""
        return self._select(layer)[0].nonzero().flatten()

    def pruned_indices(self, layer: int) -> torch.Tensor:
        """Indices of the pruned entries of ``layer``, ascending (int64)."""
        return (~self._select(layer)[0]).nonzero().flatten()

    def _select(self, layer: int | None) -> list[torch.Tensor]:
        if layer is None:
            return list(self._keeps.values())
        if layer not in self._keeps:
            raise KeyError(f"`layer` must be one of {self.layers}; got {layer!r}")
        return [self._keeps[layer]]

    __hash__ = None  # mutable container of tensors

    # ------------------------------------------------------------------ the file
    def _save(self, tensors: dict[str, torch.Tensor], extra: dict[str, str], path, overwrite: bool) -> Path:
        """Write ``tensors`` with the format, version and ``meta`` (and ``extra``) as metadata, atomically."""
        metadata = {"format": self._FORMAT, "version": __version__, **extra, "meta": json.dumps(self.meta)}
        return save_safetensors_atomic(tensors, path, metadata, overwrite=overwrite)

    @classmethod
    def _from_file(cls, groups: dict[str, dict[int, torch.Tensor]], metadata: dict, meta: dict):
        raise NotImplementedError

    @classmethod
    def _load(cls, path):
        """Read a file written by ``save``: its tensors by kind and layer, checked, then :meth:`_from_file`."""
        name = cls.__name__
        path = check_input_file("path", path)
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                if metadata.get("format") != cls._FORMAT:
                    raise FileFormatError(f"`path` {str(path)!r} is not an llmrank_graph {name} file")
                groups: dict[str, dict[int, torch.Tensor]] = {kind: {} for kind in cls._KINDS}
                for key in f.keys():
                    kind, _, layer = key.partition(".")
                    if kind not in groups or not layer.isdigit():
                        held = " and ".join(f"'{k}.<layer>'" for k in cls._KINDS)
                        raise FileFormatError(f"`path` {str(path)!r} has an unexpected tensor {key!r}; a {name} "
                                              f"file holds {held}")
                    groups[kind][int(layer)] = f.get_tensor(key)
            return cls._from_file(groups, metadata, json.loads(metadata.get("meta", "{}")))
        except FileFormatError:
            raise
        except (SafetensorError, OSError, json.JSONDecodeError) as e:
            raise FileFormatError(f"`path` {str(path)!r} is not a readable {name} file (truncated or "
                                  f"damaged?): {e}") from None
        except (InvalidArgumentError, InvalidArgumentTypeError) as e:
            raise FileFormatError(f"`path` {str(path)!r} holds an invalid {name}: {e}") from None
