"""Retry policies: how many attempts, and how long to wait between them."""

from __future__ import annotations

from dataclasses import dataclass

from taskiq_flow.errors import names_unknown_task

__all__ = ["NO_RETRY", "RetryPolicy", "is_retryable", "retry_time"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with optional jitter and a cap on the total retry time.

    ``retries`` is the number of attempts after the first one. The wait before retry *n*
    (1-based) is ``delay * backoff ** (n - 1)``, capped at ``max_delay``; with ``jitter``
    it is scaled by a random factor in [0.5, 1.0] ("equal jitter"), so that many steps
    failing together do not retry in lockstep, and a wait never exceeds the nominal one.
    No retry starts later than ``max_retry_time`` seconds after the first attempt began.
    """

    retries: int = 0
    delay: float = 1.0
    backoff: float = 2.0
    jitter: bool = True
    max_delay: float | None = None
    max_retry_time: float | None = 300.0

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError("retries must be >= 0")
        if self.delay < 0:
            raise ValueError("retry delay must be >= 0")
        if self.backoff < 1:
            raise ValueError("retry backoff must be >= 1")

    @property
    def max_attempts(self) -> int:
        """The first attempt plus the retries."""
        return self.retries + 1

    def delay_before(self, retry: int, rand: float) -> float:
        """Seconds to wait before retry number ``retry`` (1-based); ``rand`` is in [0, 1)."""
        nominal = self.delay * self.backoff ** (retry - 1)
        if self.max_delay is not None:
            nominal = min(nominal, self.max_delay)
        if self.jitter:
            nominal *= 0.5 + rand / 2
        return nominal

    def next_retry_at(
        self, failed_attempt: int, first_started: float, now: float, rand: float
    ) -> float | None:
        """When the next attempt should start, or ``None`` when no retry is left."""
        if failed_attempt >= self.max_attempts:
            return None
        at = now + self.delay_before(failed_attempt, rand)
        if self.max_retry_time is not None and at - first_started > self.max_retry_time:
            return None
        return at


# The policy of every step that sets none: immutable, so one object serves them all (a
# 10,000-step graph would otherwise hold 10,000 equal copies).
NO_RETRY = RetryPolicy()


def is_retryable(error: str, retryable: bool | None = None) -> bool:
    """Whether a failure may be retried: a driver may say it may not (its input was
    invalid); an unknown task name never is, it would fail the same way again."""
    if retryable is not None:
        return retryable
    return not names_unknown_task(error)


def retry_time(
    policy: RetryPolicy,
    failed_attempt: int,
    first_started: float,
    now: float,
    rand: float,
    error: str,
    retryable: bool | None = None,
) -> float | None:
    """When attempt ``failed_attempt + 1`` of a step or item starts, or ``None`` when the
    failure is final: the one rule for steps and items on every driver."""
    if not is_retryable(error, retryable):
        return None
    return policy.next_retry_at(failed_attempt, first_started, now, rand)
