"""The generated architecture document follows the code: routes, tables, handlers, deploy files."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, Depends
from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table

from panthera.kernel.events import EventContract
from panthera.kernel.security.permissions import public
from panthera.kernel.service import Subscription
from panthera.runtime.architecture import differences, generate, render_svg, write
from panthera.runtime.contracts import published_contracts
from panthera.runtime.registry import all_definitions, definition

ROOT = Path(__file__).resolve().parents[1]

# The sections of the seed's technical design (its first document, and the second's
# API, database and infrastructure parts) that the index must cover.
SEED_HEADINGS = (
    "Introduction",
    "High-Level System Architecture",
    "Conceptual System Diagram",
    "Key Architectural Components",
    "Detailed Component Design",
    "API Specifications",
    "Database Design",
    "Infrastructure Plan",
    "Scalability",
    "Security",
)


class ThrowawayHappened(EventContract):
    """Something throwaway happened to a widget."""

    event_type = "throwaway.happened"
    version = 1

    widget_id: str


async def _on_throwaway(*_: Any) -> None:
    """Nothing to do: the document only needs the subscription to exist."""


def _text(files: dict[str, bytes], name: str) -> str:
    return files[name].decode()


def _with_throwaways() -> dict[str, bytes]:
    base = definition("notifications")

    router = APIRouter()
    router.include_router(base.router())

    @router.get(
        "/throwaway-widgets/{widgetId}",
        summary="Look at a throwaway widget",
        dependencies=[Depends(public)],
    )
    async def throwaway_widget(widgetId: str) -> dict[str, str]:
        return {"widgetId": widgetId}

    metadata = MetaData()
    for table in base.metadata.tables.values():
        table.to_metadata(metadata)
    Table(
        "throwaway_boxes",
        metadata,
        Column("id", Integer, primary_key=True),
    )
    Table(
        "throwaway_widgets",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("box_id", Integer, ForeignKey("throwaway_boxes.id")),
        Column("colour", String(30)),
    )
    changed = dataclasses.replace(
        base,
        router=lambda: router,
        metadata=metadata,
        subscriptions=(*base.subscriptions, Subscription(ThrowawayHappened, _on_throwaway)),
    )
    definitions = [changed if d.name == "notifications" else d for d in all_definitions()]
    published = dict(published_contracts())
    published["catalog"] = (*published["catalog"], ThrowawayHappened)
    return generate(definitions, root=ROOT, published=published, render=None)


def test_a_new_route_table_and_event_handler_appear_in_the_document() -> None:
    files = _with_throwaways()
    page = _text(files, "services/notifications.md")

    # The route, with its public path, summary and permission.
    row = next(line for line in page.splitlines() if "throwaway-widgets" in line)
    assert "`/api/v1/notifications/throwaway-widgets/{widgetId}`" in row
    assert "Look at a throwaway widget" in row
    assert "| public |" in row

    # The tables, their columns and the foreign key, in the page and the ER diagram.
    assert "### `throwaway_widgets`" in page
    assert "`colour`" in page
    assert "FK → `throwaway_boxes.id`" in page
    er = _text(files, "diagrams/er-notifications.dot")
    assert '"throwaway_boxes":"id" -> "throwaway_widgets":"box_id";' in er

    # The event handler: consumed here, published by the catalog, in AsyncAPI too.
    consumed = page.split("## Events consumed", 1)[1].split("##", 1)[0]
    assert "`throwaway.happened.v1` | catalog |" in consumed
    assert "_on_throwaway" in consumed
    assert "`throwaway.happened.v1`" in _text(files, "services/catalog.md")
    asyncapi = json.loads(files["asyncapi.json"])
    channel = asyncapi["channels"]["throwaway.happened.v1"]
    assert channel["x-producers"] == ["catalog"]
    assert channel["x-consumers"] == ["notifications"]
    assert "notifications.receive.throwaway.happened.v1" in asyncapi["operations"]
    payload = asyncapi["components"]["messages"]["throwaway.happened.v1"]["payload"]
    assert "widget_id" in payload["properties"]
    assert "throwaway.happened" in _text(files, "diagrams/system.dot")


def test_the_registered_platform_has_no_throwaways() -> None:
    files = generate(all_definitions(), root=ROOT, render=None)
    assert not any(b"throwaway" in content for content in files.values())


def test_the_index_has_every_section_of_the_seed_design() -> None:
    index = _text(generate(all_definitions(), root=ROOT, render=None), "README.md")
    headings = [line.lstrip("#").strip() for line in index.splitlines() if line.startswith("#")]
    for wanted in SEED_HEADINGS:
        assert any(wanted in heading for heading in headings), wanted
    for service in all_definitions():
        assert any(f"(`{service.name}`)" in heading for heading in headings), service.name


def test_every_asyncapi_reference_resolves() -> None:
    document = json.loads(generate(all_definitions(), root=ROOT, render=None)["asyncapi.json"])
    assert document["asyncapi"].startswith("3.")
    for reference in re.findall(r'"\$ref": "#/([^"]+)"', json.dumps(document)):
        node: Any = document
        for part in reference.split("/"):
            node = node[part]


def test_check_reports_changed_missing_and_extra_files(tmp_path: Path) -> None:
    files = {"README.md": b"index\n", "diagrams/system.dot": b"digraph {}\n"}
    write(files, tmp_path)
    assert differences(files, tmp_path) == []
    (tmp_path / "README.md").write_text("edited by hand\n")
    (tmp_path / "diagrams" / "system.dot").unlink()
    (tmp_path / "diagrams" / "gone.svg").write_text("left over\n")
    (tmp_path / "notes.txt").write_text("not the document's\n")
    assert differences(files, tmp_path) == ["README.md", "diagrams/gone.svg", "diagrams/system.dot"]
    write(files, tmp_path)
    assert differences(files, tmp_path) == []
    assert not (tmp_path / "diagrams" / "gone.svg").exists()
    assert (tmp_path / "notes.txt").exists()


COMPOSE = """
services:
  postgres:
    image: postgres:16
  orders:
    image: panthera
    command: [serve, orders]
    deploy:
      replicas: 2
