"""RenderService: photo -> rig (cached in storage), then rig + streamed expression frames -> video.

Frames are rendered as they arrive and fed to the encoder on a worker thread, while progress
goes back on the response stream. The video is uploaded only when complete, so its key existing
means the stage finished (the gateway resumes on that).
"""
from __future__ import annotations

import hashlib
import logging
import os
import queue
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Iterator

import numpy as np
from prometheus_client import Counter

from services.common import config

from services.common.infra import wire
from services.common.domain.arkit import ARKIT_52, HEAD_POSE
from services.common.domain.audio_io import decode_audio
from services.common.domain.captions import Cue
from services.common.domain.errors import InputError
from services.common.infra.grpc_server import grpc_port, metrics_port, serve, start_metrics_server
from services.common.infra.inference import InferenceClient, client_from_env
from likeness_client.proto.likeness.v1 import common_pb2, render_pb2 as rd, render_pb2_grpc
from services.common.infra.storage import ObjectNotFoundError, Storage
from services.common.infra.tracing import configure, grpc_server_interceptors, span
from services.render.caption_overlay import CaptionOverlay
from services.render.encode import AudioFeed, stream_mp4
from services.render.formats import write_video
from services.render.layout import Compositor, FrameSpec
from services.render.photo import load_photo
from services.render.poster import PosterPicker, encode_poster
from services.render.pump import FramePump
from services.render.renderer import Renderer
from services.render.rig import RIG_VERSION, FaceRig, build_rig
from services.render.spec import CONTENT_TYPES, check_fps, frame_from_pb
from services.render.tensor_model import detector, segmenter

log = logging.getLogger(__name__)
FRAMES_RENDERED = Counter("likeness_frames_rendered_total", "Video frames rendered.")
PROGRESS_EVERY = 25  # frames between progress messages
_END = object()


class RenderCancelled(Exception):
    """The caller cancelled the RenderVideo call."""


def spec_fps(spec: common_pb2.VideoSpec) -> float:
    return check_fps(spec.fps or 25.0, "video.fps")


def rig_key(photo: bytes, frame: FrameSpec, keypoints: np.ndarray | None) -> str:
    """Cache id of a rig: the photo, the framing and the keypoints all change it."""
    kp = "" if keypoints is None else "-kp" + hashlib.sha256(
        np.asarray(keypoints, np.float64).tobytes()).hexdigest()[:12]
    return f"{hashlib.sha256(photo).hexdigest()}-{frame.key()}{kp}-v{RIG_VERSION}"


