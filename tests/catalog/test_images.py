"""Product images: upload, cleaning and sizes, serving, removal, refusals and key safety."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, ImageCms

from panthera.kernel.storage import InvalidObjectKey, LocalStorage, validate_key
from tests.conftest import (
    Account,
    Platform,
    make_admin,
    make_settings,
    register_and_login,
    start_platform,
    written_events,
)

MAX_IMAGE_BYTES = 400_000
RED = (220, 20, 20)
BLUE = (20, 40, 220)


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[Platform]:
    """An embedded platform whose image limit is small enough to test cheaply."""
    settings = make_settings(tmp_path, max_image_bytes=MAX_IMAGE_BYTES)
    app, client = await start_platform(settings)
    try:
        yield Platform(app=app, client=client, settings=settings)
    finally:
        await client.aclose()
        await app.state.platform.stop()


async def _product(shop: Platform, admin: Account, name: str = "Camera Bag") -> str:
    response = await shop.client.post(
        "/api/v1/products",
        json={"name": name, "description": "A bag", "price": "49.00", "stock": 3},
        headers=admin.headers,
    )
    assert response.status_code == 201, response.text
    product_id: str = response.json()["productId"]
    return product_id


def phone_photo(width: int = 1600, height: int = 1000) -> bytes:
    """A JPEG as a phone writes it: sideways pixels, Orientation 6, GPS, camera, ICC.

    Its left half is red and its right half blue; shown upright (turned a quarter
    clockwise) the red half is on top.
    """
    image = Image.new("RGB", (width, height), BLUE)
    image.paste(RED, (0, 0, width // 2, height))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    exif[0x010F] = "PantheraCam"  # Make
    exif[0x0110] = "Model X"  # Model
    exif[0x8825] = {  # GPSInfo: somewhere in Lisbon
        1: "N",
        2: (38.0, 42.0, 49.0),
        3: "W",
        4: (9.0, 8.0, 22.0),
    }
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90, exif=exif.tobytes(), icc_profile=srgb)
    return out.getvalue()


def _png(width: int, height: int, mode: str = "RGBA") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height), 0).save(out, format="PNG")
    return out.getvalue()


async def _upload(
    shop: Platform,
    product_id: str,
    data: bytes,
    headers: dict[str, str],
    *,
    filename: str = "photo.jpg",
    content_type: str = "image/jpeg",
    alt: str | None = None,
) -> httpx.Response:
    return await shop.client.post(
        f"/api/v1/products/{product_id}/images",
        files={"file": (filename, data, content_type)},
        data={"alt": alt} if alt is not None else None,
        headers=headers,
    )


def _near(pixel: Any, colour: tuple[int, int, int], tolerance: int = 40) -> bool:
    return all(abs(int(a) - b) <= tolerance for a, b in zip(pixel[:3], colour, strict=True))


async def test_upload_cleans_turns_and_resizes(shop: Platform) -> None:
    admin = await make_admin(shop)
    product_id = await _product(shop, admin)
    photo = phone_photo()
    assert b"PantheraCam" in photo
    assert b"Exif" in photo

    response = await _upload(shop, product_id, photo, admin.headers, alt="  Front view  ")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["alt"] == "Front view"
    # Upright: the 1600x1000 sideways pixels are shown 1000 wide and 1600 high.
    assert (body["width"], body["height"]) == (1000, 1600)
    assert set(body["urls"]) == {"thumb", "medium", "large", "original"}
    expected = {"original": (1000, 1600), "large": (750, 1200), "medium": (375, 600)}
    expected["thumb"] = (125, 200)
    for size, url in body["urls"].items():
        assert url.startswith(f"/media/products/{product_id}/{body['imageId']}/")
        assert url.endswith(f"/{size}.webp")
        served = await shop.client.get(url)
        assert served.status_code == 200, (size, served.text)
        assert served.headers["content-type"] == "image/webp"
        data = served.content
        # No metadata survives: no EXIF (camera, GPS), XMP or colour profile chunk.
        for marker in (b"EXIF", b"Exif", b"XMP ", b"ICCP", b"PantheraCam", b"Model X"):
            assert marker not in data, (size, marker)
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "WEBP"
            assert image.size == expected[size], size
            assert not image.getexif(), size
            assert "exif" not in image.info
            assert "icc_profile" not in image.info
            assert "xmp" not in image.info
            picture = image.convert("RGB")
            width, height = picture.size
            # The orientation was applied to the pixels: red on top, blue below.
            assert _near(picture.getpixel((width // 2, height // 8)), RED), size
            assert _near(picture.getpixel((width // 2, height * 7 // 8)), BLUE), size
    # Every size is in the media directory of the embedded shape.
    media = shop.settings.data_dir / "media" / "products" / product_id / body["imageId"]
    assert sorted(path.name for path in media.iterdir()) == [
        "large.webp",
        "medium.webp",
        "original.webp",
        "thumb.webp",
    ]


async def test_a_small_image_is_not_upscaled_nor_stored_twice(shop: Platform) -> None:
    admin = await make_admin(shop)
    product_id = await _product(shop, admin)
    response = await _upload(shop, product_id, _png(320, 240), admin.headers, filename="dot.png")
    assert response.status_code == 201, response.text
    urls = response.json()["urls"]
    assert (response.json()["width"], response.json()["height"]) == (320, 240)
    assert urls["medium"] == urls["large"] == urls["original"]
    assert urls["thumb"] != urls["original"]
    with Image.open(io.BytesIO((await shop.client.get(urls["thumb"])).content)) as thumb:
        assert thumb.size == (200, 150)
        # Transparency is kept.
        assert thumb.mode == "RGBA"


async def test_product_shows_its_images_and_publishes_the_change(shop: Platform) -> None:
    admin = await make_admin(shop)
    product_id = await _product(shop, admin, "Travel Mug")
    first = (await _upload(shop, product_id, phone_photo(), admin.headers, alt="one")).json()
    second = (await _upload(shop, product_id, _png(64, 64), admin.headers, alt="two")).json()

    detail = (await shop.client.get(f"/api/v1/products/{product_id}")).json()
    assert [image["imageId"] for image in detail["images"]] == [
        first["imageId"],
        second["imageId"],
    ]
    assert detail["images"][0]["urls"] == first["urls"]
    assert detail["imageUrl"] == first["urls"]["medium"]
    listing = (await shop.client.get("/api/v1/products", params={"q": "travel mug"})).json()
    assert listing[0]["imageUrl"] == first["urls"]["medium"]

    runtime = shop.app.state.platform.runtimes["catalog"]
    events = await written_events(runtime, "product.updated")
    updates = [event.payload for event in events if event.payload["product_id"] == product_id]
    assert [u["changed"] for u in updates] == [["images"], ["images"]]
    assert [u["revision"] for u in updates] == [2, 3]


async def test_delete_removes_the_image_and_its_files(shop: Platform) -> None:
    admin = await make_admin(shop)
    product_id = await _product(shop, admin)
    body = (await _upload(shop, product_id, phone_photo(), admin.headers)).json()
    image_path = f"/api/v1/products/{product_id}/images/{body['imageId']}"

    user = await register_and_login(shop.client)
    assert (await shop.client.delete(image_path, headers=user.headers)).status_code == 403
    deleted = await shop.client.delete(image_path, headers=admin.headers)
    assert deleted.status_code == 204, deleted.text
    for url in body["urls"].values():
        assert (await shop.client.get(url)).status_code == 404
    detail = (await shop.client.get(f"/api/v1/products/{product_id}")).json()
    assert detail["images"] == []
    assert detail["imageUrl"] is None
    again = await shop.client.delete(image_path, headers=admin.headers)
    assert again.status_code == 404
    assert again.json()["code"] == "image_not_found"


async def test_media_is_cached_for_ever_and_revalidates(shop: Platform) -> None:
    admin = await make_admin(shop)
    product_id = await _product(shop, admin)
    url = (await _upload(shop, product_id, phone_photo(), admin.headers)).json()["urls"]["thumb"]

    first = await shop.client.get(url)
    assert first.status_code == 200
    assert first.headers["cache-control"] == "public, max-age=31536000, immutable"
    etag = first.headers["etag"]
    assert etag.startswith('"')
    assert etag.endswith('"')
    assert first.headers["x-content-type-options"] == "nosniff"

    same = await shop.client.get(url, headers={"If-None-Match": etag})
    assert same.status_code == 304
    assert same.content == b""
    assert same.headers["etag"] == etag
    listed = await shop.client.get(url, headers={"If-None-Match": f'"other", W/{etag}'})
    assert listed.status_code == 304
    changed = await shop.client.get(url, headers={"If-None-Match": '"something-else"'})
    assert changed.status_code == 200
    assert changed.content == first.content

    missing = await shop.client.get(f"/media/products/{product_id}/nothing/thumb.webp")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["code"] == "media_not_found"


async def test_uploads_need_an_administrator(shop: Platform) -> None:
    admin = await make_admin(shop)
    product_id = await _product(shop, admin)
    user = await register_and_login(shop.client)
    forbidden = await _upload(shop, product_id, phone_photo(), user.headers)
    assert forbidden.status_code == 403
    anonymous = await _upload(shop, product_id, phone_photo(), {})
    assert anonymous.status_code == 401
    unknown = await _upload(
        shop, "00000000-0000-4000-8000-000000000000", phone_photo(), admin.headers
    )
    assert unknown.status_code == 404


def _truncated_jpeg() -> bytes:
    photo = phone_photo(800, 600)
    return photo[: len(photo) // 2]


NOT_IMAGES = {
    "text": (b"just some words, not a picture\n" * 20, "notes.txt", "text/plain"),
    "pdf": (
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n",
        "a.pdf",
        "image/jpeg",
    ),
    "svg": (
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        b'<script>alert(1)</script><rect width="10" height="10"/></svg>',
        "logo.svg",
        "image/svg+xml",
    ),
    "html named as png": (b"<html><body>hi</body></html>", "x.png", "image/png"),
    "empty": (b"", "empty.jpg", "image/jpeg"),
}


@pytest.mark.parametrize("kind", [*NOT_IMAGES, "truncated jpeg", "bmp"])
async def test_what_is_not_a_supported_image_is_refused(shop: Platform, kind: str) -> None:
    admin = await make_admin(shop)
    product_id = await _product(shop, admin)
    if kind == "truncated jpeg":
        data, filename, content_type = _truncated_jpeg(), "cut.jpg", "image/jpeg"
    elif kind == "bmp":
        out = io.BytesIO()
        Image.new("RGB", (40, 40), RED).save(out, format="BMP")
        data, filename, content_type = out.getvalue(), "old.bmp", "image/bmp"
    else:
        data, filename, content_type = NOT_IMAGES[kind]
    response = await _upload(
        shop, product_id, data, admin.headers, filename=filename, content_type=content_type
    )
    assert response.status_code == 400, (kind, response.text)
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "invalid_image"
    detail = (await shop.client.get(f"/api/v1/products/{product_id}")).json()
    assert detail["images"] == []
    media = shop.settings.data_dir / "media" / "products"
    assert not media.exists() or not any(media.rglob("*.webp"))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
async def test_oversized_uploads_get_413(shop: Platform) -> None:
    admin = await make_admin(shop)
    product_id = await _product(shop, admin)
    # Just over the image limit: refused by the upload itself.
    just_over = os.urandom(MAX_IMAGE_BYTES + 1)
    response = await _upload(shop, product_id, just_over, admin.headers)
    assert response.status_code == 413, response.text
    assert response.json()["code"] == "image_too_large"
    # Far over it: refused by the body limit before the service reads it.
    far_over = os.urandom(MAX_IMAGE_BYTES + 200_000)
    response = await _upload(shop, product_id, far_over, admin.headers)
    assert response.status_code == 413, response.text
    assert response.json()["code"] == "payload_too_large"
    # A small file whose header claims 100 megapixels (a decompression bomb).
    bomb = _png(10_000, 10_000, mode="1")
    assert len(bomb) < MAX_IMAGE_BYTES
    response = await _upload(shop, product_id, bomb, admin.headers, filename="bomb.png")
    assert response.status_code == 413, response.text
    assert response.json()["code"] == "image_too_large"


async def test_the_upload_limit_is_only_for_the_upload_route(shop: Platform) -> None:
    admin = await make_admin(shop)
    big = {"name": "Big", "price": "1.00", "description": "x" * 1_100_000}
    response = await shop.client.post("/api/v1/products", json=big, headers=admin.headers)
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


async def test_media_keys_cannot_leave_the_media_directory(shop: Platform) -> None:
    secret = shop.settings.data_dir / "catalog.sqlite3"
    assert secret.exists()
    for path in (
        "/media/../catalog.sqlite3",
        "/media/%2e%2e/catalog.sqlite3",
        "/media/..%2fcatalog.sqlite3",
        "/media/%2fetc%2fpasswd",
        "/media/.meta/anything",
        "/media/products/..%5c..%5ccatalog.sqlite3",
    ):
        response = await shop.client.get(path)
        assert response.status_code in {400, 404}, (path, response.status_code)
        assert b"SQLite" not in response.content
        assert b"root:" not in response.content
    # Straight at the catalog service, past the gateway's own path checks.
    catalog = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=shop.app.state.platform.apps["catalog"]),
        base_url="http://catalog",
    )
    async with catalog:
        for raw in ("/media/..%2fcatalog.sqlite3", "/media/%2e%2e%2fcatalog.sqlite3"):
            response = await catalog.get(raw)
            assert response.status_code == 404, raw
            assert b"SQLite" not in response.content


@pytest.mark.parametrize(
    "key",
    [
        "../outside.txt",
        "a/../../outside.txt",
        "/etc/passwd",
        "a//b",
        "a/./b",
        "a/b/",
        "..",
        ".",
        "",
        ".meta/x.json",
        "a\\..\\b",
        "a/\x00b",
        "x" * 1025,
    ],
)
async def test_local_storage_refuses_keys_that_escape(tmp_path: Path, key: str) -> None:
    root = tmp_path / "media"
    storage = LocalStorage(root)
    await storage.start()
    with pytest.raises(InvalidObjectKey):
        validate_key(key)
    with pytest.raises(InvalidObjectKey):
        await storage.put(key, b"x", "text/plain")
    with pytest.raises(InvalidObjectKey):
        await storage.delete(key)
    assert await storage.get(key) is None
    assert not (tmp_path / "outside.txt").exists()


async def test_local_storage_does_not_follow_links_out(tmp_path: Path) -> None:
    root = tmp_path / "media"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    storage = LocalStorage(root)
    await storage.start()
    (root / "door").symlink_to(outside, target_is_directory=True)
    assert await storage.get("door/secret.txt") is None
    with pytest.raises(InvalidObjectKey):
        await storage.put("door/planted.txt", b"x", "text/plain")
    assert not (outside / "planted.txt").exists()


async def test_local_storage_round_trip(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "media")
    await storage.start()
    assert await storage.ready()
    await storage.put("products/a/b/thumb.webp", b"RIFF-data", "image/webp")
    await storage.put("exports/report", b"a,b\n", "text/csv")
    stored = await storage.get("products/a/b/thumb.webp")
    assert stored is not None
    assert (stored.data, stored.content_type) == (b"RIFF-data", "image/webp")
    report = await storage.get("exports/report")
    assert report is not None
    assert report.content_type == "text/csv"
    await storage.put("products/a/b/thumb.webp", b"other", "image/webp")
    replaced = await storage.get("products/a/b/thumb.webp")
    assert replaced is not None
    assert replaced.data == b"other"
    assert replaced.etag != stored.etag
    # No temporary files are left behind by the atomic writes.
    assert not list((tmp_path / "media").rglob("*.part"))
    await storage.delete("products/a/b/thumb.webp")
    await storage.delete("products/a/b/thumb.webp")
    assert await storage.get("products/a/b/thumb.webp") is None
