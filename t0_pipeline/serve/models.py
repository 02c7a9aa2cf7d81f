"""The models behind the service: which roles the serve profiles use, checked before anything
starts, and the servers ``t0 serve`` starts for those with a ``serve`` section (a student's
``final/``, its base, any role), through the same model-server factory the pipeline's stages use
(this machine, or Slurm jobs). Roles without one are reached at their ``api_base``.

Input: the pipeline config and a server factory. Output: the config with each served role pointed
at its running server (stopped when the block ends, however it ends), and each student profile
rendering prompts with the chat template of the checkpoint it serves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import DataPaths, PipelineConfig, resolve_profiles

# two vLLM servers on one machine's GPUs: each takes this share of their memory (vLLM's default of
# 0.9 for the first leaves the second nothing)
SHARED_GPU_MEMORY = 0.45


def profile_roles(cfg: PipelineConfig) -> list[str]:
    """The llm.roles entries the serve profiles use (agents, then reasoners), each once."""
    resolve_profiles(cfg)
    roles: list[str] = []
    for profile in cfg.serve.profiles.values():
        for role in (profile.agent, profile.reasoner):
            if role is not None and role not in roles:
                roles.append(role)
    return roles


def check_profiles(cfg: PipelineConfig) -> None:
    """Every profile's roles are configured and its student is a trained size; else one line."""
    for name, profile in resolve_profiles(cfg).serve.profiles.items():
        if profile.student is not None and profile.student not in cfg.train.sizes:
            raise T0Error(
                f"serve profile {name!r} serves the {profile.student} student, but train.sizes "
                f"has no {profile.student} ({', '.join(cfg.train.sizes) or 'none'}); set "
                f"serve.profiles.{name}.student to a trained size (t0 serve --student SIZE), or "
                "to null for a reasoner that is not a student."
            )
        for role in (profile.agent, profile.reasoner):
            if role not in cfg.llm.roles:
                raise T0Error(
                    f"serve profile {name!r} uses LLM role {role!r}, which is not configured; "
                    f"add llm.roles.{role} (model, api_base)."
                )


def share_gpus(cfg: PipelineConfig, roles: list[str]) -> None:
    """When several vLLM servers start on this machine, each takes a share of its GPUs' memory
    (unless its serve section sets one)."""
    served = {
        (cfg.llm.roles[r].served_name, cfg.llm.roles[r].serve.model_dump_json()): r
        for r in roles
        if cfg.llm.roles[r].serve is not None
    }
    if len(served) < 2 or Path(cfg.servers.command[0]).name != "vllm":
        return
    for role in served.values():
        launch = cfg.llm.roles[role].serve
        if launch.gpu_memory_utilization is None:
            launch.gpu_memory_utilization = SHARED_GPU_MEMORY


@contextlib.contextmanager
def serving_models(
    cfg: PipelineConfig, paths: DataPaths, make_server: Callable, local: bool = True
) -> Iterator[PipelineConfig]:
    """``cfg`` with every served role of the profiles pointed at its running server for the
    block; a student profile renders its prompts with its served checkpoint's own template."""
    from t0_pipeline.servers.model_server import roles_served
    from t0_pipeline.servers.plan import plan_for

    check_profiles(cfg)
    roles = profile_roles(cfg)
    if local:
        share_gpus(cfg, roles)
    templates = {}
    for name, profile in cfg.serve.profiles.items():
        entry = cfg.llm.roles[profile.reasoner]
        if profile.student and profile.tokenizer is None and entry.serve is not None:
            checkpoint = plan_for(profile.reasoner, entry, paths).checkpoint  # fails early
            if Path(checkpoint).is_dir():
                templates[name] = checkpoint
    with roles_served(cfg.llm, roles, paths, make_server) as llm:
        served = cfg.model_copy(update={"llm": llm, "serve": cfg.serve.model_copy(deep=True)})
        for name, checkpoint in templates.items():
            served.serve.profiles[name].tokenizer = checkpoint
        yield served
