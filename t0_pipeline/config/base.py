"""The shared pieces of every config section: the strict base model, process settings, and the
names of indexes and retriever modes."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel as _PydanticModel
from pydantic import ConfigDict, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SourceKind = Literal["sample", "site", "mirror", "pages", "documents"]
IndexName = Literal["full", "summaries", "llm_summaries"]
RetrieverMode = Literal["dense", "bm25", "hybrid"]
Distance = Literal["l2", "cosine"]

INDEX_NAMES: tuple[IndexName, ...] = ("full", "summaries")
RETRIEVER_MODES: tuple[RetrieverMode, ...] = ("dense", "bm25", "hybrid")


class BaseModel(_PydanticModel):
    """Every config section: an unknown key (a typo such as ``chunk.sise``) is an error, never
    ignored, and a number outside its setting's range (:mod:`t0_pipeline.config.ranges`) too."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _in_range(cls, value, info: ValidationInfo):
        from t0_pipeline.config.ranges import check

        return check(cls.__name__, info.field_name, value)


class Settings(BaseSettings):
    """Process-wide settings read from the environment."""

    model_config = SettingsConfigDict(env_prefix="T0_", extra="ignore")

    data_dir: Path = Path("data")  # one root for every artefact; partition keys go below it
