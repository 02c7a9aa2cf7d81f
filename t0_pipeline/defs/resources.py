"""Dagster resources: the pipeline's settings, the embedding model and the Chroma store.

Each resource only turns its fields into the stage modules' pydantic configs, so the
CLI and the assets run exactly the same code with the same settings.
"""


import os
from typing import Optional

import dagster as dg

from t0_pipeline.config import ChromaConfig, DataPaths, EmbeddingConfig, PipelineConfig, load_config


class PipelineSettings(dg.ConfigurableResource):
    """Where artefacts live, an optional config file, and the corpus source."""

    data_dir: str = os.environ.get("T0_DATA_DIR", "data")
    config_file: Optional[str] = os.environ.get("T0_CONFIG") or None
    source_kind: Optional[str] = None  # overrides the config file: sample | site | mirror | pages
    source_location: Optional[str] = None  # URL, mirror directory or pages file

    def pipeline_config(self) -> PipelineConfig:
        cfg = load_config(self.config_file)
        if self.source_kind:
            cfg.source.kind = self.source_kind  # type: ignore[assignment]
        if self.source_location:
            cfg.source.location = self.source_location
        return cfg

    def paths(self) -> DataPaths:
        return DataPaths(self.data_dir)


class EmbeddingModel(dg.ConfigurableResource):
    """A sentence-transformers model (default: the bundled all-MiniLM-L6-v2)."""

    model: Optional[str] = None
    device: str = "cpu"
    batch_size: int = 64

    def config(self) -> EmbeddingConfig:
        return EmbeddingConfig(model=self.model, device=self.device, batch_size=self.batch_size)

    def load(self):
        from t0_pipeline.embed import load_embedder

        return load_embedder(self.config())


class ChromaStore(dg.ConfigurableResource):
    """Embedded Chroma under the data dir by default; a Chroma server when host is set."""

    path: Optional[str] = None
    host: Optional[str] = None
    port: int = 8000
    distance: str = "l2"

    def config(self) -> ChromaConfig:
        return ChromaConfig(path=self.path, host=self.host, port=self.port, distance=self.distance)  # type: ignore[arg-type]

    def client(self, paths: DataPaths):
        from t0_pipeline.index import chroma_client

        return chroma_client(self.config(), paths)
