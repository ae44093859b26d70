"""Documents generated from the code: every service's OpenAPI."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from panthera.kernel.settings import Settings
from panthera.runtime.platform import Platform
from panthera.runtime.registry import SERVICE_NAMES


def openapi_documents() -> dict[str, dict[str, Any]]:
    """Each service's OpenAPI document, by service name, built without starting anything."""
    with tempfile.TemporaryDirectory() as scratch:
        platform = Platform(Settings(data_dir=Path(scratch)), SERVICE_NAMES)
        return {name: app.openapi() for name, app in platform.apps.items()}
