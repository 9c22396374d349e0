"""Data: texts (`texts`), calibration statistics (`calibration`) and evaluation
(`evaluation`: perplexity, tokens/s, lm-eval). Imports `models` and `base`.
"""
from .texts import (wikipedia_articles, load_texts, check_text_source, token_blocks, wikipedia_dump_file, SPLITS, TEXT_SUFFIXES)
from .calibration import (ModuleStats, ActivationStats, calibrate, record_activations)
from .evaluation import (perplexity, count_parameters, tokens_per_second, compare_throughput, lm_eval, LASTWORD_TASK, lastword_examples, write_lastword_task, lastword_accuracy, check_lm_eval, prepare_tasks, task_metrics)

__all__ = ['wikipedia_articles', 'load_texts', 'check_text_source', 'token_blocks', 'wikipedia_dump_file', 'SPLITS', 'TEXT_SUFFIXES', 'ModuleStats', 'ActivationStats', 'calibrate', 'record_activations', 'perplexity', 'count_parameters', 'tokens_per_second', 'compare_throughput', 'lm_eval', 'LASTWORD_TASK', 'lastword_examples', 'write_lastword_task', 'lastword_accuracy', 'check_lm_eval', 'prepare_tasks', 'task_metrics']
