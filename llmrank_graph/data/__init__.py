"""Data: texts (`texts`), calibration statistics (`stats`, filled by `calibration`) and evaluation
(`evaluation`: perplexity, tokens/s, lm-eval). Imports `models` and `base`.
"""
from .calibration import ActivationStats, ModuleStats, calibrate, record_activations
from .evaluation import (
    LASTWORD_TASK,
    check_lm_eval,
    compare_throughput,
    count_parameters,
    lastword_accuracy,
    lastword_examples,
    lm_eval,
    perplexity,
    prepare_tasks,
    task_metrics,
    tokens_per_second,
    write_lastword_task,
)
from .stats import head_norms
from .sums import column_sums
from .texts import (
    SPLITS,
    TEXT_SUFFIXES,
    check_text_source,
    load_texts,
    token_blocks,
    wikipedia_articles,
    wikipedia_dump_file,
)

__all__ = ["wikipedia_articles", "load_texts", "check_text_source", "token_blocks", "wikipedia_dump_file", "SPLITS",
           "TEXT_SUFFIXES", "ModuleStats", "ActivationStats", "calibrate", "record_activations", "perplexity",
           "count_parameters", "tokens_per_second", "compare_throughput", "lm_eval", "LASTWORD_TASK",
           "lastword_examples", "write_lastword_task", "lastword_accuracy", "check_lm_eval", "prepare_tasks",
           "task_metrics", "head_norms", "column_sums"]
