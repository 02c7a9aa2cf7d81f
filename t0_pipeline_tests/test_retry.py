"""The one retry policy (crawler, LLM client, budget forcing): backoff bounds, jitter, Retry-After,
attempts."""

from __future__ import annotations

import email.utils
import time

from t0_pipeline.retry import RETRYABLE_STATUS, RetryPolicy, parse_retry_after


def test_retry_after_accepts_seconds_and_http_dates():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert parse_retry_after("soon") == 0.0
    assert parse_retry_after(None) == 0.0
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= parse_retry_after(later) <= 31


def test_waits_double_with_jitter_yield_to_retry_after_and_stop_at_the_cap():
    policy = RetryPolicy(max_attempts=3, base_s=1.0, cap_s=10.0)
    for attempt, low, high in ((1, 0.5, 1.5), (2, 1.0, 3.0), (3, 2.0, 6.0)):
        waits = [policy.delay(attempt) for _ in range(300)]
        assert all(low <= w < high for w in waits), (attempt, min(waits), max(waits))
        assert max(waits) - min(waits) > (high - low) / 3  # jittered, not one fixed wait
    assert policy.delay(1, retry_after=7.0) == 7.0  # the server's Retry-After wins when longer
    # never past the cap
    assert policy.delay(6) == 10.0 and policy.delay(1, retry_after=90.0) == 10.0
    assert [policy.another(a) for a in (1, 2, 3)] == [True, True, False]


def test_transient_statuses_are_retried_and_client_errors_are_not():
    assert {429, 500, 502, 503, 504} <= RETRYABLE_STATUS
    assert not {400, 401, 403, 404, 413, 422} & RETRYABLE_STATUS
