"""The notifications service: messages to people when something happens to them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter

from panthera.kernel.service import ServiceDefinition, ServiceRuntime


def _router() -> APIRouter:
    from panthera.notifications.endpoints import router

    return router


def _state(runtime: ServiceRuntime) -> dict[str, Any]:
    from panthera.notifications.channels import FileOutbox
    from panthera.notifications.service import NotificationsDeps, template_environment

    settings = runtime.settings
    deps = NotificationsDeps(
        email=FileOutbox(settings.data_dir / "outbox"),
        templates=template_environment(settings.templates_dir),
        sender=settings.mail_sender,
        base_url=settings.public_base_url,
    )
    runtime.components["notifications_deps"] = deps
    return {"notifications_deps": deps}


def _definition() -> ServiceDefinition:
    from panthera.notifications.handlers import SUBSCRIPTIONS
    from panthera.notifications.models import EVENT_TABLES, Base

    return ServiceDefinition(
        name="notifications",
        title="Notifications Service API",
        description=(
            "Messages sent to people when something happens to them, and their delivery log."
        ),
        metadata=Base.metadata,
        tables=EVENT_TABLES,
        migrations_dir=Path(__file__).parent / "migrations",
        router=_router,
        state=_state,
        subscriptions=SUBSCRIPTIONS,
    )


definition = _definition()

__all__ = ["definition"]
