"""Structured logs: one JSON object per line on stdout, for both services.

:func:`configure_logging` is called once, first thing, by each entry point. It puts a single
handler on the standard library's root logger whose formatter is structlog's
``ProcessorFormatter``, so the records of uvicorn, ARQ, asyncio and our own ``logging`` calls go
through the same JSON renderer as structlog's loggers. Every line has ``timestamp`` (ISO 8601,
UTC), ``level``, ``event``, ``logger`` and ``service``, plus whatever is bound in structlog's
context variables at the time: the gateway binds ``request_id`` per request, the worker binds
``job_id``, ``job_name`` and ``request_id`` per job.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
import traceback
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from services.core.serialization import json_bytes

Service = Literal["gateway", "jobs"]


def _service_adder(service: Service) -> Processor:
    def add_service(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        event_dict["service"] = service
        return event_dict

    return add_service


def json_formatter(service: Service) -> structlog.stdlib.ProcessorFormatter:
    """The formatter that renders any log record, structlog's or the standard library's, as one JSON line."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(service),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )


def _shared_processors(service: Service) -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        _service_adder(service),
    ]


def direct_logger(service: Service, name: str, *, level: int = logging.INFO) -> DirectLogger:
    """A logger for a hot path: the same JSON line as every other, written straight to stdout.

    Its lines carry the same fields as every other line (context variables included) but skip the
    standard library's ``LogRecord`` and formatter, and structlog's processor chain: either one
    makes the gateway's access line a sizeable share of its CPU time on the 202 path. Lines below
    ``level`` are dropped.
    """
    return DirectLogger(service, name, level=level)


class DirectLogger:
    """``info(event, **fields)`` and the other levels' methods, each writing one JSON line.

    The line holds ``fields``, ``event``, structlog's context variables (a field of the same name
    wins), ``level``, ``logger``, ``timestamp`` (ISO 8601, UTC) and ``service``: what structlog's
    ``merge_contextvars``, ``add_log_level``, ``TimeStamper`` and ``JSONRenderer`` make of it, in
    the same order. ``exception`` adds the current exception's traceback as ``exception``.
    """

    def __init__(self, service: Service, name: str, *, level: int = logging.INFO) -> None:
        self._service = service
        self._name = name
        for method, method_level in _LEVELS.items():
            if method_level < level:
                setattr(self, method, _drop)

    def _write(self, level: str, event: str, fields: dict[str, Any]) -> None:
        line = fields
        line["event"] = event
        for var, value in contextvars.copy_context().items():
            if var.name.startswith(_CONTEXT_PREFIX) and value is not Ellipsis:
                line.setdefault(var.name[_CONTEXT_PREFIX_LENGTH:], value)
        line["level"] = level
        line["logger"] = self._name
        line["timestamp"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        line["service"] = self._service
        _write_line(one_line(json_bytes(line, default=_json_fallback)))

    def debug(self, event: str, **fields: Any) -> None:
        self._write("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._write("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._write("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._write("error", event, fields)

    def critical(self, event: str, **fields: Any) -> None:
        self._write("critical", event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        fields.setdefault("exception", traceback.format_exc())
        self._write("error", event, fields)


_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
}
_CONTEXT_PREFIX = structlog.contextvars.STRUCTLOG_KEY_PREFIX
_CONTEXT_PREFIX_LENGTH = len(_CONTEXT_PREFIX)


def _drop(event: str, **fields: Any) -> None:
    """A level below the logger's: nothing is written."""


def _json_fallback(obj: Any) -> Any:
    """What structlog's ``JSONRenderer`` does with what JSON cannot hold: ``__structlog__()``, else ``repr``."""
    try:
        return obj.__structlog__()
    except AttributeError:
        return repr(obj)


_LINE_BREAKS = ((b"\xc2\x85", b"\\u0085"), (b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"))
"""Characters JSON leaves unescaped that Python's ``str.splitlines`` (and other readers) break lines at."""


def one_line(rendered: bytes) -> bytes:
    """``rendered`` JSON with NEL, LINE SEPARATOR and PARAGRAPH SEPARATOR escaped: one line for every reader.

    A client's value (a request path, a header) can hold them; left raw, a reader that splits lines
    at them would cut the record in two, and its second half could pass for a line of its own.
    """
    for raw, escaped in _LINE_BREAKS:
        if raw in rendered:
            rendered = rendered.replace(raw, escaped)
    return rendered


def _write_line(line: bytes) -> None:
    """Write a line to whatever ``sys.stdout`` is at the time (a test may swap it), flushed."""
    stream = sys.stdout
    buffer = getattr(stream, "buffer", None)
    if buffer is None:
        stream.write(line.decode() + "\n")
        stream.flush()
        return
    buffer.write(line + b"\n")
    buffer.flush()


def configure_logging(service: Service, *, level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Send every log record of this process to ``stream`` (stdout) as JSON lines tagged with ``service``."""
    structlog.configure(
        processors=[
            *_shared_processors(service),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(json_formatter(service))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    # Warnings and errors Python would print to stderr by itself become log records too.
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
    sys.unraisablehook = _log_unraisable


def _log_uncaught(exc_type: type[BaseException], exc: BaseException, traceback: TracebackType | None) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, traceback)
        return
    logging.getLogger("afterword").critical("uncaught exception", exc_info=(exc_type, exc, traceback))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None:
        return
    thread = args.thread.name if args.thread is not None else "?"
    logging.getLogger("afterword").error(
        "uncaught exception in thread %s", thread, exc_info=(args.exc_type, args.exc_value, args.exc_traceback)
    )


def _log_unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    exc_info = None
    if unraisable.exc_value is not None:
        exc_info = (unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback)
    logging.getLogger("afterword").error(
        "%s: %r", unraisable.err_msg or "Exception ignored in", unraisable.object, exc_info=exc_info
    )
