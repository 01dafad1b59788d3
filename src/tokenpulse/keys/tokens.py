"""API key secrets, `tp_<id>_<secret>`: made, read back from a request, checked against a hash."""

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

# The id finds the stored record; the secret proves possession. Secrets are 256 random bits,
# so a plain SHA-256 stores them safely: a slow password hash would protect nothing more and
# cost every request.

PREFIX = "tp_"
KEY_ID = re.compile(r"[0-9a-f]{16}")
_TOKEN = re.compile(r"tp_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")


@dataclass(frozen=True)
class NewSecret:
    key_id: str
    token: str
    secret_hash: bytes


def new_secret() -> NewSecret:
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return NewSecret(key_id, f"{PREFIX}{key_id}_{secret}", digest(secret))


def parse_token(token: str) -> tuple[str, str] | None:
    """The key id and secret of a well-formed key, or None."""
    match = _TOKEN.fullmatch(token)
    return (match.group(1), match.group(2)) if match else None


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def secret_matches(secret: str, secret_hash: bytes) -> bool:
    """Compared in constant time, so that timing tells nothing about how much was right."""
    return hmac.compare_digest(digest(secret), secret_hash)
