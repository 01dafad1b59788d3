"""A client for gateways that send usage to tokenpulse and cannot lose an event.

    from tokenpulse.client import Client

    with Client("http://127.0.0.1:8000", key) as tokenpulse:
        tokenpulse.record(model="gpt-5.2", input_tokens=1200, output_tokens=800, tenant="acme")

`record` returns at once; the events go to `POST /v1/events` in the background, gzipped, in
batches of `batch_size` (1,000) or of what `max_wait` (1 s) gathered. `AsyncClient` is the same
for an event loop (`await tokenpulse.record(...)`). Each recorded event ends as exactly one of:

- **accepted** or **duplicate**: the server has stored it (`counts`);
- **rejected**: the server refused it for good (a rule it breaks, or alone it is still too
  large): `on_rejected(Rejected)` with the event and the server's problems, and a warning on
  the `tokenpulse.client` logger;
- **undelivered**: the server refused the request itself (401, 403, 400, 404, 415...: a wrong
  key, scope or URL), no answer came within `Retries.give_up_after`, or `close(timeout)` or the
  exit gave it up: `on_undelivered(Undelivered)` with the events and why, and an error on the
  logger. Sending them again with the same ids is always safe.

Without an answer (429, 503, 500, 502, 504, 408, a timeout, a dropped connection) the same
events go again with the same ids, which the server stores once: after Retry-After when the
server sends one, else after an exponential backoff with jitter (`Retries`), for as long as it
takes unless `Retries.give_up_after` says otherwise. A 413 cuts the batch in halves.

The client holds at most `max_buffered_events` unanswered events; `record` on a full buffer
waits up to `block_timeout` for room (`when_full="block"`) or not at all (`"raise"`), then
raises `BufferFull`, and the event is the caller's to keep. `flush()` waits for the answers to
everything recorded so far (and for their callbacks); `close()` flushes and stops, and
`close(give_up_after=s)` gives up what is still unanswered after s seconds; the end of a `with`
block closes, and so does the interpreter's exit for a client left open, giving up after
`exit_timeout` seconds.

Token counts left at 0 are not sent, which the server reads as 0: so a server from before
`cache_write_input_tokens` takes every event that does not use it.
"""

from tokenpulse.client.async_client import AsyncClient
from tokenpulse.client.errors import BufferFull, ClientClosed
from tokenpulse.client.reports import Counts, Problem, Rejected, Undelivered
from tokenpulse.client.retries import Retries
from tokenpulse.client.sync_client import Client

__all__ = [
    "AsyncClient",
    "BufferFull",
    "Client",
    "ClientClosed",
    "Counts",
    "Problem",
    "Rejected",
    "Retries",
    "Undelivered",
]
