"""Every stage's configuration in one place: pydantic models with commented defaults, in one
module per part of the pipeline (base, corpus, models, pipeline, paths, layers), all importable
from here.

Environment overrides use the ``T0_`` prefix (``T0_DATA_DIR=/scratch/t0``). Stage functions take
these models; the CLI and the Dagster layer only build them.
"""

from t0_pipeline.chat import ChatFormat
from t0_pipeline.config.base import (
    INDEX_NAMES,
    RETRIEVER_MODES,
    BaseModel,
    Distance,
    IndexName,
    RetrieverMode,
    Settings,
    SourceKind,
)
from t0_pipeline.config.corpus import (
    ChromaConfig,
    ChunkConfig,
    CleanConfig,
    EmbeddingConfig,
    PageFields,
    RetrievalConfig,
    RetrievalEvalConfig,
    RetrieverTuneConfig,
    SourceConfig,
    SummaryConfig,
)
from t0_pipeline.config.layers import (
    ENV_PREFIX,
    deep_merge,
    default_layer,
    env_layer,
    load_config,
    read_config_file,
)
from t0_pipeline.config.models import (
    TOOL_SERVER_ARGS,
    BudgetConfig,
    EvalModelConfig,
    EvaluationConfig,
    LaunchConfig,
    LLMConfig,
    LoRAConfig,
    ModelServerConfig,
    QueryGenConfig,
    RoleConfig,
    SFTConfig,
    TraceConfig,
    TrainConfig,
    base_entry_name,
    size_entries,
    student_entry_name,
)
from t0_pipeline.config.paths import (
    DataPaths,
    with_base_models,
    with_local_models,
    with_tuned_retriever,
)
from t0_pipeline.config.pipeline import (
    AutomationConfig,
    PipelineConfig,
    ServeConfig,
    ServeProfile,
    resolve_profiles,
)

__all__ = [
    "AutomationConfig",
    "BaseModel",
    "BudgetConfig",
    "ChatFormat",
    "ChromaConfig",
    "ChunkConfig",
    "CleanConfig",
    "DataPaths",
    "Distance",
    "ENV_PREFIX",
    "EmbeddingConfig",
    "EvalModelConfig",
    "EvaluationConfig",
    "INDEX_NAMES",
    "IndexName",
    "LLMConfig",
    "LaunchConfig",
    "LoRAConfig",
    "ModelServerConfig",
    "PageFields",
    "PipelineConfig",
    "QueryGenConfig",
    "RETRIEVER_MODES",
    "RetrievalConfig",
    "RetrievalEvalConfig",
    "RetrieverMode",
    "RetrieverTuneConfig",
    "RoleConfig",
    "SFTConfig",
    "ServeConfig",
    "ServeProfile",
    "Settings",
    "SourceConfig",
    "SourceKind",
    "SummaryConfig",
    "TOOL_SERVER_ARGS",
    "TraceConfig",
    "TrainConfig",
    "base_entry_name",
    "deep_merge",
    "default_layer",
    "env_layer",
    "load_config",
    "read_config_file",
    "resolve_profiles",
    "size_entries",
    "student_entry_name",
    "with_base_models",
    "with_local_models",
    "with_tuned_retriever",
]
