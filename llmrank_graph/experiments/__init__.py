"""Experiments: resumable grids of pruning runs and their report.

``settings`` (what one run is) -> ``grid`` (the axes of a sweep) -> ``results`` (the results
directory read back) -> ``claims`` (one sweep per run, however many share a directory) and
``outputs`` (a run's score and mask files) -> ``runner`` (:func:`run_sweep`) -> ``figures`` ->
``report`` (:func:`write_report`). Imports `analysis` and everything below it.
"""
from .grid import Grid, load_grid
from .report import REPORT_HTML, perplexity_table, rank_correlations, write_report
from .results import GRID_FILE, RESULTS_CSV, RESULTS_PARQUET, RUN_STATUSES, flatten_record, read_results, scan_results
from .runner import SweepSummary, run_sweep
from .settings import CalibrationSetting, EvaluationSetting, RunConfig, method_parameters

__all__ = ['CalibrationSetting', 'EvaluationSetting', 'RunConfig', 'Grid', 'SweepSummary', 'load_grid',
           'method_parameters', 'run_sweep', 'scan_results', 'read_results', 'flatten_record', 'GRID_FILE',
           'RESULTS_CSV', 'RESULTS_PARQUET', 'RUN_STATUSES', 'write_report', 'perplexity_table', 'rank_correlations',
           'REPORT_HTML']
