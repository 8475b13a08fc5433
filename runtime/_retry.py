"""``RetryPolicy``: how often and how patiently a failing step is tried again."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from heron.runtime._errors import FatalError

__all__ = ["DEFAULT_RETRY", "RetryPolicy", "check_seconds"]


def check_seconds(value: float, what: str, *, allow_zero: bool = True) -> float:
    """``value`` as seconds, or ``ValueError`` naming ``what`` for NaN, infinity or a negative
    (``ctx.sleep``, signal timeouts, step timeouts and retry delays all go through here)."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number of seconds, got {value!r}") from None
    if not math.isfinite(seconds):
        raise ValueError(f"{what} must be a finite number of seconds, got {seconds}")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{what} must be {bound} seconds, got {seconds}")
    return seconds


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential back-off: after failed attempt ``n`` (from 1) wait
    ``initial_delay * backoff**(n-1)`` seconds, capped at ``max_delay``.

    With ``jitter`` (a fraction, 0.1 = ±10 %) the wait is spread so that many runs failing
    together do not retry together. ``FatalError`` and any type in ``non_retryable`` fail the
    step at once. An attempt that never came back (the executor was killed: a Lambda timeout,
    an out-of-memory kill) counts as a failed one. A wait longer than the runtime's
    ``inline_retry_limit`` (2 s by default) suspends the run instead of sleeping in the
    invocation. Raises ``ValueError`` for a value out of range (NaN and infinity included).
    """

    max_attempts: int = 3
    initial_delay: float = 1.0
    backoff: float = 2.0
    max_delay: float = 300.0
    jitter: float = 0.0
    non_retryable: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ValueError(f"RetryPolicy.max_attempts must be >= 1, got {self.max_attempts}")
        check_seconds(self.initial_delay, "RetryPolicy.initial_delay")
        check_seconds(self.max_delay, "RetryPolicy.max_delay")
        if not math.isfinite(self.backoff) or self.backoff < 1:
            raise ValueError(
                f"RetryPolicy.backoff must be a finite number >= 1, got {self.backoff}"
            )
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"RetryPolicy.jitter must be within [0, 1], got {self.jitter}")

    def retryable(self, exc: BaseException) -> bool:
        return not isinstance(exc, (FatalError, *self.non_retryable))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based) before the next one.

        Never overflows: past the attempt where the back-off reaches ``max_delay`` the wait is
        ``max_delay``, however large ``attempt`` is.
        """
        base = self._base(attempt)
        if self.jitter:
            spread = base * self.jitter
            base += (rng or random).uniform(-spread, spread)
        return max(0.0, base)

    def _base(self, attempt: int) -> float:
        if self.initial_delay == 0 or self.backoff == 1 or attempt <= 1:
            return min(self.max_delay, self.initial_delay)
        if self.initial_delay >= self.max_delay:
            return self.max_delay
        # the exponent at which initial_delay * backoff**e reaches max_delay
        ceiling = math.log(self.max_delay / self.initial_delay, self.backoff)
        if attempt - 1 >= ceiling:
            return self.max_delay
        return min(self.max_delay, self.initial_delay * self.backoff ** (attempt - 1))


#: What a bare ``@rt.step`` gets: 3 attempts, 1 s then 2 s apart.
DEFAULT_RETRY = RetryPolicy()
