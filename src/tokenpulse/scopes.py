"""What a key may do: its scope, and which scopes a route's needs are met by."""

from enum import StrEnum


class Scope(StrEnum):
    INGEST = "ingest"
    READ = "read"
    ADMIN = "admin"

    def allows(self, needed: "Scope") -> bool:
        """`admin` may do everything; `ingest` and `read` only what they name."""
        return self is Scope.ADMIN or self is needed
