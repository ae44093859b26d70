"""Every service of the platform, by name. The only module that knows them all."""

from __future__ import annotations

import importlib

from panthera.kernel.service import ServiceDefinition

# Order matters at start-up: a service's dependencies come first.
SERVICE_NAMES: tuple[str, ...] = (
    "auth",
    "users",
    "catalog",
    "payments",
    "orders",
    "notifications",
)


def definition(name: str) -> ServiceDefinition:
    """The definition of the service called ``name``."""
    if name not in SERVICE_NAMES:
        raise KeyError(f"unknown service {name!r}; known: {', '.join(SERVICE_NAMES)}")
    module = importlib.import_module(f"panthera.{name}")
    found: ServiceDefinition = module.definition
    return found


def all_definitions() -> list[ServiceDefinition]:
    """Every service's definition, in start-up order."""
    return [definition(name) for name in SERVICE_NAMES]
