"""Whether the serve profiles' model endpoints answer: probed at start-up, then at most every
``serve.health_cache_s``.

``/healthz`` is public, so it reads the cached result instead of calling the model servers on every
hit; concurrent readers share one probe. Endpoints are never shown (only the model names).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from t0_pipeline.config import PipelineConfig

log = logging.getLogger("t0_pipeline.serve")


class ModelProbe:
    def __init__(self, cfg: PipelineConfig):
        self.cfg = cfg
        self.roles = sorted({r for p in cfg.serve.profiles.values() for r in (p.agent, p.reasoner)})
        self._result: dict[str, dict[str, Any]] = {}
        self._at = float("-inf")
        self._lock = asyncio.Lock()
        self.probes = 0  # how many times the endpoints were really called (tests and logs)

    async def status(self, fresh: bool = False) -> dict[str, dict[str, Any]]:
        async with self._lock:
            if fresh or time.monotonic() - self._at >= self.cfg.serve.health_cache_s:
                self._result = await self._probe()
                self._at = time.monotonic()
            return self._result

    async def _probe(self) -> dict[str, dict[str, Any]]:
        import httpx

        self.probes += 1
        out: dict[str, dict[str, Any]] = {}
        async with httpx.AsyncClient(timeout=2.0) as client:
            for role in self.roles:
                settings = self.cfg.llm.roles[role]
                entry: dict[str, Any] = {"model": settings.model}
                if settings.api_base:
                    try:
                        entry["reachable"] = (
                            await client.get(settings.api_base.rstrip("/") + "/models")
                        ).status_code < 500
                    except httpx.HTTPError as exc:
                        entry["reachable"], entry["error"] = False, exc.__class__.__name__
                else:
                    entry["reachable"] = None  # a hosted provider: not probed
                out[role] = entry
        return out

    async def warn_unreachable(self) -> list[str]:
        """Log one warning per model endpoint that does not answer now (start-up); the roles
        concerned."""
        down = []
        for role, entry in (await self.status(fresh=True)).items():
            if entry["reachable"] is False:
                settings = self.cfg.llm.roles[role]
                log.warning(
                    "the %s model (%s) does not answer at %s (%s): turns will fail until it does; "
                    "start it or fix llm.roles.%s.api_base",
                    role,
                    settings.model,
                    settings.api_base,
                    entry.get("error", "error"),
                    role,
                )
                down.append(role)
        return down
