"""The gateway serves the built web app beside the API, without shadowing it."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from panthera.kernel.settings import Settings
from tests.conftest import start_platform

INDEX = (
    "<!doctype html><title>Panthera</title><script type=module src=/assets/app-1a2b.js></script>"
)
SCRIPT = "console.log('panthera');" * 50


@pytest.fixture
def web_dir(tmp_path: Path) -> Path:
    root = tmp_path / "dist"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text(INDEX)
    (root / "assets" / "app-1a2b.js").write_text(SCRIPT)
    (root / "assets" / "app-1a2b.js.gz").write_bytes(gzip.compress(SCRIPT.encode()))
    (root / "favicon.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    return root


@pytest.fixture
async def client(
    settings_factory: Callable[..., Settings], web_dir: Path
) -> AsyncIterator[httpx.AsyncClient]:
    app, client = await start_platform(settings_factory(web_dir=web_dir))
    try:
        yield client
    finally:
        await client.aclose()
        await app.state.platform.stop()


async def test_the_root_is_the_app_and_is_revalidated(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.text == INDEX
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-cache"
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_hashed_assets_are_cached_for_a_year(client: httpx.AsyncClient) -> None:
    response = await client.get("/assets/app-1a2b.js", headers={"Accept-Encoding": "identity"})
    assert response.status_code == 200
    assert response.text == SCRIPT
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert "javascript" in response.headers["content-type"]
    assert "content-encoding" not in response.headers


async def test_assets_come_precompressed_when_the_client_accepts_it(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/assets/app-1a2b.js", headers={"Accept-Encoding": "gzip, br"})
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["vary"] == "Accept-Encoding"
    assert int(response.headers["content-length"]) < len(SCRIPT)
    assert response.text == SCRIPT  # httpx undoes the gzip


async def test_other_files_keep_a_short_lifetime(client: httpx.AsyncClient) -> None:
    response = await client.get("/favicon.svg")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=3600"


@pytest.mark.parametrize(
    "path", ["/products", "/products/7f1c?variant=2", "/account/verify-email?token=abc", "/admin"]
)
async def test_client_routes_fall_back_to_the_app(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.text == INDEX
    assert response.headers["cache-control"] == "no-cache"


@pytest.mark.parametrize("path", ["/assets/gone-9f9f.js", "/robots.txt", "/assets/app-1a2b.js.gz"])
async def test_missing_files_are_404_not_the_page(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    "path", ["/api/v1/nothing-here", "/api", "/media/none.webp", "/.well-known/other"]
)
async def test_api_paths_are_never_shadowed(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


async def test_the_api_and_operations_still_answer(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).status_code == 200
    products = await client.get("/api/v1/products")
    assert products.status_code == 200
    assert products.headers["content-type"].startswith("application/json")
    jwks = await client.get("/.well-known/jwks.json")
    assert jwks.status_code == 200
    assert "keys" in jwks.json()


async def test_only_reads_reach_the_app(client: httpx.AsyncClient) -> None:
    response = await client.post("/products", json={})
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


async def test_paths_outside_the_build_are_refused(client: httpx.AsyncClient) -> None:
    response = await client.get("/..%2f..%2fetc/passwd")
    assert response.status_code == 400
    assert "root:" not in response.text


async def test_without_a_build_the_gateway_serves_the_api_alone(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    app, client = await start_platform(settings_factory(web_dir=tmp_path / "missing"))
    try:
        response = await client.get("/")
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
    finally:
        await client.aclose()
        await app.state.platform.stop()


async def test_head_answers_like_get_without_a_body(client: httpx.AsyncClient) -> None:
    response = await client.head("/products")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-cache"
    assert response.content == b""


async def test_the_gateways_own_pages_stay_its_own(client: httpx.AsyncClient) -> None:
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
    assert (await client.get("/openapi.json")).json()["info"]["title"] == "Panthera Gateway"
