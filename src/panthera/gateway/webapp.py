"""The built single-page web app, served by the gateway next to the API.

Vite names every file under ``assets/`` by a hash of its content, so those may be
cached for a year; ``index.html`` names the current ones and must be revalidated
on every load. Any other path that looks like a page (no file extension) is one of
the app's own client-side routes and gets ``index.html`` too, which is what lets a
shared link or a reload land on the right page.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from starlette.responses import FileResponse
from starlette.types import Receive, Scope, Send

from panthera.kernel.http.problems import problem_response

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
# Files outside assets/ (favicon, robots.txt) keep their names across releases.
SHORT = "public, max-age=3600"
ASSETS_DIR = "assets"
# Smallest first: what a client accepts is tried in this order.
_ENCODINGS = (("br", ".br"), ("gzip", ".gz"))


def content_security_policy(media_url_prefix: str) -> str:
    """The app loads nothing but its own files, plus product images where they live."""
    images = ["'self'", "data:", "blob:"]
    media = urlsplit(media_url_prefix)
    if media.scheme and media.netloc:
        images.append(f"{media.scheme}://{media.netloc}")
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {' '.join(images)}",
            "connect-src 'self'",
            "font-src 'self'",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


class WebApp:
    """Serves ``root`` (Vite's ``dist``) for every GET that is not the API's."""

    def __init__(self, root: Path, *, reserved: Iterable[str], csp: str) -> None:
        self.root = root.resolve()
        # First path segments that belong to the API and operations: never the app's,
        # so a mistyped API path answers a problem, not a web page.
        self.reserved = frozenset(segment.lower() for segment in reserved)
        self.csp = csp

    @property
    def index(self) -> Path:
        return self.root / "index.html"

    def available(self) -> bool:
        """Whether the app has been built (checked per request: a build may come later)."""
        return self.index.is_file()

    def handles(self, scope: Scope) -> bool:
        """Whether this request is the web app's to answer."""
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            return False
        first = scope["path"].lstrip("/").split("/", 1)[0].lower()
        return first not in self.reserved and self.available()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        relative = path.lstrip("/")
        if "\\" in path or any(part in (".", "..") for part in relative.split("/")):
            await problem_response(400, "invalid_path", "Invalid path", instance=path)(
                scope, receive, send
            )
            return
        found = self._file(relative)
        if found is not None and found != self.index:
            in_assets = relative.startswith(ASSETS_DIR + "/")
            await self._send_file(found, IMMUTABLE if in_assets else SHORT, scope, receive, send)
            return
        last = relative.rsplit("/", 1)[-1]
        if relative.startswith(ASSETS_DIR + "/") or ("." in last and found is None):
            # A missing script must fail loudly, not arrive as HTML that the
            # browser then refuses to run.
            await problem_response(404, "not_found", "Not Found", instance=path)(
                scope, receive, send
            )
            return
        await self._send_file(self.index, REVALIDATE, scope, receive, send, page=True)

    def _file(self, relative: str) -> Path | None:
        if not relative or any(part.startswith(".") for part in relative.split("/")):
            return None
        candidate = (self.root / relative).resolve()
        if not candidate.is_relative_to(self.root) or not candidate.is_file():
            return None
        if candidate.suffix in (".br", ".gz"):
            return None
        return candidate

    async def _send_file(
        self,
        file: Path,
        cache_control: str,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        page: bool = False,
    ) -> None:
        media_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        if media_type.startswith("text/") or media_type in (
            "application/javascript",
            "text/javascript",
        ):
            media_type += "; charset=utf-8"
        headers = {"Cache-Control": cache_control, "Vary": "Accept-Encoding"}
        if page:
            headers["Content-Security-Policy"] = self.csp
        accepted = _accepted_encodings(scope)
        body = file
        for encoding, suffix in _ENCODINGS:
            compressed = file.with_name(file.name + suffix)
            if encoding in accepted and compressed.is_file():
                body = compressed
                headers["Content-Encoding"] = encoding
                break
        response = FileResponse(body, media_type=media_type, headers=headers)
        await response(scope, receive, send)


def _accepted_encodings(scope: Scope) -> set[str]:
    for key, value in scope["headers"]:
        if key == b"accept-encoding":
            return {
                part.split(";", 1)[0].strip().lower()
                for part in value.decode("latin-1").split(",")
                if not part.strip().endswith(";q=0")
            }
    return set()
