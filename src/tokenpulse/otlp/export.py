"""An OTLP export's body as the events of its usage spans, each valid or rejected with its
reasons: the decoder `POST /v1/traces` hands the ingest intake."""

from tokenpulse.errors import PayloadTooLarge
from tokenpulse.ingest.events import Checking, Event
from tokenpulse.ingest.validation import Rejection, Validated
from tokenpulse.otlp.attributes import Reading
from tokenpulse.otlp.calls import counted_spans
from tokenpulse.otlp.spans import checked_event, event_id_of
from tokenpulse.otlp.wire import Encoding, decoded_request


def export_events(
    body: bytes, encoding: Encoding, checking: Checking, *, reading: Reading, max_events: int
) -> Validated:
    """Every counted usage span of the export, in order, as its event or its rejection; the
    index of a rejection is the span's among them. Spans that are not usage spans, or that add
    up others, become nothing.

    Raises `BadRequest` for a body that is not an export and `PayloadTooLarge` for one with more
    than `max_events` usage spans, or past the bounds of `wire.py`.
    """
    spans = counted_spans(decoded_request(body, encoding, reading.wanted), reading)
    if len(spans) > max_events:
        raise PayloadTooLarge(
            f"the body holds more than {max_events:,} usage spans; at most {max_events:,} are "
            "accepted at once"
        )
    validated = Validated()
    for index, usage in enumerate(spans):
        checked = checked_event(usage, reading, checking)
        if isinstance(checked, Event):
            validated.events.append(checked)
        else:
            validated.rejections.append(Rejection(index, event_id_of(usage.span), checked))
    return validated
