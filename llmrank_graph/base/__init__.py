"""The base every stage may import: argument checks and their message template (`checks`),
declared parameter constraints (`params`), output-path checks (`paths`), atomic no-replace
writes (`files`, over the renames of `renames`), optional GPU libraries (`optional`) and the
result of a centrality (`result`). It imports nothing from the package but `llmrank_graph.errors`.
"""
from .checks import (
    check_bool,
    check_choice,
    check_finite_array,
    check_float,
    check_int,
    check_keep,
    check_positive_int,
    check_residual,
    check_unit,
    fail,
    fail_type,
    format_allowed,
    is_real,
)
from .files import (
    atomic_directory,
    atomic_file,
    save_safetensors_atomic,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)
from .optional import (
    GPU_EXTRA,
    BackendUnavailableError,
    cuda_available,
    cuda_free_memory,
    cupy_available,
    has_module,
    require_cudf,
    require_dask_cudf,
)
from .params import Boolean, Check, Constraint, InstanceOf, Interval, OneOf, Optional, describe, validate, validated
from .paths import OUTPUT_KINDS, check_output_path
from .result import CentralityResult, exact_result, iterated_result

__all__ = ["fail", "fail_type", "check_choice", "check_bool", "check_int", "check_positive_int", "check_float",
           "check_unit", "check_finite_array", "check_keep", "check_residual", "is_real", "format_allowed",
           "OUTPUT_KINDS", "check_output_path", "atomic_file", "atomic_directory", "write_bytes_atomic",
           "write_text_atomic", "write_json_atomic", "save_safetensors_atomic",
           "Constraint", "Interval", "OneOf", "Boolean", "InstanceOf", "Optional", "Check", "validate", "validated",
           "describe",
           "GPU_EXTRA", "BackendUnavailableError", "has_module", "cuda_available", "cupy_available",
           "cuda_free_memory", "require_cudf", "require_dask_cudf", "CentralityResult", "exact_result",
           "iterated_result"]
