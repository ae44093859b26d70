"""deploy/k8s: each overlay renders, validates against the Kubernetes schemas, and holds
every registered service with probes, limits, autoscaling, budgets and network policies.

``kubectl kustomize`` renders; kubernetes-validate checks the output against the
schemas it bundles, so nothing here needs a cluster or the network.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from panthera.runtime import kubernetes
from panthera.runtime.registry import SERVICE_NAMES

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
OVERLAYS = sorted(path.name for path in (K8S / "overlays").iterdir() if path.is_dir())
KUBERNETES_VERSION = "1.31.0"


def render(overlay: str) -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is required to render deploy/k8s (it bundles kustomize)")
    done = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param, render(request.param)


def by_kind(text: str) -> dict[str, dict[str, dict[str, Any]]]:
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for document in yaml.safe_load_all(text):
        found.setdefault(document["kind"], {})[document["metadata"]["name"]] = document
    return found


def test_the_overlays_are_dev_and_prod() -> None:
    assert OVERLAYS == ["dev", "prod"]


def test_the_generated_base_matches_the_registry() -> None:
    stale = kubernetes.write(K8S / "base" / "services", check=True)
    assert not stale, f"run `panthera k8s`: {', '.join(map(str, stale))}"


def test_every_overlay_validates_against_the_schemas(
    rendered: tuple[str, str], tmp_path: Path
) -> None:
    overlay, text = rendered
    manifest = tmp_path / f"{overlay}.yaml"
    manifest.write_text(text)
    validator = Path(sys.executable).parent / "kubernetes-validate"
    done = subprocess.run(
        [str(validator), "-k", KUBERNETES_VERSION, "--strict", "--quiet", str(manifest)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_service_has_its_objects(rendered: tuple[str, str]) -> None:
    _overlay, text = rendered
    objects = by_kind(text)
    for name in (*SERVICE_NAMES, "gateway"):
        for kind in (
            "Deployment",
            "Service",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "NetworkPolicy",
        ):
            assert name in objects.get(kind, {}), f"{kind} {name}"
        deployment = objects["Deployment"][name]
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["args"][:2] == ["serve", name]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["resources"]["requests"]
        assert container["resources"]["limits"]
        assert container["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert objects["HorizontalPodAutoscaler"][name]["spec"]["minReplicas"] >= 2
    assert "panthera-migrate" in objects["Job"]
    assert objects["Job"]["panthera-migrate"]["spec"]["template"]["spec"]["containers"][0][
        "args"
    ] == ["migrate"]
    assert (
        objects["Ingress"]["panthera"]["spec"]["rules"][0]["http"]["paths"][0]["backend"][
            "service"
        ]["name"]
        == "gateway"
    )
    assert "default-deny-ingress" in objects["NetworkPolicy"]
    settings = next(iter(objects["ConfigMap"].values()))["data"]
    assert set(yaml.safe_load(settings["PANTHERA_SERVICE_URLS"])) == set(SERVICE_NAMES)


def test_only_the_gateway_and_callers_reach_a_service(rendered: tuple[str, str]) -> None:
    _overlay, text = rendered
    policies = by_kind(text)["NetworkPolicy"]

    def allowed(name: str) -> set[str]:
        sources = policies[name]["spec"]["ingress"][0]["from"]
        return {
            source["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
            for source in sources
            if "podSelector" in source
        }

    for name in SERVICE_NAMES:
        assert "gateway" in allowed(name)
        assert allowed(name) == set(kubernetes.callers(name))
    # The users service calls auth; nothing but the gateway (and itself) calls users.
    assert "users" in allowed("auth")
    assert allowed("users") == {"gateway", "users"}
    # The gateway takes traffic from the ingress controller only (and Prometheus).
    assert allowed("gateway") == set()


def test_secrets_are_kept_out_of_production(rendered: tuple[str, str]) -> None:
    overlay, text = rendered
    secrets = by_kind(text).get("Secret", {})
    if overlay == "prod":
        assert not secrets, "production secrets come from the secret store, not the repository"
    else:
        assert any(name.startswith("panthera-secrets") for name in secrets)
