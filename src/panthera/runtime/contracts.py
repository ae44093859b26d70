"""Documents generated from the code: every published event's contract, as JSON Schema."""

from __future__ import annotations

import importlib
import importlib.util
import json
from typing import Any

from panthera.kernel.events import EventContract
from panthera.runtime.registry import SERVICE_NAMES


def published_contracts() -> dict[str, tuple[type[EventContract], ...]]:
    """Each service's published contracts (its ``events.PUBLISHED``), by service name."""
    found: dict[str, tuple[type[EventContract], ...]] = {}
    for name in SERVICE_NAMES:
        module_name = f"panthera.{name}.events"
        if importlib.util.find_spec(module_name) is None:
            continue
        published: tuple[type[EventContract], ...] = tuple(
            getattr(importlib.import_module(module_name), "PUBLISHED", ())
        )
        if published:
            found[name] = published
    return found


def event_schemas() -> dict[str, dict[str, Any]]:
    """One document per published contract, keyed ``<event_type>.v<version>``."""
    documents: dict[str, dict[str, Any]] = {}
    for service, contracts in published_contracts().items():
        for contract in contracts:
            key = f"{contract.event_type}.v{contract.version}"
            if key in documents:
                raise ValueError(f"two published contracts are {key}")
            documents[key] = {
                "event_type": contract.event_type,
                "version": contract.version,
                "publisher": service,
                "schema": contract.model_json_schema(),
            }
    return dict(sorted(documents.items()))


def render(document: dict[str, Any]) -> str:
    """The committed text of a generated document: stable key order, one trailing newline."""
    return json.dumps(document, indent=2, sort_keys=True) + "\n"
