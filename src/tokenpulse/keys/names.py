"""Key names and tenants: no control character is accepted into one (and `tokenpulse.terminal`
shows none stored before raw)."""

import re

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
