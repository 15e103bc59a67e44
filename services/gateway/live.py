"""A live video (LiveVideo): the caller's audio goes on to the expression and render services as it
arrives, the frames come back from the expression service while the audio still flows and go on to
the render service, and the render service's fragmented MP4 (the frames with that audio) goes back
to the caller. Three calls run at once, wired by two queues:

    caller audio --+--> expression.StreamExpression --frames--+
                   +-------------------- audio ---------------+--> render.RenderVideo --> MP4 bytes

Nothing is stored; a failure anywhere ends all three calls.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import grpc

from services.common.errors import InputError
from services.common.grpc_client import Deadline
from services.common.proto_gen.likeness.v1 import (common_pb2, expression_pb2 as ex, gateway_pb2 as gw,
                                                   render_pb2 as rd)
from services.common.tracing import span
from services.gateway.jobs import Job
from services.gateway.runner import JobRunner, _as_job_failure, video_spec
from services.common import wire

_END = object()


def _drain(q: queue.Queue) -> Iterator:
    while (item := q.get()) is not _END:
        yield item


def run_live(runner: JobRunner, job: Job, audio_format: common_pb2.AudioFormat,
             incoming: Iterator[gw.LiveVideoRequest]) -> Iterator[tuple[str, object]]:
    """Yields ("ready", None) once the rig is prepared, then ("media", bytes) in order."""
    request = job.request
    deadline = Deadline(runner.deadline_s)
    with span("live", {"job.id": job.job_id}), _as_job_failure():
        rig = runner._prepare_rig(job, deadline)
        yield "ready", None
        to_expression: queue.Queue = queue.Queue()
        to_render: queue.Queue = queue.Queue()
        to_expression.put(ex.StreamExpressionRequest(header=ex.StreamExpressionHeader(
            audio_format=audio_format, params=ex.ExpressionParams(
                fps=request["fps"], seed=request["seed"], emotion=wire.EMOTION_ENUM[request["emotion"]],
                expressiveness=wire.EXPRESSIVENESS_ENUM[request["expressiveness"]]))))
        to_render.put(rd.RenderVideoRequest(header=rd.RenderVideoHeader(
            rig_object=rig.rig, video=video_spec(job), blendshapes=wire.blendshape_header(request["fps"]),
            seed=request["seed"], stream_media=True, live_audio_format=audio_format)))
        expression = runner.expression.StreamExpression(_drain(to_expression), timeout=deadline.remaining())
        render = runner.render.RenderVideo(_drain(to_render), timeout=deadline.remaining())
        failures: list[BaseException] = []

        def stop(exc: BaseException) -> None:
            failures.append(exc)
            for call in (expression, render):
                call.cancel()

        def from_caller() -> None:
            """The caller's audio (and emotion changes) to both services."""
            try:
                audio_bytes = 0
                for message in incoming:
                    kind = message.WhichOneof("request")
                    if kind == "audio_chunk":
                        audio_bytes += len(message.audio_chunk)
                        to_render.put(rd.RenderVideoRequest(audio_chunk=message.audio_chunk))
                        to_expression.put(ex.StreamExpressionRequest(audio_chunk=message.audio_chunk))
                    elif kind == "emotion":
                        to_expression.put(ex.StreamExpressionRequest(emotion=message.emotion))
                    elif kind == "end_of_audio":
                        if not audio_bytes:
                            raise InputError("audio_chunk", "no audio was sent")
                        to_expression.put(ex.StreamExpressionRequest(end_of_audio=ex.EndOfAudio()))
                        return
                    else:
                        raise InputError("header", "only one header may be sent")
                raise InputError("end_of_audio", "the stream must end with end_of_audio")
            except BaseException as exc:  # (the caller went away, or sent something wrong)
                stop(exc)
            finally:
                to_expression.put(_END)

        def frames_to_render() -> None:
            """Each frame from the expression service on to the render service as it comes."""
            try:
                for response in expression:
                    if response.HasField("frame"):
                        to_render.put(rd.RenderVideoRequest(frames=rd.ExpressionFrameChunk(frames=[response.frame])))
                to_render.put(rd.RenderVideoRequest(end=rd.EndOfFrames()))
            except BaseException as exc:
                stop(exc)
            finally:
                to_render.put(_END)

        workers = [threading.Thread(target=target, name=f"live-{name}", daemon=True)
                   for name, target in (("caller", from_caller), ("frames", frames_to_render))]
        for worker in workers:
            worker.start()
        try:
            with span("stage render", {"stage": "render"}):
                for response in render:
                    if response.HasField("media"):
                        yield "media", response.media
        except grpc.RpcError:
            if not failures:
                raise
        finally:  # the caller went away, or a failure: end every call and both workers
            for call in (expression, render):
                call.cancel()
            to_expression.put(_END), to_render.put(_END)
        for worker in workers:
            worker.join(timeout=5)
        if failures:
            # the first failure, not the cancellations it caused
            first = next((f for f in failures if not (isinstance(f, grpc.RpcError)
                                                       and f.code() == grpc.StatusCode.CANCELLED)), failures[0])
            raise first