"""

BASE = """
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - orders.yaml
"""

ORDERS = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: orders}
spec: {replicas: 2}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: orders}
spec:
  scaleTargetRef: {kind: Deployment, name: orders}
  minReplicas: 2
  maxReplicas: 10
  metrics:
    - type: Resource
      resource: {name: cpu, target: {type: Utilization, averageUtilization: 70}}
"""

PROD = """
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../base
patches:
  - target: {kind: HorizontalPodAutoscaler}
    patch: |-
      - op: replace
        path: /spec/maxReplicas
        value: 20
  - target: {kind: Deployment}
    patch: |-
      - op: replace
        path: /spec/replicas
        value: 3
"""


def test_infrastructure_comes_from_the_deploy_files(tmp_path: Path) -> None:
    index = _text(generate(all_definitions(), root=tmp_path, render=None), "README.md")
    infrastructure = index.split("## 6.", 1)[1].split("\n## 7.", 1)[0]
    assert "no `deploy/` directory" in infrastructure

    (tmp_path / "deploy" / "k8s" / "base").mkdir(parents=True)
    (tmp_path / "deploy" / "k8s" / "overlays" / "prod").mkdir(parents=True)
    (tmp_path / "deploy" / "compose.yaml").write_text(COMPOSE)
    (tmp_path / "deploy" / "k8s" / "base" / "kustomization.yaml").write_text(BASE)
    (tmp_path / "deploy" / "k8s" / "base" / "orders.yaml").write_text(ORDERS)
    (tmp_path / "deploy" / "k8s" / "overlays" / "prod" / "kustomization.yaml").write_text(PROD)
    files = generate(all_definitions(), root=tmp_path, render=None)
    infrastructure = _text(files, "README.md").split("## 6.", 1)[1].split("\n## 7.", 1)[0]

    assert "| `orders` | 2 | image `panthera`; command `serve orders` |" in infrastructure
    base, prod = infrastructure.split("#### `deploy/k8s/overlays/prod`")
    assert "| `orders` | Deployment | 2 | 2-10 at cpu 70% |" in base
    assert "| `orders` | Deployment | 3 | 2-20 at cpu 70% |" in prod
    assert "diagrams/deployment-deploy-k8s-overlays-prod.dot" in files


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_rendered_svg_is_the_same_every_time() -> None:
    source = _text(generate(all_definitions(), root=ROOT, render=None), "diagrams/system.dot")
    first = render_svg(source)
    assert first.startswith(b"<?xml")
    assert b"<!--" not in first
    assert render_svg(source) == first


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_the_command_writes_then_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from panthera.cli import app

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    assert runner.invoke(app, ["architecture"]).exit_code == 0
    assert (tmp_path / "docs/architecture/diagrams/system.svg").is_file()
    assert runner.invoke(app, ["architecture", "--check"]).exit_code == 0

    (tmp_path / "docs/architecture/services/users.md").write_text("edited by hand\n")
    (tmp_path / "docs/architecture/diagrams/er-gone.svg").write_text("<svg/>\n")
    result = runner.invoke(app, ["architecture", "--check"])
    assert result.exit_code == 1
    assert "services/users.md" in result.output
    assert "diagrams/er-gone.svg" in result.output
