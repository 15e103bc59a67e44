"""OpenTelemetry: one trace from the gateway through tts/expression/render to the Triton calls.

Exporters come from env: OTEL_EXPORTER_OTLP_ENDPOINT (OTLP/gRPC, production) and/or
LIKENESS_TRACE_FILE (JSON lines, one span per line: handy locally and used by the tests).
With neither set, spans are still created (ids propagate) but not exported.
"""
from __future__ import annotations

import contextlib
import json
import os
import threading
from typing import Iterator, Mapping, Sequence

import grpc
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

from services.common import config

_configured = False
_lock = threading.Lock()


class JsonLinesExporter(SpanExporter):
    """Appends finished spans to a file, one JSON object per line (safe across processes: O_APPEND)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for s in spans:
            ctx = s.get_span_context()
            lines.append(json.dumps({
                "name": s.name,
                "service": s.resource.attributes.get("service.name"),
                "trace_id": format(ctx.trace_id, "032x"),
                "span_id": format(ctx.span_id, "016x"),
                "parent_id": format(s.parent.span_id, "016x") if s.parent else None,
                "kind": s.kind.name,
                "status": s.status.status_code.name,
                "status_description": s.status.description,
                "start_ns": s.start_time, "end_ns": s.end_time,
                "attributes": {k: v for k, v in (s.attributes or {}).items()
                               if isinstance(v, (str, int, float, bool))},
            }))
        if lines:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
        return SpanExportResult.SUCCESS


def configure(service_name: str) -> None:
    """Install the tracer provider once per process, with exporters chosen by env."""
    global _configured
    with _lock:
        if _configured:
            return
        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        trace_file = config.get_str("LIKENESS_TRACE_FILE")
        if trace_file:
            provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(trace_file)))
        if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            # (optional: only when OTEL_EXPORTER_OTLP_ENDPOINT is set)
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        _configured = True


def tracer() -> trace.Tracer:
    return trace.get_tracer("likeness")


@contextlib.contextmanager
def span(name: str, attributes: Mapping[str, str | int | float | bool] | None = None) -> Iterator[trace.Span]:
    """A span that records ERROR status when the block raises (the grpc instrumentation leaves UNSET)."""
    with tracer().start_as_current_span(name, attributes=dict(attributes or {}),
                                        record_exception=True, set_status_on_exception=False) as current:
        try:
            yield current
        except BaseException as exc:
            current.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise


def inject_headers(headers: dict[str, str]) -> dict[str, str]:
    """Adds W3C traceparent/tracestate of the current span to outgoing metadata."""
    propagate.inject(headers)
    return headers


def extract_context(metadata: Sequence[tuple[str, str | bytes]] | None):
    return propagate.extract({k: v for k, v in (metadata or ()) if isinstance(v, str)})


def mark_error(code_name: str, message: str) -> None:
    """Set ERROR on the current (server) span, e.g. before context.abort()."""
    trace.get_current_span().set_status(Status(StatusCode.ERROR, f"{code_name}: {message}"))


def grpc_server_interceptors() -> list:
    """Server-side span per call, parented by the caller's traceparent metadata."""
    # (~0.3 s with pkg_resources: a server needs it once, at start; this module's clients never)
    from opentelemetry.instrumentation.grpc import server_interceptor

    return [server_interceptor()]


def aio_server_interceptors() -> list:
    """grpc_server_interceptors for a grpc.aio server (the gateway)."""
    from opentelemetry.instrumentation.grpc import aio_server_interceptor  # (as above)

    return [aio_server_interceptor()]


def traced_channel(channel: grpc.Channel) -> grpc.Channel:
    """Wraps a channel so every call opens a client span and sends W3C traceparent metadata.

    A plain grpc interceptor rather than OTel's grpcext one: grpcext turns streaming calls into
    bare generators, which lose `cancel()` (the gateway cancels renders of cancelled jobs)."""
    return grpc.intercept_channel(channel, _TracingClientInterceptor())


class _TracingClientInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                                grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    def _call(self, continuation, details, request):
        name = details.method.lstrip("/")
        with tracer().start_as_current_span(name, kind=SpanKind.CLIENT,
                                            attributes={"rpc.system": "grpc", "rpc.method": name}) as current:
            metadata = [*(details.metadata or ()), *inject_headers({}).items()]
            response = continuation(details._replace(metadata=metadata), request)  # grpc's details are a namedtuple
            code = response.code() if hasattr(response, "done") and response.done() else None
            if code is not None and code.name != "OK":
                current.set_status(Status(StatusCode.ERROR, f"{code.name}: {response.details()}"))
            return response

    intercept_unary_unary = _call
    intercept_unary_stream = _call
    intercept_stream_unary = _call
    intercept_stream_stream = _call
