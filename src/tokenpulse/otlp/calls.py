"""Which spans of an export are model calls to count: the usage spans, but not one that adds up
the usage of spans below it.

Instrumentations put usage on more than the call: Pydantic AI's agent run and n8n's or Strands'
`invoke_agent` spans sum their calls' counts, OpenInference's chains may carry their LLM spans'
counts, and an application's own span that LiteLLM fills in wraps the call's span another
instrumentation made. Counting both would count the tokens twice, so a usage span is counted
only if

- no span below it in the same export (of the same trace, through spans of any kind) has a
  token count: the innermost usage spans are the calls, and
- it carries none of the `TOKENPULSE_OTLP_ROLLUP_SPANS` marks (`gen_ai.operation.name`
  `invoke_agent`, `openinference.span.kind` `AGENT` or `CHAIN` by default): a span that says it
  adds up its calls is passed over even when they were exported before it, as a batch processor
  does with the calls of a long agent run.

A span that sums its calls without saying so, exported after them, is counted: no export tells
what earlier ones held.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tokenpulse.otlp.attributes import COUNT_NAMES, Attributes, Reading, present

SpanKey = tuple[bytes, bytes]
"""(trace id, span id)."""


@dataclass(frozen=True, slots=True)
class UsageSpan:
    """A span with a token count, and what its event may be read from."""

    span: Span
    attributes: Attributes
    resource: Attributes


def counted_spans(request: ExportTraceServiceRequest, reading: Reading) -> list[UsageSpan]:
    """The export's usage spans that are calls, in the order they came."""
    parents: dict[SpanKey, bytes] = {}
    carriers: list[UsageSpan] = []
    for resource_spans in request.resource_spans:
        resource = _read(resource_spans.resource.attributes, reading)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                parents[span.trace_id, span.span_id] = span.parent_span_id
                attributes = _read(span.attributes, reading)
                if any(present(attributes[name]) for name in COUNT_NAMES & attributes.keys()):
                    carriers.append(UsageSpan(span, attributes, resource))
    summing = _above(carriers, parents)
    return [
        carrier
        for carrier in carriers
        if (carrier.span.trace_id, carrier.span.span_id) not in summing
        and not _marked(carrier.attributes, reading)
    ]


def _read(attributes: Iterable[KeyValue], reading: Reading) -> Attributes:
    wanted = reading.wanted
    return {kv.key: kv.value for kv in attributes if kv.key in wanted}


def _above(carriers: list[UsageSpan], parents: dict[SpanKey, bytes]) -> set[SpanKey]:
    """Every span of the export that has a usage span below it."""
    above: set[SpanKey] = set()
    for carrier in carriers:
        trace_id, parent = carrier.span.trace_id, carrier.span.parent_span_id
        # Each span is walked up from once: the walk stops at the first span already known to
        # be above a usage span, and so ends even on ids that loop.
        while parent and (key := (trace_id, parent)) in parents and key not in above:
            above.add(key)
            parent = parents[key]
    return above


def _marked(attributes: Attributes, reading: Reading) -> bool:
    for name, value in reading.rollups:
        attribute = attributes.get(name)
        if attribute is not None and attribute.string_value == value:
            return True
    return False
