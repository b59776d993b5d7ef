"""The on-disk layout of checkpoints, in one place.

- `layout`: file names per model family, the directory resolver (one rule for ambiguous
  directories), `config.json` reading;
- `spec`: the quantization spec (`QParams`, `Decisions`) and its `config.json` block;
- `safetensors_io`: lazy reading and the one streaming, sharding safetensors writer (imports MLX,
  so it is not imported here: `hub` and the CLI use this package without loading MLX).

`moshi_mlx.hub`, `moshi_mlx.loading`, `moshi_mlx.testing.tiny_repo` and the `quantize/` tool all
use it; none of them declares file names or reads the block on its own.
"""

from .layout import (
    CONFIG_FILE,
    FAMILIES,
    INDEX_FILE,
    LM_FILES,
    MIMI_FILE,
    MOSHI,
    TOKENIZER_FILE,
    CheckpointError,
    Family,
    ModelDir,
    find_mimi_file,
    lm_weight_files,
    part_paths,
    precision_of_name,
    read_config,
    resolve_dir,
    shards_of,
)
from .spec import (
    Block,
    Decisions,
    QParams,
    block_from_decisions,
    decisions_from_block,
    params_for,
    precision_label,
    validate_block,
    with_block,
)

__all__ = [
    "CONFIG_FILE", "FAMILIES", "INDEX_FILE", "LM_FILES", "MIMI_FILE", "MOSHI", "TOKENIZER_FILE",
    "Block", "CheckpointError", "Decisions", "Family", "ModelDir", "QParams",
    "block_from_decisions", "decisions_from_block", "find_mimi_file", "lm_weight_files",
    "params_for", "part_paths", "precision_label", "precision_of_name", "read_config", "resolve_dir",
    "shards_of", "validate_block", "with_block",
]
