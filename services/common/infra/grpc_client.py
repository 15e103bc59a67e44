"""Client side of the internal gRPC calls: traced channels, deadlines, retries on UNAVAILABLE."""
from __future__ import annotations

import json
import time
from typing import Callable, TypeVar

import grpc

from services.common import config
from services.common.infra.deadline import Deadline
from services.common.infra.grpc_server import INTERNAL_TOKEN_HEADER, channel_options
from services.common.infra.tracing import traced_channel

T = TypeVar("T")
RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)


# Spread calls over every address the target resolves to (pick_first, gRPC's default, sends every
# call down one connection): with `dns:///tts-pods:50052` over a headless Service each call goes
# to the next ready pod, so adding replicas helps at once, not only after connections recycle.
ROUND_ROBIN = ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]}))


def open_channel(address: str) -> grpc.Channel:
    """An insecure channel (in-cluster traffic; NetworkPolicies fence it) that carries trace context,
    the internal token when LIKENESS_INTERNAL_TOKEN is set, and balances calls over all of the target's
    addresses."""
    channel = traced_channel(grpc.insecure_channel(address, options=[*channel_options(), ROUND_ROBIN]))
    token = config.get_str("LIKENESS_INTERNAL_TOKEN")
    return grpc.intercept_channel(channel, _WithMetadata(((INTERNAL_TOKEN_HEADER, token),))) if token else channel


class _WithMetadata(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                    grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds fixed metadata to every call."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.metadata = metadata

    def _call(self, continuation, details, request):
        return continuation(details._replace(metadata=[*(details.metadata or ()), *self.metadata]), request)

    intercept_unary_unary = intercept_unary_stream = intercept_stream_unary = intercept_stream_stream = _call


def with_retries(call: Callable[[float], T], deadline: Deadline, *, attempts: int = 6,
                 backoff_s: float = 0.5, max_backoff_s: float = 8.0) -> T:
    """Runs call(timeout_s), retrying UNAVAILABLE with exponential backoff inside the deadline.

    A restarted service (Kubernetes reschedule, crash) typically answers again within seconds,
    so the backoff sums to ~30 s before the error surfaces as UNAVAILABLE to the caller.
    """
    for attempt in range(attempts):
        try:
            return call(deadline.remaining())
        except grpc.RpcError as exc:
            if exc.code() not in RETRYABLE or attempt == attempts - 1:
                raise
            time.sleep(min(max_backoff_s, backoff_s * 2**attempt, max(0.0, deadline.remaining() - 0.1)))
    raise AssertionError("unreachable")
