"""OpenAI's names for tokenpulse's dimensions, and what an OpenAI-style read adds up: one tenant,
narrowed by the plural filters and grouped by the fields tokenpulse has."""

from collections.abc import Iterable, Mapping, Sequence

from tokenpulse.errors import InvalidParameters, Problem
from tokenpulse.openai_usage.organization import ORGANIZATION_HEADER
from tokenpulse.rollups.selection import Selection, parse_selection


def openai_selection(
    organization: str,
    group_by: Iterable[str],
    filters: Mapping[str, Sequence[str] | None],
    *,
    groups: Mapping[str, str],
    filtered: Mapping[str, str],
) -> Selection:
    """The tenant `organization`'s usage, narrowed by `filters` (values by OpenAI's name of each,
    None for one not given) and grouped by `group_by`; `groups` and `filtered` map OpenAI's
    names to tokenpulse's dimensions. A field of `group_by` that `groups` lacks is one
    tokenpulse has no data for: it groups nothing, and answers null."""
    given = {filtered[name]: values for name, values in filters.items() if values is not None}
    try:
        chosen = parse_selection(None, {**given, "tenant": [organization]})
    except InvalidParameters as refused:
        names = {dimension: name for name, dimension in filtered.items()}
        names["tenant"] = ORGANIZATION_HEADER
        raise InvalidParameters.listing(
            [
                Problem(names.get(problem.field or "", problem.field), problem.message)
                for problem in refused.problems
            ]
        ) from None
    # OpenAI takes a field named twice as named once.
    dimensions = dict.fromkeys(groups[field] for field in group_by if field in groups)
    return Selection(tuple(dimensions), chosen.filters)
