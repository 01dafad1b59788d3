"""`POST /v1/traces`, and `/v1/metrics` and `/v1/logs` refused: the HTTP face of OTLP.

OTLP/HTTP answers every error with a `google.rpc.Status` in the request's encoding, the refusal
of a key included, which is raised before the route's own code runs: the routes here are
`OtlpRoute`s, which render any service error so, and every other route keeps the one JSON
shape. A failure that is no service error (a fault of tokenpulse's own) is left to the
application's handlers, which log it.
"""

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.routing import APIRoute

from tokenpulse.auth import Caller, require
from tokenpulse.error_handlers import database_outage
from tokenpulse.errors import ServiceError
from tokenpulse.ingest.events import Checking
from tokenpulse.ingest.intake import WorkerIntake
from tokenpulse.ingest.validation import Validated
from tokenpulse.openapi import needs_key
from tokenpulse.otlp.answers import export_answer, status_answer, trace_responses, traces_body
from tokenpulse.otlp.attributes import Reading
from tokenpulse.otlp.export import export_events
from tokenpulse.otlp.wire import answer_encoding, encoded, is_gzipped, request_encoding
from tokenpulse.scopes import Scope


class OtlpRoute(APIRoute):
    """A route whose service errors, from its dependencies too, answer as OTLP/HTTP's do."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def otlp_handler(request: Request) -> Response:
            try:
                return await handle(request)
            except ServiceError as error:
                return _status_response(request, error)
            except Exception as error:
                # A database outage, met by a dependency (the key's lookup) as much as by the
                # route, is a retryable 503 like any other; every other failure is a 500.
                if (unavailable := database_outage(request, error)) is None:
                    raise
                return _status_response(request, unavailable)

        return otlp_handler


def _status_response(request: Request, error: ServiceError) -> Response:
    encoding = answer_encoding(request.headers.get("content-type"))
    return Response(
        encoded(status_answer(error), encoding),
        status_code=error.status,
        headers=error.headers,
        media_type=encoding.value,
    )


class SignalNotKept(ServiceError):
    """A signal tokenpulse takes no usage from."""

    status = 501
    code = "not_implemented"


router = APIRouter(tags=["ingest"], route_class=OtlpRoute)


@router.post(
    "/v1/traces",
    operation_id="exportTraces",
    summary="Send OpenTelemetry traces",
    description="An OTLP/HTTP `ExportTraceServiceRequest`, as protobuf or OTLP JSON, maybe "
    "gzipped: the endpoint an OpenTelemetry exporter or collector sends its traces to. Each span "
    "with a GenAI token count that is a model call becomes one usage event, `<trace id>:<span "
    "id>`, stored once; other spans are passed over. The answer is in the request's encoding: "
    "an `ExportTraceServiceResponse` whose `partialSuccess` counts the rejected usage spans and "
    "says why, or a `google.rpc.Status`. After a 429 or 503, send the same export again once "
    "`Retry-After` has passed; no other error is worth retrying.",
    responses=trace_responses(),
    openapi_extra=traces_body() | needs_key(Scope.INGEST),
)
async def post_traces(
    request: Request,
    caller: Annotated[Caller, Depends(require(Scope.INGEST))],
    intake: WorkerIntake,
) -> Response:
    encoding = request_encoding(request.headers.get("content-type"))
    gzipped = is_gzipped(request.headers.get("content-encoding"))
    reading = Reading.of(intake.settings)
    max_events = intake.settings.max_events_per_request

    def decode(body: bytes, checking: Checking) -> Validated:
        return export_events(body, encoding, checking, reading=reading, max_events=max_events)

    result = await intake.take(request, caller, gzipped=gzipped, decode=decode)
    return Response(encoded(export_answer(result), encoding), media_type=encoding.value)


# tokenpulse keeps usage, which traces carry; a collector sending it every signal is told so,
# in an answer it neither retries nor counts as delivered. The body is never read.
_NOT_KEPT = (
    "tokenpulse keeps no {signal}: it takes token usage from traces, at POST /v1/traces; "
    "send {signal} elsewhere"
)


@router.post("/v1/metrics", include_in_schema=False)
async def post_metrics(caller: Annotated[Caller, Depends(require(Scope.INGEST))]) -> Response:
    raise SignalNotKept(_NOT_KEPT.format(signal="metrics"))


@router.post("/v1/logs", include_in_schema=False)
async def post_logs(caller: Annotated[Caller, Depends(require(Scope.INGEST))]) -> Response:
    raise SignalNotKept(_NOT_KEPT.format(signal="logs"))
