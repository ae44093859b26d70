"""The architecture document, generated from the code, the settings and the deploy files.

``generate`` returns every file of ``docs/architecture`` as bytes, keyed by its path
relative to that directory: a Markdown index following the sections of the original
technical design, one page per service, an AsyncAPI document of every event, and the
diagrams as Graphviz sources beside their rendered SVGs. Everything is sorted and free
of timestamps, so regenerating an unchanged platform gives identical bytes and a
reviewer sees an architecture change as a diff.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import yaml
from fastapi import APIRouter
from fastapi.routing import APIRoute
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from sqlalchemy import Column, MetaData, Table, UniqueConstraint

from panthera import __version__
from panthera.gateway.cache import CONSUMER as GATEWAY_CACHE_CONSUMER
from panthera.gateway.cache import INVALIDATED_BY
from panthera.gateway.routes import ROUTES, is_private
from panthera.kernel.events import EventContract
from panthera.kernel.security.permissions import permissions_of
from panthera.kernel.security.tokens import ALGORITHM as TOKEN_ALGORITHM
from panthera.kernel.service import ServiceDefinition
from panthera.kernel.settings import Settings

DEFAULT_OUT = Path("docs/architecture")

# The sections of the original technical design, in its order, as this document
# titles them: the index must have each one (tests/test_architecture.py checks it).
SEED_SECTIONS: tuple[str, ...] = (
    "1. Introduction",
    "2. High-Level System Architecture",
    "2.1. Conceptual System Diagram",
    "2.2. Key Architectural Components",
    "3. Detailed Component Design",
    "4. API Specifications",
    "4.1. OpenAPI",
    "4.2. Events (AsyncAPI)",
    "5. Database Design",
    "6. Infrastructure Plan",
    "7. Scalability and Reliability",
    "8. Security",
    "9. Architecture Decisions",
)

Renderer = Callable[[str], bytes]


class ArchitectureError(Exception):
    """The document cannot be generated (e.g. Graphviz is missing)."""


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Endpoint:
    method: str
    service_path: str
    public_path: str | None
    summary: str
    permission: str


@dataclass(frozen=True)
class EventInfo:
    key: str
    event_type: str
    version: int
    contract: type[EventContract] | None
    producers: tuple[str, ...]
    consumers: tuple[str, ...]


@dataclass
class Inputs:
    """What the document is generated from, gathered once."""

    definitions: Sequence[ServiceDefinition]
    published: Mapping[str, Sequence[type[EventContract]]]
    root: Path
    out: Path
    endpoints: dict[str, list[Endpoint]] = field(default_factory=dict)
    events: dict[str, EventInfo] = field(default_factory=dict)


def _summary(route: APIRoute) -> str:
    if route.summary:
        return route.summary
    text = (route.description or "").strip()
    if text:
        return text.splitlines()[0]
    return route.name.replace("_", " ")


def _public_path(service: ServiceDefinition, path: str) -> str | None:
    """Where the gateway publishes a service path, or None when it does not."""
    if is_private(path):
        return None
    best: tuple[int, str] | None = None
    for route in ROUTES:
        if route.service != service.name:
            continue
        up = route.upstream_prefix
        if up and not (path == up or path.startswith(up + "/")):
            continue
        if best is None or len(up) > best[0]:
            best = (len(up), route.prefix + path[len(up) :])
    if best is None:
        return None
    return best[1]


def service_endpoints(service: ServiceDefinition) -> list[Endpoint]:
    """Every route of a service, with the public path the gateway gives it."""
    router: APIRouter = service.router()
    found: list[Endpoint] = []
    for route in router.routes:
        if not isinstance(route, APIRoute):
            continue
        permission = ", ".join(sorted(permissions_of(route.dependant))) or "none declared"
        for method in sorted(set(route.methods or ()) - {"HEAD"}):
            found.append(
                Endpoint(
                    method=method,
                    service_path=route.path,
                    public_path=_public_path(service, route.path),
                    summary=_summary(route),
                    permission=permission,
                )
            )
    return sorted(found, key=lambda e: (e.service_path, e.method))


def collect_events(
    definitions: Sequence[ServiceDefinition],
    published: Mapping[str, Sequence[type[EventContract]]],
) -> dict[str, EventInfo]:
    """Every event published or consumed, keyed ``<type>.v<version>``."""
    contracts: dict[str, type[EventContract]] = {}
    producers: dict[str, set[str]] = {}
    consumers: dict[str, set[str]] = {}
    for service, published_contracts in published.items():
        for contract in published_contracts:
            key = f"{contract.event_type}.v{contract.version}"
            contracts.setdefault(key, contract)
            producers.setdefault(key, set()).add(service)
    for definition in definitions:
        for subscription in definition.subscriptions:
            for version in subscription.versions:
                key = f"{subscription.contract.event_type}.v{version}"
                if version == subscription.contract.version:
                    contracts.setdefault(key, subscription.contract)
                consumers.setdefault(key, set()).add(definition.name)
    # The gateway's response cache is no service but does consume events.
    cache_types = {t for types in INVALIDATED_BY.values() for t in types}
    for cached_type in sorted(cache_types):
        for key in [k for k in contracts if k.rsplit(".v", 1)[0] == cached_type]:
            consumers.setdefault(key, set()).add(GATEWAY_CACHE_CONSUMER)
    events: dict[str, EventInfo] = {}
    for key in sorted(set(contracts) | set(producers) | set(consumers)):
        event_type, number = key.rsplit(".v", 1)
        events[key] = EventInfo(
            key=key,
            event_type=event_type,
            version=int(number),
            contract=contracts.get(key),
            producers=tuple(sorted(producers.get(key, ()))),
            consumers=tuple(sorted(consumers.get(key, ()))),
        )
    return events


# --------------------------------------------------------------------------- helpers


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _doc_line(obj: object) -> str:
    text = (getattr(obj, "__doc__", None) or "").strip()
    return " ".join(text.split("\n\n", 1)[0].split())


def _column_type(column: Column[Any]) -> str:
    try:
        return str(column.type)
    except Exception:  # a custom type that only its dialect can spell
        return type(column.type).__name__


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _relative(target: Path, inputs: Inputs, within: str = "") -> str:
    """A link from a page of the document (in ``within``) to a file of the repository."""
    start = inputs.root / inputs.out / within
    return Path(os.path.relpath(inputs.root / target, start)).as_posix()


def _setting_default(info: FieldInfo) -> object:
    if info.default is not PydanticUndefined:
        value = info.default
    elif info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    else:
        return ""
    secret = getattr(value, "get_secret_value", None)
    if secret is not None:
        return "(secret)" if secret() else "(empty secret)"
    if hasattr(value, "value"):
        return value.value
    return value


def _readme_descriptions(root: Path) -> dict[str, str]:
    """The settings' descriptions from README.md's table (a test keeps it true)."""
    readme = root / "README.md"
    if not readme.exists():
        return {}
    found: dict[str, str] = {}
    for line in readme.read_text().splitlines():
        match = re.match(r"^\| `(PANTHERA_[A-Z0-9_]+)` \| [^|]* \| (.*) \|$", line)
        if match:
            found[match.group(1)] = match.group(2).strip()
    return found


def _rebase_links(text: str, inputs: Inputs) -> str:
    """Links written relative to the repository's root, made relative to the document."""
    return re.sub(
        r"\]\((?!https?:|#|/)([^)]+)\)",
        lambda m: f"]({_relative(Path(m.group(1)), inputs)})",
        text,
    )


