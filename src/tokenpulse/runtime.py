"""The objects one worker process shares between requests, created and closed by the lifespan."""

from dataclasses import dataclass

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenpulse.clock import Clock
from tokenpulse.ingest.admission import BodyBudget
from tokenpulse.ingest.batcher import Batcher
from tokenpulse.ingest.events import EventRules
from tokenpulse.keys.registry import KeyRegistry
from tokenpulse.metrics import Metrics
from tokenpulse.ratelimit import RateLimits, TokenBuckets
from tokenpulse.readiness import CommitProbe
from tokenpulse.rollups.materialiser import Materialiser
from tokenpulse.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    batcher: Batcher
    materialiser: Materialiser
    body_budget: BodyBudget
    event_rules: EventRules
    keys: KeyRegistry
    rate_limits: RateLimits
    event_rate: TokenBuckets | None
    """Events a second per account (see `ingest.router.account_of`); None: unlimited."""
    metrics: Metrics
    clock: Clock
    commit_probe: CommitProbe
    head_revision: str | None
    shutting_down: bool = False


async def get_runtime(request: Request) -> Runtime:
    # async: FastAPI runs a plain def dependency in a thread pool, a costly hop for a lookup.
    runtime: Runtime = request.app.state.runtime
    return runtime
