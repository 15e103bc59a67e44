"""The gateway on grpc.aio: a held WatchJob, upload or live stream costs no thread.

GatewayServicer (server.py) keeps the API's logic in plain, blocking code. This front serves it on an
asyncio server: unary calls and each step of a video stream run in a bounded thread pool, while what
waits on the caller or on a job (a WatchJob between changes, an upload between chunks, a stream's
response being sent) waits in the event loop. So health checks, GetJob and SubmitVideo answer however
many streams are open. Each call is authenticated (API keys), counted in the request metrics, and a
domain error becomes its status here, once, for every method:

- an upload or a LiveVideo that sends nothing for LIKENESS_STREAM_IDLE_S is closed (DEADLINE_EXCEEDED),
  its thread and places freed; a live caller is silent only while the gateway waits for its next
  message and the speech it sent has played (it listens meanwhile), and its header is read in the
  event loop, so a caller silent from the start holds no thread;
- one principal may hold at most LIKENESS_MAX_STREAMS_PER_PRINCIPAL open streams on a replica
  (WatchJob, UploadAsset, StreamVideo, LiveVideo); more is RESOURCE_EXHAUSTED with RetryInfo.
"""
from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, Callable

import grpc
from grpc_health.v1 import _async as health_async, health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common import config

from services.common.infra import deadline, grpc_errors
from services.common.domain.errors import InputError
from services.common.infra.grpc_server import (bind_host, grpc_port, max_message_bytes, metrics_port, record_call,
                                               start_metrics_server)
from services.common.infra.tracing import aio_server_interceptors, configure
from likeness_client.proto.likeness.v1 import gateway_pb2 as gw, gateway_pb2_grpc
from services.gateway import assets, auth
from services.gateway.server import STAGES, GatewayServicer, build

log = logging.getLogger(__name__)
SERVICE = "likeness.v1.GatewayService"
_DONE = object()


