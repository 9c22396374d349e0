"""Models: where the MLPs are in each family (`architectures`), the saved format of pruned
models (`saved_format`), safe weight files and dtypes (`weights`), a config checked against its
weights' headers (`checks`), loading (`loading`) and the attention heads of each layer (`attention`).
Imports only `base` and `errors`.

`llmrank_graph.models.architectures` is the module; its function of the same name is
`llmrank_graph.models.architectures.architectures`.
"""
from .architectures import (
    ArchitectureSpec,
    AttentionSpec,
    MLPModules,
    UnsupportedArchitectureError,
    check_finite_weights,
    get_architecture,
    intermediate_sizes,
    mlp_layers,
    register_architecture,
)
from .attention import (
    AttentionModules,
    attention_layers,
    attention_spec,
    head_counts,
    set_head_counts,
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
    HEAD_MASK_FILE,
    MASK_FILE,
    PRUNED_CONFIG_KEY,
    TOKENIZER_FILES,
    HeadEntry,
    PrunedEntry,
    buildable_config,
    disk_config,
    has_tokenizer,
    heads_hint,
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
           "ModelSource", "MODEL_KINDS", "DEFAULT_MODEL_NAME", "check_checkpoint",
           "AttentionSpec", "AttentionModules", "attention_spec", "attention_layers", "head_counts",
           "set_head_counts", "HeadEntry", "HEAD_MASK_FILE", "heads_hint", "buildable_config"]
