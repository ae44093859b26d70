"""The committed OpenAPI documents (docs/openapi/*.json) are what the code generates."""

from __future__ import annotations

from typer.testing import CliRunner

from panthera.cli import app
from panthera.runtime.documents import openapi_documents
from tests.contracts.snapshots import REPO, stale_files

OPENAPI_DIR = REPO / "docs" / "openapi"
EVENTS_DIR = REPO / "docs" / "events"


def test_committed_openapi_documents_are_current() -> None:
    problems = stale_files(OPENAPI_DIR, openapi_documents())
    assert not problems, (
        "the committed OpenAPI documents are out of date: run `panthera openapi` "
        "(from the repository root) and review the diff\n\n" + "\n\n".join(problems)
    )


def test_panthera_openapi_check_agrees() -> None:
    """``panthera openapi --check`` (what CI can run) sees the same documents as this test."""
    result = CliRunner().invoke(
        app,
        [
            "openapi",
            "--check",
            "--output",
            str(OPENAPI_DIR),
            "--events-output",
            str(EVENTS_DIR),
        ],
    )
    assert result.exit_code == 0, f"run `panthera openapi`:\n{result.output}"
