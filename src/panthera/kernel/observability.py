"""Structured JSON logs carrying request and trace ids, and Prometheus metrics."""

from __future__ import annotations

import json as stdlib_json
import logging
import sys
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

import orjson
import structlog
from prometheus_client import Counter, Gauge, Histogram

_request_id: ContextVar[str | None] = ContextVar("panthera_request_id", default=None)
_traceparent: ContextVar[str | None] = ContextVar("panthera_traceparent", default=None)

# Fields a log line must never carry, whatever a caller passes.
_SECRET_KEYS = frozenset(
    {
        "password",
        "new_password",
        "current_password",
        "token",
        "access_token",
        "refresh_token",
        "authorization",
        "secret",
        "code_verifier",
        "cookie",
    }
)


def current_request_id() -> str | None:
    """The id of the request being served, if any."""
    return _request_id.get()


def set_request_id(value: str | None) -> None:
    """Bind the request id for log lines and problem bodies."""
    _request_id.set(value)


def current_traceparent() -> str | None:
    """The W3C trace context of the request being served, if any."""
    return _traceparent.get()


def set_traceparent(value: str | None) -> None:
    """Bind the trace context that outgoing calls and events carry on."""
    _traceparent.set(value)


def _add_context(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    request_id = _request_id.get()
    if request_id and "request_id" not in event:
        event["request_id"] = request_id
    traceparent = _traceparent.get()
    if traceparent and "trace_id" not in event:
        parts = traceparent.split("-")
        if len(parts) == 4:
            event["trace_id"] = parts[1]
    return event


def _redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key.lower() in _SECRET_KEYS:
            event[key] = "[redacted]"
    return event


_STANDARD_RECORD_KEYS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
}


def _record_extras(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    record = event.get("_record")
    if record is not None:
        for key, value in record.__dict__.items():
            if key not in _STANDARD_RECORD_KEYS and not key.startswith("_"):
                event.setdefault(key, value)
    return event


def _dumps(event: Any, **_options: Any) -> str:
    # Every request writes an access line: orjson renders it several times faster
    # than the json module. What orjson refuses (integers past 64 bits) still logs.
    try:
        return orjson.dumps(event, default=repr, option=orjson.OPT_NON_STR_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):
        return stdlib_json.dumps(event, default=repr)


def configure_logging(level: str = "INFO", *, json: bool = True) -> None:
    """Route stdlib and structlog logs to stdout, one JSON object per line."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_context,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if json
        else structlog.dev.ConsoleRenderer()
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, _record_extras],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "aiormq", "aio_pika", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


HTTP_REQUESTS = Counter(
    "panthera_http_requests_total",
    "HTTP requests served",
    ["service", "method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "panthera_http_request_duration_seconds",
    "Time to serve an HTTP request",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
OUTBOX_PENDING = Gauge(
    "panthera_outbox_pending_events", "Outbox rows not yet delivered", ["service"]
)
OUTBOX_LAG = Gauge(
    "panthera_outbox_lag_seconds", "Age of the oldest undelivered outbox row", ["service"]
)
EVENTS_CONSUMED = Counter(
    "panthera_events_consumed_total",
    "Events applied or skipped by consumers",
    ["consumer", "event_type", "outcome"],
)
SAGA_STEPS = Counter(
    "panthera_saga_steps_total",
    "Saga steps performed, by step and outcome (done, retry)",
    ["step", "outcome"],
)
SAGA_PENDING = Gauge(
    "panthera_saga_pending_orders",
    "Orders whose saga still has a step to do, by step",
    ["step"],
)
SAGA_OLDEST_DUE = Gauge(
    "panthera_saga_oldest_due_seconds",
    "How long the most overdue saga step has been waiting",
)
PAYMENTS_RECONCILED = Counter(
    "panthera_payments_reconciled_total",
    "Payments and refunds moved by asking the provider after its webhook did not come, "
    "by kind (payment, refund) and the status reached",
    ["kind", "status"],
)
QUEUE_DEPTH = Gauge(
    "panthera_queue_depth_messages",
    "Messages waiting in a consumer's broker queue (dead-letter queues end in .dlq)",
    ["queue"],
)
CIRCUIT_STATE = Gauge(
    "panthera_circuit_state",
    "Circuit breaker state per service replica address: 0 closed, 1 half-open, 2 open",
    ["service", "address"],
)
