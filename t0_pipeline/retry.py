"""One retry policy for every caller of a server: the crawler, the LLM client and budget forcing.

A failed attempt that may succeed later (a transient HTTP status, a dropped connection) waits
``base_s · 2^(attempt-1)``, scaled by a random factor in [0.5, 1.5) so that many clients do not
retry in step, at least as long as the server's ``Retry-After`` asks, never longer than ``cap_s``;
after ``max_attempts`` attempts the caller reports the failure. Which errors are worth another
attempt is the caller's to say (HTTP statuses here; exception kinds in
:mod:`t0_pipeline.llm.client`).
"""

from __future__ import annotations

import email.utils
import random
from dataclasses import dataclass
from datetime import datetime, timezone

# HTTP statuses that say "try again": timeouts, conflicts and early data, rate limits, server
# trouble
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    base_s: float = 1.0
    cap_s: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based) before the next one."""
        wait = self.base_s * 2 ** (attempt - 1) * (0.5 + random.random())
        return min(max(wait, retry_after or 0.0), self.cap_s)

    def another(self, attempt: int) -> bool:
        """Whether failed attempt ``attempt`` may be followed by another."""
        return attempt < self.max_attempts


def parse_retry_after(value: str | None) -> float:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); 0 when absent or
    unreadable."""
    value = (value or "").strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return 0.0
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
