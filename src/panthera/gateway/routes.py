"""The public API surface: which path prefix belongs to which service."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Route:
    prefix: str
    service: str
    # The path on the service that the prefix stands for.
    upstream_prefix: str = ""
    # Anonymous GETs answered 200 may be served from the gateway's response cache,
    # which the service's events invalidate (see panthera.gateway.cache). Only for
    # public reads whose answer is the same for every anonymous caller.
    cacheable: bool = False


ROUTES: tuple[Route, ...] = (
    Route("/api/v1/users", "users"),
    Route("/api/v1/auth", "auth"),
    Route("/api/v1/notifications", "notifications"),
    Route("/api/v1/products", "catalog", "/products", cacheable=True),
    Route("/api/v1/categories", "catalog", "/categories", cacheable=True),
    Route("/api/v1/inventory", "catalog", "/inventory"),
    Route("/media", "catalog", "/media"),
    # Longest prefix first: provider webhooks are their own public path.
    Route("/api/v1/payments/webhooks", "payments", "/webhooks"),
    Route("/api/v1/payments", "payments", "/payments"),
    Route("/api/v1/orders", "orders", "/orders"),
    Route("/.well-known/jwks.json", "auth", "/.well-known/jwks.json"),
)

# Paths on a service that only other services may call: never forwarded.
PRIVATE_FIRST_SEGMENTS = frozenset({"internal", "metrics", "healthz", "readyz"})


def match(path: str, routes: tuple[Route, ...] = ROUTES) -> tuple[Route, str] | None:
    """The route a public path belongs to and the path to ask the service for."""
    for route in routes:
        if path == route.prefix or path.startswith(route.prefix + "/"):
            rest = path[len(route.prefix) :]
            return route, (route.upstream_prefix + rest) or "/"
    return None


def is_private(upstream_path: str) -> bool:
    """Whether a service path is closed to the public."""
    first = upstream_path.lstrip("/").split("/", 1)[0].lower()
    return first in PRIVATE_FIRST_SEGMENTS