def _env(*names: str) -> str:
    """The variables of some settings; a renamed setting fails here, not in a reader's shell."""
    missing = [n for n in names if n not in Settings.model_fields]
    if missing:
        raise ArchitectureError(f"no such settings: {', '.join(missing)}")
    return ", ".join(f"`PANTHERA_{n.upper()}`" for n in names)


def settings_rows(names: Sequence[str], inputs: Inputs) -> list[tuple[str, str, str]]:
    """``(variable, default, description)`` for some settings, from ``Settings`` itself."""
    descriptions = {
        k: _rebase_links(v, inputs) for k, v in _readme_descriptions(inputs.root).items()
    }
    rows = []
    for name in names:
        info = Settings.model_fields.get(name)
        if info is None:  # renamed or dropped: the table shows what exists
            continue
        value = _setting_default(info)
        shown = json.dumps(value) if isinstance(value, dict | list | bool) else str(value)
        variable = f"PANTHERA_{name.upper()}"
        rows.append(
            (f"`{variable}`", f"`{shown}`" if shown else "empty", descriptions.get(variable, ""))
        )
    return rows


# --------------------------------------------------------------------------- diagrams


def render_svg(source: str) -> bytes:
    """Graphviz's SVG of a dot source, without the lines that name its version."""
    dot = shutil.which("dot")
    if dot is None:
        raise ArchitectureError(
            "Graphviz's `dot` is needed to draw the diagrams: "
            "apt-get install graphviz fonts-liberation2"
        )
    done = subprocess.run(  # noqa: S603 - a fixed program fed our own source
        [dot, "-Tsvg"], input=source.encode(), capture_output=True, check=False
    )
    if done.returncode != 0:
        raise ArchitectureError(f"dot failed: {done.stderr.decode(errors='replace')}")
    # Comments carry Graphviz's version and titles; dropping them keeps the file the
    # same wherever the same layout is produced.
    text = re.sub(r"<!--.*?-->\n?", "", done.stdout.decode(), flags=re.DOTALL)
    return text.encode()


