"""FastAPI dependency aliases of the notifications service."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from panthera.notifications.service import NotificationsDeps


# async: FastAPI would run a plain function in its thread pool on every request.
async def _notifications(request: Request) -> NotificationsDeps:
    deps: NotificationsDeps = request.app.state.notifications_deps
    return deps


Notifications = Annotated[NotificationsDeps, Depends(_notifications)]
