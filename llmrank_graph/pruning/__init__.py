"""Pruning: masks and allocation (`masks`), what removal and its sequential mode share
(`core`), the sequential mode (`sequential`) and surgery, compensation and saving
(`surgery`). Imports `scoring` and everything below it.
"""
from .masks import (NeuronMask, allocate, ALLOCATIONS, ROUNDINGS, check_amount, prune_lowest)
from .core import (HOWS, PruneResult, zero_mlp)
from .sequential import (prune_sequential, LayerInputs, capture_layer_inputs)
from .surgery import (COMPENSATIONS, DEFAULT_RIDGE, apply_mask, prune_model, save_pruned, load_pruned, intermediate_sizes, PRUNED_CONFIG_KEY)

__all__ = ['NeuronMask', 'allocate', 'ALLOCATIONS', 'ROUNDINGS', 'check_amount', 'prune_lowest', 'HOWS', 'PruneResult', 'zero_mlp', 'prune_sequential', 'LayerInputs', 'capture_layer_inputs', 'COMPENSATIONS', 'DEFAULT_RIDGE', 'apply_mask', 'prune_model', 'save_pruned', 'load_pruned', 'intermediate_sizes', 'PRUNED_CONFIG_KEY']
