"""S3Storage against a real S3 API: moto's server on a loopback port, started here.

If the server cannot start, these tests FAIL (never skip): the S3 adapter would
otherwise go untested. The timeout turns a server that never answers into a failure.
"""

from __future__ import annotations

import hashlib
import io
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from moto.server import ThreadedMotoServer
from PIL import Image

from panthera.kernel.storage import InvalidObjectKey, S3Storage
from tests.conftest import Platform, make_admin, make_settings, start_platform

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ACCESS_KEY = "panthera-test"
SECRET_KEY = "panthera-test-secret"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on a free loopback port, for this module."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def _storage(endpoint: str, bucket: str, region: str = "us-east-1") -> S3Storage:
    return S3Storage(
        bucket,
        endpoint_url=endpoint,
        region=region,
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        timeout_seconds=5,
    )


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1"])
async def test_put_get_delete_and_ready(s3_endpoint: str, region: str) -> None:
    bucket = f"panthera-media-{region}"
    storage = _storage(s3_endpoint, bucket, region)
    try:
        assert not await storage.ready()  # no bucket yet
        await storage.start()  # creates it
        await storage.start()  # and finds it the second time
        assert await storage.ready()

        data = b"RIFF\x00\x00\x00\x00WEBPVP8 " + bytes(range(256)) * 40
        key = "products/p-1/i-1/thumb.webp"
        await storage.put(key, data, "image/webp")
        stored = await storage.get(key)
        assert stored is not None
        assert stored.data == data
        assert stored.content_type == "image/webp"
        # S3's ETag of a single-part upload is the quoted MD5 of the bytes.
        assert stored.etag == f'"{hashlib.md5(data).hexdigest()}"'  # noqa: S324

        await storage.put(key, b"replaced", "image/webp")
        replaced = await storage.get(key)
        assert replaced is not None
        assert replaced.data == b"replaced"
        assert replaced.etag != stored.etag

        assert await storage.get("products/p-1/i-1/missing.webp") is None
        await storage.delete(key)
        assert await storage.get(key) is None
        await storage.delete(key)  # deleting what is gone is fine

        for bad in ("../escape", "/absolute", "a//b", ".meta/x"):
            with pytest.raises(InvalidObjectKey):
                await storage.put(bad, b"x", "text/plain")
            assert await storage.get(bad) is None
    finally:
        await storage.close()


def _free_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_ready_is_false_when_the_store_is_unreachable() -> None:
    storage = _storage(f"http://127.0.0.1:{_free_port()}", "nowhere")
    try:
        assert not await storage.ready()
    finally:
        await storage.close()


async def test_the_catalog_serves_images_from_s3(s3_endpoint: str, tmp_path: Path) -> None:
    """The whole path with PANTHERA_S3_*: upload, sizes in the bucket, served, deleted."""
    settings = make_settings(
        tmp_path,
        s3_bucket="panthera-catalog",
        s3_endpoint_url=s3_endpoint,
        s3_access_key_id=ACCESS_KEY,
        s3_secret_access_key=SECRET_KEY,
    )
    app, client = await start_platform(settings)
    shop = Platform(app=app, client=client, settings=settings)
    try:
        ready = await httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app.state.platform.apps["catalog"]),
            base_url="http://catalog",
        ).get("/readyz")
        assert ready.json()["checks"]["storage"] is True
        admin = await make_admin(shop)
        created = await client.post(
            "/api/v1/products",
            json={"name": "Lamp", "price": "30.00", "stock": 1},
            headers=admin.headers,
        )
        product_id = created.json()["productId"]
        picture = io.BytesIO()
        Image.new("RGB", (900, 700), (10, 120, 90)).save(picture, format="JPEG")
        uploaded = await client.post(
            f"/api/v1/products/{product_id}/images",
            files={"file": ("lamp.jpg", picture.getvalue(), "image/jpeg")},
            headers=admin.headers,
        )
        assert uploaded.status_code == 201, uploaded.text
        urls = uploaded.json()["urls"]
        # Nothing was written to the local media directory: the bucket has it all.
        assert not (tmp_path / "media").exists()
        probe = _storage(s3_endpoint, "panthera-catalog")
        try:
            key = urls["thumb"].removeprefix("/media/")
            stored = await probe.get(key)
            assert stored is not None
            assert stored.content_type == "image/webp"
        finally:
            await probe.close()
        served = await client.get(urls["thumb"])
        assert served.status_code == 200
        assert served.headers["cache-control"] == "public, max-age=31536000, immutable"
        again = await client.get(urls["thumb"], headers={"If-None-Match": served.headers["etag"]})
        assert again.status_code == 304
        with Image.open(io.BytesIO(served.content)) as thumb:
            assert thumb.size == (200, 156)
        deleted = await client.delete(
            f"/api/v1/products/{product_id}/images/{uploaded.json()['imageId']}",
            headers=admin.headers,
        )
        assert deleted.status_code == 204
        assert (await client.get(urls["thumb"])).status_code == 404
    finally:
        await client.aclose()
        await app.state.platform.stop()
