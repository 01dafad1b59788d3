"""What `record` raises when an event cannot be taken."""


class BufferFull(Exception):
    """The client already holds as many unanswered events as it may: the event was not
    recorded, and is the caller's to keep."""


class ClientClosed(RuntimeError):
    """The client was closed: it records no more events."""
