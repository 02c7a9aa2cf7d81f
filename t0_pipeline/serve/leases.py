"""What several server processes on one database agree on: leases (one holder at a time, e.g. who
runs a thread's turn; renewed while held, expiring if the holder's process dies) and token buckets
for rate limits, each take one UPDATE so that concurrent processes never lose one."""

from __future__ import annotations

import time

import sqlalchemy as sa

from t0_pipeline.serve.schema import leases, rate_buckets


class SharedLimits:
    """Lease and token-bucket methods of :class:`~t0_pipeline.serve.store.Store` (on its
    ``engine``)."""

    engine: sa.engine.Engine

    # --- leases: one holder at a time, across processes ------------------------------------
    def acquire_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        now = time.time()
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    leases.insert().values(name=name, holder=holder, expires_at=now + ttl_s)
                )
            return True
        # held, or left behind by a process that died: take it once it has expired
        except sa.exc.IntegrityError:
            with self.engine.begin() as conn:
                return (
                    conn.execute(
                        leases.update()
                        .where(leases.c.name == name, leases.c.expires_at < now)
                        .values(holder=holder, expires_at=now + ttl_s)
                    ).rowcount
                    > 0
                )

    def renew_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        with self.engine.begin() as conn:
            return (
                conn.execute(
                    leases.update()
                    .where(leases.c.name == name, leases.c.holder == holder)
                    .values(expires_at=time.time() + ttl_s)
                ).rowcount
                > 0
            )

    def release_lease(self, name: str, holder: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(leases.delete().where(leases.c.name == name, leases.c.holder == holder))

    # --- rate limits shared by every process on this database -----------------------------
    def take_token(self, name: str, per_minute: float, burst: int) -> float:
        """Token bucket ``name``: 0 when a request may go now, else the seconds until one may."""
        rate, burst = per_minute / 60.0, max(1, burst)
        now = time.time()
        with self.engine.begin() as conn:
            refilled = rate_buckets.c.tokens + (now - rate_buckets.c.updated_at) * rate
            capped = sa.case((refilled > burst, float(burst)), else_=refilled)
            # one UPDATE reads and writes the row (every SET sees the old values): no lost update
            # between processes
            done = conn.execute(
                rate_buckets.update()
                .where(rate_buckets.c.name == name)
                .values(
                    allowed=sa.case((capped >= 1, 1), else_=0),
                    tokens=sa.case((capped >= 1, capped - 1), else_=capped),
                    updated_at=now,
                )
            ).rowcount
            if done:
                allowed, tokens = conn.execute(
                    sa.select(rate_buckets.c.allowed, rate_buckets.c.tokens).where(
                        rate_buckets.c.name == name
                    )
                ).one()
                return 0.0 if allowed else (1 - tokens) / rate
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    rate_buckets.insert().values(
                        name=name, tokens=burst - 1, updated_at=now, allowed=1
                    )
                )
            return 0.0
        except sa.exc.IntegrityError:  # another process created it first
            return self.take_token(name, per_minute, burst)
