"""Models: where the MLPs are in each family (`architectures`), the saved format of pruned
models (`saved_format`), safe weight files and dtypes (`weights`), a config checked against its
weights' headers (`checks`) and loading (`loading`).
Imports only `base` and `errors`.

`llmrank_graph.models.architectures` is the module; its function of the same name is
`llmrank_graph.models.architectures.architectures`.
"""
from .architectures import (
    ArchitectureSpec,
    MLPModules,
    UnsupportedArchitectureError,
    check_finite_weights,
    get_architecture,
    intermediate_sizes,
    mlp_layers,
    register_architecture,
)
from .checks import check_checkpoint
from .examples import TOY_WORDS, toy_model_directory
from .loading import (
    DEFAULT_MODEL_NAME,
    MODEL_KINDS,
    ModelSource,
    cache_dir,
    check_model_path,
    default_model_file,
    load_model,
    load_pruned,
)
from .saved_format import (
    FORMAT_VERSION,
    MASK_FILE,
    PRUNED_CONFIG_KEY,
    TOKENIZER_FILES,
    PrunedEntry,
    disk_config,
    has_tokenizer,
    is_pruned,
    is_saved_pruned,
    nonuniform_hint,
    original_intermediate_size,
    read_config,
    record_sizes,
)

__all__ = ["TOY_WORDS", "toy_model_directory",
           "ArchitectureSpec", "MLPModules", "register_architecture", "get_architecture", "mlp_layers",
           "intermediate_sizes", "check_finite_weights", "UnsupportedArchitectureError", "PRUNED_CONFIG_KEY",
           "FORMAT_VERSION", "TOKENIZER_FILES", "MASK_FILE", "PrunedEntry", "is_pruned", "is_saved_pruned",
           "read_config", "nonuniform_hint", "has_tokenizer", "original_intermediate_size", "record_sizes",
           "disk_config", "default_model_file", "cache_dir", "load_model", "load_pruned", "check_model_path",
           "ModelSource", "MODEL_KINDS", "DEFAULT_MODEL_NAME", "check_checkpoint"]
