"""Product images: checking an upload, cleaning it and making the standard sizes.

An upload is trusted for nothing: its type is read from its content (Pillow, never
the file name or the declared type), only JPEG, PNG, WebP and GIF are accepted, and
its pixel count is checked before anything is decoded (decompression bombs). The
picture is then turned upright (EXIF orientation), brought to sRGB and re-encoded
from pixels alone, which drops every piece of metadata: EXIF (with GPS position and
camera serial numbers), XMP, comments and colour profiles.

Each image is stored as WebP in four sizes: ``thumb`` (200 px on its longer side),
``medium`` (600), ``large`` (1200) and ``original`` (capped at 2400). A size the
picture is too small for points at the next larger one rather than being upscaled
or stored twice. Keys are ``products/<product id>/<image id>/<size>.webp``: new for
every upload, so what a key holds never changes and can be cached forever.

The work is CPU-bound and runs in a worker thread, at most one per core at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from panthera.catalog import errors
from panthera.kernel.storage import ObjectStorage

log = logging.getLogger("panthera.catalog.images")

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")
# Largest side of each stored size, from the largest down.
ORIGINAL_MAX_SIDE = 2400
SIZES: tuple[tuple[str, int], ...] = (
    ("original", ORIGINAL_MAX_SIDE),
    ("large", 1200),
    ("medium", 600),
    ("thumb", 200),
)
# 40 megapixels decode to 160 MB of RGBA: more than any product photo needs.
MAX_PIXELS = 40_000_000
CONTENT_TYPE = "image/webp"
EXTENSION = "webp"
QUALITY = 82
# libwebp's effort, 0 (fastest) to 6 (smallest); 4 is its default.
EFFORT = 4

# Decoding and encoding take memory and a core each: no more at once than cores.
_WORKERS = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@dataclass(frozen=True)
class ProcessedImage:
    """The stored sizes of one upload: key by size name, and the bytes of each key."""

    width: int
    height: int
    source_format: str
    keys: dict[str, str]
    objects: dict[str, bytes] = field(repr=False)


def image_key(product_id: uuid.UUID, image_id: uuid.UUID, size: str) -> str:
    return f"products/{product_id}/{image_id}/{size}.{EXTENSION}"


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise errors.InvalidImage("The image has no pixels.")
    if width * height > max_pixels:
        raise errors.ImageTooLarge(
            f"The image is {width}x{height} pixels; at most {max_pixels // 1_000_000}"
            " megapixels are accepted."
        )


def _decode(data: bytes, max_pixels: int) -> tuple[Image.Image, str]:
    """The first frame of an accepted image, loaded; refusals as catalog errors."""
    try:
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as probe:
            source_format = str(probe.format)
            _check_pixels(probe.size, max_pixels)
            probe.verify()
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
        _check_pixels(image.size, max_pixels)
        if source_format == "JPEG":
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the photo is far
            # larger than the largest size kept: much less time and memory.
            image.draft("RGB", (ORIGINAL_MAX_SIDE, ORIGINAL_MAX_SIDE))
        image.load()
    except (errors.ImageTooLarge, errors.InvalidImage):
        raise
    except Image.DecompressionBombError as exc:
        raise errors.ImageTooLarge("The image has too many pixels.") from exc
    except UnidentifiedImageError as exc:
        raise errors.InvalidImage(
            "The file is not a JPEG, PNG, WebP or GIF image.", field="file"
        ) from exc
    except Exception as exc:
        # Truncated or corrupt data fails in many ways inside the decoders.
        raise errors.InvalidImage("The image is damaged or incomplete.", field="file") from exc
    return image, source_format


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in {"RGBA", "LA", "PA", "RGBa", "La"} or (
        image.mode == "P" and "transparency" in image.info
    )


def _is_srgb(profile: ImageCms.ImageCmsProfile) -> bool:
    with contextlib.suppress(Exception):
        return "srgb" in ImageCms.getProfileDescription(profile).lower()
    return False


def _to_srgb(image: Image.Image) -> Image.Image:
    """RGB or RGBA pixels in sRGB, whatever the mode and embedded profile were."""
    target = "RGBA" if _has_alpha(image) else "RGB"
    icc = image.info.get("icc_profile")
    if icc and image.mode in {"RGB", "RGBA", "CMYK", "L"}:
        try:
            profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            if not _is_srgb(profile):
                source = image if image.mode != "L" else image.convert("RGB")
                if target == "RGBA" and source.mode != "RGBA":
                    source = source.convert("RGBA")
                converted = ImageCms.profileToProfile(source, profile, _SRGB, outputMode=target)
                if converted is not None:
                    return converted
        except Exception:
            # A broken profile is dropped: the pixels are then read as sRGB.
            log.info("ignoring an unusable colour profile", exc_info=True)
    return image if image.mode == target else image.convert(target)


def _upright(image: Image.Image) -> Image.Image:
    try:
        turned = ImageOps.exif_transpose(image)
    except Exception:
        # Cameras write odd EXIF; a picture left as it is beats a refused upload.
        return image
    return turned if turned is not None else image


def _fit(image: Image.Image, side: int) -> Image.Image:
    width, height = image.size
    if max(width, height) <= side:
        return image
    scale = side / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _encode(image: Image.Image, quality: int, effort: int) -> bytes:
    # Nothing from the source's metadata may travel along: only pixels are written.
    image.info = {}
    out = io.BytesIO()
    image.save(out, format="WEBP", quality=quality, method=effort, exact=False)
    return out.getvalue()


def process(
    data: bytes,
    *,
    product_id: uuid.UUID,
    image_id: uuid.UUID,
    max_bytes: int,
    max_pixels: int = MAX_PIXELS,
    quality: int = QUALITY,
    effort: int = EFFORT,
) -> ProcessedImage:
    """Check, clean and resize one upload (blocking: call ``process_upload`` from async code)."""
    if len(data) > max_bytes:
        raise errors.ImageTooLarge(f"The image may be at most {max_bytes} bytes.")
    if not data:
        raise errors.InvalidImage("The file is empty.", field="file")
    with _WORKERS:
        image, source_format = _decode(data, max_pixels)
        try:
            picture = _to_srgb(_upright(image))
        except Exception as exc:
            raise errors.InvalidImage("The image could not be read.", field="file") from exc
        finally:
            image.close()
        keys: dict[str, str] = {}
        objects: dict[str, bytes] = {}
        current = picture
        current_key: str | None = None
        width = height = 0
        for name, side in SIZES:
            smaller = _fit(current, side)
            if smaller is not current or current_key is None:
                current = smaller
                current_key = image_key(product_id, image_id, name)
                objects[current_key] = _encode(current, quality, effort)
            if name == "original":
                width, height = current.size
            keys[name] = current_key
    return ProcessedImage(
        width=width, height=height, source_format=source_format, keys=keys, objects=objects
    )


async def process_upload(
    data: bytes,
    *,
    product_id: uuid.UUID,
    image_id: uuid.UUID,
    max_bytes: int,
    effort: int = EFFORT,
) -> ProcessedImage:
    """``process`` in a worker thread, so the event loop keeps serving."""
    return await asyncio.to_thread(
        process,
        data,
        product_id=product_id,
        image_id=image_id,
        max_bytes=max_bytes,
        effort=effort,
    )


async def store(storage: ObjectStorage, processed: ProcessedImage) -> None:
    """Write every size; on a failure, remove what was written and raise."""
    written: list[str] = []
    try:
        for key, data in processed.objects.items():
            await storage.put(key, data, CONTENT_TYPE)
            written.append(key)
    except BaseException:
        await discard(storage, written)
        raise


async def discard(storage: ObjectStorage, keys: Iterable[str]) -> None:
    """Remove stored objects, best effort: a leftover object is only wasted space."""
    for key in sorted(set(keys)):
        try:
            await storage.delete(key)
        except Exception:
            log.warning("could not delete a stored image", extra={"key": key}, exc_info=True)
