"""``RetryPolicy``: how often and how patiently a failing step is tried again."""

from __future__ import annotations

import random
from dataclasses import dataclass

from heron.runtime._errors import FatalError

__all__ = ["DEFAULT_RETRY", "RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential back-off: attempt ``n`` (from 1) waits ``initial_delay * backoff**(n-1)``.

    The wait is capped at ``max_delay`` and, with ``jitter`` (a fraction, 0.1 = ±10 %), spread
    so that many runs failing together do not retry together. ``FatalError`` and any type in
    ``non_retryable`` fail the step at once. A wait longer than the runtime's
    ``inline_retry_limit`` (2 s by default) suspends the run instead of sleeping in the
    invocation.
    """

    max_attempts: int = 3
    initial_delay: float = 1.0
    backoff: float = 2.0
    max_delay: float = 300.0
    jitter: float = 0.0
    non_retryable: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"RetryPolicy.max_attempts must be >= 1, got {self.max_attempts}")
        if self.initial_delay < 0 or self.max_delay < 0:
            raise ValueError("RetryPolicy delays must be >= 0")
        if self.backoff < 1:
            raise ValueError(f"RetryPolicy.backoff must be >= 1, got {self.backoff}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"RetryPolicy.jitter must be within [0, 1], got {self.jitter}")

    def retryable(self, exc: BaseException) -> bool:
        return not isinstance(exc, (FatalError, *self.non_retryable))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based) before the next one."""
        base = min(self.max_delay, self.initial_delay * self.backoff ** (attempt - 1))
        if self.jitter:
            spread = base * self.jitter
            base += (rng or random).uniform(-spread, spread)
        return max(0.0, base)


#: What a bare ``@rt.step`` gets: 3 attempts, 1 s then 2 s apart.
DEFAULT_RETRY = RetryPolicy()
