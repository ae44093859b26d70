"""The per-service part of the Kubernetes base (``deploy/k8s/base/services/``), from the registry.

Every service gets the same Deployment, Service, HorizontalPodAutoscaler,
PodDisruptionBudget and NetworkPolicy; writing them from the registry keeps a
new service from being forgotten (``panthera k8s --check`` fails in CI until
they are regenerated). What differs per environment lives in the overlays.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from panthera.runtime.registry import SERVICE_NAMES, definition

GATEWAY = "gateway"
PORT = 8000
# Every process verifies tokens with the auth service's published keys (JWKS).
KEYS_PUBLISHER = "auth"
APP = "panthera"
UID = 10001


class _Dumper(yaml.SafeDumper):
    # Plain YAML for people to read: every mapping written out, no &anchors.
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _labels(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": component}


def _selector(component: str) -> dict[str, Any]:
    return {"matchLabels": _labels(component)}


def callers(service: str) -> list[str]:
    """Who may open a connection to ``service``: the gateway, itself and what calls it."""
    if service == GATEWAY:
        return []
    if service == KEYS_PUBLISHER:
        return [GATEWAY, *SERVICE_NAMES]
    found = {GATEWAY, service}
    found.update(name for name in SERVICE_NAMES if service in definition(name).calls)
    return sorted(found)


def security_context() -> dict[str, Any]:
    """A container that cannot become root, write its image or gain capabilities."""
    return {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_spec(args: list[str], *, probes: bool) -> dict[str, Any]:
    """The pod every service and the migration Job run: the one image, the shared settings."""
    container: dict[str, Any] = {
        "name": APP,
        "image": "panthera",
        "imagePullPolicy": "Always",
        "args": args,
        "envFrom": [
            {"configMapRef": {"name": "panthera-settings"}},
            {"secretRef": {"name": "panthera-secrets"}},
        ],
        "resources": {
            "requests": {"cpu": "100m", "memory": "192Mi"},
            "limits": {"cpu": "1", "memory": "512Mi"},
        },
        "securityContext": security_context(),
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108
            {"name": "data", "mountPath": "/var/lib/panthera"},
        ],
    }
    if probes:
        container["ports"] = [{"name": "http", "containerPort": PORT}]
        container["livenessProbe"] = {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        }
        container["readinessProbe"] = {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 2,
        }
        container["startupProbe"] = {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 2,
            "failureThreshold": 60,
        }
    return {
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "fsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
            {"name": "data", "emptyDir": {"sizeLimit": "256Mi"}},
        ],
    }


def service_objects(name: str) -> list[dict[str, Any]]:
    """Deployment, Service, HPA, PDB and NetworkPolicy of one service (or the gateway)."""
    labels = _labels(name)
    template_spec = pod_spec(
        ["serve", name, "--host", "0.0.0.0", "--port", str(PORT)],  # noqa: S104
        probes=True,
    )
    # uvicorn finishes in-flight requests within 20 s of SIGTERM; the endpoint is
    # taken out of the Service a moment before, so no new request arrives meanwhile.
    template_spec["terminationGracePeriodSeconds"] = 30
    template_spec["containers"][0]["lifecycle"] = {"preStop": {"sleep": {"seconds": 5}}}
    template_spec["topologySpreadConstraints"] = [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": _selector(name),
        }
    ]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {
                "checkov.io/skip1": (
                    "CKV_K8S_35=Panthera reads its settings, secrets included, from the "
                    "environment by design (twelve-factor); the Secret is only mounted there"
                ),
                "checkov.io/skip2": (
                    "CKV_K8S_43=the overlays pin the image by release tag; the release "
                    "pipeline resolves it to a digest at deploy time"
                ),
            },
        },
        "spec": {
            "replicas": 2,
            "revisionHistoryLimit": 5,
            "selector": _selector(name),
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": template_spec,
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "selector": labels,
            "ports": [{"name": "http", "port": PORT, "targetPort": "http"}],
        },
    }
    autoscaler = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": 2,
            "maxReplicas": 10,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        },
    }
    budget = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "labels": labels},
        "spec": {"minAvailable": 1, "selector": _selector(name)},
    }
    if name == GATEWAY:
        # The public entry: the ingress controller's namespace.
        sources: list[dict[str, Any]] = [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
        ]
    else:
        sources = [{"podSelector": _selector(caller)} for caller in callers(name)]
    # Prometheus scrapes /metrics from its own namespace.
    sources.append(
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    )
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "podSelector": _selector(name),
            "policyTypes": ["Ingress"],
            "ingress": [{"from": sources, "ports": [{"protocol": "TCP", "port": PORT}]}],
        },
    }
    return [deployment, service, autoscaler, budget, policy]


def migration_job() -> dict[str, Any]:
    """``panthera migrate`` once per release, before the new pods take traffic."""
    spec = pod_spec(["migrate"], probes=False)
    spec["restartPolicy"] = "Never"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "panthera-migrate",
            "labels": _labels("migrate"),
            "annotations": {
                "checkov.io/skip1": (
                    "CKV_K8S_35=Panthera reads its settings, secrets included, from the "
                    "environment by design (twelve-factor); the Secret is only mounted there"
                ),
                "checkov.io/skip2": (
                    "CKV_K8S_43=the overlays pin the image by release tag; the release "
                    "pipeline resolves it to a digest at deploy time"
                ),
            },
        },
        "spec": {
            "backoffLimit": 3,
            "activeDeadlineSeconds": 900,
            "ttlSecondsAfterFinished": 86400,
            "template": {"metadata": {"labels": _labels("migrate")}, "spec": spec},
        },
    }


def render() -> dict[str, str]:
    """Every generated file of ``deploy/k8s/base/services/``, by name."""
    names = [*SERVICE_NAMES, GATEWAY]
    header = "# Written by `panthera k8s` from the service registry; do not edit.\n"
    files = {
        f"{name}.yaml": header
        + yaml.dump_all(service_objects(name), Dumper=_Dumper, sort_keys=False, width=100)
        for name in names
    }
    files["migrate-job.yaml"] = header + yaml.dump(
        migration_job(), Dumper=_Dumper, sort_keys=False, width=100
    )
    urls = {name: f"http://{name}:{PORT}" for name in SERVICE_NAMES}
    files["service-urls.env"] = f"PANTHERA_SERVICE_URLS={json.dumps(urls)}\n"
    files["kustomization.yaml"] = header + yaml.safe_dump(
        {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [*(f"{name}.yaml" for name in names), "migrate-job.yaml"],
        },
        sort_keys=False,
    )
    return files


def write(directory: Path, *, check: bool = False) -> list[Path]:
    """Write the files (or, with ``check``, list those that differ from the code)."""
    stale = []
    for filename, text in render().items():
        target = directory / filename
        if check:
            if not target.exists() or target.read_text() != text:
                stale.append(target)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        stale.append(target)
    return stale
