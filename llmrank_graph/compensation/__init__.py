"""The algebra of compensation after removal: FLAP's bias and fluctuation, the ridge refit of
down_proj and greedy structured OBS (`algebra`). Below `scoring/` (which scores with it)
and `pruning/` (which applies it). Imports `data`, `models` and `base`.
"""
from .algebra import (COMPENSATIONS, DEFAULT_RIDGE, RECOMMENDED_COMPENSATION, DownUpdate, ObsResult, bias_term, ridge_refit, obs_greedy, fluctuation, check_ridge, check_compensation, check_compensation_options, needs_second_moments, down_updates, apply_updates, enable_down_bias, relative_damp)

__all__ = ['COMPENSATIONS', 'DEFAULT_RIDGE', 'RECOMMENDED_COMPENSATION', 'DownUpdate', 'ObsResult', 'bias_term', 'ridge_refit', 'obs_greedy', 'fluctuation', 'check_ridge', 'check_compensation', 'check_compensation_options', 'needs_second_moments', 'down_updates', 'apply_updates', 'enable_down_bias', 'relative_damp']