class RenderServicer(render_pb2_grpc.RenderServiceServicer):
    def __init__(self, storage: Storage, client: InferenceClient) -> None:
        self.storage = storage
        self.detect = detector(client)
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
                                    segment=self.segment)
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
        header = first.header
        fps = spec_fps(header.video)
        frame, _ = frame_from_pb(header.video, prefix="header.video")
        if header.HasField("blendshapes"):
            names = list(header.blendshapes.blendshape_names)
            if names and names != list(ARKIT_52):
                raise InputError("header.blendshapes.blendshape_names", "must be the ARKit-52 names in order")
            if list(header.blendshapes.head_pose_names) not in ([], list(HEAD_POSE)):
                raise InputError("header.blendshapes.head_pose_names", f"must be {', '.join(HEAD_POSE)}")
            fps = header.blendshapes.fps or fps
        streaming = header.stream_media
        content_type = header.output.content_type or "video/mp4"
        if streaming:
            if frame.alpha:
                raise InputError("header.stream_media", "a transparent video is not streamed (MP4 has no alpha)")
        elif content_type not in CONTENT_TYPES:
            raise InputError("header.output.content_type", f"must be one of {', '.join(CONTENT_TYPES)}")
        elif frame.alpha and content_type != "video/webm":
            raise InputError("header.output.content_type", "a transparent background needs video/webm")
        elif not header.output.key:
            raise InputError("header.output.key", "is required")
        rig_key = f"rigs/{header.rig_id}.npz" if header.WhichOneof("rig") == "rig_id" else header.rig_object.key
        rig = FaceRig.from_bytes(self._get(common_pb2.ObjectRef(key=rig_key), "header.rig"))
        rig_frame = rig.stage.size if rig.stage is not None else (rig.size, rig.size)
        if rig_frame != frame.frame_size or (rig.stage is not None and rig.stage.transparent) != frame.alpha:
            raise InputError("header.video", f"the rig was prepared for a {rig_frame[0]}x{rig_frame[1]} "
                                             f"frame{' with alpha' if frame.alpha else ''}; prepare it with "
                                             f"this VideoSpec")
        live_audio = header.HasField("live_audio_format")
        if live_audio:
            if not streaming:
                raise InputError("header.live_audio_format", "goes with stream_media (a live video is streamed)")
            pcm = wire.PcmStream(header.live_audio_format, field="header.live_audio_format")
            audio, rate = AudioFeed(), header.live_audio_format.sample_rate
        else:
            audio, rate = self._audio(header)
        renderer = (Renderer(rig) if rig.stage is None
                    else Compositor(Renderer(rig), rig.stage, seed=header.seed, fps=fps))

        # What goes back, in order: ("media", bytes) with stream_media, ("progress", n), then _END
        # when the encoder is done. Requests are read on a thread of their own, so the video goes out
        # as it is encoded even while the caller sends nothing (a live caller between bursts of audio).
        outbox: queue.Queue = queue.Queue()
        request_failure: list[BaseException] = []  # the request stream's (bad frames, no end, ...)
        # The caller went away (a cancelled job): stop rendering and store nothing.
        cancelled = threading.Event()
        if context is not None:  # (None: called in-process)
            context.add_callback(cancelled.set)

        def caller_gone() -> bool:
            return cancelled.is_set() or (context is not None and not context.is_active())
        workdir = tempfile.mkdtemp(prefix="likeness-render-")
        out_path = Path(workdir) / ("video.webm" if content_type == "video/webm" else "video.mp4")

        overlay = _caption_overlay(header, frame.frame_size)
        poster = PosterPicker()

        def render(item, index: int) -> np.ndarray:
            if cancelled.is_set():
                raise RenderCancelled()
            weights, pose = item
            image = renderer.render(weights, pose)
            poster.offer(weights, image)
            return overlay.apply(image, index / fps) if overlay else image

        def rendered(count: int) -> None:
            FRAMES_RENDERED.inc()
            if not streaming and count % PROGRESS_EVERY == 0:
                outbox.put(("progress", count))

        def encode(frames: Iterator[np.ndarray]) -> None:
            if streaming:
                stream_mp4(frames, audio, rate, fps, lambda data: outbox.put(("media", data)))
            else:
                write_video(frames, audio, rate, fps, out_path, alpha=frame.alpha)

        pump = FramePump(render, encode, maxsize=256, on_frame=rendered, on_done=lambda: outbox.put(_END))

        def read_requests() -> None:
            received, ended = 0, False
            try:
                for message in request_iterator:
                    kind = message.WhichOneof("request")
                    if kind == "frames":
                        chunk = wire.track_from_pb(fps, list(message.frames.frames), field="frames")
                        for weights, pose in zip(chunk.weights, chunk.head_pose):
                            pump.put((weights, pose))
                        received += len(chunk)
                    elif kind == "audio_chunk":
                        if not live_audio:
                            raise InputError("audio_chunk", "needs header.live_audio_format")
                        audio.push(pcm.decode(message.audio_chunk))
                    elif kind == "end":
                        ended = True
                        break
                    else:
                        raise InputError("header", "only one header may be sent")
                if not ended:
                    raise InputError("end", "the stream must end with an end message")
                if received == 0:
                    raise InputError("frames", "no frames were sent")
                if live_audio:
                    pcm.finish()
            except BaseException as exc:
                request_failure.append(exc)
            finally:
                if live_audio:
                    audio.end()
                pump.end()

        reader = threading.Thread(target=read_requests, name="render-requests", daemon=True)
        reader.start()
        done = False
        try:
            while (item := outbox.get()) is not _END:
                if caller_gone():
                    # The caller is gone: yield nothing more (a handler suspended in a yield to a dead
                    # call may never be resumed or closed); the encoder stops at its next frame.
                    cancelled.set()
                    while outbox.get() is not _END:
                        pass
                    break
                kind, value = item
                if kind == "media":
                    yield rd.RenderVideoResponse(media=value)
                else:  # (put every PROGRESS_EVERY frames)
                    yield rd.RenderVideoResponse(progress=rd.RenderProgress(
                        frames_rendered=value, frames_total=header.expected_frames))
            done = True
        finally:
            if not done:  # closed early (an in-process caller that stopped reading): stop the encoder
                cancelled.set()
        reader.join()
        pump.join()
        if request_failure and not cancelled.is_set():
            shutil.rmtree(workdir, ignore_errors=True)
            raise request_failure[0]
        if caller_gone():
            shutil.rmtree(workdir, ignore_errors=True)
            log.info("render cancelled by the caller after %d frames: nothing stored", pump.frames)
            return
        if pump.failure is not None:
            shutil.rmtree(workdir, ignore_errors=True)
            raise pump.failure
        yield rd.RenderVideoResponse(progress=rd.RenderProgress(frames_rendered=pump.frames,
                                                                 frames_total=header.expected_frames))
        result = rd.RenderResult(frame_count=pump.frames, duration_seconds=pump.frames / fps, warnings=rig.warnings,
                                 frame_size=common_pb2.FrameSize(width=rig_frame[0], height=rig_frame[1]))
        if header.poster.key:  # before the video: a stored video means its poster is there too
            data, poster_type = encode_poster(poster.image)
            result.poster.CopyFrom(wire.object_ref(self.storage.put_bytes(header.poster.key, data, poster_type)))
        if not streaming:
            result.video.CopyFrom(wire.object_ref(self.storage.put_file(header.output.key, out_path, content_type)))
            os.unlink(out_path)
        os.rmdir(workdir)
        yield rd.RenderVideoResponse(result=result)

    def _audio(self, header: rd.RenderVideoHeader) -> tuple[np.ndarray, int]:
        which = header.audio.WhichOneof("source")
        if which == "audio":
            return wire.audio_from_pb(header.audio.audio, field="header.audio.audio")
        if which == "object":
            return decode_audio(self._get(header.audio.object, "header.audio.object"), field="header.audio")
        return np.zeros(0, np.float32), 16000  # a silent video


def _caption_overlay(header: rd.RenderVideoHeader, frame_size: tuple[int, int]):
    """The header's caption cues to draw into the frames, or None."""
    if not header.captions:
        return None
    for c in header.captions:
        if not (np.isfinite(c.start) and np.isfinite(c.end) and 0 <= c.start <= c.end):
            raise InputError("header.captions", f"a cue must have 0 <= start <= end, got {c.start}..{c.end}")
    return CaptionOverlay([Cue(c.start, c.end, c.text) for c in header.captions], frame_size)


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

