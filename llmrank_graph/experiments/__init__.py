"""Experiments: resumable grids of pruning runs (`runner`) and their report (`report`).
Imports `analysis` and everything below it.
"""
from .runner import (CalibrationSetting, EvaluationSetting, RunConfig, Grid, SweepSummary, load_grid, method_parameters, run_sweep, scan_results, read_results, flatten_record, GRID_FILE, RESULTS_CSV, RESULTS_PARQUET, RUN_STATUSES)
from .report import (write_report, perplexity_table, rank_correlations, REPORT_HTML)

__all__ = ['CalibrationSetting', 'EvaluationSetting', 'RunConfig', 'Grid', 'SweepSummary', 'load_grid', 'method_parameters', 'run_sweep', 'scan_results', 'read_results', 'flatten_record', 'GRID_FILE', 'RESULTS_CSV', 'RESULTS_PARQUET', 'RUN_STATUSES', 'write_report', 'perplexity_table', 'rank_correlations', 'REPORT_HTML']
