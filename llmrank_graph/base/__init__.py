"""The base every stage may import: argument checks and their message template (`checks`),
atomic no-replace writes (`files`), optional GPU libraries (`optional`) and the result of a
centrality (`result`). It imports nothing from the package but `llmrank_graph.errors`.
"""
from .checks import (fail, fail_type, check_choice, check_bool, check_int, check_positive_int, check_float, check_unit, check_finite_array, check_keep, check_residual, is_real, format_allowed)
from .files import (OUTPUT_KINDS, check_output_path, atomic_file, atomic_directory, write_bytes_atomic, write_text_atomic, write_json_atomic, save_safetensors_atomic)
from .params import (Constraint, Interval, OneOf, Boolean, InstanceOf, Optional, Check, validate, validated, describe)
from .optional import (GPU_EXTRA, BackendUnavailableError, has_module, cuda_available, cupy_available, cuda_free_memory, require_cudf, require_dask_cudf)
from .result import (CentralityResult, exact_result, iterated_result)

__all__ = ['fail', 'fail_type', 'check_choice', 'check_bool', 'check_int', 'check_positive_int', 'check_float', 'check_unit', 'check_finite_array', 'check_keep', 'check_residual', 'is_real', 'format_allowed', 'OUTPUT_KINDS', 'check_output_path', 'atomic_file', 'atomic_directory', 'write_bytes_atomic', 'write_text_atomic', 'write_json_atomic', 'save_safetensors_atomic', 'GPU_EXTRA', 'BackendUnavailableError', 'has_module', 'cuda_available', 'cupy_available', 'cuda_free_memory', 'require_cudf', 'require_dask_cudf', 'CentralityResult', 'exact_result', 'iterated_result']
