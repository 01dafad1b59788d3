"""What an aggregate adds up: the dimensions to group by and the values each may take."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tokenpulse.errors import InvalidParameters, Problem
from tokenpulse.tables import ROLLUP_COUNTS, ROLLUP_DIMENSIONS
from tokenpulse.text import STRING_MAX, text_problem


@dataclass(frozen=True)
class Selection:
    """What to add up: the dimensions to group by, and the values each dimension may take."""

    group_by: tuple[str, ...] = ()
    filters: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def dimensions(self) -> tuple[str, ...]:
        """The filtered dimensions in a fixed order: part of a cached statement's shape."""
        return tuple(sorted(self.filters))

    @property
    def matches_nothing(self) -> bool:
        """Whether some dimension may take no value at all (another tenant's, for a bound key)."""
        return any(not values for values in self.filters.values())

    def for_tenant(self, tenant: str | None) -> "Selection":
        """This selection as a key bound to `tenant` may see it: that tenant's usage only."""
        if tenant is None:
            return self
        asked = self.filters.get("tenant")
        allowed = (tenant,) if asked is None or tenant in asked else ()
        return Selection(self.group_by, {**self.filters, "tenant": allowed})


def parse_selection(group_by: str | None, filters: Mapping[str, Sequence[str]]) -> Selection:
    problems: list[Problem] = []
    names: list[str] = []
    for name in (part.strip() for part in (group_by or "").split(",")):
        if not name:
            continue
        if name not in ROLLUP_DIMENSIONS:
            problems.append(
                Problem("group_by", f"{name!r} is not one of {', '.join(ROLLUP_DIMENSIONS)}")
            )
        elif name in names:
            problems.append(Problem("group_by", f"{name!r} is named more than once"))
        else:
            names.append(name)
    for dimension, values in filters.items():
        for value in values:
            if not value or len(value) > STRING_MAX:
                problems.append(Problem(dimension, f"must be 1 to {STRING_MAX} characters"))
            elif (problem := text_problem(value)) is not None:
                problems.append(Problem(dimension, problem))
    if problems:
        raise InvalidParameters.listing(problems)
    return Selection(
        tuple(names),
        {dimension: tuple(values) for dimension, values in filters.items() if values},
    )


MEASURES = (*ROLLUP_COUNTS, "total_tokens")


def measures_of(counts: Sequence[int]) -> dict[str, int]:
    """The seven measures from the six counts, in ROLLUP_COUNTS order."""
    measures = dict(zip(ROLLUP_COUNTS, counts, strict=True))
    measures["total_tokens"] = measures["input_tokens"] + measures["output_tokens"]
    return measures
