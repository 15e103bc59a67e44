"""A caller's gRPC deadline reaches the model calls its request makes."""
from __future__ import annotations

import grpc
import pytest

from services.common.infra import deadline
from services.common.infra.grpc_server import serve
from services.devtools.ports import free_port
from likeness_client.proto.likeness.v1 import expression_pb2 as ex, expression_pb2_grpc


class Probe(expression_pb2_grpc.ExpressionServiceServicer):
    """Answers with the time the handler sees left, in the warnings (a real server, a real call)."""

    def Animate(self, request, context):
        return ex.AnimateResponse(warnings=[f"{deadline.remaining(1000.0):.3f}"])


def test_scope_caps_the_default():
    token = deadline.set_remaining(0.5)
    try:
        assert 0.0 < deadline.remaining(60.0) <= 0.5
        assert deadline.remaining(0.1) == 0.1
    finally:
        deadline.reset(token)
    assert deadline.remaining(60.0) == 60.0


@pytest.mark.parametrize("timeout,upper", [(3.0, 3.0), (None, 1000.0)])
def test_server_sets_the_callers_deadline(timeout, upper):
    port = free_port()
    server = serve([(expression_pb2_grpc.add_ExpressionServiceServicer_to_server, Probe())], port=port,
                   service_names=["likeness.v1.ExpressionService"], host="127.0.0.1", handle_sigterm=False)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = expression_pb2_grpc.ExpressionServiceStub(channel).Animate(ex.AnimateRequest(), timeout=timeout)
        seen = float(reply.warnings[0])
        # gRPC sends the timeout rounded up to its wire unit: allow a few ms above it
        assert upper - 1.0 < seen <= upper + 0.05
    finally:
        server.stop(0)
