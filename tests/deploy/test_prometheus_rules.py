"""The alert rules load in Debian's Prometheus (``promtool check rules``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is required: apt-get install -y prometheus")
    return found


def test_the_alert_rules_are_valid() -> None:
    rules = sorted((PROMETHEUS / "rules").glob("*.yml"))
    assert rules
    done = subprocess.run(
        [promtool(), "check", "rules", *map(str, rules)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("config", ["prometheus.compose.yml", "prometheus.local.yml"])
def test_the_configurations_are_valid(config: str, tmp_path: Path) -> None:
    # Checked where the files they name exist: the compose one expects the rules
    # mounted at /etc/prometheus/rules, the local one a targets file from panthera up.
    text = (PROMETHEUS / config).read_text()
    text = text.replace("- /etc/prometheus/rules/*.yml", f"- {PROMETHEUS}/rules/*.yml")
    text = text.replace("- rules/*.yml", f"- {PROMETHEUS}/rules/*.yml")
    text = text.replace("../../.panthera/run/prometheus-targets.json", str(tmp_path / "t.json"))
    (tmp_path / "t.json").write_text("[]")
    assert f"{PROMETHEUS}/rules/*.yml" in text
    (tmp_path / "prometheus.yml").write_text(text)
    done = subprocess.run(
        [promtool(), "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
