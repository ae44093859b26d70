"""deploy/compose.yaml and deploy/Dockerfile hold every service, in the right order.

There is no container engine on CI, so these read the files: the structure a
``docker compose up`` relies on, checked against the service registry.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import panthera.kernel.observability  # noqa: F401  (registers the platform's metrics)
from panthera.runtime.registry import SERVICE_NAMES

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
INFRASTRUCTURE = ("postgres", "redis", "rabbitmq", "prometheus", "grafana", "otel-collector")
TRACE_VIEWER = "jaeger"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return document


def panthera_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the panthera image with ``serve``."""
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("command", [None])[0] == "serve"
    }


def test_every_registered_service_and_the_gateway_run(compose: dict[str, Any]) -> None:
    served = {service["command"][1]: name for name, service in panthera_services(compose).items()}
    assert set(served) == {*SERVICE_NAMES, "gateway"}
    for role, name in served.items():
        assert role == name, f"compose service {name!r} serves {role!r}"
        command = compose["services"][name]["command"]
        assert command[2:] == ["--host", "0.0.0.0", "--port", "8000"]  # noqa: S104


def test_servers_metrics_and_traces_are_there(compose: dict[str, Any]) -> None:
    for name in (*INFRASTRUCTURE, TRACE_VIEWER):
        assert name in compose["services"], name


def test_migrations_run_once_before_every_service(compose: dict[str, Any]) -> None:
    migrate = compose["services"]["migrate"]
    assert migrate["command"] == ["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name, service in panthera_services(compose).items():
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully", (
            name
        )
        assert service["environment"]["PANTHERA_MIGRATE_ON_START"] == "false"
        for server in ("redis", "rabbitmq"):
            assert service["depends_on"][server]["condition"] == "service_healthy", name


def test_stateless_services_run_twice_and_the_gateway_waits_for_them(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    for name in SERVICE_NAMES:
        assert services[name]["deploy"]["replicas"] == 2, name
        assert services["gateway"]["depends_on"][name]["condition"] == "service_healthy"
    urls = json.loads(services["gateway"]["environment"]["PANTHERA_SERVICE_URLS"])
    assert urls == {name: f"http://{name}:8000" for name in SERVICE_NAMES}


def test_services_run_locked_down(compose: dict[str, Any]) -> None:
    for name, service in panthera_services(compose).items():
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert service["deploy"]["resources"]["limits"], name
    environment = compose["services"]["gateway"]["environment"]
    # Secrets come from the operator's environment; compose refuses to start without them.
    assert ":?" in environment["PANTHERA_INTERNAL_TOKEN"]


def test_every_service_has_its_database() -> None:
    sql = (DEPLOY / "compose" / "postgres-init.sql").read_text()
    created = set(re.findall(r"CREATE DATABASE panthera_(\w+);", sql))
    assert created == set(SERVICE_NAMES)


def test_prometheus_scrapes_every_service() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.compose.yml").read_text())
    job = next(job for job in config["scrape_configs"] if job["job_name"] == "panthera")
    assert set(job["dns_sd_configs"][0]["names"]) == {*SERVICE_NAMES, "gateway"}


def test_the_services_send_their_spans_to_the_collector(compose: dict[str, Any]) -> None:
    for name, service in panthera_services(compose).items():
        assert service["environment"]["PANTHERA_OTLP_ENDPOINT"].startswith(
            "http://otel-collector:"
        ), name


def test_the_collector_sends_traces_to_the_viewer() -> None:
    config = yaml.safe_load((DEPLOY / "otel" / "collector.yaml").read_text())
    traces = config["service"]["pipelines"]["traces"]
    assert traces["receivers"] == ["otlp"]
    assert config["exporters"][traces["exporters"][0]]["endpoint"].startswith(f"{TRACE_VIEWER}:")


def test_the_image_is_multi_stage_non_root_and_without_installers() -> None:
    lines = [
        line.strip()
        for line in (DEPLOY / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    stages = [i for i, line in enumerate(lines) if line.startswith("FROM ")]
    assert len(stages) >= 2
    final = lines[stages[-1] :]
    assert not any(
        re.search(r"\b(apt-get|gcc|build-essential|pip install)\b", line) for line in final
    )
    assert "pip uninstall" in " ".join(final)
    user = [line for line in final if line.startswith("USER ")]
    assert user
    assert user[-1].split()[1].split(":")[0] not in ("root", "0")
    assert any(line.startswith("COPY --from=") for line in final)
    assert 'ENTRYPOINT ["panthera"]' in final


def test_grafana_dashboard_queries_metrics_that_exist() -> None:
    dashboard = json.loads(
        (DEPLOY / "grafana" / "dashboards" / "panthera-overview.json").read_text()
    )
    expressions = " ".join(
        target["expr"] for panel in dashboard["panels"] for target in panel["targets"]
    )
    ours = set(re.findall(r"\b(panthera_[a-z_]+?)(?:_bucket|_total)?\b", expressions))
    known = {metric.name for metric in REGISTRY.collect()}
    assert ours <= known, ours - known


def test_the_image_builds_the_web_app_and_serves_it() -> None:
    lines = [
        line.strip()
        for line in (DEPLOY / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    stages = [i for i, line in enumerate(lines) if line.startswith("FROM ")]
    names = {lines[i].split()[-1]: i for i in stages if " AS " in lines[i]}
    web = next(name for name, i in names.items() if lines[i].split()[1].startswith("node:"))
    start = names[web]
    end = min((i for i in stages if i > start), default=len(lines))
    body = lines[start:end]
    assert stages[-1] != start, "the web app is built in a stage of its own, not the final one"
    # Dependencies from the lock, then the build that writes web/dist.
    assert any(line.startswith("COPY") and "web/package-lock.json" in line for line in body)
    ci = next(i for i, line in enumerate(body) if re.match(r"RUN npm ci\b", line))
    build = next(i for i, line in enumerate(body) if line.startswith("RUN npm run build"))
    assert ci < build
    final = lines[stages[-1] :]
    copied = [line for line in final if line.startswith(f"COPY --from={web} ")]
    assert len(copied) == 1, "only the built files leave the web stage"
    source, target = copied[0].split()[-2:]
    assert source.endswith("/dist")
    assert not any(re.search(r"\b(node|npm)\b", line) for line in final if line not in copied)
    # The gateway serves what was copied.
    assert re.search(rf"PANTHERA_WEB_DIR={re.escape(target)}(\s|$)", "\n".join(final))


def test_the_build_context_leaves_installed_and_built_files_out() -> None:
    rules = [
        line.strip()
        for line in (DEPLOY.parent / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # The last matching rule wins, so the exclusions come after every re-inclusion.
    last_include = max(i for i, rule in enumerate(rules) if rule.startswith("!"))
    for excluded in ("**/node_modules", "**/dist"):
        assert excluded in rules[last_include:], excluded
    # What the web stage copies is in the context.
    for needed in ("web/package.json", "web/package-lock.json", "web/src/"):
        assert f"!{needed}" in rules, needed
