"""likeness-client: the Python client of the Likeness gateway (gRPC likeness.v1.GatewayService).

    from likeness_client import LikenessClient
    with LikenessClient("gateway:50051") as client:
        job = client.wait(client.submit(photo=client.upload("me.jpg", kind="photo"), script="Hello!"))
        client.download(job, "hello.mp4")

Needs grpcio and protobuf alone. The API's messages and stubs are likeness_client.proto (generated from
protos/ when the package is built: likeness_client.proto.likeness.v1.gateway_pb2 and _grpc); the
Likeness services use these same modules.
"""
from __future__ import annotations

__version__ = "0.1.0"

from likeness_client.client import (
    ASPECTS, CHUNK, EMOTIONS, EXPRESSIVENESS, FITS, KINDS, MAX_MESSAGE_BYTES, MOTIONS, RETRY_POLICY, TERMINAL,
    TIMED_EMOTIONS, JobFailedError, LikenessClient, LiveAudioItem, LiveSession, LiveTextItem, timed_emotion,
    timed_motion)
from likeness_client.markers import INTERRUPT, LISTEN, STOP_LISTENING, Interrupt, Listen

__all__ = ["ASPECTS", "CHUNK", "EMOTIONS", "EXPRESSIVENESS", "FITS", "INTERRUPT", "KINDS", "LISTEN",
           "MAX_MESSAGE_BYTES", "MOTIONS", "RETRY_POLICY", "STOP_LISTENING", "TERMINAL", "TIMED_EMOTIONS",
           "Interrupt", "JobFailedError", "LikenessClient", "Listen", "LiveAudioItem", "LiveSession",
           "LiveTextItem", "__version__", "timed_emotion", "timed_motion"]
