"""Files shipped in a package's `static` folder, served with a content security policy and an
ETag, and revalidated on every load."""

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from hashlib import sha256
from importlib.resources import files
from pathlib import PurePosixPath

from fastapi import Request, Response

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
    # Licence and notice files.
    "": "text/plain; charset=utf-8",
}


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    media_type: str
    etag: str


class StaticFiles:
    """The files `names` (paths under the package's `static` folder, `/`-separated), each read
    once: they cannot change while the process runs."""

    def __init__(self, package: str, names: Iterable[str], *, content_security_policy: str) -> None:
        self._package = package
        self._names = frozenset(names)
        self._content_security_policy = content_security_policy
        self._read = cache(self._read_file)

    def serve(self, request: Request, name: str) -> Response:
        """The file `name`, one of `names`; 304 when the client has it already."""
        if name not in self._names:
            raise KeyError(name)
        served = self._read(name)
        headers = {
            "Content-Security-Policy": self._content_security_policy,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            # Revalidated on every load, so that an upgraded service is never shown with old
            # files.
            "Cache-Control": "no-cache",
            "ETag": served.etag,
        }
        if request.headers.get("if-none-match") == served.etag:
            return Response(status_code=304, headers=headers)
        return Response(served.body, media_type=served.media_type, headers=headers)

    def _read_file(self, name: str) -> StaticFile:
        body = files(self._package).joinpath("static", *name.split("/")).read_bytes()
        return StaticFile(
            body=body,
            media_type=MEDIA_TYPES[PurePosixPath(name).suffix],
            etag=f'"{sha256(body).hexdigest()[:32]}"',
        )
