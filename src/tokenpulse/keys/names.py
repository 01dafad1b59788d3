"""Key names and tenants as an operator reads them in a terminal: no control character is
accepted into one, and none stored before comes out raw."""

import re
from collections.abc import Iterable

# C0 and C1 controls and DEL (newlines, tabs, escape sequences), and the Unicode line and
# paragraph separators, which some viewers also break lines at.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def control_problem(value: str) -> str | None:
    """Why `value` cannot name a key or its tenant, or None when it can."""
    found = _CONTROL.search(value)
    if found is None:
        return None
    return (
        f"must not contain control characters such as newlines or tabs "
        f"(U+{ord(found.group()):04X} at position {found.start()})"
    )


def printable(value: str) -> str:
    """`value` with every character that is not printable, and the backslash, escaped as in
    Python (`\\n`, `\\t`, `\\x1b`, `\\u2028`): one line, and the same text read back."""
    if value.isprintable() and "\\" not in value:
        return value
    return "".join(
        char if char.isprintable() and char != "\\" else char.encode("unicode_escape").decode()
        for char in value
    )


def listing_row(values: Iterable[str | None]) -> str:
    """One tab-separated line of a listing, `-` for a missing value: no value can add a column
    or a line."""
    return "\t".join(printable(value) if value else "-" for value in values)
