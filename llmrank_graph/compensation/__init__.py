"""The algebra of compensation after removal: FLAP's bias and fluctuation, the ridge refit of
down_proj and greedy structured OBS (`algebra`). Below `scoring/` (which scores with it)
and `pruning/` (which applies it). Imports `data`, `models` and `base`.
"""
from .algebra import (
    COMPENSATION_CONSTRAINTS,
    COMPENSATIONS,
    DEFAULT_RIDGE,
    RECOMMENDED_COMPENSATION,
    TOKEN_RIDGE,
    DownUpdate,
    ObsResult,
    apply_updates,
    bias_term,
    check_bias_possible,
    check_compensation,
    check_compensation_options,
    check_compensation_stats,
    check_ridge,
    down_updates,
    enable_down_bias,
    fluctuation,
    needs_second_moments,
    obs_greedy,
    relative_damp,
    ridge_refit,
    token_ridge,
    uses_bias,
)

__all__ = ["COMPENSATIONS", "DEFAULT_RIDGE", "RECOMMENDED_COMPENSATION", "COMPENSATION_CONSTRAINTS", "DownUpdate",
           "ObsResult", "TOKEN_RIDGE", "bias_term", "ridge_refit", "obs_greedy", "fluctuation", "relative_damp",
           "token_ridge", "check_ridge", "check_compensation", "check_compensation_options", "check_compensation_stats",
           "check_bias_possible",
           "needs_second_moments", "uses_bias", "down_updates", "apply_updates", "enable_down_bias"]
