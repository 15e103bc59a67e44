"""gRPC rich errors (google.rpc.Status + details): raising them in servers, decoding them in clients.

Servers: `invalid_argument(context, InputError | [(field, description)])` and
`resource_exhausted(context, message, retry_after_s=...)` abort the RPC with a google.rpc.Status in
the `grpc-status-details-bin` trailer; `maps_input_errors` (applied to every handler by
grpc_server.serve) turns an InputError raised in a handler into INVALID_ARGUMENT.
Clients: `field_violations(error)` and `retry_delay(error)` decode those details from a
grpc.RpcError or from a likeness.v1.Status carried in a message (Job.error, stream status).
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Iterable, NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.common.domain.errors import InputError, ModelUnavailable, NotFound, StorageUnavailable

Violations = Iterable[tuple[str, str]] | InputError
F = TypeVar("F", bound=Callable[..., Any])
MAX_MESSAGE_CHARS = 1000  # a status message's length, whatever the request held


def _pairs(violations: Violations) -> list[tuple[str, str]]:
    if isinstance(violations, InputError):
        return list(violations.violations)
    return [(str(field), str(description)) for field, description in violations]


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def bad_request_status(violations: Violations, message: str | None = None) -> status_pb2.Status:
    """google.rpc.Status INVALID_ARGUMENT with one BadRequest.FieldViolation per (field, description)."""
    pairs = _pairs(violations)
    if not pairs:
        raise ValueError("bad_request_status needs at least one field violation")
    bad_request = error_details_pb2.BadRequest(field_violations=[
        error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in pairs])
    text = message or "; ".join(f"{f}: {d}" for f, d in pairs)
    if len(text) > MAX_MESSAGE_CHARS:  # (every violation stays whole in the BadRequest details)
        text = text[:MAX_MESSAGE_CHARS - 1] + "…"
    return status_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=text,
                             details=[_pack(bad_request)])


def invalid_argument(context: grpc.ServicerContext, violations: Violations,
                     message: str | None = None) -> NoReturn:
    """Aborts the RPC with INVALID_ARGUMENT + google.rpc.BadRequest (never returns)."""
    context.abort_with_status(rpc_status.to_status(bad_request_status(violations, message)))
    raise AssertionError("abort_with_status returned")  # grpc always raises; keeps NoReturn honest


def resource_exhausted(context: grpc.ServicerContext, message: str, *,
                       retry_after_s: float | None = None, subject: str = "",
                       description: str = "") -> NoReturn:
    """Aborts with RESOURCE_EXHAUSTED (e.g. job queue full), with RetryInfo and QuotaFailure details."""
    details = []
    if retry_after_s is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(retry_after_s * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    if subject or description:
        details.append(_pack(error_details_pb2.QuotaFailure(violations=[
            error_details_pb2.QuotaFailure.Violation(subject=subject, description=description or message)])))
    status = status_pb2.Status(code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], message=message,
                               details=details)
    context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("abort_with_status returned")


def _details(error: Any) -> list[any_pb2.Any]:
    """The google.rpc details of an RpcError or of a (google.rpc or likeness.v1) Status message."""
    if isinstance(error, grpc.Call):
        status = rpc_status.from_call(error)
        return list(status.details) if status is not None else []
    return list(getattr(error, "details", []))


def _unpacked(error: Any, kind: type) -> list[Any]:
    found = []
    for detail in _details(error):
        if detail.Is(kind.DESCRIPTOR):
            message = kind()
            detail.Unpack(message)
            found.append(message)
    return found


def field_violations(error: Any) -> list[tuple[str, str]]:
    """(field, description) pairs from the BadRequest details of an RpcError or a Status message."""
    return [(v.field, v.description)
            for bad in _unpacked(error, error_details_pb2.BadRequest) for v in bad.field_violations]


def retry_delay(error: Any) -> float | None:
    """Seconds the server asked the client to wait (RetryInfo), or None."""
    infos = _unpacked(error, error_details_pb2.RetryInfo)
    return infos[0].retry_delay.ToNanoseconds() / 1e9 if infos else None


def error_status(code: grpc.StatusCode, message: str, violations: Iterable[tuple[str, str]] = ()) -> Any:
    """A likeness.v1.Status for Job.error / stream final status; violations become BadRequest details."""
    from likeness_client.proto.likeness.v1 import common_pb2  # generated by `make setup`

    pairs = _pairs(violations)
    rpc = bad_request_status(pairs, message) if pairs else status_pb2.Status(message=message)
    rpc.code = code.value[0]
    return common_pb2.Status.FromString(rpc.SerializeToString())  # same wire format


def input_error_status(error: InputError) -> Any:
    """likeness.v1.Status INVALID_ARGUMENT for an InputError (e.g. a job that failed on bad input)."""
    return error_status(grpc.StatusCode.INVALID_ARGUMENT, str(error), _pairs(error))


DOMAIN_ERRORS = (InputError, ModelUnavailable, StorageUnavailable, NotFound)


def abort_for(context: grpc.ServicerContext, exc: Exception) -> NoReturn:
    """The status a domain error means: bad input, a model server or the storage down, a missing thing."""
    if isinstance(exc, InputError):
        invalid_argument(context, exc)
    if isinstance(exc, (ModelUnavailable, StorageUnavailable)):
        context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
    context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
    raise AssertionError("abort returned")


def maps_input_errors(handler: F) -> F:
    """Wraps a servicer method (unary or streaming) so domain errors abort with their status
    (InputError -> INVALID_ARGUMENT with field details, Model/StorageUnavailable -> UNAVAILABLE,
    NotFound -> NOT_FOUND)."""
    if inspect.isgeneratorfunction(handler):
        @functools.wraps(handler)
        def stream_wrapper(*args: Any) -> Any:
            context = args[-1]
            try:
                yield from handler(*args)
            except DOMAIN_ERRORS as exc:
                abort_for(context, exc)
        return stream_wrapper  # type: ignore[return-value]

    @functools.wraps(handler)
    def wrapper(*args: Any) -> Any:
        context = args[-1]
        try:
            result = handler(*args)
        except DOMAIN_ERRORS as exc:
            abort_for(context, exc)
        if inspect.isgenerator(result):  # a plain function returning a response iterator
            return _guard_iterator(result, context)
        return result
    return wrapper  # type: ignore[return-value]


def _guard_iterator(responses: Any, context: grpc.ServicerContext) -> Any:
    try:
        yield from responses
    except DOMAIN_ERRORS as exc:
        abort_for(context, exc)