class _Abort(Exception):
    """What context.abort means, raised where the blocking code runs and sent from the event loop."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing: tuple = ()) -> None:
        super().__init__(details)
        self.code, self.details, self.trailing = code, details, trailing


class _Raises:
    """context.abort / abort_with_status as _Abort (what grpc_errors' helpers call)."""

    def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise _Abort(code, details)

    def abort_with_status(self, status: Any) -> None:
        raise _Abort(status.code, status.details, tuple(status.trailing_metadata or ()))


class SyncContext(_Raises):
    """The part of a grpc.ServicerContext the blocking servicer uses, for an aio call."""

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self._context = context
        self._metadata = tuple(context.invocation_metadata() or ())
        self._deadline = None if context.time_remaining() is None else time.monotonic() + context.time_remaining()
        self._ended = threading.Event()
        context.add_done_callback(lambda _: self.end())

    @property
    def active(self) -> bool:
        return not self._ended.is_set()

    def is_active(self) -> bool:
        return self.active

    def end(self) -> None:
        """The call is over for the blocking side (the caller went away, or the call finished)."""
        self._ended.set()

    def wait_ended(self, timeout_s: float) -> bool:
        return self._ended.wait(timeout_s)

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def invocation_metadata(self) -> tuple:
        return self._metadata

    def code(self) -> None:
        return None


def _as_abort(exc: Exception) -> _Abort:
    """A domain error (InputError, NotFound, ...) as the status grpc_errors gives it."""
    try:
        grpc_errors.abort_for(_Raises(), exc)
    except _Abort as abort:
        return abort
    raise AssertionError("abort_for returned")


class AsyncGateway(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self, servicer: GatewayServicer, *, keys: auth.ApiKeys | None = None, threads: int = 32) -> None:
        self.sync = servicer
        self.keys = keys
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="gateway")
        self.idle_s = config.get_float("LIKENESS_STREAM_IDLE_S")
        self.max_streams_per_principal = config.get_int("LIKENESS_MAX_STREAMS_PER_PRINCIPAL")
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()

    # -- plumbing --------------------------------------------------------------------------------

    async def _blocking(self, fn: Callable, *args: Any) -> Any:
        """fn(*args) on the pool, with this call's context variables (principal, deadline)."""
        ctx = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self.pool, functools.partial(ctx.run, fn, *args))

    def _principal(self, context: grpc.aio.ServicerContext) -> str:
        try:
            return auth.authenticate(self.keys, context.invocation_metadata())
        except auth.Unauthenticated as exc:
            raise _Abort(grpc.StatusCode.UNAUTHENTICATED, str(exc)) from None

    def _hold_stream(self, principal: str) -> None:
        with self._lock:
            if self._open[principal] < self.max_streams_per_principal:
                self._open[principal] += 1
                return
        try:
            grpc_errors.resource_exhausted(
                _Raises(), f"{self.max_streams_per_principal} streams are open for this caller (limit per "
                "principal); close one or retry later", retry_after_s=2.0, subject="streams-per-principal")
        except _Abort as abort:
            raise abort from None

    def _release_stream(self, principal: str) -> None:
        with self._lock:
            self._open[principal] -= 1
            if self._open[principal] <= 0:
                del self._open[principal]

    async def _unary(self, method: str, body: Callable, request: Any, context: grpc.aio.ServicerContext) -> Any:
        started, code = time.perf_counter(), "OK"
        deadline.set_remaining(context.time_remaining())
        try:
            auth._principal.set(self._principal(context))
            return await body(request, SyncContext(context))
        except BaseException as exc:
            code, abort = self._status_of(exc)
            if abort is None:
                raise
        finally:
            record_call(SERVICE, method, code, started)
        await context.abort(abort.code, abort.details, abort.trailing)

    async def _stream(self, method: str, body: Callable, request: Any,
                      context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        started, code, principal, held = time.perf_counter(), "OK", None, False
        deadline.set_remaining(context.time_remaining())
        try:
            principal = self._principal(context)
            auth._principal.set(principal)
            self._hold_stream(principal)
            held = True
            async for response in body(request, SyncContext(context)):
                yield response
            return
        except BaseException as exc:
            code, abort = self._status_of(exc)
            if abort is None:
                raise
        finally:
            if held:
                self._release_stream(principal)
            record_call(SERVICE, method, code, started)
        await context.abort(abort.code, abort.details, abort.trailing)

    @staticmethod
    def _status_of(exc: BaseException) -> tuple[str, _Abort | None]:
        """The status an exception ends the call with, and the abort that sends it (None: let it
        propagate: the caller went away, or a bug, which grpc reports as UNKNOWN)."""
        if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
            return "CANCELLED", None
        if isinstance(exc, grpc_errors.DOMAIN_ERRORS):
            exc = _as_abort(exc)
        if isinstance(exc, _Abort):
            return exc.code.name, exc
        log.error("gateway call failed", exc_info=exc)
        return "UNKNOWN", None

    async def _steps(self, responses, context: SyncContext) -> AsyncIterator[Any]:
        """A blocking response generator stepped on the pool; closed (its cleanup run) if the caller goes."""
        ctx, step = contextvars.copy_context(), None
        try:
            while True:
                step = self.pool.submit(ctx.run, next, responses, _DONE)
                item = await asyncio.wrap_future(step)
                if item is _DONE:
                    return
                yield item
        finally:
            context.end()
            # (a step still running on the pool finishes first: a running generator cannot be closed)
            self.pool.submit(_close_after, step, responses)

    # -- unary methods: the blocking servicer on the pool --------------------------------------------

    def _pooled(name: str):  # noqa: N805 - builds the class's methods
        async def method(self, request, context):
            return await self._unary(name, lambda r, c: self._blocking(getattr(self.sync, name), r, c),
                                     request, context)
        method.__name__ = name
        return method

    SubmitVideo = _pooled("SubmitVideo")
    GetJob = _pooled("GetJob")
    CancelJob = _pooled("CancelJob")
    RetryJob = _pooled("RetryJob")
    ListJobs = _pooled("ListJobs")
    DeleteJob = _pooled("DeleteJob")
    DeleteAsset = _pooled("DeleteAsset")
    ListVoices = _pooled("ListVoices")

    # -- streams ---------------------------------------------------------------------------------

    async def WatchJob(self, request, context):
        async def body(request, ctx: SyncContext):
            await self._blocking(self.sync._get, request.job_id)  # NOT_FOUND, another principal's
            timeout_s = max(1.0, ctx.time_remaining() or 3600.0)
            try:
                async for job in self.sync.manager.watch(request.job_id, timeout_s=timeout_s):
                    message = await self._blocking(self.sync._job_pb, job)
                    yield gw.WatchJobResponse(job=message, stage=STAGES.get(job.stage, gw.STAGE_UNSPECIFIED),
                                              stage_fraction=job.progress, message=job.message,
                                              terminal=job.state.terminal)
            except KeyError:  # deleted before the watch began
                raise _Abort(grpc.StatusCode.NOT_FOUND, f"no job {request.job_id[:64]!r}") from None
        async for response in self._stream("WatchJob", body, request, context):
            yield response

    async def StreamVideo(self, request, context):
        body = lambda r, c: self._steps(self.sync.StreamVideo(r, c), c)  # noqa: E731
        async for response in self._stream("StreamVideo", body, request, context):
            yield response

    async def LiveVideo(self, request_iterator, context):
        loop = asyncio.get_running_loop()

        async def body(requests, ctx: SyncContext):
            # The header in the event loop: a caller silent from the start holds no pool thread.
            first = await self._next(requests, LIVE_IDLE_HINT)
            blocking = _BlockingRequests(requests, loop, ctx, self.idle_s, first)
            async with contextlib.aclosing(self._steps(self.sync.LiveVideo(blocking, ctx), ctx)) as steps:
                async for response in steps:
                    yield response
        async for response in self._stream("LiveVideo", body, request_iterator, context):
            yield response

    async def UploadAsset(self, request_iterator, context):
        async def body(requests, ctx: SyncContext):
            first = await self._next(requests)
            if first is None or not first.HasField("header"):
                raise InputError("header", "the first message must be the header")
            header = first.header
            assets.check_header(header)
            limit, chunks, size = assets.MAX_BYTES[header.kind], [], 0
            while (message := await self._next(requests)) is not None:
                if not message.HasField("chunk"):
                    raise InputError("chunk", "only chunks may follow the header")
                if len(message.chunk) > 1024 * 1024:
                    raise InputError("chunk", "chunks must be at most 1 MiB")
                size += len(message.chunk)
                if size > limit:
                    raise InputError("chunk", f"more than {limit} bytes")
                chunks.append(message.chunk)
            yield await self._blocking(self.sync.store_upload, header, b"".join(chunks))

        responses = self._stream("UploadAsset", body, request_iterator, context)
        try:
            return await responses.__anext__()
        finally:
            await responses.aclose()

    async def _next(self, requests, hint: str = "send the upload without pauses") -> Any:
        """The caller's next message (None at its end); DEADLINE_EXCEEDED after idle_s of silence."""
        return await _next_or_idle(requests, self.idle_s, hint)


HANGUP_GRACE_S = 1.0
LIVE_IDLE_HINT = "a live caller with nothing to say sends silence (audio) or an empty text to keep the stream"


async def _next_or_idle(requests, idle_s: float, hint: str, busy_until: Callable[[], float] = lambda: 0.0) -> Any:
    """The caller's next message (None at its end); DEADLINE_EXCEEDED after idle_s of silence, counted
    from now or from busy_until() (time.monotonic()), whichever is later."""
    started, pending = time.monotonic(), asyncio.ensure_future(requests.__anext__())
    try:
        while not pending.done():
            remaining = max(started, busy_until()) + idle_s - time.monotonic()
            if remaining <= 0:
                raise _Abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                             f"nothing received for {idle_s:g} s (LIKENESS_STREAM_IDLE_S); {hint}")
            await asyncio.wait({pending}, timeout=remaining)
        return pending.result()
    except StopAsyncIteration:
        return None
    finally:
        pending.cancel()  # (a no-op once it is done)


