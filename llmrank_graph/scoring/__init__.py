"""Neuron scorers: the registry and every family. Imports `centrality`, `graph`,
`compensation`, `data`, `models`, `base`.
"""
from .registry import (NeuronScores, Scorer, register_scorer, scorers, get_scorer, scorer_class, score_neurons, hidden_scorers, PAGERANK_EXPORT, PAGERANK_CENTRALITY, PAGERANK_DEFAULTS, PAGERANK_WITHOUT_STATS, PERSONALIZATIONS, ACTIVATION_PERSONALIZATIONS, PageRankScorer, KatzScorer, HitsScorer, EigenvectorScorer, StrengthScorer, DegreeScorer, WeightedPageRankScorer, ModifiedPageRankScorer, ChannelWandaScorer, NormScorer, MagnitudeScorer, ActivationScorer, WandaSPScorer, RandomScorer, FlapScorer, OBSScorer)

__all__ = ['NeuronScores', 'Scorer', 'register_scorer', 'scorers', 'get_scorer', 'scorer_class', 'score_neurons', 'hidden_scorers', 'PAGERANK_EXPORT', 'PAGERANK_CENTRALITY', 'PAGERANK_DEFAULTS', 'PAGERANK_WITHOUT_STATS', 'PERSONALIZATIONS', 'ACTIVATION_PERSONALIZATIONS', 'PageRankScorer', 'KatzScorer', 'HitsScorer', 'EigenvectorScorer', 'StrengthScorer', 'DegreeScorer', 'WeightedPageRankScorer', 'ModifiedPageRankScorer', 'ChannelWandaScorer', 'NormScorer', 'MagnitudeScorer', 'ActivationScorer', 'WandaSPScorer', 'RandomScorer', 'FlapScorer', 'OBSScorer']
