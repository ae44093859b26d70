"""FastAPI dependency aliases of the users service."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from panthera.users.service import UsersDeps


# async: FastAPI would run a plain function in its thread pool on every request.
async def _users_deps(request: Request) -> UsersDeps:
    deps: UsersDeps = request.app.state.users_deps
    return deps


Users = Annotated[UsersDeps, Depends(_users_deps)]