def _close_after(step, responses) -> None:
    if step is not None:
        try:
            step.result()
        except BaseException:  # noqa: BLE001 - its error was the call's; only the cleanup is left
            pass
    try:
        responses.close()
    except Exception:  # noqa: BLE001
        log.exception("closing a stream")


class _BlockingRequests:
    """The caller's request stream for blocking code on a pool thread (LiveVideo's run_live), `first`
    (read already) first. A read that waits idle_s for the caller, and idle_s past the end of the speech
    run_live said it sends (`speaking`), raises DEADLINE_EXCEEDED (_Abort): run_live ends its calls on it
    and the stream ends with that status. Only a read is timed: while run_live holds back what came
    already (pacing), it reads nothing."""

    def __init__(self, requests, loop: asyncio.AbstractEventLoop, ctx: SyncContext, idle_s: float,
                 first: Any = None) -> None:
        self._requests, self._loop, self._ctx, self._idle_s = requests, loop, ctx, idle_s
        self._first, self._ended = first, first is None
        self._idle: _Abort | None = None
        self._speaking_until = 0.0  # time.monotonic() when the speech sent so far has played

    def speaking(self, until: float) -> None:
        """Speech goes to the caller that plays until `until` (time.monotonic()): it listens meanwhile."""
        self._speaking_until = max(self._speaking_until, until)

    def __iter__(self):
        return self

    def __next__(self):
        if self._first is not None:
            first, self._first = self._first, None
            return first
        if self._ended or not self._ctx.active:
            raise StopIteration
        if self._idle is not None:  # (whoever reads again after the timeout hears it again)
            raise self._idle
        try:
            item = asyncio.run_coroutine_threadsafe(
                _next_or_idle(self._requests, self._idle_s, LIVE_IDLE_HINT, lambda: self._speaking_until),
                self._loop).result()
        except _Abort as idle:
            self._idle = idle
            raise
        except BaseException:
            self._ctx.end()  # the caller's stream broke off: it went away (not a failure of ours)
            raise
        if item is None:
            self._ended = True
            # A caller who hangs up ends its request stream too, moments before grpc cancels the call:
            # waiting for that tells a hang-up (counted cancelled) from a stream closed without
            # end_of_audio (INVALID_ARGUMENT), and costs only the latter the wait.
            self._ctx.wait_ended(HANGUP_GRACE_S)
            raise StopIteration
        return item


