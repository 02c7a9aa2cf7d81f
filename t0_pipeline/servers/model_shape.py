"""A decoder model's shape from its ``config.json`` (no weights needed): the figures memory plans,
tensor parallel sizes and FLOP counts are made from.

``config.json`` is read from a local folder or the Hugging Face cache. For the report's students
(``Qwen/Qwen2.5-<size>-Instruct``) the published shapes are built in, so a plan for a cluster can
be made on a laptop that has never downloaded them. Parameter counts follow the Qwen2 / Llama
layout (attention with grouped key-value heads, a gated MLP, RMS norms; ``q/k/v`` biases for Qwen2)
and are checked against a model built on the meta device in the tests.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from t0_pipeline.artifacts import T0Error


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool  # input and output embeddings share one matrix
    qkv_bias: bool = False
    head_dim: int | None = None

    @property
    def head_size(self) -> int:
        return self.head_dim or self.hidden // self.heads

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_size

    def layer_params(self) -> int:
        """One decoder layer: attention (q, k, v, o), gated MLP (gate, up, down), two norms."""
        q = self.heads * self.head_size
        attention = self.hidden * (q + 2 * self.kv_width) + q * self.hidden
        if self.qkv_bias:
            attention += q + 2 * self.kv_width
        return attention + 3 * self.hidden * self.intermediate + 2 * self.hidden

    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    def params(self) -> int:
        """Every parameter once (a tied output embedding is the input one)."""
        embeddings = self.embedding_params() * (1 if self.tied else 2)
        return self.layers * self.layer_params() + embeddings + self.hidden

    def largest_module_params(self) -> int:
        """The most parameters one module holds itself (DeepSpeed's "largest layer"): ZeRO-3
        gathers one module whole."""
        q = self.heads * self.head_size
        return max(self.embedding_params(), self.hidden * self.intermediate, self.hidden * q)

    def matmul_params(self) -> int:
        """Parameters a token is multiplied by (every layer and the output projection; not the
        embedding lookup): the 6·N of training FLOPs per token."""
        return self.layers * self.layer_params() + self.embedding_params()

    def train_flops_per_token(self, seq_len: float) -> float:
        """Model FLOPs per trained token at a mean sequence length (forward + backward, no
        recomputation): 6·N for the weights plus the attention scores and values, 12·layers·
        hidden·seq (the PaLM paper's accounting, Chowdhery et al. 2022, appendix B) halved because
        a causal mask computes half of them (FlashAttention's convention)."""
        return 6 * self.matmul_params() + 12 * self.layers * self.hidden * seq_len / 2


# Published config.json figures of the report's students (hidden, layers, intermediate, heads, KV
# heads, vocab, tied embeddings), from the Qwen2.5 model cards' config files
QWEN25 = {
    "0.5B": (896, 24, 4864, 14, 2, 151936, True),
    "1.5B": (1536, 28, 8960, 12, 2, 151936, True),
    "3B": (2048, 36, 11008, 16, 2, 151936, True),
    "7B": (3584, 28, 18944, 28, 4, 152064, False),
    "14B": (5120, 48, 13824, 40, 8, 152064, False),
    "32B": (5120, 64, 27648, 40, 8, 152064, False),
    "72B": (8192, 80, 29568, 64, 8, 152064, False),
}


def looks_local(checkpoint: str) -> bool:
    """A path rather than a Hugging Face repository name."""
    return checkpoint.startswith(("/", "./", "../", "~")) or checkpoint.count("/") >= 2


def read_model_config(checkpoint: str) -> dict | None:
    """The checkpoint's ``config.json`` (a folder, or a Hugging Face name already in the local
    cache; a multimodal model's ``text_config``), or None when it cannot be read here."""
    config = Path(checkpoint).expanduser() / "config.json"
    if not config.is_file() and not looks_local(checkpoint):
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(checkpoint, "config.json")
            config = Path(cached) if isinstance(cached, str) else config
        except Exception:  # not a valid repository name, no hub library: unknown
            return None
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    text = data.get("text_config")
    return text if isinstance(text, dict) else data


def shape_from_config(data: dict, name: str = "the model") -> ModelShape:
    try:
        heads = int(data["num_attention_heads"])
        return ModelShape(
            hidden=int(data["hidden_size"]),
            layers=int(data["num_hidden_layers"]),
            intermediate=int(data["intermediate_size"]),
            heads=heads,
            kv_heads=int(data.get("num_key_value_heads") or heads),
            vocab=int(data["vocab_size"]),
            tied=bool(data.get("tie_word_embeddings", False)),
            qkv_bias=bool(data.get("attention_bias", data.get("model_type") == "qwen2")),
            head_dim=data.get("head_dim") if isinstance(data.get("head_dim"), int) else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise T0Error(
            f"config.json of {name} lacks a decoder's shape ({exc.__class__.__name__}: {exc}); "
            "a memory plan needs hidden_size, num_hidden_layers, intermediate_size, "
            "num_attention_heads and vocab_size."
        ) from None


def model_shape(checkpoint: str) -> ModelShape:
    """The shape of ``checkpoint``: its config.json, else the built-in Qwen2.5 figures for a
    ``Qwen2.5-<size>`` name."""
    data = read_model_config(checkpoint)
    if data is not None:
        return shape_from_config(data, checkpoint)
    match = re.search(r"qwen2\.5-(\d+(?:\.\d+)?b)", checkpoint.lower())
    if match and match.group(1).upper() in QWEN25:
        hidden, layers, inter, heads, kv, vocab, tied = QWEN25[match.group(1).upper()]
        return ModelShape(hidden, layers, inter, heads, kv, vocab, tied, qkv_bias=True)
    raise T0Error(
        f"cannot read config.json of {checkpoint!r} here (not a folder, not in the Hugging Face "
        "cache); download it (huggingface-cli download NAME config.json) or pass a local folder."
    )
