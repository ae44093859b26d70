"""The gateway's request path: route, authenticate, limit, forward."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from starlette.types import Receive, Scope, Send

from panthera.gateway.cache import Headers, ResponseCaching
from panthera.gateway.routes import ROUTES, Route, is_private, match
from panthera.gateway.upstreams import Upstream, UpstreamTimeout, UpstreamUnreachable
from panthera.kernel.errors import PantheraError, TooManyRequests, Unauthenticated
from panthera.kernel.http.breaker import CircuitOpen
from panthera.kernel.http.problems import problem_response
from panthera.kernel.observability import current_request_id, current_traceparent
from panthera.kernel.ratelimit import RateLimiter
from panthera.kernel.security.permissions import Authenticator
from panthera.kernel.security.principal import Principal

log = logging.getLogger("panthera.gateway")

# Headers only the gateway may set: whatever a client sends under these names is dropped.
TRUSTED_HEADERS = frozenset(
    {
        b"x-client-ip",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-prefix",
        b"x-real-ip",
        b"x-user-id",
        b"x-user-roles",
        b"x-internal-token",
        b"forwarded",
    }
)
_DROP_FROM_CLIENT = TRUSTED_HEADERS | {
    b"connection",
    b"keep-alive",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
    b"proxy-authorization",
    b"x-request-id",
    b"traceparent",
}


class RateLimits:
    """Per-address and per-user budgets, from settings."""

    def __init__(
        self,
        limiter: RateLimiter,
        *,
        per_ip_per_minute: int,
        per_ip_burst: int,
        per_user_per_minute: int,
        per_user_burst: int,
    ) -> None:
        self.limiter = limiter
        self.per_ip = (per_ip_per_minute, per_ip_burst)
        self.per_user = (per_user_per_minute, per_user_burst)

    async def check(self, address: str, principal: Principal | None) -> None:
        """Spend one request of the caller's budgets; 429 when one is empty."""
        rate, burst = self.per_ip
        decision = await self.limiter.hit(f"ip:{address}", rate_per_minute=rate, burst=burst)
        if not decision.allowed:
            raise TooManyRequests(decision.retry_after_seconds)
        if principal is not None:
            rate, burst = self.per_user
            decision = await self.limiter.hit(
                f"user:{principal.user_id}", rate_per_minute=rate, burst=burst
            )
            if not decision.allowed:
                raise TooManyRequests(decision.retry_after_seconds)


def _bad_path(path: str) -> bool:
    # Paths a router could read two ways are refused rather than normalised.
    return (
        "//" in path
        or "/./" in path
        or "/../" in path
        or path.endswith(("/.", "/.."))
        or "\\" in path
    )


class Proxy:
    """Forwards public API requests to the service that owns them."""

    def __init__(
        self,
        upstreams: Mapping[str, Upstream],
        *,
        authenticator: Authenticator,
        rate_limits: RateLimits,
        routes: tuple[Route, ...] = ROUTES,
        caching: ResponseCaching | None = None,
    ) -> None:
        self.upstreams = upstreams
        self.authenticator = authenticator
        self.rate_limits = rate_limits
        self.routes = routes
        self.caching = caching
        if caching is not None:
            # A cached answer must have events that retire it, or it stays stale for its TTL.
            uncovered = {r.service for r in routes if r.cacheable} - caching.namespaces
            if uncovered:
                raise ValueError(f"cacheable routes without invalidating events: {uncovered}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        try:
            if _bad_path(path):
                raise _PathRefused()
            found = match(path, self.routes)
            if found is None or is_private(found[1]):
                await problem_response(404, "not_found", "Not Found", instance=path)(
                    scope, receive, send
                )
                return
            route, upstream_path = found
            address = scope["client"][0] if scope.get("client") else "unknown"
            principal = await self._authenticate(scope)
            # An anonymous cacheable read spends its budget in the cache lookup's
            # round trip instead (see ResponseCaching.limits_address).
            limited_by_cache = (
                principal is None
                and route.cacheable
                and self.caching is not None
                and self.caching.limits_address(scope)
            )
            if not limited_by_cache:
                await self.rate_limits.check(address, principal)
        except PantheraError as exc:
            await problem_response(
                exc.status,
                exc.code,
                exc.title,
                detail=exc.detail,
                instance=path,
                headers=exc.headers,
            )(scope, receive, send)
            return
        except _PathRefused:
            await problem_response(400, "invalid_path", "Invalid path", instance=path)(
                scope, receive, send
            )
            return
        headers = [(k, v) for k, v in scope["headers"] if k not in _DROP_FROM_CLIENT]
        headers.append((b"x-client-ip", address.encode()))
        headers.append((b"x-forwarded-for", address.encode()))
        headers.append((b"x-forwarded-proto", scope.get("scheme", "http").encode()))
        headers.append(
            (b"x-forwarded-prefix", route.prefix.removesuffix(route.upstream_prefix).encode())
        )
        request_id = current_request_id()
        if request_id:
            headers.append((b"x-request-id", request_id.encode()))
        traceparent = current_traceparent()
        if traceparent:
            headers.append((b"traceparent", traceparent.encode()))
        if principal is not None:
            # For the services' logs only: they authorise from the token itself.
            headers.append((b"x-user-id", str(principal.user_id).encode()))
        upstream = self.upstreams.get(route.service)
        if upstream is None:
            await problem_response(
                503, "service_unavailable", "Service unavailable", instance=path
            )(scope, receive, send)
            return

        async def forward(inner: Scope, inner_headers: Headers, inner_send: Send) -> None:
            await upstream.forward(
                inner, receive, inner_send, path=upstream_path, headers=inner_headers
            )

        try:
            if self.caching is not None and route.cacheable:
                await self.caching.handle(
                    scope,
                    send,
                    namespace=route.service,
                    headers=headers,
                    forward=forward,
                    address=address if limited_by_cache else None,
                )
            else:
                await forward(scope, headers, send)
        except (TooManyRequests, CircuitOpen) as exc:
            # Both carry Retry-After: the client is told when to come back.
            await problem_response(
                exc.status, exc.code, exc.title, instance=path, headers=exc.headers
            )(scope, receive, send)
        except UpstreamTimeout:
            log.warning("upstream timed out", extra={"service": route.service})
            await problem_response(504, "gateway_timeout", "Gateway timeout", instance=path)(
                scope, receive, send
            )
        except UpstreamUnreachable:
            log.warning("upstream unreachable", extra={"service": route.service}, exc_info=True)
            await problem_response(502, "bad_gateway", "Bad gateway", instance=path)(
                scope, receive, send
            )

    async def _authenticate(self, scope: Scope) -> Principal | None:
        for key, value in scope["headers"]:
            if key == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() != "bearer" or not token.strip():
                    raise Unauthenticated("Only bearer access tokens are accepted.")
                return await self.authenticator.authenticate(token.strip())
        return None


class _PathRefused(Exception):
    pass
