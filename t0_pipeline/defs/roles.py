"""What every model-calling asset shares: per-run overrides of its LLM role, the config with them
applied, and the LLM usage as asset metadata."""

from typing import Optional

import dagster as dg

from t0_pipeline.config import LLMConfig, PipelineConfig
from t0_pipeline.defs.resources import PipelineSettings


class RoleOverrides(dg.Config):
    """Per-run overrides of the asset's LLM role (leave empty to use the config file)."""

    model: Optional[str] = None
    api_base: Optional[str] = None
    temperature: Optional[float] = None
    max_tokens: Optional[int] = None
    seed: Optional[int] = None

    def apply(self, llm: LLMConfig, role: str) -> LLMConfig:
        changes = {k: v for k, v in self.model_dump().items() if v is not None}
        if changes:
            llm.roles[role] = llm.roles[role].model_copy(update=changes)
        return llm


def usage_metadata(usage: dict) -> dict:
    return {
        "llm_calls": usage["completed"],
        "llm_cache_hits": usage["cache_hits"],
        "llm_retries": usage["retries"],
        "llm_failures": usage["failures"],
        "llm_json_repairs": usage["repairs"],
        "llm_invalid_json": usage["invalid_json"],
        "prompt_tokens": usage["prompt_tokens"],
        "completion_tokens": usage["completion_tokens"],
        "cost_usd": round(usage["cost"], 6),
    }


def role_config(settings: PipelineSettings, overrides: RoleOverrides, role: str) -> PipelineConfig:
    cfg = settings.pipeline_config()
    overrides.apply(cfg.llm, role)
    return cfg
