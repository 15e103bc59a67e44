"""RenderService: photo -> rig (cached in storage), then rig + streamed expression frames -> video.

A RenderVideo call's work is services/render/render_call.py: frames are rendered as they arrive and fed
to the encoder on a worker thread, while progress goes back on the response stream. The video is
uploaded only when complete, so its key existing means the stage finished (the gateway resumes on that).
"""
from __future__ import annotations

import hashlib
import logging
import os
from typing import Iterator

import numpy as np

from likeness_client.proto.likeness.v1 import common_pb2, render_pb2 as rd, render_pb2_grpc
from services.common import config
from services.common.domain.errors import InputError
from services.common.infra import wire
from services.common.infra.grpc_server import grpc_port, metrics_port, serve, start_metrics_server
from services.common.infra.inference import InferenceClient, client_from_env
from services.common.infra.storage import ObjectNotFoundError, Storage
from services.common.infra.tracing import configure, grpc_server_interceptors, span
from services.render import render_call
from services.render.layout import FrameSpec
from services.render.photo import load_photo
from services.render.poster import encode_poster
from services.render.render_call import spec_fps
from services.render.rig import RIG_VERSION, FaceRig, build_rig
from services.render.spec import frame_from_pb
from services.render.tensor_model import box_finder, detector, segmenter



def rig_key(photo: bytes, frame: FrameSpec, keypoints: np.ndarray | None) -> str:
    """Cache id of a rig: the photo, the framing and the keypoints all change it."""
    kp = "" if keypoints is None else "-kp" + hashlib.sha256(
        np.asarray(keypoints, np.float64).tobytes()).hexdigest()[:12]
    return f"{hashlib.sha256(photo).hexdigest()}-{frame.key()}{kp}-v{RIG_VERSION}"


class RenderServicer(render_pb2_grpc.RenderServiceServicer):
    def __init__(self, storage: Storage, client: InferenceClient) -> None:
        self.storage = storage
        self.detect = detector(client)
        self.find = box_finder(client)
        self.segment = segmenter(client)

    def _get(self, ref: common_pb2.ObjectRef, field: str) -> bytes:
        if ref.bucket and ref.bucket != self.storage.bucket:
            raise InputError(f"{field}.bucket", f"must be {self.storage.bucket!r}")
        try:
            return self.storage.get_bytes(ref.key)
        except ObjectNotFoundError:
            raise InputError(field, f"{ref.key or '(empty key)'} not found") from None

    # -- rig -------------------------------------------------------------------------------------

    def PrepareRig(self, request: rd.PrepareRigRequest, context) -> rd.PrepareRigResponse:
        spec_fps(request.video)
        frame, keypoints = frame_from_pb(request.video, self._get)
        which = request.WhichOneof("photo")
        if which is None:
            raise InputError("photo_data", "a photo (photo_data or photo_object) is required")
        data = request.photo_data if which == "photo_data" else self._get(request.photo_object, "photo_object")
        rig_id = rig_key(data, frame, keypoints)
        key = f"rigs/{rig_id}.npz"
        if self.storage.exists(key):
            rig = FaceRig.from_bytes(self.storage.get_bytes(key))
            cached = True
        else:
            with span("build_rig", {"size": frame.size, "aspect": frame.aspect, "fit": frame.fit}):
                try:
                    rig = build_rig(load_photo(data), frame=frame, detect=self.detect, keypoints=keypoints,
                                    segment=self.segment, find=self.find)
                except InputError as exc:  # (the point is the request's video.face_at)
                    if exc.field != "face_at":
                        raise
                    raise InputError("video.face_at", exc.message) from None
            self.storage.put_bytes(key, rig.to_bytes(), "application/x-npz")
            cached = False
        return rd.PrepareRigResponse(rig_id=rig_id, cached=cached, warnings=rig.warnings,
                                     rig=common_pb2.ObjectRef(bucket=self.storage.bucket, key=key))

    # -- video -----------------------------------------------------------------------------------

    def RenderVideo(self, request_iterator, context) -> Iterator[rd.RenderVideoResponse]:
        first = next(request_iterator, None)
        if first is None or not first.HasField("header"):
            raise InputError("header", "the first message must be the header")
        plan = render_call.plan(first.header, self._get)
        # The caller went away (a cancelled job): stop rendering and store nothing.
        run = render_call.RenderRun(plan, caller_gone=lambda: context is not None and not context.is_active())
        if context is not None:  # (None: called in-process)
            context.add_callback(run.cancelled.set)
        run.start(request_iterator)
        total = plan.header.expected_frames
        for kind, value in run.responses():
            if kind == "media":
                yield rd.RenderVideoResponse(media=value)
            else:  # (every PROGRESS_EVERY frames)
                yield rd.RenderVideoResponse(progress=rd.RenderProgress(frames_rendered=value, frames_total=total))
        if not run.outcome():
            return
        yield rd.RenderVideoResponse(progress=rd.RenderProgress(frames_rendered=run.pump.frames, frames_total=total))
        yield rd.RenderVideoResponse(result=self._store(plan, run))

    def _store(self, plan: render_call.RenderPlan, run: render_call.RenderRun) -> rd.RenderResult:
        """The finished video's result: its poster and (not streamed) the video stored."""
        width, height = plan.rig_frame
        result = rd.RenderResult(frame_count=run.pump.frames, duration_seconds=run.pump.frames / plan.fps,
                                 warnings=plan.rig.warnings, frame_size=common_pb2.FrameSize(width=width, height=height))
        header = plan.header
        if header.poster.key:  # before the video: a stored video means its poster is there too
            data, poster_type = encode_poster(run.poster.image)
            result.poster.CopyFrom(wire.object_ref(self.storage.put_bytes(header.poster.key, data, poster_type)))
        if not plan.streaming:
            result.video.CopyFrom(wire.object_ref(self.storage.put_file(header.output.key, run.out_path,
                                                                        plan.content_type)))
            os.unlink(run.out_path)
        os.rmdir(run.out_path.parent)
        return result


def main() -> None:
    logging.basicConfig(level=config.get_str("LIKENESS_LOG_LEVEL"))
    configure("render")
    storage = Storage.from_env()
    storage.ensure_bucket()
    start_metrics_server(metrics_port(9104))
    server = serve([(render_pb2_grpc.add_RenderServiceServicer_to_server, RenderServicer(storage, client_from_env()))],
                   port=grpc_port(50054), service_names=["likeness.v1.RenderService"],
                   interceptors=grpc_server_interceptors(), max_workers=4)
    server.wait_for_termination()


if __name__ == "__main__":
    main()

