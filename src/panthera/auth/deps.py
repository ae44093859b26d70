"""FastAPI dependency aliases of the auth service."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from panthera.auth.service import AuthDeps


# async: FastAPI would run a plain function in its thread pool on every request.
async def _auth_deps(request: Request) -> AuthDeps:
    deps: AuthDeps = request.app.state.auth_deps
    return deps


Auth = Annotated[AuthDeps, Depends(_auth_deps)]
