"""`/` and `/dashboard/{name}`: the dashboard's page and files, with headers that let the page
run only its own script and talk only to this service."""

from fastapi import APIRouter, Request, Response

from tokenpulse.errors import NotFound
from tokenpulse.static_files import StaticFiles

router = APIRouter(include_in_schema=False)

PAGE = "index.html"
FILES = ("dashboard.js", "dashboard.css", "favicon.svg")
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

STATIC = StaticFiles(
    "tokenpulse.dashboard", (PAGE, *FILES), content_security_policy=CONTENT_SECURITY_POLICY
)


@router.get("/")
async def dashboard_page(request: Request) -> Response:
    return STATIC.serve(request, PAGE)


@router.get("/dashboard/{name}")
async def dashboard_file(name: str, request: Request) -> Response:
    if name not in FILES:
        raise NotFound("the dashboard has no such file")
    return STATIC.serve(request, name)
