"""Shared gRPC server bootstrap: health, reflection, Prometheus metrics, InputError mapping, SIGTERM.

    server = serve([(gateway_pb2_grpc.add_GatewayServiceServicer_to_server, Gateway())],
                   port=grpc_port(50051), service_names=[GATEWAY_SERVICE_NAME])
    start_metrics_server(metrics_port(9101))
    server.wait_for_termination()

Every handler is wrapped so that an InputError becomes INVALID_ARGUMENT with BadRequest details and
each call is counted in likeness_grpc_requests_total{service,method,code} and timed in
likeness_grpc_request_duration_seconds{service,method} (service = the gRPC service's full name,
e.g. likeness.v1.GatewayService). Extra interceptors (e.g. OpenTelemetry) go in `interceptors`;
they run outside the metrics interceptor.
"""
from __future__ import annotations

import hmac
import logging
import signal
import threading
import time
import weakref
from concurrent import futures
from typing import Any, Callable, Iterator, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import Counter, Histogram, start_http_server

from services.common import config

from services.common.infra import deadline
from services.common.infra.grpc_errors import maps_input_errors
from services.common.infra.tracing import mark_error

log = logging.getLogger(__name__)

REQUESTS = Counter("likeness_grpc_requests_total", "gRPC calls handled, by final status code.",
                   ["service", "method", "code"])
DURATION = Histogram("likeness_grpc_request_duration_seconds",
                     "gRPC handler wall time (streams: until the last response).", ["service", "method"],
                     buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
                              120, 300, 600))

AddServicerFn = Callable[[Any, grpc.Server], None]

# server -> its health servicer, for graceful shutdown (weak: tests create many servers).
_HEALTH: "weakref.WeakKeyDictionary[grpc.Server, health.HealthServicer]" = weakref.WeakKeyDictionary()
# server -> its plaintext health-only server (a TLS port's probes: the kubelet's gRPC probe has no TLS).
_HEALTH_ONLY: "weakref.WeakKeyDictionary[grpc.Server, grpc.Server]" = weakref.WeakKeyDictionary()


def grpc_port(default: int) -> int:
    """LIKENESS_GRPC_PORT, else the service's default port."""
    return config.get_int("LIKENESS_GRPC_PORT", default)


def metrics_port(default: int) -> int:
    """LIKENESS_METRICS_PORT, else the service's default port."""
    return config.get_int("LIKENESS_METRICS_PORT", default)


def max_message_bytes() -> int:
    return config.get_int("LIKENESS_GRPC_MAX_MESSAGE_BYTES")


def channel_options() -> list[tuple[str, int]]:
    """Options for client channels talking to Likeness services (message size to match servers)."""
    size = max_message_bytes()
    return [("grpc.max_send_message_length", size), ("grpc.max_receive_message_length", size)]


def _split_method(full_method: str) -> tuple[str, str]:
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service or "unknown", method


def _final_code(context: grpc.ServicerContext, *, failed: bool) -> str:
    code = context.code()
    if code is not None:
        return code.name if isinstance(code, grpc.StatusCode) else str(code)
    if not context.is_active():  # (first: a handler whose caller left may fail reading its requests)
        return _abandoned_code(context)
    if failed:
        return grpc.StatusCode.UNKNOWN.name  # what grpc reports for an unhandled exception
    return grpc.StatusCode.OK.name


def _abandoned_code(context: grpc.ServicerContext) -> str:
    """Why the RPC ended before the handler did: its deadline passed, or the client cancelled."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED.name
    return grpc.StatusCode.CANCELLED.name


INTERNAL_TOKEN_HEADER = "x-likeness-internal-token"
UNGUARDED = ("/grpc.health.v1.Health/", "/grpc.reflection.")  # (probes and tools need no token)


class InternalTokenInterceptor(grpc.ServerInterceptor):
    """With LIKENESS_INTERNAL_TOKEN set, a backend service (tts, expression, render) answers only calls
    that carry it (the gateway's channels add it): reaching the port is not enough to use it."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    def intercept_service(self, continuation, details):
        sent = dict(details.invocation_metadata or ()).get(INTERNAL_TOKEN_HEADER, "")
        if details.method.startswith(UNGUARDED) or hmac.compare_digest(str(sent).encode(), self._token):
            return continuation(details)
        handler = continuation(details)
        if handler is None:
            return None

        def refuse(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "internal service: calls need the internal token")

        kind = ("unary_unary" if handler.unary_unary else "stream_unary" if handler.stream_unary
                else "unary_stream" if handler.unary_stream else "stream_stream")
        make = getattr(grpc, f"{kind}_rpc_method_handler")
        return make(refuse, request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer)


def record_call(service: str, method: str, code: str, started: float) -> None:
    """Counts and times one finished call (`started`: its time.perf_counter()); ERROR on its span."""
    REQUESTS.labels(service, method, code).inc()
    DURATION.labels(service, method).observe(time.perf_counter() - started)
    if code != "OK":  # the OTel grpc instrumentation leaves aborted server spans UNSET
        mark_error(code, f"{service}/{method}")


class MetricsInterceptor(grpc.ServerInterceptor):
    """Counts and times every call, including aborts and streams; maps InputError on the way."""

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Any],
                          handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        service, method = _split_method(handler_call_details.method)
        if handler.unary_unary:
            return handler._replace(unary_unary=self._unary(handler.unary_unary, service, method))
        if handler.stream_unary:
            return handler._replace(stream_unary=self._unary(handler.stream_unary, service, method))
        if handler.unary_stream:
            return handler._replace(unary_stream=self._stream(handler.unary_stream, service, method))
        return handler._replace(stream_stream=self._stream(handler.stream_stream, service, method))

    def _unary(self, fn: Callable, service: str, method: str) -> Callable:
        fn = maps_input_errors(fn)

        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            started, failed = time.perf_counter(), False
            token = deadline.set_remaining(context.time_remaining())
            try:
                return fn(request, context)
            except BaseException:
                failed = True
                raise
            finally:
                deadline.reset(token)
                record_call(service, method, _final_code(context, failed=failed), started)
        return handle

    def _stream(self, fn: Callable, service: str, method: str) -> Callable:
        fn = maps_input_errors(fn)

        def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            started, code = time.perf_counter(), None
            # a generator runs in grpc's context, not a copied one: set per step via the context var
            deadline.set_remaining(context.time_remaining())
            try:
                yield from fn(request, context)
            except GeneratorExit:  # grpc dropped the stream: client cancelled or deadline passed
                code = context.code().name if context.code() else _abandoned_code(context)
                raise
            except BaseException:
                code = _final_code(context, failed=True)
                raise
            finally:
                record_call(service, method, code or _final_code(context, failed=False), started)
        return handle


