"""The ``base_models`` asset: local checkpoints of the models the pipeline serves and fine-tunes.

Present when the config names ``base_models`` (read when the code location loads); every asset whose
model is served from, trained from or tokenised with one of them depends on it, so converting or
downloading a base model comes first and a new source re-runs what used it.
"""

import dagster as dg

from t0_pipeline.defs.resources import PipelineSettings, location_config
from t0_pipeline.defs.versions import version_of

LOCATION = location_config()


def build_base_models() -> list:
    @dg.asset(
        group_name="models",
        code_version=version_of("base_models"),
        kinds={"pytorch"},
        description="Local Hugging Face checkpoints named in base_models: the bundled "
        "SmolLM2-135M-Instruct converted once, folders linked, hub names downloaded when online.",
    )
    def base_models(
        context: dg.AssetExecutionContext, settings: PipelineSettings
    ) -> dg.MaterializeResult:
        from t0_pipeline.servers.base_models import materialise_all

        cfg, paths = settings.pipeline_config(), settings.paths()
        made = materialise_all(cfg.base_models, paths, context.log.info)
        rows = "\n".join(
            f"| {m['name']} | {m['source']} | {m['kind']} | {m['bytes'] / 1e6:.0f} MB | "
            f"{'made' if m['made'] else 'up to date'} |"
            for m in made
        )
        return dg.MaterializeResult(
            metadata={
                "models": dg.MetadataValue.md(
                    "| name | source | kind | size | this run |\n|---|---|---|---|---|\n" + rows
                ),
                "paths": dg.MetadataValue.json({m["name"]: m["path"] for m in made}),
                "stand_in": (
                    "bundled tiny models (SmolLM2-135M) stand in for the report's Qwen2.5 / "
                    "DeepSeek-R1: every artefact is real, no figure made with them is the "
                    "method's result"
                )
                if any(m["source"].startswith("bundled:") for m in made)
                else "none",
            }
        )

    @dg.asset_check(
        asset=base_models,
        blocking=True,
        description="Every base model is a loadable checkpoint (config, weights, tokenizer with a "
        "chat template).",
    )
    def base_models_loadable(settings: PipelineSettings) -> dg.AssetCheckResult:
        from t0_pipeline.checks import checkpoint_problems

        cfg, paths = settings.pipeline_config(), settings.paths()
        problems = [
            p for name in cfg.base_models for p in checkpoint_problems(paths.base_model(name))
        ]
        return dg.AssetCheckResult(
            passed=not problems, metadata={"problems": dg.MetadataValue.json(problems)}
        )

    return [base_models, base_models_loadable]


# the assets that call, train or tokenise with a model depend on base_models when it is configured
if LOCATION.base_models:
    base_models, base_models_loadable = build_base_models()
    MODEL_DEPS: list = [base_models]
else:
    MODEL_DEPS = []
