"""Throttling repeated failed logins, per nick and per client address.

The counters are rows of `login_throttle`, so that every central process sees the same
ones: spreading guesses over the processes behind a balancer gains nothing. After
`failures` failed logins, each less than `window` seconds after the previous one, a key
is blocked for `delay` seconds; every further failure once the block is over doubles it
(up to `max_delay`). A successful login clears the nick's and the address's counters.

Two processes recording a failure for the same key at the same instant may count it
once: the counters bound guessing, they are not an audit (the event log is).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from abiquo_central.db import tables

_lt = tables.login_throttle
_KEY_LENGTH = 255
# Beyond this the doubling would overflow a timedelta long before it matters.
_MAX_DOUBLINGS = 30


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    failures: int = 5
    window: float = 300.0
    delay: float = 30.0
    max_delay: float = 900.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether an attempt may go on (`retry_after` None) and whether any key has a
    counter (so that a success knows whether there is anything to clear)."""

    retry_after: float | None
    counted: bool


def throttle_keys(nick: str, address: str | None) -> list[str]:
    """The counters a login attempt by `nick` from `address` touches."""
    return [f"nick:{nick}"[:_KEY_LENGTH], f"addr:{address or 'unknown'}"[:_KEY_LENGTH]]


async def check(engine: AsyncEngine, keys: Sequence[str], *, now: datetime) -> Verdict:
    """How long the attempt must wait (the longest block among its keys), if at all."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(select(_lt.c.blocked_until).where(_lt.c.key.in_(list(keys))))
        ).all()
    waits = [
        (row.blocked_until - now).total_seconds()
        for row in rows
        if row.blocked_until is not None and row.blocked_until > now
    ]
    return Verdict(retry_after=max(waits) if waits else None, counted=bool(rows))


def _blocked_until(failures: int, now: datetime, policy: ThrottlePolicy) -> datetime | None:
    if failures < policy.failures:
        return None
    doublings = min(failures - policy.failures, _MAX_DOUBLINGS)
    return now + timedelta(seconds=min(policy.delay * 2**doublings, policy.max_delay))


async def record_failure(
    engine: AsyncEngine, keys: Sequence[str], *, now: datetime, policy: ThrottlePolicy
) -> None:
    """Count one failed login against each key."""
    for key in keys:
        async with engine.begin() as conn:
            row = (
                await conn.execute(
                    select(_lt.c.failures, _lt.c.last_failure_at)
                    .where(_lt.c.key == key)
                    .with_for_update()
                )
            ).one_or_none()
            if row is not None:
                quiet = (now - row.last_failure_at).total_seconds() > policy.window
                # Below the threshold, failures far apart are forgotten (a user who
                # mistypes now and then is never blocked); once blocked, only a
                # success clears the key, so waiting out a block buys one guess.
                failures = 1 if quiet and row.failures < policy.failures else row.failures + 1
                await conn.execute(
                    _lt.update()
                    .where(_lt.c.key == key)
                    .values(
                        failures=failures,
                        last_failure_at=now,
                        blocked_until=_blocked_until(failures, now, policy),
                    )
                )
                continue
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    _lt.insert().values(
                        key=key,
                        failures=1,
                        last_failure_at=now,
                        blocked_until=_blocked_until(1, now, policy),
                    )
                )
        except IntegrityError:
            # Another process counted this key's first failure at the same moment.
            pass


async def clear(engine: AsyncEngine, keys: Sequence[str]) -> None:
    """Forget the keys' failures (after a successful login)."""
    async with engine.begin() as conn:
        await conn.execute(_lt.delete().where(_lt.c.key.in_(list(keys))))