def system_diagram(inputs: Inputs) -> str:
    lines = [
        "digraph system {",
        '  graph [rankdir=LR, fontname="Liberation Sans", fontsize=11, nodesep=0.4, ranksep=1.1];',
        '  node [fontname="Liberation Sans", fontsize=10, shape=box, style="rounded,filled", '
        'fillcolor="#f4f6fb"];',
        '  edge [fontname="Liberation Sans", fontsize=8];',
        '  clients [label="Clients\\n(web app, API users)", shape=oval, fillcolor="#ffffff"];',
        '  gateway [label="gateway\\nrouting, JWT check, rate limits,\\nresponse cache", '
        'fillcolor="#dde8f7"];',
        '  broker [label="event broker\\n(RabbitMQ or in-process)", shape=hexagon, '
        'fillcolor="#fdf1d6"];',
        '  redis [label="Redis\\n(rate limits, denylist, cache)", shape=cylinder, '
        'fillcolor="#fbe3e3"];',
        "  clients -> gateway [label=HTTPS];",
        "  gateway -> redis [style=dotted, arrowhead=none];",
    ]
    routed = {route.service for route in ROUTES}
    for service in inputs.definitions:
        name = service.name
        lines.append(f"  {_quote(name)} [label={_quote(name + chr(10) + service.title)}];")
        lines.append(
            f"  {_quote('db_' + name)} [label={_quote(name + ' database')}, shape=cylinder, "
            'fillcolor="#e3f4e3"];'
        )
        lines.append(f"  {_quote(name)} -> {_quote('db_' + name)} [arrowhead=none];")
        if name in routed:
            lines.append(f"  gateway -> {_quote(name)} [label=HTTP];")
        for callee in service.calls:
            lines.append(
                f'  {_quote(name)} -> {_quote(callee)} [style=dashed, color="#3b6fb6", '
                'label="HTTP (internal)"];'
            )
    flows: dict[tuple[str, str], list[str]] = {}
    for event in inputs.events.values():
        for producer in event.producers or ("(unknown)",):
            for consumer in event.consumers:
                flows.setdefault((producer, consumer), []).append(event.event_type)
    published_by = sorted({p for e in inputs.events.values() for p in e.producers})
    for producer in published_by:
        count = sum(1 for e in inputs.events.values() if producer in e.producers)
        lines.append(
            f'  {_quote(producer)} -> broker [color="#c98a00", label={_quote(f"{count} events")}];'
        )
    for (_producer, consumer), types in sorted(flows.items()):
        label = "\n".join(sorted(set(types)))
        target = "gateway" if consumer == GATEWAY_CACHE_CONSUMER else consumer
        lines.append(
            f'  broker -> {_quote(target)} [color="#c98a00", fontcolor="#8a5d00", '
            f"label={_quote(label)}];"
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def _sorted_tables(metadata: MetaData) -> list[Table]:
    return sorted(metadata.tables.values(), key=lambda t: t.fullname)


def er_diagram(service: ServiceDefinition) -> str:
    lines = [
        f"digraph {_quote(service.name + '_schema')} {{",
        '  graph [rankdir=LR, fontname="Liberation Sans", nodesep=0.3, ranksep=0.8];',
        '  node [fontname="Liberation Sans", fontsize=9, shape=plain];',
        '  edge [fontname="Liberation Sans", fontsize=8, arrowhead=crow, arrowtail=tee, dir=both];',
    ]
    for table in _sorted_tables(service.metadata):
        rows = [f'<tr><td bgcolor="#dde8f7" colspan="2"><b>{escape(table.fullname)}</b></td></tr>']
        for column in table.columns:
            marks = []
            if column.primary_key:
                marks.append("PK")
            if column.foreign_keys:
                marks.append("FK")
            name = escape(column.name)
            if column.primary_key:
                name = f"<u>{name}</u>"
            kind = escape(_column_type(column))
            if marks:
                kind += " " + escape(",".join(marks))
            port = escape(column.name)
            rows.append(
                f'<tr><td align="left" port="{port}">{name}</td>'
                f'<td align="left"><font color="#555555">{kind}</font></td></tr>'
            )
        label = '<table border="0" cellborder="1" cellspacing="0" cellpadding="3">'
        label += "".join(rows) + "</table>"
        lines.append(f"  {_quote(table.fullname)} [label=<{label}>];")
    for table in _sorted_tables(service.metadata):
        edges = []
        for column in table.columns:
            for fk in column.foreign_keys:
                target = fk.column.table.fullname
                edges.append(
                    f"  {_quote(target)}:{_quote(fk.column.name)} -> "
                    f"{_quote(table.fullname)}:{_quote(column.name)};"
                )
        lines += sorted(edges)
    lines.append("}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- deploy files


@dataclass
class Workload:
    name: str
    kind: str
    replicas: object = ""
    hpa: str = ""
    extra: str = ""


def _yaml_documents(path: Path) -> list[dict[str, Any]]:
    try:
        return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    except yaml.YAMLError:
        return []


def _kustomize_documents(directory: Path, seen: set[Path] | None = None) -> list[dict[str, Any]]:
    """The resources a kustomization lists, following directories and bases."""
    seen = seen if seen is not None else set()
    directory = directory.resolve()
    if directory in seen:
        return []
    seen.add(directory)
    kustomization = next(
        (
            directory / n
            for n in ("kustomization.yaml", "kustomization.yml", "Kustomization")
            if (directory / n).exists()
        ),
        None,
    )
    if kustomization is None:
        return []
    spec = (_yaml_documents(kustomization) or [{}])[0]
    documents: list[dict[str, Any]] = []
    for entry in list(spec.get("resources", [])) + list(spec.get("bases", [])):
        target = (directory / str(entry)).resolve()
        if target.is_dir():
            documents += _kustomize_documents(target, seen)
        elif target.is_file():
            documents += _yaml_documents(target)
    documents = [dict(d) for d in documents]
    for patch in spec.get("patches", []) + spec.get("patchesJson6902", []):
        _apply_patch(documents, patch)
    for replica in spec.get("replicas", []):
        for document in documents:
            if document.get("metadata", {}).get("name") == replica.get("name") and document.get(
                "kind"
            ) in ("Deployment", "StatefulSet"):
                document.setdefault("spec", {})["replicas"] = replica.get("count")
    return documents


def _apply_patch(documents: list[dict[str, Any]], patch: Mapping[str, Any]) -> None:
    """Apply the JSON 6902 ``replace``/``add`` operations on a top-level spec field.

    What the document reports (replicas, autoscaling bounds, TLS) sits there;
    deeper operations are left to kustomize itself.
    """
    target = patch.get("target") or {}
    text = patch.get("patch")
    if not isinstance(text, str):
        return
    try:
        operations = yaml.safe_load(text)
    except yaml.YAMLError:
        return
    if not isinstance(operations, list):
        return
    for document in documents:
        if target.get("kind") and document.get("kind") != target["kind"]:
            continue
        if target.get("name") and document.get("metadata", {}).get("name") != target["name"]:
            continue
        for operation in operations:
            if not isinstance(operation, dict) or operation.get("op") not in ("replace", "add"):
                continue
            path = str(operation.get("path", ""))
            if re.fullmatch(r"/spec/[A-Za-z]+", path):
                document.setdefault("spec", {})[path.rsplit("/", 1)[1]] = operation.get("value")


def _workloads(documents: Sequence[Mapping[str, Any]]) -> list[Workload]:
    hpas: dict[str, str] = {}
    for document in documents:
        if document.get("kind") == "HorizontalPodAutoscaler":
            spec = document.get("spec", {})
            target = spec.get("scaleTargetRef", {}).get("name", "")
            metrics = []
            for metric in spec.get("metrics", []):
                resource = metric.get("resource", {})
                utilisation = resource.get("target", {}).get("averageUtilization")
                if utilisation is not None:
                    metrics.append(f"{resource.get('name')} {utilisation}%")
            bounds = f"{spec.get('minReplicas', 1)}-{spec.get('maxReplicas', '?')}"
            hpas[target] = bounds + (f" at {', '.join(metrics)}" if metrics else "")
    found = []
    for document in documents:
        kind = document.get("kind", "")
        if kind not in ("Deployment", "StatefulSet", "Job", "CronJob", "DaemonSet"):
            continue
        name = document.get("metadata", {}).get("name", "")
        spec = document.get("spec", {})
        replicas = spec.get("replicas", 1) if kind in ("Deployment", "StatefulSet") else ""
        found.append(Workload(name, kind, replicas, hpas.get(name, "")))
    return sorted(found, key=lambda w: (w.kind, w.name))


def _kind_counts(documents: Sequence[Mapping[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for document in documents:
        kind = str(document.get("kind", "?"))
        counts[kind] = counts.get(kind, 0) + 1
    return ", ".join(f"{kind} x{count}" for kind, count in sorted(counts.items()))


def _compose_services(path: Path) -> list[Workload]:
    spec = (_yaml_documents(path) or [{}])[0]
    found = []
    for name, service in sorted((spec.get("services") or {}).items()):
        if not isinstance(service, dict):
            continue
        deploy = service.get("deploy") or {}
        command = service.get("command")
        image = service.get("image", "")
        detail = " ".join(str(c) for c in command) if isinstance(command, list) else command or ""
        ports = ", ".join(str(p) for p in service.get("ports", []))
        extra = "; ".join(
            part
            for part in (
                f"image `{image}`" if image else "",
                f"ports {ports}" if ports else "",
                f"command `{detail}`" if detail else "",
            )
            if part
        )
        found.append(Workload(name, "compose service", deploy.get("replicas", 1), "", extra))
    return found


def _kustomize_roots(k8s: Path) -> list[Path]:
    """The kustomizations worth describing: the base and each overlay built on it."""
    if not k8s.is_dir():
        return []
    roots = sorted(
        {p.parent for p in k8s.rglob("kustomization.y*ml")},
        key=lambda p: p.relative_to(k8s).as_posix(),
    )
    # Only the kustomizations nothing else includes, and the base they share.
    included: set[Path] = set()
    for directory in roots:
        for document in _yaml_documents(next(directory.glob("kustomization.y*ml"))):
            for entry in list(document.get("resources", [])) + list(document.get("bases", [])):
                included.add((directory / str(entry)).resolve())
    roots = [r for r in roots if r.resolve() not in included] or roots
    overlays = [r for r in roots if "overlays" in r.relative_to(k8s).parts]
    bases = [k8s / "base"] if (k8s / "base").is_dir() else []
    return bases + overlays if overlays else roots


def deployment_section(inputs: Inputs) -> tuple[str, dict[str, str]]:
    """Section 6 and any deployment diagrams, from whatever deploy/ holds."""
    deploy = inputs.root / "deploy"
    parts: list[str] = []
    diagrams: dict[str, str] = {}
    if not deploy.is_dir():
        parts.append(
            "The repository has no `deploy/` directory yet: there is no compose file, "
            "Kubernetes manifest or Terraform module to describe. The platform runs in the "
            "embedded shape (`panthera run`) or as one process per service "
            "(`panthera serve <service>`) started by hand.\n"
        )
        return "\n".join(parts), diagrams
    files = sorted(p.relative_to(inputs.root).as_posix() for p in deploy.rglob("*") if p.is_file())
    parts.append("Files under `deploy/`:\n")
    parts.append("\n".join(f"- [`{f}`]({_relative(Path(f), inputs)})" for f in files) + "\n")

    compose = next(
        (
            deploy / n
            for n in ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
            if (deploy / n).exists()
        ),
        None,
    )
    parts.append("### 6.1. Docker Compose\n")
    if compose is None:
        parts.append("No compose file in `deploy/`.\n")
    else:
        services = _compose_services(compose)
        parts.append(f"`{compose.relative_to(inputs.root).as_posix()}` runs:\n")
        parts.append(
            _table(
                ("service", "replicas", "details"),
                ((f"`{w.name}`", w.replicas, w.extra) for w in services),
            )
        )

    parts.append("### 6.2. Kubernetes\n")
    k8s = deploy / "k8s"
    roots = _kustomize_roots(k8s)
    if not roots:
        parts.append("No Kustomize manifests in `deploy/k8s/`.\n")
    for directory in roots:
        documents = _kustomize_documents(directory)
        relative = directory.relative_to(inputs.root).as_posix()
        parts.append(f"#### `{relative}`\n")
        parts.append(f"Resources: {_kind_counts(documents) or 'none'}.\n")
        workloads = _workloads(documents)
        if workloads:
            parts.append(
                _table(
                    ("workload", "kind", "replicas", "autoscaling (min-max)"),
                    ((f"`{w.name}`", w.kind, w.replicas, w.hpa or "none") for w in workloads),
                )
            )
        slug = re.sub(r"[^a-z0-9]+", "-", relative.lower()).strip("-")
        diagrams[f"deployment-{slug}"] = _deployment_diagram(relative, documents, workloads)
        parts.append(
            f"![deployment of {relative}](diagrams/deployment-{slug}.svg) "
            f"([source](diagrams/deployment-{slug}.dot))\n"
        )

    terraform = deploy / "terraform"
    parts.append("### 6.3. Cloud resources (Terraform)\n")
    if not terraform.is_dir():
        parts.append("No Terraform module in `deploy/terraform/`.\n")
    else:
        rows = []
        for tf in sorted(terraform.rglob("*.tf")):
            for kind, name in re.findall(
                r'^resource\s+"([^"]+)"\s+"([^"]+)"', tf.read_text(), re.M
            ):
                rows.append(
                    (f"`{tf.relative_to(inputs.root).as_posix()}`", f"`{kind}`", f"`{name}`")
                )
        parts.append(
            _table(("file", "resource type", "name"), rows)
            if rows
            else "The module declares no resources.\n"
        )
    return "\n".join(parts), diagrams


ENCRYPTION_WORDS = re.compile(r"kms|encrypt|waf|secretsmanager|public_access_block|acm_|tls", re.I)


def protection_section(inputs: Inputs) -> str:
    """Encryption and isolation as the deploy files declare them."""
    deploy = inputs.root / "deploy"
    if not deploy.is_dir():
        return (
            "No `deploy/` files: TLS in front of the gateway, encryption at rest and "
            "network isolation are left to whoever runs the platform.\n"
        )
    lines: list[str] = []
    for directory in _kustomize_roots(deploy / "k8s"):
        documents = _kustomize_documents(directory)
        relative = directory.relative_to(inputs.root).as_posix()
        tls = sorted(
            str(d.get("metadata", {}).get("name", ""))
            for d in documents
            if d.get("kind") == "Ingress" and d.get("spec", {}).get("tls")
        )
        policies = sum(1 for d in documents if d.get("kind") == "NetworkPolicy")
        deployments = [d for d in documents if d.get("kind") == "Deployment"]
        hardened = sum(1 for d in deployments if _hardened(d))
        lines.append(
            f"- `{relative}`: Ingress TLS {'on (' + ', '.join(tls) + ')' if tls else 'off'}; "
            f"{policies} NetworkPolicies; {hardened} of {len(deployments)} Deployments run "
            "as non-root with a read-only root filesystem."
        )
    terraform = deploy / "terraform"
    if terraform.is_dir():
        for tf in sorted(terraform.rglob("*.tf")):
            text = tf.read_text()
            resources = {
                f"`{kind}.{name}`"
                for kind, name in re.findall(r'^resource\s+"([^"]+)"\s+"([^"]+)"', text, re.M)
                if ENCRYPTION_WORDS.search(kind)
            }
            attributes = {
                "`" + " ".join(m.split()) + "`"
                for m in re.findall(
                    r"^\s*(\w*(?:encrypt|tls|ssl)\w*\s*=\s*[^\n{]+)$", text, re.M | re.I
                )
            }
            found = sorted(resources | attributes)
            if found:
                lines.append(f"- `{tf.relative_to(inputs.root).as_posix()}`: {', '.join(found)}.")
    if not lines:
        return "The deploy files declare no TLS, encryption or network policy.\n"
    return "From the deploy files:\n\n" + "\n".join(lines) + "\n"


def _hardened(deployment: Mapping[str, Any]) -> bool:
    pod = deployment.get("spec", {}).get("template", {}).get("spec", {})
    containers = pod.get("containers") or []
    return bool(containers) and all(
        (c.get("securityContext") or {}).get("readOnlyRootFilesystem") is True
        and (
            (c.get("securityContext") or {}).get("runAsNonRoot") is True
            or (pod.get("securityContext") or {}).get("runAsNonRoot") is True
        )
        for c in containers
    )


def _deployment_diagram(
    title: str, documents: Sequence[Mapping[str, Any]], workloads: Sequence[Workload]
) -> str:
    lines = [
        f"digraph {_quote('deployment ' + title)} {{",
        '  graph [rankdir=LR, fontname="Liberation Sans", fontsize=11];',
        '  node [fontname="Liberation Sans", fontsize=10, shape=box3d, style=filled, '
        'fillcolor="#f4f6fb"];',
        f"  subgraph cluster_k8s {{ label={_quote(title)}; style=rounded;",
    ]
    names = set()
    for w in workloads:
        label = f"{w.name}\n{w.kind}"
        if w.replicas != "":
            label += f"\nreplicas {w.replicas}"
        if w.hpa:
            label += f"\nHPA {w.hpa}"
        names.add(w.name)
        lines.append(f"    {_quote('w_' + w.name)} [label={_quote(label)}];")
    ingresses = []
    for document in documents:
        if document.get("kind") == "Ingress":
            name = document.get("metadata", {}).get("name", "ingress")
            ingresses.append(name)
            lines.append(
                f"    {_quote('i_' + name)} [label={_quote(name + chr(10) + 'Ingress')}, "
                "shape=trapezium];"
            )
    lines.append("  }")
    lines.append('  internet [label="Internet", shape=oval, fillcolor="#ffffff"];')
    for name in ingresses:
        lines.append(f"  internet -> {_quote('i_' + name)};")
        if "gateway" in names:
            lines.append(f'  {_quote("i_" + name)} -> "w_gateway";')
    if "gateway" in names:
        for w in workloads:
            if w.kind == "Deployment" and w.name != "gateway":
                lines.append(f'  "w_gateway" -> {_quote("w_" + w.name)};')
    lines.append("}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- AsyncAPI


def asyncapi_document(inputs: Inputs) -> dict[str, Any]:
    """An AsyncAPI 3.0 document: one channel and message per event, who sends and receives it."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for key, event in inputs.events.items():
        payload: dict[str, Any] = {"type": "object"}
        if event.contract is not None:
            payload = _hoisted_schema(event.contract, key, schemas)
        messages[key] = {
            "name": event.event_type,
            "title": event.contract.__name__ if event.contract is not None else event.event_type,
            "summary": _doc_line(event.contract) if event.contract is not None else "",
            "contentType": "application/json",
            "payload": payload,
            "x-version": event.version,
        }
        channels[key] = {
            "address": event.event_type,
            "description": "Routing key on the events exchange; the envelope's "
            f"`type` is `{event.event_type}` and `version` is {event.version}.",
            "messages": {key: {"$ref": f"#/components/messages/{key}"}},
            "x-producers": list(event.producers),
            "x-consumers": list(event.consumers),
        }
        for producer in event.producers:
            operations[f"{producer}.send.{key}"] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{key}"},
                "summary": f"{producer} publishes {event.event_type} v{event.version}",
            }
        for consumer in event.consumers:
            operations[f"{consumer}.receive.{key}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{key}"},
                "summary": f"{consumer} consumes {event.event_type} v{event.version}",
            }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Panthera events",
            "version": __version__,
            "description": "Every event the services publish or consume. Each travels in an "
            "envelope (id, type, version, occurred_at, source, subject, traceparent, "
            "payload); `payload` follows the message's schema.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "rabbitmq": {
                "host": "rabbitmq:5672",
                "protocol": "amqp",
                "description": "The distributed shape: a topic exchange `<namespace>.events` "
                "(`PANTHERA_AMQP_NAMESPACE`, default `panthera`), one queue per consumer.",
            }
        },
        "channels": dict(sorted(channels.items())),
        "operations": dict(sorted(operations.items())),
        "components": {
            "messages": dict(sorted(messages.items())),
            "schemas": dict(sorted(schemas.items())),
        },
    }


def _hoisted_schema(
    contract: type[EventContract], key: str, schemas: dict[str, Any]
) -> dict[str, Any]:
    """The payload schema with its nested models moved to ``components.schemas``.

    A nested model whose name another event already uses for another shape is
    prefixed with its event's key, so both stay exact.
    """
    for prefix in ("", key.replace(".", "_") + "_"):
        schema = contract.model_json_schema(ref_template=f"#/components/schemas/{prefix}{{model}}")
        definitions = schema.pop("$defs", {})
        named = {prefix + name: value for name, value in definitions.items()}
        if all(schemas.get(name, value) == value for name, value in named.items()):
            schemas.update(named)
            return schema
    raise ArchitectureError(f"cannot name the nested schemas of {key}")


# --------------------------------------------------------------------------- Markdown


def _event_link(key: str, inputs: Inputs) -> str:
    """An event, linked to its published JSON Schema when ``docs/events`` has it."""
    schema = Path("docs/events") / f"{key}.json"
    if (inputs.root / schema).exists():
        return f"[`{key}`]({_relative(schema, inputs, 'services')})"
    return f"`{key}`"


def service_page(service: ServiceDefinition, inputs: Inputs) -> str:
    name = service.name
    out = [f"# {name}: {service.title}\n", f"{service.description}\n"]
    prefixes = ", ".join(f"`{r.prefix}`" for r in ROUTES if r.service == name)
    out.append(
        f"Published by the gateway under {prefixes or 'no public prefix'}. "
        "[Back to the index](../README.md).\n"
    )
    out.append("## Runs as\n")
    dockerfile = (inputs.root / "deploy" / "Dockerfile").exists()
    out.append(
        f"A FastAPI application: every service in one process with `panthera run`, or this "
        f"one alone with `panthera serve {name}`"
        + (" (the image of `deploy/Dockerfile`)" if dockerfile else "")
        + f". Its database is `{name}.sqlite3` under `PANTHERA_DATA_DIR` embedded, or "
        f"`PANTHERA_DATABASE_URL` with `{{service}}` = `{name}` (PostgreSQL) distributed; its "
        f"schema comes from the Alembic migrations in `src/panthera/{name}/migrations/`.\n"
    )

    out.append("## Data it owns\n")
    tables = _sorted_tables(service.metadata)
    out.append(
        f"Database `{name}` (its own; no other service reads it). "
        f"Entity-relationship diagram: ![{name} schema](../diagrams/er-{name}.svg) "
        f"([source](../diagrams/er-{name}.dot)).\n"
    )
    for table in tables:
        out.append(f"### `{table.fullname}`\n")
        rows = []
        for column in table.columns:
            keys = []
            if column.primary_key:
                keys.append("PK")
            for fk in sorted(column.foreign_keys, key=lambda f: f.target_fullname):
                keys.append(f"FK → `{fk.target_fullname}`")
            if column.unique:
                keys.append("unique")
            rows.append(
                (
                    f"`{column.name}`",
                    f"`{_column_type(column)}`",
                    "yes" if column.nullable else "no",
                    " ".join(keys),
                )
            )
        out.append(_table(("column", "type", "null", "keys"), rows))
        indexes = sorted(
            f"`{index.name}` ({', '.join(c.name for c in index.columns)})"
            + (" unique" if index.unique else "")
            for index in table.indexes
        )
        if indexes:
            out.append("Indexes: " + "; ".join(indexes) + ".\n")
        uniques = sorted(
            "(" + ", ".join(c.name for c in constraint.columns) + ")"
            for constraint in table.constraints
            if isinstance(constraint, UniqueConstraint) and len(constraint.columns) > 1
        )
        if uniques:
            out.append("Unique together: " + "; ".join(uniques) + ".\n")

    out.append("## Endpoints\n")
    endpoints = inputs.endpoints[name]
    if endpoints:
        out.append(
            _table(
                ("method", "public path", "service path", "summary", "permission"),
                (
                    (
                        e.method,
                        f"`{e.public_path}`" if e.public_path else "not published (internal)",
                        f"`{e.service_path}`",
                        e.summary,
                        e.permission,
                    )
                    for e in endpoints
                ),
            )
        )
        out.append(
            f"Full contract: [`docs/openapi/{name}.json`]"
            f"({_relative(Path('docs/openapi') / f'{name}.json', inputs, 'services')}).\n"
        )
    else:
        out.append("None.\n")

    out.append("## Events published\n")
    published = [e for e in inputs.events.values() if name in e.producers]
    out.append(
        _table(
            ("event", "summary", "consumed by"),
            (
                (
                    _event_link(e.key, inputs),
                    _doc_line(e.contract),
                    ", ".join(e.consumers) or "nobody yet",
                )
                for e in published
            ),
        )
        if published
        else "None.\n"
    )
    out.append("## Events consumed\n")
    consumed = []
    for subscription in service.subscriptions:
        for version in sorted(subscription.versions):
            key = f"{subscription.contract.event_type}.v{version}"
            event = inputs.events[key]
            consumed.append(
                (
                    _event_link(key, inputs),
                    ", ".join(event.producers) or "no publisher in the registry",
                    f"`{subscription.handler.__module__}.{subscription.handler.__qualname__}`",
                )
            )
    out.append(
        _table(("event", "published by", "handler"), sorted(consumed)) if consumed else "None.\n"
    )
    out.append("## Services it calls\n")
    if service.calls:
        out.append("\n".join(f"- [{c}]({c}.md) over HTTP" for c in service.calls) + "\n")
    else:
        out.append("None: it calls no other service over HTTP.\n")
    callers = sorted(d.name for d in inputs.definitions if name in d.calls)
    out.append(
        "Called by: " + (", ".join(f"[{c}]({c}.md)" for c in callers) or "no service") + ".\n"
    )
    return "\n".join(out)


SCALABILITY_SETTINGS = (
    "database_pool_size",
    "database_max_overflow",
    "http_timeout_seconds",
    "http_retries",
    "relay_poll_seconds",
    "relay_hand_off_seconds",
    "response_cache_enabled",
    "response_cache_ttl_seconds",
    "response_cache_max_bytes",
    "rate_limit_per_ip_per_minute",
    "rate_limit_per_ip_burst",
    "rate_limit_per_user_per_minute",
    "rate_limit_per_user_burst",
    "rate_limit_lease",
    "max_request_body_bytes",
    "max_image_bytes",
    "reservation_ttl_seconds",
    "saga_poll_seconds",
    "saga_lease_seconds",
    "saga_step_attempts",
    "saga_payment_timeout_seconds",
    "payment_reconcile_after_seconds",
    "payment_reconcile_poll_seconds",
)

SECURITY_SETTINGS = (
    "access_token_ttl_seconds",
    "refresh_token_ttl_seconds",
    "signing_key_rotation_days",
    "jwks_cache_seconds",
    "jwt_issuer",
    "jwt_audience",
    "authorization_code_ttl_seconds",
    "password_memory_kib",
    "password_time_cost",
    "password_parallelism",
    "login_attempts_per_account",
    "login_attempts_per_address",
    "login_window_seconds",
    "registration_reveals_existing_email",
    "verification_token_ttl_seconds",
    "reset_token_ttl_seconds",
    "internal_token",
    "payment_webhook_tolerance_seconds",
    "cors_origins",
)


def index_page(inputs: Inputs, deployment: str) -> str:
    names = [d.name for d in inputs.definitions]
    out = [
        "# Panthera: Technical Architecture\n",
        "Generated by `panthera architecture` from the code, its settings and `deploy/`; "
        "do not edit by hand (CI fails when this differs from what the command writes). "
        "The prose that explains choices lives in "
        "[the decision records](#9-architecture-decisions).\n",
        f"## {SEED_SECTIONS[0]}\n",
        f"Panthera {__version__} is a commerce platform of {len(names)} services "
        f"({', '.join(names)}) behind one gateway. Each service owns its database, "
        "publishes its state changes as events through a transactional outbox and "
        "answers HTTP behind the gateway. The same code runs embedded (one process, "
        "SQLite, in-process events) or distributed (a process per service, PostgreSQL, "
        "Redis, RabbitMQ).\n",
        f"This document has {len(inputs.events)} events, "
        f"{sum(len(v) for v in inputs.endpoints.values())} endpoints and "
        f"{sum(len(d.metadata.tables) for d in inputs.definitions)} tables.\n",
        f"## {SEED_SECTIONS[1]}\n",
        f"### {SEED_SECTIONS[2]}\n",
        "![system diagram](diagrams/system.svg)\n",
        "Source: [`diagrams/system.dot`](diagrams/system.dot). Solid arrows from the gateway "
        "are public HTTP routes; dashed arrows are service-to-service HTTP calls; orange "
        "arrows are events through the broker.\n",
        f"### {SEED_SECTIONS[3]}\n",
    ]
    rows = [
        (
            "gateway",
            "single public entry: routing, JWT check, rate limits, response "
            "cache, CORS, security headers",
            ", ".join(f"`{r.prefix}` → {r.service}" for r in ROUTES),
        )
    ]
    for d in inputs.definitions:
        prefixes = [f"`{r.prefix}`" for r in ROUTES if r.service == d.name]
        rows.append(
            (
                f"[{d.name}](services/{d.name}.md)",
                d.description,
                ", ".join(prefixes) or "not published by the gateway",
            )
        )
    out.append(_table(("component", "role", "public API"), rows))
    out.append(
        "\nShared infrastructure, each chosen by a setting (empty: the in-process adapter):\n"
    )
    out.append(
        _table(
            ("component", "embedded shape", "distributed shape", "chosen by"),
            (
                (
                    "databases",
                    "one SQLite file per service",
                    "one PostgreSQL database per service",
                    _env("database_url"),
                ),
                (
                    "message broker",
                    "in-process delivery of the outbox",
                    "RabbitMQ",
                    _env("event_transport", "amqp_url"),
                ),
                (
                    "cache, rate limits, token denylist",
                    "in memory",
                    "Redis",
                    _env("redis_url"),
                ),
                (
                    "object storage (product images)",
                    "files under the data directory",
                    "any S3-compatible store",
                    _env("s3_bucket"),
                ),
                (
                    "CDN for images",
                    "served by the gateway",
                    "a CDN in front of the store",
                    _env("media_url_prefix"),
                ),
            ),
        )
    )
    out.append("\nPublic routes of the gateway:\n")
    out.append(
        _table(
            ("public prefix", "service", "service path", "cached at the gateway"),
            (
                (
                    f"`{r.prefix}`",
                    r.service,
                    f"`{r.upstream_prefix or '/'}`",
                    "yes" if r.cacheable else "no",
                )
                for r in ROUTES
            ),
        )
    )
    out.append(f"## {SEED_SECTIONS[4]}\n")
    for number, d in enumerate(inputs.definitions, start=1):
        published = sum(1 for e in inputs.events.values() if d.name in e.producers)
        out.append(f"### 3.{number}. {d.title} (`{d.name}`)\n")
        out.append(f"{d.description}\n")
        out.append(
            f"- Data: {len(d.metadata.tables)} tables "
            f"({', '.join(f'`{t.fullname}`' for t in _sorted_tables(d.metadata))})\n"
            f"- Endpoints: {len(inputs.endpoints[d.name])}\n"
            f"- Events: publishes {published}, consumes "
            f"{len({s.contract.event_type for s in d.subscriptions})}\n"
            f"- Calls: {', '.join(d.calls) or 'no other service'}\n"
            f"- Details: [services/{d.name}.md](services/{d.name}.md)\n"
        )
    out.append(f"## {SEED_SECTIONS[5]}\n")
    out.append(f"### {SEED_SECTIONS[6]}\n")
    openapi_rows = []
    for name in names:
        target = Path("docs/openapi") / f"{name}.json"
        present = (inputs.root / target).exists()
        openapi_rows.append(
            (
                name,
                f"[`{target.as_posix()}`]({_relative(target, inputs)})"
                if present
                else "missing: run `panthera openapi`",
            )
        )
    out.append(_table(("service", "OpenAPI 3.1 document"), openapi_rows))
    out.append(f"### {SEED_SECTIONS[7]}\n")
    out.append(
        "[`asyncapi.json`](asyncapi.json) (AsyncAPI 3.0) describes every event with its "
        "payload schema, producers and consumers. Each published schema is also in "
        f"[`docs/events/`]({_relative(Path('docs/events'), inputs)}).\n"
    )
    out.append(
        _table(
            ("event", "producers", "consumers", "summary"),
            (
                (
                    f"`{e.key}`",
                    ", ".join(e.producers) or "none in the registry",
                    ", ".join(e.consumers) or "none yet",
                    _doc_line(e.contract),
                )
                for e in inputs.events.values()
            ),
        )
    )
    out.append(f"## {SEED_SECTIONS[8]}\n")
    out.append(
        "One database per service (one SQLite file embedded, one PostgreSQL database "
        "distributed); no foreign key or join crosses services. Every service also "
        "keeps its event outbox and inbox tables.\n"
    )
    for d in inputs.definitions:
        out.append(f"### {d.name}\n")
        out.append(f"![{d.name} schema](diagrams/er-{d.name}.svg)\n")
        out.append(
            f"Source: [`diagrams/er-{d.name}.dot`](diagrams/er-{d.name}.dot); "
            f"columns in [services/{d.name}.md](services/{d.name}.md#data-it-owns).\n"
        )
    out.append(f"## {SEED_SECTIONS[9]}\n")
    out.append(deployment)
    out.append(f"## {SEED_SECTIONS[10]}\n")
    out.append(
        "Services are stateless between requests: they scale out behind the gateway; "
        "state lives in PostgreSQL, Redis and RabbitMQ. Events are delivered at least "
        "once from the outbox and applied exactly once through each consumer's inbox. "
        "The platform's defaults:\n"
    )
    out.append(
        _table(("setting", "default", "meaning"), settings_rows(SCALABILITY_SETTINGS, inputs))
    )
    out.append("### Every other setting\n")
    out.append(
        "The remaining settings, so that a new one shows in this document's diff "
        "(see the README for how each is set):\n"
    )
    others = sorted(set(Settings.model_fields) - set(SCALABILITY_SETTINGS) - set(SECURITY_SETTINGS))
    out.append(_table(("setting", "default", "meaning"), settings_rows(others, inputs)))
    out.append(f"## {SEED_SECTIONS[11]}\n")
    out.append(
        f"Access tokens are {TOKEN_ALGORITHM} JSON Web Tokens, published as a JWKS at "
        "`/.well-known/jwks.json`; refresh tokens rotate with reuse detection; "
        "passwords are hashed with argon2id. Every route declares one permission "
        "(public, authenticated, admin, internal); internal routes are never forwarded "
        "by the gateway. The defaults:\n"
    )
    out.append(_table(("setting", "default", "meaning"), settings_rows(SECURITY_SETTINGS, inputs)))
    permission_counts: dict[str, int] = {}
    for endpoints in inputs.endpoints.values():
        for e in endpoints:
            permission_counts[e.permission] = permission_counts.get(e.permission, 0) + 1
    out.append("### Encryption and isolation\n")
    out.append(protection_section(inputs))
    out.append(
        "Endpoints by permission: "
        + ", ".join(f"{kind} {count}" for kind, count in sorted(permission_counts.items()))
        + ".\n"
    )
    out.append(f"## {SEED_SECTIONS[12]}\n")
    decisions = sorted((inputs.root / "docs" / "decisions").glob("*.md"))
    if decisions:
        lines = []
        for path in decisions:
            first = next(
                (ln for ln in path.read_text().splitlines() if ln.startswith("# ")),
                "# " + path.stem,
            )
            target = path.relative_to(inputs.root)
            lines.append(f"- [{first[2:].strip()}]({_relative(target, inputs)})")
        out.append("\n".join(lines) + "\n")
    else:
        out.append("No decision records in `docs/decisions/`.\n")
    return "\n".join(out)


# --------------------------------------------------------------------------- entry points


def generate(
    definitions: Sequence[ServiceDefinition],
    *,
    root: Path,
    out: Path = DEFAULT_OUT,
    published: Mapping[str, Sequence[type[EventContract]]] | None = None,
    render: Renderer | None = render_svg,
) -> dict[str, bytes]:
    """Every file of the architecture document, by path relative to ``out``.

    ``root`` is the repository (for ``deploy/``, ``docs/`` and the README's settings
    table); ``out`` is where the files will live, relative to it, so links resolve.
    Without ``render`` the diagrams keep only their sources.
    """
    if published is None:
        from panthera.runtime.contracts import published_contracts

        published = published_contracts()
    inputs = Inputs(definitions=definitions, published=published, root=root, out=out)
    inputs.endpoints = {d.name: service_endpoints(d) for d in definitions}
    inputs.events = collect_events(definitions, published)
    deployment, deployment_diagrams = deployment_section(inputs)
    files: dict[str, bytes] = {
        "README.md": index_page(inputs, deployment).encode(),
        "asyncapi.json": (json.dumps(asyncapi_document(inputs), indent=2) + "\n").encode(),
    }
    for d in definitions:
        files[f"services/{d.name}.md"] = service_page(d, inputs).encode()
    diagrams = {"system": system_diagram(inputs)}
    diagrams |= {f"er-{d.name}": er_diagram(d) for d in definitions}
    diagrams |= deployment_diagrams
    for name, source in diagrams.items():
        files[f"diagrams/{name}.dot"] = source.encode()
        if render is not None:
            files[f"diagrams/{name}.svg"] = render(source)
    return dict(sorted(files.items()))


# Files of the output directory that belong to the document: anything else found
# there (a README of one's own, a hand-made sketch) is neither reported nor removed.
GENERATED_DIRECTORIES = ("diagrams", "services")
GENERATED_TOP_LEVEL = ("README.md", "asyncapi.json")


def _leftovers(files: Mapping[str, bytes], directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        relative = path.relative_to(directory)
        owned = relative.parts[0] in GENERATED_DIRECTORIES or (
            relative.as_posix() in GENERATED_TOP_LEVEL
        )
        if owned and relative.as_posix() not in files:
            found.append(path)
    return found


def write(files: Mapping[str, bytes], directory: Path) -> list[Path]:
    """Write the files, removing the generated files a previous run left that are gone."""
    written = []
    for relative, content in files.items():
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.read_bytes() != content:
            target.write_bytes(content)
        written.append(target)
    for stale in _leftovers(files, directory):
        stale.unlink()
    return written


def differences(files: Mapping[str, bytes], directory: Path) -> list[str]:
    """Paths that are missing, differ, or should not be there, relative to ``directory``."""
    found = [
        relative
        for relative, content in files.items()
        if not (directory / relative).is_file() or (directory / relative).read_bytes() != content
    ]
    found += [p.relative_to(directory).as_posix() for p in _leftovers(files, directory)]
    return sorted(found)