async def serve(servicer: GatewayServicer, *, keys: auth.ApiKeys | None, port: int, host: str,
                credentials: grpc.ServerCredentials | None = None, health_port: int = 0,
                ready: Callable[[int], None] = lambda port: None) -> None:
    """Serves the gateway until SIGTERM/SIGINT, then drains as grpc_server.stop_gracefully does."""
    size = max_message_bytes()
    server = grpc.aio.server(
        interceptors=aio_server_interceptors(),
        options=[("grpc.max_send_message_length", size), ("grpc.max_receive_message_length", size),
                 ("grpc.max_connection_age_ms", config.get_int("LIKENESS_GRPC_MAX_CONNECTION_AGE_S") * 1000),
                 ("grpc.max_connection_age_grace_ms", 600_000)])
    gateway = AsyncGateway(servicer, keys=keys)
    gateway_pb2_grpc.add_GatewayServiceServicer_to_server(gateway, server)
    healthy = health_async.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(healthy, server)
    for name in ("", SERVICE):
        await healthy.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection([SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    address = f"{host}:{port}"
    bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"cannot bind gRPC port {address}")
    await server.start()
    probes = None
    if health_port:  # plaintext health checks alone, on threads of their own (Kubernetes' probes)
        probes_health = health.HealthServicer()
        for name in ("", SERVICE):
            probes_health.set(name, health_pb2.HealthCheckResponse.SERVING)
        probes = grpc.server(ThreadPoolExecutor(max_workers=2, thread_name_prefix="health"))
        health_pb2_grpc.add_HealthServicer_to_server(probes_health, probes)
        if probes.add_insecure_port(f"{host}:{health_port}") == 0:
            raise OSError(f"cannot bind the health port {host}:{health_port}")
        probes.start()
    log.info("gRPC serving %s on %s (asyncio)", SERVICE, address)
    webrtc = None
    if webrtc_port := config.get_int("LIKENESS_WEBRTC_PORT"):  # live video to a browser, beside gRPC
        from services.gateway.webrtc import WebRtcFront

        front = WebRtcFront(gateway, host)
        webrtc, _ = await front.start(webrtc_port)
    ready(bound)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await healthy.enter_graceful_shutdown()
    if probes is not None:
        probes_health.enter_graceful_shutdown()
    await asyncio.sleep(config.get_float("LIKENESS_SHUTDOWN_DRAIN_S"))
    if webrtc is not None:
        await front.close()
        await webrtc.cleanup()
    await server.stop(config.get_float("LIKENESS_SHUTDOWN_GRACE_S"))
    if probes is not None:
        probes.stop(None)


def main() -> None:
    logging.basicConfig(level=config.get_str("LIKENESS_LOG_LEVEL"))
    configure("gateway")
    keys = auth.keys_from_env(config.get_str("LIKENESS_API_KEYS_FILE"))
    credentials = auth.server_credentials(config.get_str("LIKENESS_TLS_CERT_FILE"),
                                          config.get_str("LIKENESS_TLS_KEY_FILE"))
    servicer, stop = build()
    start_metrics_server(metrics_port(9101))
    try:
        asyncio.run(serve(servicer, keys=keys, port=grpc_port(50051),
                          host=bind_host(),
                          credentials=credentials, health_port=config.get_int("LIKENESS_HEALTH_PORT")))
    finally:
        stop()


if __name__ == "__main__":
    main()
