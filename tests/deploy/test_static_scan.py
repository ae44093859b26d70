"""checkov finds nothing wrong in the image, the rendered Kubernetes objects or the
Terraform; every check skipped says why, next to what it skips. Terraform is also
formatted as ``terraform fmt`` writes it.

Scanned: deploy/Dockerfile, every overlay of deploy/k8s as ``kubectl kustomize``
renders it (what a cluster would get), and deploy/terraform. Offline: checkov runs
with --skip-download (no rule updates, no platform API).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.test_kubernetes import OVERLAYS, render

pytestmark = pytest.mark.timeout(300)

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    rendered = tmp_path_factory.mktemp("k8s")
    for overlay in OVERLAYS:
        (rendered / f"{overlay}.yaml").write_text(render(overlay))
    # checkov takes either files or directories; the image's gets a directory of its own.
    image = tmp_path_factory.mktemp("image")
    shutil.copy(DEPLOY / "Dockerfile", image / "Dockerfile")
    checkov = Path(sys.executable).parent / "checkov"
    done = subprocess.run(
        [
            str(checkov),
            "--skip-download",
            "--output",
            "json",
            "--framework",
            "dockerfile",
            "kubernetes",
            "terraform",
            "--directory",
            str(image),
            "--directory",
            str(rendered),
            "--directory",
            str(DEPLOY / "terraform"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    # 0: nothing failed; 1: something failed (the test below says what); else: broken.
    assert done.returncode in (0, 1), done.stderr[-4000:]
    # One JSON document per scanned source, one after the other, each a report or a list.
    found: list[dict[str, Any]] = []
    decoder = json.JSONDecoder()
    text, position = done.stdout, 0
    while position < len(text.rstrip()):
        while text[position].isspace():
            position += 1
        parsed, position = decoder.raw_decode(text, position)
        found.extend(parsed if isinstance(parsed, list) else [parsed])
    return found


def test_every_framework_was_scanned(reports: list[dict[str, Any]]) -> None:
    scanned = {report["check_type"] for report in reports}
    assert {"dockerfile", "kubernetes", "terraform"} <= scanned
    for report in reports:
        assert report["summary"]["passed"] > 0, report["check_type"]


def test_nothing_fails(reports: list[dict[str, Any]]) -> None:
    failed = [
        f"{report['check_type']}: {check['check_id']} {check['check_name']} "
        f"({check['resource']} in {check['file_path']})"
        for report in reports
        for check in report["results"]["failed_checks"]
    ]
    assert not failed, "\n".join(failed)


def test_every_skip_gives_its_reason(reports: list[dict[str, Any]]) -> None:
    unexplained = [
        f"{check['check_id']} on {check['resource']}"
        for report in reports
        for check in report["results"]["skipped_checks"]
        if len(check["check_result"].get("suppress_comment", "").strip()) < 20
    ]
    assert not unexplained, unexplained


def test_terraform_is_formatted() -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.fail("terraform is required to check deploy/terraform's formatting")
    done = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", str(DEPLOY / "terraform")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout
