"""What the command line prints of stored text: no stored value comes out raw, and none can add
a column or a line to a listing."""

from collections.abc import Iterable


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
