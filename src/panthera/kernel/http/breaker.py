"""Circuit breakers: stop sending calls to a peer address that keeps failing.

One breaker per replica address. After ``failure_threshold`` consecutive failures
(no connection, a timeout, a 5xx answer) it opens: calls to that address fail at
once instead of each waiting out a timeout, and the replica's siblings take its
share. After ``open_seconds`` one trial call is let through (half-open); its
outcome closes the breaker or opens it again for another cool-down.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum

from panthera.kernel.errors import ServiceUnavailable
from panthera.kernel.observability import CIRCUIT_STATE


class CircuitState(IntEnum):
    # The values are what the gauge reports: higher is worse.
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitOpen(ServiceUnavailable):
    """Every address of a service has an open breaker: answer 503 now, not after a timeout."""

    def __init__(self, service: str, retry_after_seconds: float) -> None:
        seconds = max(1, int(retry_after_seconds + 0.999))
        super().__init__(
            f"The {service or 'upstream'} service is failing; try again shortly.",
            headers={"Retry-After": str(seconds)},
        )
        self.retry_after_seconds = retry_after_seconds


class CircuitBreaker:
    """Closed, open or half-open for one address; ``clock`` is injectable for tests."""

    def __init__(
        self,
        *,
        failure_threshold: int,
        open_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[CircuitState], None] | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self._threshold = failure_threshold
        self._open_seconds = open_seconds
        self._clock = clock
        self._on_change = on_change
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_started: float | None = None

    @property
    def state(self) -> CircuitState:
        return self._state

    def _set(self, state: CircuitState) -> None:
        if state is not self._state:
            self._state = state
            if self._on_change is not None:
                self._on_change(state)

    def available(self) -> bool:
        """Whether a call could be let through now (no side effects)."""
        now = self._clock()
        if self._state is CircuitState.CLOSED:
            return True
        if self._state is CircuitState.OPEN:
            return now >= self._opened_at + self._open_seconds
        # Half-open: the trial's outcome is awaited. A trial that never reported
        # (its caller was cancelled) must not hold the breaker half-open forever.
        return self._trial_started is None or now >= self._trial_started + self._open_seconds

    def allow(self) -> bool:
        """Claim the right to send one call; in half-open only one caller gets it."""
        if not self.available():
            return False
        if self._state is not CircuitState.CLOSED:
            self._trial_started = self._clock()
            self._set(CircuitState.HALF_OPEN)
        return True

    def retry_after(self) -> float:
        """Seconds until a call may be let through again (0 when it may be now)."""
        now = self._clock()
        if self._state is CircuitState.OPEN:
            return max(0.0, self._opened_at + self._open_seconds - now)
        if self._state is CircuitState.HALF_OPEN and self._trial_started is not None:
            return max(0.0, self._trial_started + self._open_seconds - now)
        return 0.0

    def success(self) -> None:
        self._failures = 0
        self._trial_started = None
        self._set(CircuitState.CLOSED)

    def failure(self) -> None:
        self._failures += 1
        if self._state is CircuitState.HALF_OPEN or self._failures >= self._threshold:
            self._opened_at = self._clock()
            self._trial_started = None
            self._set(CircuitState.OPEN)


def gauge_reporter(service: str, address: str) -> Callable[[CircuitState], None]:
    """Reports a breaker's state changes to the ``panthera_circuit_state`` gauge."""
    gauge = CIRCUIT_STATE.labels(service=service or "unknown", address=address)
    gauge.set(CircuitState.CLOSED)

    def report(state: CircuitState) -> None:
        gauge.set(state)

    return report
