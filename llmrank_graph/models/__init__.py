"""Models: where the MLPs are in each family (`architectures`), the saved format of pruned
models (`saved_format`) and loading (`loading`). Imports only `base` and `errors`.

`llmrank_graph.models.architectures` is the module; its function of the same name is
`llmrank_graph.models.architectures.architectures`.
"""
from .architectures import (ArchitectureSpec, MLPModules, register_architecture, get_architecture, mlp_layers, intermediate_sizes, UnsupportedArchitectureError)
from .saved_format import (PRUNED_CONFIG_KEY, FORMAT_VERSION, TOKENIZER_FILES, MASK_FILE, PrunedEntry, is_pruned, is_saved_pruned, read_config, nonuniform_hint, has_tokenizer, original_intermediate_size, record_sizes, disk_config)
from .loading import (default_model_file, cache_dir, load_model, load_pruned, check_model_path, ModelSource, MODEL_KINDS, DEFAULT_MODEL_NAME)

__all__ = ['ArchitectureSpec', 'MLPModules', 'register_architecture', 'get_architecture', 'mlp_layers', 'intermediate_sizes', 'UnsupportedArchitectureError', 'PRUNED_CONFIG_KEY', 'FORMAT_VERSION', 'TOKENIZER_FILES', 'MASK_FILE', 'PrunedEntry', 'is_pruned', 'is_saved_pruned', 'read_config', 'nonuniform_hint', 'has_tokenizer', 'original_intermediate_size', 'record_sizes', 'disk_config', 'default_model_file', 'cache_dir', 'load_model', 'load_pruned', 'check_model_path', 'ModelSource', 'MODEL_KINDS', 'DEFAULT_MODEL_NAME']
