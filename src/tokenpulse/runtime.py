"""What a request may ask of the worker it runs in: each shared object the lifespan creates,
set and read through one typed `Shared` slot, and the dependencies routes declare for them."""

from typing import Annotated, Generic, TypeVar

from fastapi import Depends, FastAPI, Header, Request, Response
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenpulse.arrival import BodyTimeouts
from tokenpulse.clock import Clock
from tokenpulse.metrics import Metrics
from tokenpulse.replica import ReadRouting, Reads
from tokenpulse.settings import Settings

T = TypeVar("T")


class Shared(Generic[T]):
    """One object of the worker's, shared by its requests: the lifespan `provide`s it, and a
    route gets it by declaring `Depends(slot.read)`, typed as the slot is."""

    def __init__(self, name: str) -> None:
        self.name = name

    def provide(self, app: FastAPI, value: T) -> None:
        setattr(app.state, self.name, value)

    async def read(self, request: Request) -> T:
        # async: FastAPI runs a plain def dependency in a thread pool, a costly hop for a
        # lookup.
        value: T = getattr(request.app.state, self.name)
        return value


SETTINGS = Shared[Settings]("settings")
ENGINE = Shared[AsyncEngine]("engine")
CLOCK = Shared[Clock]("clock")
BODY_TIMEOUTS = Shared[BodyTimeouts]("body_timeouts")
METRICS = Shared[Metrics]("metrics")

AppSettings = Annotated[Settings, Depends(SETTINGS.read)]
RequestEngine = Annotated[AsyncEngine, Depends(ENGINE.read)]
"""The pool of requests' own statements, reads and small writes; ingest has its own."""
WallClock = Annotated[Clock, Depends(CLOCK.read)]
Timeouts = Annotated[BodyTimeouts, Depends(BODY_TIMEOUTS.read)]
"""How long a request body may take to arrive."""
WorkerMetrics = Annotated[Metrics, Depends(METRICS.read)]

READ_ROUTING = Shared[ReadRouting]("read_routing")
READ_FROM_HEADER = "Tokenpulse-Read-From"
"""The answer's header that says which database answered a dashboard's read."""


async def dashboard_reads(
    response: Response,
    routing: Annotated[ReadRouting, Depends(READ_ROUTING.read)],
    consistency: Annotated[
        str | None,
        Header(
            alias="Tokenpulse-Consistency",
            pattern="^primary$",
            description="`primary`: read the database itself, never a replica, so that the "
            "answer holds every event acknowledged before it was asked (read-your-writes).",
        ),
    ] = None,
) -> Reads:
    def tell(source: str) -> None:
        response.headers[READ_FROM_HEADER] = source

    return routing.reads(primary=consistency == "primary", told=tell)


DashboardReads = Annotated[Reads, Depends(dashboard_reads)]
"""Where a dashboard's read goes: a replica that is close enough behind, unless the request asks
for the primary; the answer says which in `Tokenpulse-Read-From`."""
