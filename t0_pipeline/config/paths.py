"""Where every artefact lives under the data folder (DataPaths), and the config rewritten to
use local checkpoints: base models by name and the fine-tuned embedder."""

from __future__ import annotations

from pathlib import Path

from t0_pipeline.config.base import IndexName, Settings
from t0_pipeline.config.corpus import ChromaConfig
from t0_pipeline.config.models import EvalModelConfig, LLMConfig, ModelServerConfig
from t0_pipeline.config.pipeline import PipelineConfig


class DataPaths:
    """Where each artefact lives under the data root (one place, so nothing hard-codes paths)."""

    def __init__(self, data_dir: Path | str | None = None):
        self.root = Path(data_dir) if data_dir is not None else Settings().data_dir

    @property
    def pages(self) -> Path:
        return self.root / "corpus" / "pages.parquet"

    @property
    def crawl_report(self) -> Path:
        return self.root / "corpus" / "crawl_report.json"

    @property
    def conditions(self) -> Path:
        return self.root / "corpus" / "conditions.parquet"

    @property
    def summaries(self) -> Path:
        return self.root / "corpus" / "summaries.parquet"

    @property
    def eval_queries(self) -> Path:
        return self.root / "eval" / "queries.parquet"

    def chroma_dir(self, chroma: ChromaConfig) -> Path:
        return chroma.path if chroma.path is not None else self.root / "index" / "chroma"

    def index_manifest(self, index: IndexName) -> Path:
        return self.root / "index" / f"{index}.manifest.json"

    def bm25_dir(self, index: IndexName) -> Path:
        return self.root / "index" / f"bm25_{index}"

    @property
    def llm_summaries(self) -> Path:
        return self.root / "corpus" / "llm_summaries.parquet"

    def documents(self, index: IndexName) -> Path:
        return {"summaries": self.summaries, "llm_summaries": self.llm_summaries}.get(
            index, self.conditions
        )

    def llm_cache(self, llm: "LLMConfig") -> Path:
        return llm.cache_path if llm.cache_path is not None else self.root / "llm_cache.sqlite"

    @property
    def summary_comparison_dir(self) -> Path:
        return self.root / "eval" / "summary_comparison"

    def synthetic_queries(self, split: str) -> Path:
        return self.root / "synthetic" / f"queries_{split}.parquet"

    @property
    def traces(self) -> Path:
        return self.root / "synthetic" / "traces.parquet"

    @property
    def sft_dir(self) -> Path:
        return self.root / "synthetic" / "sft"

    def student_dir(self, partition: str) -> Path:
        return self.root / "students" / partition

    def server_logs(self, servers: "ModelServerConfig") -> Path:
        return servers.log_dir if servers.log_dir is not None else self.root / "servers"

    def accuracy_dir(self, model: str | None = None) -> Path:
        base = self.root / "eval" / "accuracy"
        return base / model if model else base

    def base_model(self, name: str) -> Path:
        return self.root / "models" / name

    @property
    def retriever_dir(self) -> Path:
        """Fine-tuned embedders (one folder per training run) and ``active.json``, the one the
        indexes use."""
        return self.root / "models" / "retriever"

    @property
    def conversations_db(self) -> Path:
        return self.root / "serve" / "conversations.sqlite"

    @property
    def retrieval_report_dir(self) -> Path:
        return self.root / "eval" / "retrieval"


def with_base_models(cfg: PipelineConfig, paths: DataPaths) -> PipelineConfig:
    """``cfg`` with each name of a ``base_models`` entry, wherever a checkpoint or tokenizer is
    named, replaced by that entry's local folder (what the ``base_models`` asset materialises)."""
    if not cfg.base_models:
        return cfg
    cfg = cfg.model_copy(deep=True)

    def local(value: str | None) -> str | None:
        return str(paths.base_model(value).resolve()) if value in cfg.base_models else value

    cfg.train.sizes = {size: local(model) or model for size, model in cfg.train.sizes.items()}
    cfg.train.model = local(cfg.train.model) or cfg.train.model
    cfg.sft.tokenizer = local(cfg.sft.tokenizer)
    cfg.serve.tokenizer = local(cfg.serve.tokenizer)
    for entry in [*cfg.llm.roles.values(), *cfg.evaluation.models.values()]:
        if entry.serve is not None:
            entry.serve.checkpoint = local(entry.serve.checkpoint)
        if isinstance(entry, EvalModelConfig):
            entry.tokenizer = local(entry.tokenizer)
    for profile in cfg.serve.profiles.values():
        profile.tokenizer = local(profile.tokenizer)
    return cfg


def with_tuned_retriever(cfg: PipelineConfig, paths: DataPaths) -> PipelineConfig:
    """``cfg`` with the fine-tuned embedder as ``embedding.model`` when the ``retriever_model``
    asset measured it better (``<data>/models/retriever/active.json``), no model is configured and
    ``use_tuned`` is on."""
    active = paths.retriever_dir / "active.json"
    if cfg.embedding.model is not None or not cfg.embedding.use_tuned or not active.exists():
        return cfg
    import json

    from t0_pipeline.artifacts import T0Error

    try:
        chosen = Path(json.loads(active.read_text(encoding="utf-8"))["path"])
    except (OSError, ValueError, KeyError) as exc:
        raise T0Error(
            f"{active} is unreadable ({exc.__class__.__name__}); delete it to use the base "
            "embedder, or re-materialise retriever_model."
        ) from None
    if not chosen.is_absolute():
        chosen = (paths.retriever_dir / chosen).resolve()
    cfg = cfg.model_copy(deep=True)
    cfg.embedding.model = str(chosen)
    return cfg


def with_local_models(cfg: PipelineConfig, paths: DataPaths) -> PipelineConfig:
    """The config as the stages use it: base_models names replaced by their folders, the tuned
    embedder in."""
    return with_tuned_retriever(with_base_models(cfg, paths), paths)
