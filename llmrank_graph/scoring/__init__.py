"""Neuron scorers: the registry (`registry`) and one module per family: graph centralities
(`graph`, `centralities`), reproductions of the LLM-Rank reference code (`reference`), baselines
(`baselines`), compensation-aware criteria (`second_order`) and the output side: the
first-order Taylor importance and the output-seeded path influence (`gradient`).

Imports `centrality`, `graph`, `compensation`, `data`, `models` and `base`.

The built-in scorers are registered here, in one place, whichever of these modules a caller
imports first (importing any of them runs this file first): the registry's order is the order
of :func:`scorers`, which the command line shows.
"""
from .baselines import ActivationScorer, MagnitudeScorer, RandomScorer, WandaSPScorer
from .centralities import DegreeScorer, EigenvectorScorer, HitsScorer, KatzScorer, StrengthScorer
from .gradient import InfluenceScorer, TaylorScorer
from .graph import (
    ACTIVATION_PERSONALIZATIONS,
    OUTPUT_SEEDS,
    PAGERANK_CENTRALITY,
    PAGERANK_DEFAULTS,
    PAGERANK_EXPORT,
    PAGERANK_WITHOUT_STATS,
    PERSONALIZATIONS,
    PageRankScorer,
    output_seed_vector,
)
from .heads import (
    HeadScorer,
    HeadScores,
    get_head_scorer,
    head_scorers,
    register_head_scorer,
    score_heads,
)
from .reference import ChannelWandaScorer, ModifiedPageRankScorer, NormScorer, WeightedPageRankScorer
from .registry import (
    NeuronScores,
    Scorer,
    get_scorer,
    hidden_scorers,
    register_scorer,
    score_neurons,
    scorer_class,
    scorers,
)
from .second_order import FlapScorer, OBSScorer

for _cls in (PageRankScorer, WeightedPageRankScorer, ModifiedPageRankScorer, ChannelWandaScorer, NormScorer,
             MagnitudeScorer, ActivationScorer, WandaSPScorer, RandomScorer, FlapScorer, OBSScorer,
             KatzScorer, HitsScorer, EigenvectorScorer, StrengthScorer, DegreeScorer, TaylorScorer, InfluenceScorer):
    register_scorer(_cls)
del _cls

__all__ = [
    'NeuronScores', 'Scorer', 'register_scorer', 'scorers', 'get_scorer', 'scorer_class', 'score_neurons',
    'hidden_scorers', 'PAGERANK_EXPORT', 'PAGERANK_CENTRALITY', 'PAGERANK_DEFAULTS', 'PAGERANK_WITHOUT_STATS',
    'PERSONALIZATIONS', 'ACTIVATION_PERSONALIZATIONS', 'PageRankScorer', 'KatzScorer', 'HitsScorer',
    'EigenvectorScorer', 'StrengthScorer', 'DegreeScorer', 'WeightedPageRankScorer', 'ModifiedPageRankScorer',
    'ChannelWandaScorer', 'NormScorer', 'MagnitudeScorer', 'ActivationScorer', 'WandaSPScorer', 'RandomScorer',
    'FlapScorer', 'OBSScorer', 'HeadScores', 'HeadScorer', 'register_head_scorer', 'head_scorers',
    'get_head_scorer', 'score_heads', 'TaylorScorer', 'InfluenceScorer', 'OUTPUT_SEEDS', 'output_seed_vector',
]
