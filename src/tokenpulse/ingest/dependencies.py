"""What ingest needs of its worker, one typed dependency each."""

from typing import Annotated

from fastapi import Depends

from tokenpulse.ingest.admission import BodyBudget
from tokenpulse.ingest.batcher import Batcher
from tokenpulse.ingest.events import EventRules
from tokenpulse.ratelimit import TokenBuckets
from tokenpulse.runtime import Shared

BATCHER = Shared[Batcher]("batcher")
BODY_BUDGET = Shared[BodyBudget]("body_budget")
EVENT_RULES = Shared[EventRules]("event_rules")
EVENT_RATE = Shared[TokenBuckets | None]("event_rate")

WorkerBatcher = Annotated[Batcher, Depends(BATCHER.read)]
Budget = Annotated[BodyBudget, Depends(BODY_BUDGET.read)]
"""The bytes of bodies being read that the worker may hold, by account."""
Rules = Annotated[EventRules, Depends(EVENT_RULES.read)]
EventRate = Annotated[TokenBuckets | None, Depends(EVENT_RATE.read)]
"""Events a second per account (see `auth.account_of`); None: unlimited."""
