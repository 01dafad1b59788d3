"""`/v1/organization/usage/completions`: tokenpulse's measures per bucket in the fields of OpenAI's
completions usage result."""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.errors import InvalidParameters
from tokenpulse.openai_usage.dimensions import openai_selection
from tokenpulse.openai_usage.page_sums import page_groups
from tokenpulse.openai_usage.pages import Page, page_answer
from tokenpulse.rollups.selection import Selection

GROUPS = {"project_id": "project", "api_key_id": "api_key_id", "model": "model"}
"""The group_by fields tokenpulse has data for; `user_id`, `batch`, `service_tier` and
`api_source` group nothing and answer null."""
FILTERS = {"project_ids": "project", "api_key_ids": "api_key_id", "models": "model"}


def completions_selection(
    organization: str,
    group_by: Iterable[str],
    filters: Mapping[str, Sequence[str] | None],
    *,
    user_ids: Sequence[str] | None,
    batch: bool | None,
) -> Selection:
    """What to add up. Events carry no user id and no batch flag: a filter on either could only
    answer nothing or everything, both wrongly, so it is refused."""
    if user_ids is not None:
        raise InvalidParameters.of(
            "user_ids", "cannot match: tokenpulse's usage events carry no user id"
        )
    if batch is not None:
        raise InvalidParameters.of(
            "batch", "cannot match: tokenpulse's usage events do not say which were batch jobs"
        )
    return openai_selection(organization, group_by, filters, groups=GROUPS, filtered=FILTERS)


async def completions_page(
    connection: AsyncConnection, selection: Selection, page: Page, *, most: int
) -> dict[str, Any]:
    buckets = await page_groups(connection, selection, page.bounds, most=most)
    results = [[completions_result(group) for group in groups] for groups in buckets]
    return page_answer(page, results)


def completions_result(group: Mapping[str, Any]) -> dict[str, Any]:
    """One group's measures as OpenAI's result has them: its input tokens include cached and
    cache-write ones, as tokenpulse's do; what events do not say (audio, the user, batch, the
    service tier, the source) is null."""
    cached, written = group["cached_input_tokens"], group["cache_write_input_tokens"]
    return {
        "object": "organization.usage.completions.result",
        "input_tokens": group["input_tokens"],
        "output_tokens": group["output_tokens"],
        "input_cached_tokens": cached,
        "input_cache_write_tokens": written,
        "input_uncached_tokens": group["input_tokens"] - cached - written,
        "input_audio_tokens": None,
        "output_audio_tokens": None,
        "num_model_requests": group["requests"],
        "project_id": group.get("project"),
        "user_id": None,
        "api_key_id": group.get("api_key_id"),
        "model": group.get("model"),
        "batch": None,
        "service_tier": None,
        "api_source": None,
    }
