"""`/` and `/dashboard/{name}`: the dashboard's page and files, with headers that let the page
run only its own script and talk only to this service."""

from dataclasses import dataclass
from functools import cache
from hashlib import sha256
from importlib.resources import files
from pathlib import PurePosixPath

from fastapi import APIRouter, Request, Response

from tokenpulse.errors import NotFound

router = APIRouter(include_in_schema=False)

PAGE = "index.html"
FILES = ("dashboard.js", "dashboard.css", "favicon.svg")
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# No inline script or style, nothing from another origin, no framing: the page's own files and
# its calls to this service's API are all it may use.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    media_type: str
    etag: str


@cache
def static_file(name: str) -> StaticFile:
    """A file shipped in the package, read once: it cannot change while the process runs."""
    body = files("tokenpulse.dashboard").joinpath("static", name).read_bytes()
    return StaticFile(
        body=body,
        media_type=MEDIA_TYPES[PurePosixPath(name).suffix],
        etag=f'"{sha256(body).hexdigest()[:32]}"',
    )


@router.get("/")
async def dashboard_page(request: Request) -> Response:
    return _serve(request, PAGE)


@router.get("/dashboard/{name}")
async def dashboard_file(name: str, request: Request) -> Response:
    if name not in FILES:
        raise NotFound("the dashboard has no such file")
    return _serve(request, name)


def _serve(request: Request, name: str) -> Response:
    served = static_file(name)
    headers = {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        # Revalidated on every load, so that an upgraded service is never shown with old files.
        "Cache-Control": "no-cache",
        "ETag": served.etag,
    }
    if request.headers.get("if-none-match") == served.etag:
        return Response(status_code=304, headers=headers)
    return Response(served.body, media_type=served.media_type, headers=headers)