def serve(servicers: Sequence[tuple[AddServicerFn, Any]], *, port: int, service_names: Sequence[str],
          max_workers: int = 8, interceptors: Sequence[grpc.ServerInterceptor] = (),
          host: str | None = None, handle_sigterm: bool = True,
          credentials: grpc.ServerCredentials | None = None, health_port: int | None = None) -> grpc.Server:
    """Builds, starts and returns a server with health (SERVING for each name and ""), reflection,
    metrics and InputError mapping; TLS when `credentials` are given, and then health checking
    alone also in plaintext on `health_port` (default LIKENESS_HEALTH_PORT; 0: none), served by threads of
    its own, so probes are answered however busy the service's workers are. On SIGTERM (installed only from the main thread) it shuts down
    via stop_gracefully (LIKENESS_SHUTDOWN_DRAIN_S, default 2 s; LIKENESS_SHUTDOWN_GRACE_S, default
    20 s: together under Kubernetes' default 30 s terminationGracePeriodSeconds)."""
    size = max_message_bytes()
    if health_port is None:
        health_port = config.get_int("LIKENESS_HEALTH_PORT")
    host = bind_host() if host is None else host
    token = config.get_str("LIKENESS_INTERNAL_TOKEN")
    guard = [InternalTokenInterceptor(token)] if token else []
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        interceptors=[*guard, *interceptors, MetricsInterceptor()],
        options=[("grpc.max_send_message_length", size), ("grpc.max_receive_message_length", size),
                 # Recycle connections so clients re-resolve and spread over new replicas (HPA
                 # scale-out behind a ClusterIP Service balances per connection, not per call).
                 ("grpc.max_connection_age_ms", config.get_int("LIKENESS_GRPC_MAX_CONNECTION_AGE_S") * 1000),
                 ("grpc.max_connection_age_grace_ms", 600_000)])
    for add_fn, servicer in servicers:
        add_fn(servicer, server)

    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *service_names):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)

    address = f"{host}:{port}"
    bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"cannot bind gRPC port {host}:{port}")
    server.start()
    _HEALTH[server] = health_servicer
    if health_port:
        probes = grpc.server(futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="health"))
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, probes)  # the same states
        if probes.add_insecure_port(f"{host}:{health_port}") == 0:
            server.stop(None)
            raise OSError(f"cannot bind the health port {host}:{health_port}")
        probes.start()
        _HEALTH_ONLY[server] = probes
    if handle_sigterm and threading.current_thread() is threading.main_thread():
        grace = config.get_float("LIKENESS_SHUTDOWN_GRACE_S")
        drain = config.get_float("LIKENESS_SHUTDOWN_DRAIN_S")
        signal.signal(signal.SIGTERM, lambda signum, frame: stop_gracefully(server, grace, drain))
    log.info("gRPC serving %s on %s:%d", ", ".join(service_names), host, port)
    return server


def stop_gracefully(server: grpc.Server, grace_s: float = 20.0, drain_s: float = 0.0) -> threading.Event:
    """Health NOT_SERVING for every service, wait drain_s (probes and load balancers notice while
    calls are still accepted), then refuse new calls and give in-flight ones grace_s to finish.
    Does not block (safe in a signal handler); returns an event set once the server has stopped."""
    stopped = threading.Event()

    def drain_and_stop() -> None:
        health_servicer = _HEALTH.get(server)
        if health_servicer is not None:
            health_servicer.enter_graceful_shutdown()
        time.sleep(drain_s)
        server.stop(grace_s).wait()
        probes = _HEALTH_ONLY.get(server)
        if probes is not None:
            probes.stop(None)
        stopped.set()

    threading.Thread(target=drain_and_stop, name="grpc-shutdown", daemon=True).start()
    return stopped


def bind_host() -> str:
    """LIKENESS_BIND_HOST: loopback unless configured (the manifests bind 0.0.0.0 in their pods)."""
    return config.get_str("LIKENESS_BIND_HOST") or "127.0.0.1"


def start_metrics_server(port: int, addr: str | None = None) -> int:
    """Serves Prometheus /metrics on addr:port (default LIKENESS_BIND_HOST) in a daemon thread; returns
    the bound port (port 0 picks one)."""
    httpd, _thread = start_http_server(port, addr=bind_host() if addr is None else addr)
    return int(httpd.server_port)
