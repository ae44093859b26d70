"""OpenTelemetry traces: a span per request served and per event consumed.

The W3C ``traceparent`` already travels with every request (header) and every event
(outbox column, AMQP header); each span continues the one it arrived with and hands
its own on, so one trace follows a request through the gateway, the services and the
broker. Spans are exported over OTLP/HTTP when ``PANTHERA_OTLP_ENDPOINT`` is set;
otherwise nothing is recorded and the incoming ``traceparent`` is passed on as is.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.environment_variables import OTEL_PYTHON_TRACER_PROVIDER
from opentelemetry.trace import ProxyTracer, Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

_propagator = TraceContextTextMapPropagator()
_tracer = trace.get_tracer("panthera")
# Whether spans go anywhere: set by configure_tracing, or by OpenTelemetry's own
# environment variable naming a provider. Kept here because asking OpenTelemetry
# costs an environment lookup, too much for every request.
_configured = OTEL_PYTHON_TRACER_PROVIDER in os.environ


def configure_tracing(service: str, *, endpoint: str, sample_ratio: float = 1.0) -> bool:
    """Export this process's spans to the OTLP/HTTP collector at ``endpoint``; False if none.

    Traces that arrive sampled stay sampled, so a trace is whole or absent; new
    ones are kept with probability ``sample_ratio``.
    """
    global _configured
    if not endpoint:
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create({"service.name": f"panthera-{service}"}),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces"))
    )
    trace.set_tracer_provider(provider)
    _configured = True
    return True


def recording() -> bool:
    """Whether spans go anywhere: a provider was configured, or a tracer given directly.

    When none is, a span would be a no-op that passes the incoming ``traceparent``
    on unchanged, so a request's path may skip building one.
    """
    return _configured or not isinstance(_tracer, ProxyTracer)


@contextmanager
def continue_trace(
    name: str,
    *,
    kind: SpanKind,
    traceparent: str | None,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> Iterator[tuple[Span, str | None]]:
    """A span that continues ``traceparent``; yields it and the ``traceparent`` to pass on."""
    parent = _propagator.extract({"traceparent": traceparent}) if traceparent else None
    with _tracer.start_as_current_span(
        name, context=parent, kind=kind, attributes=attributes
    ) as span:
        carrier: dict[str, str] = {}
        _propagator.inject(carrier)
        yield span, carrier.get("traceparent", traceparent)
