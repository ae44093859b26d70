"""Routes of product images: upload and removal (admin), and serving the stored files."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from starlette.datastructures import UploadFile

from panthera.catalog import errors, images, presenters, service
from panthera.catalog.deps import Catalog
from panthera.catalog.schemas import ImageOut
from panthera.kernel.errors import InvalidInput
from panthera.kernel.security.permissions import AdminPrincipal, public

log = logging.getLogger("panthera.catalog.media")

router = APIRouter()
Responses = dict[int | str, dict[str, Any]]

MAX_ALT_LENGTH = 300
# A key names one upload's bytes for ever (a new upload gets new keys), so any
# cache may keep a copy for a year without asking again.
IMMUTABLE = "public, max-age=31536000, immutable"

_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "A JPEG, PNG, WebP or GIF image.",
                        },
                        "alt": {
                            "type": "string",
                            "maxLength": MAX_ALT_LENGTH,
                            "description": "What the picture shows, for screen readers.",
                        },
                    },
                }
            }
        },
    }
}


@router.post(
    "/products/{productId}/images",
    status_code=201,
    response_model=ImageOut,
    tags=["Images"],
    summary="Add an image to a product (Admin only)",
    openapi_extra=_UPLOAD_BODY,
    responses={
        400: {"description": "Not a supported image, or no file"},
        401: {"description": "Unauthorized"},
        403: {"description": "Forbidden"},
        404: {"description": "Not found"},
        413: {"description": "The image is too large"},
    },
)
async def upload_image(
    productId: uuid.UUID, request: Request, catalog: Catalog, _admin: AdminPrincipal
) -> ImageOut:
    """A multipart upload (field ``file``, optional ``alt``), stored in four sizes as WebP.

    The image is checked by its content, turned upright, stripped of its metadata
    (EXIF, GPS position, colour profiles) and resized to ``thumb``, ``medium``,
    ``large`` and ``original``; the answer has the URL of each.
    """
    # Read the body only now, once the caller is known to be an administrator.
    async with catalog.read_session() as session:
        await service.active_product(session, productId)
    form = await request.form(max_files=1, max_fields=4, max_part_size=4 * MAX_ALT_LENGTH)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidInput("Send the image as the multipart field 'file'.", field="file")
        alt = form.get("alt") or ""
        if not isinstance(alt, str) or len(alt.strip()) > MAX_ALT_LENGTH:
            raise InvalidInput(
                f"'alt' is text of at most {MAX_ALT_LENGTH} characters.", field="alt"
            )
        data = await upload.read(catalog.max_image_bytes + 1)
    finally:
        await form.close()
    image_id = uuid.uuid4()
    processed = await images.process_upload(
        data, product_id=productId, image_id=image_id, max_bytes=catalog.max_image_bytes
    )
    await images.store(catalog.storage, processed)
    try:
        async with catalog.uow() as uow:
            image = await service.add_image(
                uow,
                productId,
                image_id=image_id,
                keys=processed.keys,
                width=processed.width,
                height=processed.height,
                alt=alt.strip(),
            )
            await uow.commit()
    except BaseException:
        # The product went away meanwhile (or the database failed): no orphan files.
        await images.discard(catalog.storage, processed.objects)
        raise
    return presenters.image_out(image, catalog.media_prefix)


@router.delete(
    "/products/{productId}/images/{imageId}",
    status_code=204,
    tags=["Images"],
    summary="Remove an image from a product (Admin only)",
    responses={
        401: {"description": "Unauthorized"},
        403: {"description": "Forbidden"},
        404: {"description": "Not found"},
    },
)
async def delete_image(
    productId: uuid.UUID, imageId: uuid.UUID, catalog: Catalog, _admin: AdminPrincipal
) -> Response:
    """The image leaves the product, and its stored files are deleted."""
    async with catalog.uow() as uow:
        image = await service.remove_image(uow, productId, imageId)
        await uow.commit()
    # Only once the row is gone: a failed commit must not lose files still in use.
    await images.discard(catalog.storage, image.keys.values())
    return Response(status_code=204)


def _matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` names this ETag (weak comparison, RFC 9110)."""
    if not if_none_match:
        return False
    wanted = etag.removeprefix("W/")
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == wanted:
            return True
    return False


@router.get(
    "/media/{key:path}",
    tags=["Images"],
    summary="A stored image file",
    dependencies=[Depends(public)],
    response_class=Response,
    # The gateway publishes files at /media, not under the API's /api/v1.
    openapi_extra={"servers": [{"url": "/", "description": "The gateway's root"}]},
    responses={
        200: {
            "description": "The file",
            "content": {"image/webp": {"schema": {"type": "string", "format": "binary"}}},
        },
        304: {"description": "Not modified: the copy named in If-None-Match is current"},
        404: {"description": "Not found"},
    },
)
async def media(key: str, request: Request, catalog: Catalog) -> Response:
    """The bytes under a key, cacheable for a year: a key's content never changes."""
    stored = await catalog.storage.get(key)
    if stored is None:
        raise errors.MediaNotFound()
    headers = {"Cache-Control": IMMUTABLE, "ETag": stored.etag}
    if _matches(request.headers.get("if-none-match"), stored.etag):
        return Response(status_code=304, headers=headers)
    return Response(stored.data, media_type=stored.content_type, headers=headers)
