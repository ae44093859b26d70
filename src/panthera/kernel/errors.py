"""The one error base of the platform; every service's errors subclass it."""

from __future__ import annotations

from typing import Any, ClassVar


class PantheraError(Exception):
    """A failure a client can act on, answered as RFC 9457 problem details.

    Subclasses fix ``status``, ``code`` (stable and machine-readable) and
    ``title``; an instance may add a ``detail`` and extra members.
    """

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    title: ClassVar[str] = "Bad request"

    def __init__(
        self, detail: str | None = None, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


class InvalidInput(PantheraError):
    status = 400
    code = "invalid_input"
    title = "Invalid input"


class Unauthenticated(PantheraError):
    status = 401
    code = "unauthenticated"
    title = "Authentication required"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="panthera"'}, **extra)


class Forbidden(PantheraError):
    status = 403
    code = "forbidden"
    title = "Forbidden"


class NotFound(PantheraError):
    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(PantheraError):
    status = 409
    code = "conflict"
    title = "Conflict"


class PayloadTooLarge(PantheraError):
    status = 413
    code = "payload_too_large"
    title = "Request body too large"


class TooManyRequests(PantheraError):
    status = 429
    code = "rate_limited"
    title = "Too many requests"

    def __init__(self, retry_after_seconds: float, detail: str | None = None) -> None:
        seconds = max(1, int(retry_after_seconds + 0.999))
        super().__init__(detail, headers={"Retry-After": str(seconds)})


class ServiceUnavailable(PantheraError):
    status = 503
    code = "service_unavailable"
    title = "Service unavailable"
