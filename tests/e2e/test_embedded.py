"""The README's first command: ``panthera run`` as a real process, used over real HTTP."""

from __future__ import annotations

import email
import email.policy
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "panthera.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[str, Path, dict[str, str]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PANTHERA_")}
    data_dir = tmp_path / "data"
    port = _free_port()
    log = (tmp_path / "run.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "panthera.cli",
            "run",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError((tmp_path / "run.log").read_text()[-4000:])
            time.sleep(0.2)
        yield base, data_dir, env
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _verification_token(outbox: Path, address: str) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for path in outbox.glob("*.eml"):
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if message["To"] == address:
                text = message.get_body(preferencelist=("plain",)).get_content()
                found = re.search(r"verify-email\?token=([\w-]+)", text)
                if found:
                    return found.group(1)
        time.sleep(0.1)
    raise AssertionError(f"no verification mail for {address}")


def test_a_shopper_and_an_admin_on_the_embedded_platform(
    embedded: tuple[str, Path, dict[str, str]],
) -> None:
    base, data_dir, env = embedded
    client = httpx.Client(base_url=base, timeout=10)
    address = "shopper@example.com"
    registered = client.post(
        "/api/v1/users/register",
        json={
            "email": address,
            "password": "a long enough secret",
            "firstName": "Sam",
            "lastName": "Shopper",
        },
    )
    assert registered.status_code == 201, registered.text
    user_id = registered.json()["id"]
    token = _verification_token(data_dir / "outbox", address)
    assert client.post("/api/v1/users/verify-email", json={"token": token}).status_code == 204
    tokens = client.post(
        "/api/v1/users/login", json={"email": address, "password": "a long enough secret"}
    ).json()
    refreshed = client.post("/api/v1/auth/refresh", json={"refreshToken": tokens["refreshToken"]})
    assert refreshed.status_code == 200
    bearer = {"Authorization": f"Bearer {refreshed.json()['accessToken']}"}
    me = client.get(f"/api/v1/users/profiles/{user_id}", headers=bearer).json()
    assert me["emailVerified"] is True
    edited = client.put(f"/api/v1/users/{user_id}", json={"lastName": "Smith"}, headers=bearer)
    assert edited.json()["lastName"] == "Smith"

    # create-admin works beside the running platform, on the same data directory.
    made = _cli(
        "create-admin",
        "--email",
        "boss@example.com",
        "--password",
        "another long secret",
        "--data-dir",
        str(data_dir),
        env=env,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    assert "administrator created" in made.stdout
    admin = client.post(
        "/api/v1/users/login", json={"email": "boss@example.com", "password": "another long secret"}
    ).json()
    admin_headers = {"Authorization": f"Bearer {admin['accessToken']}"}
    listing = client.get("/api/v1/users/profiles", headers=admin_headers)
    assert listing.status_code == 200, listing.text
    assert {profile["email"] for profile in listing.json()} == {address, "boss@example.com"}
    assert (
        client.delete(f"/api/v1/users/profiles/{user_id}", headers=admin_headers).status_code == 204
    )
    deadline = time.monotonic() + 10
    while client.get("/api/v1/users/me", headers=bearer).status_code != 401:
        assert time.monotonic() < deadline, "the deleted user's token still works"
        time.sleep(0.1)
