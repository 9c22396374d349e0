"""Names vulture reports as unused that are used: the public API (called by users, tests and
benchmarks, not by the package itself) and attributes that torch and transformers read.

Run: ``python -m vulture llmrank_graph vulture_whitelist.py --min-confidence 60`` (as .ci/run does).
Regenerate the candidates with ``--make-whitelist`` and keep only what is really used.
"""
# ruff: noqa

__getattr__  # unused function (llmrank_graph/__init__.py:55)
_.available  # unused property (llmrank_graph/centrality/backends.py:74)
tokens  # unused variable (llmrank_graph/data/evaluation.py:146)
_.has_second_moments  # unused method (llmrank_graph/data/stats.py:155)
_.from_norms  # unused method (llmrank_graph/data/stats.py:168)
_.from_edgelist  # unused method (llmrank_graph/graph/mlpgraph.py:124)
_.clear_cache  # unused method (llmrank_graph/graph/mlpgraph.py:214)
_.to_cudf  # unused method (llmrank_graph/graph/mlpgraph.py:292)
_.nf  # unused attribute (llmrank_graph/models/architectures.py:251)
_.in_features  # unused attribute (llmrank_graph/models/architectures.py:264)
_.kept_indices  # unused method (llmrank_graph/pruning/masks.py:180)
w_abs  # unused variable (llmrank_graph/scoring/reference.py:70)
_.set_params  # unused method (llmrank_graph/scoring/registry.py:360)
_.started_at  # Holder field, read by users and tests (llmrank_graph/experiments/claims.py)
_.heartbeat_age  # Holder field, read by users and tests (llmrank_graph/experiments/claims.py)
_.pre_tokenizer  # read by tokenizers (llmrank_graph/models/examples.py)
_.merge  # QuantileSketch.merge, public API (llmrank_graph/analysis/sketch.py)
