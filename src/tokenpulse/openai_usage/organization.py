"""Which tenant an OpenAI-style read is of: the key's own, or the one a platform key names in the
`OpenAI-Organization` header."""

from tokenpulse.errors import Forbidden, InvalidParameters

ORGANIZATION_HEADER = "OpenAI-Organization"


def organization_of(key_tenant: str | None, named: str | None) -> str:
    """The tenant read by a key bound to `key_tenant` (None: a platform key) that names `named`
    (None: no header)."""
    if key_tenant is None:
        if named is None:
            raise InvalidParameters.of(
                ORGANIZATION_HEADER,
                "is required with a platform key: name the tenant to read, as OpenAI's SDK "
                "does with OpenAI(organization=...)",
            )
        return named
    if named is not None and named != key_tenant:
        raise Forbidden(
            f"this key reads its own tenant only, which is not the one {ORGANIZATION_HEADER} names"
        )
    return key_tenant
