"""`/docs` and `/redoc`: the API's documentation pages and the files they run, all from this
package, with headers that let them talk only to this service."""

from fastapi import APIRouter, Request, Response

from tokenpulse.errors import NotFound
from tokenpulse.static_files import StaticFiles

router = APIRouter(include_in_schema=False)

SWAGGER_PAGE = "docs.html"
REDOC_PAGE = "redoc.html"
FILES = (
    "swagger-init.js",
    "swagger-ui/swagger-ui-bundle.js",
    "swagger-ui/swagger-ui.css",
    "swagger-ui/swagger-ui-bundle.js.LICENSE.txt",
    "swagger-ui/LICENSE",
    "swagger-ui/NOTICE",
    "redoc/redoc.standalone.js",
    "redoc/redoc.standalone.js.LICENSE.txt",
    "redoc/LICENSE",
)
# The dashboard's policy, with what the two viewers need and nothing from another host: Swagger
# UI's stylesheet draws its icons from data: URLs; ReDoc styles itself with <style> elements it
# makes, an empty one that it fills through the CSSOM (which no policy governs) and one with its
# scrollbars' rules, each allowed by its hash; and ReDoc searches in a worker made from a blob.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self' 'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=' "
        "'sha256-QMIg+bpjm3JdElJ388KYke01izlUW0UoNOeKjpMxdgc='",
        "img-src 'self' data:",
        "connect-src 'self'",
        "worker-src blob:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)

STATIC = StaticFiles(
    "tokenpulse.apidocs",
    (SWAGGER_PAGE, REDOC_PAGE, *FILES),
    content_security_policy=CONTENT_SECURITY_POLICY,
)


@router.get("/docs")
async def swagger_page(request: Request) -> Response:
    return STATIC.serve(request, SWAGGER_PAGE)


@router.get("/redoc")
async def redoc_page(request: Request) -> Response:
    return STATIC.serve(request, REDOC_PAGE)


@router.get("/docs/{name:path}")
async def docs_file(name: str, request: Request) -> Response:
    if name not in FILES:
        raise NotFound("the API documentation has no such file")
    return STATIC.serve(request, name)
