"""Pruning: the neuron masks and how they are chosen (`masks`, with the allocation rules on plain
arrays in `allocation`), what the entry points share (`core`), applying a mask (`surgery`), the
one-call pipeline (`prune`), its layer-by-layer mode (`sequential`), attention heads removed for
real (`heads`) and chosen under the grouped-query rule (`head_allocation`), the measured split of
neurons and heads (`split`), and saving (`save`).
Compensation itself is the algebra of `compensation/`. Imports `scoring` and everything below it.
"""
from .core import HOWS, PruneResult, zero_mlp
from .head_allocation import allocate_heads, allocate_heads_checked
from .heads import HeadMask, remove_heads, removed_parameters
from .masks import ALLOCATIONS, ROUNDINGS, NeuronMask, allocate, check_amount, prune_lowest
from .prune import TARGETS
from .sequential import LayerInputs, capture_layer_inputs, prune_sequential
from .split import MEASURED_HEAD_FRACTIONS, SPLITS
from .surgery import (
    COMPENSATIONS,
    DEFAULT_RIDGE,
    PRUNED_CONFIG_KEY,
    apply_mask,
    intermediate_sizes,
    load_pruned,
    prune_model,
    save_pruned,
)

__all__ = ["NeuronMask", "allocate", "ALLOCATIONS", "ROUNDINGS", "check_amount", "prune_lowest", "HOWS", "PruneResult",
           "zero_mlp", "prune_sequential", "LayerInputs", "capture_layer_inputs", "COMPENSATIONS", "DEFAULT_RIDGE",
           "apply_mask", "prune_model", "save_pruned", "load_pruned", "intermediate_sizes", "PRUNED_CONFIG_KEY",
           "HeadMask", "remove_heads", "removed_parameters", "TARGETS", "allocate_heads", "allocate_heads_checked",
           "SPLITS", "MEASURED_HEAD_FRACTIONS"]
