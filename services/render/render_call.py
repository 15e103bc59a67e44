"""One RenderVideo call: its header checked into a plan, then expression frames in and video out.

`plan()` reads the header (one place for its rules) and loads the rig; `RenderRun` renders the frames
as they arrive, feeding the encoder on the frame pump, reads the caller's messages on a thread of its own
(so the video goes out while a live caller sends nothing), and says what to send back meanwhile.
"""
from __future__ import annotations

import logging
import queue
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from prometheus_client import Counter

from likeness_client.proto.likeness.v1 import common_pb2, render_pb2 as rd
from services.common.domain.arkit import ARKIT_52, HEAD_POSE
from services.common.domain.audio_io import decode_audio
from services.common.domain.captions import Cue
from services.common.domain.errors import InputError
from services.common.infra import wire
from services.render.caption_overlay import CaptionOverlay
from services.render.encode import AudioFeed, stream_mp4
from services.render.formats import write_video
from services.render.layout import Compositor, FrameSpec
from services.render.poster import PosterPicker
from services.render.pump import FramePump
from services.render.renderer import Renderer
from services.render.rig import FaceRig
from services.render.spec import CONTENT_TYPES, check_fps, frame_from_pb

log = logging.getLogger(__name__)
FRAMES_RENDERED = Counter("likeness_frames_rendered_total", "Video frames rendered.")
PROGRESS_EVERY = 25  # frames between progress messages
_END = object()


class RenderCancelled(Exception):
    """The caller went away: stop rendering, store nothing."""


def spec_fps(spec: common_pb2.VideoSpec) -> float:
    return check_fps(spec.fps or 25.0, "video.fps")


@dataclass
class RenderPlan:
    """What a RenderVideo header asks for, checked."""
    header: rd.RenderVideoHeader
    fps: float
    frame: FrameSpec
    streaming: bool  # fragmented MP4 back on the stream, nothing stored
    content_type: str
    rig: FaceRig
    live_pcm: wire.PcmStream | None  # the audio comes in the request stream (a live video)
    audio: np.ndarray | AudioFeed
    rate: int

    @property
    def rig_frame(self) -> tuple[int, int]:
        return self.rig.stage.size if self.rig.stage is not None else (self.rig.size, self.rig.size)


def plan(header: rd.RenderVideoHeader, get: Callable[[common_pb2.ObjectRef, str], bytes]) -> RenderPlan:
    """The header's rules, and the rig and audio it names (`get(ref, field)`: a stored object's bytes)."""
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
    rig = FaceRig.from_bytes(get(common_pb2.ObjectRef(key=rig_key), "header.rig"))
    rig_frame = rig.stage.size if rig.stage is not None else (rig.size, rig.size)
    if rig_frame != frame.frame_size or (rig.stage is not None and rig.stage.transparent) != frame.alpha:
        raise InputError("header.video", f"the rig was prepared for a {rig_frame[0]}x{rig_frame[1]} "
                                         f"frame{' with alpha' if frame.alpha else ''}; prepare it with "
                                         f"this VideoSpec")
    live_pcm = None
    if header.HasField("live_audio_format"):
        if not streaming:
            raise InputError("header.live_audio_format", "goes with stream_media (a live video is streamed)")
        live_pcm = wire.PcmStream(header.live_audio_format, field="header.live_audio_format")
        audio, rate = AudioFeed(), header.live_audio_format.sample_rate
    else:
        audio, rate = _audio(header, get)
    return RenderPlan(header, fps, frame, streaming, content_type, rig, live_pcm, audio, rate)


def _audio(header: rd.RenderVideoHeader, get: Callable) -> tuple[np.ndarray, int]:
    which = header.audio.WhichOneof("source")
    if which == "audio":
        return wire.audio_from_pb(header.audio.audio, field="header.audio.audio")
    if which == "object":
        return decode_audio(get(header.audio.object, "header.audio.object"), field="header.audio")
    return np.zeros(0, np.float32), 16000  # a silent video


def _caption_overlay(header: rd.RenderVideoHeader, frame_size: tuple[int, int]) -> CaptionOverlay | None:
    """The header's caption cues to draw into the frames, or None."""
    if not header.captions:
        return None
    for c in header.captions:
        if not (np.isfinite(c.start) and np.isfinite(c.end) and 0 <= c.start <= c.end):
            raise InputError("header.captions", f"a cue must have 0 <= start <= end, got {c.start}..{c.end}")
    return CaptionOverlay([Cue(c.start, c.end, c.text) for c in header.captions], frame_size)


class RenderRun:
    """Renders a plan's frames as the caller's messages bring them. `start(requests)`, then iterate
    `responses()` (("media", bytes) with stream_media, ("progress", frames)); then `outcome()`."""

    def __init__(self, plan: RenderPlan, caller_gone: Callable[[], bool] = lambda: False) -> None:
        self.plan = plan
        self.poster = PosterPicker()
        self.cancelled = threading.Event()  # the caller went away: stop rendering and store nothing
        self._caller_gone = caller_gone
        self._outbox: queue.Queue = queue.Queue()
        self._request_failure: list[BaseException] = []  # the request stream's (bad frames, no end, ...)
        self._workdir = Path(tempfile.mkdtemp(prefix="likeness-render-"))
        self.out_path = self._workdir / ("video.webm" if plan.content_type == "video/webm" else "video.mp4")
        renderer = (Renderer(plan.rig) if plan.rig.stage is None
                    else Compositor(Renderer(plan.rig), plan.rig.stage, seed=plan.header.seed, fps=plan.fps))
        overlay = _caption_overlay(plan.header, plan.frame.frame_size)

        def render(item, index: int) -> np.ndarray:
            if self.cancelled.is_set():
                raise RenderCancelled()
            weights, pose = item
            image = renderer.render(weights, pose)
            self.poster.offer(weights, image)
            return overlay.apply(image, index / plan.fps) if overlay else image

        self.pump = FramePump(render, self._encode, maxsize=256, on_frame=self._rendered,
                              on_done=lambda: self._outbox.put(_END))
        self._reader: threading.Thread | None = None

    def gone(self) -> bool:
        return self.cancelled.is_set() or self._caller_gone()

    def start(self, requests: Iterator[rd.RenderVideoRequest]) -> None:
        self._reader = threading.Thread(target=self._read, args=(requests,), name="render-requests", daemon=True)
        self._reader.start()

    def responses(self) -> Iterator[tuple[str, object]]:
        done = False
        try:
            while (item := self._outbox.get()) is not _END:
                if self.gone():
                    # The caller is gone: yield nothing more (a handler suspended in a yield to a dead
                    # call may never be resumed or closed); the encoder stops at its next frame.
                    self.cancelled.set()
                    while self._outbox.get() is not _END:
                        pass
                    break
                yield item
            done = True
        finally:
            if not done:  # closed early (an in-process caller that stopped reading): stop the encoder
                self.cancelled.set()

    def outcome(self) -> bool:
        """Once responses() is through: True when the video is complete (to store), False when the caller
        went away; raises the run's failure. Only a complete video keeps its work directory."""
        self._reader.join()
        self.pump.join()
        failure = (self._request_failure[0] if self._request_failure and not self.cancelled.is_set()
                   else None if self.gone() else self.pump.failure)
        if failure is not None or self.gone():
            shutil.rmtree(self._workdir, ignore_errors=True)
        if failure is not None:
            raise failure
        if self.gone():
            log.info("render cancelled by the caller after %d frames: nothing stored", self.pump.frames)
            return False
        return True

    def _rendered(self, count: int) -> None:
        FRAMES_RENDERED.inc()
        if not self.plan.streaming and count % PROGRESS_EVERY == 0:
            self._outbox.put(("progress", count))

    def _encode(self, frames: Iterator[np.ndarray]) -> None:
        p = self.plan
        if p.streaming:
            stream_mp4(frames, p.audio, p.rate, p.fps, lambda data: self._outbox.put(("media", data)))
        else:
            write_video(frames, p.audio, p.rate, p.fps, self.out_path, alpha=p.frame.alpha)

    def _read(self, requests: Iterator[rd.RenderVideoRequest]) -> None:
        p, received, ended = self.plan, 0, False
        try:
            for message in requests:
                kind = message.WhichOneof("request")
                if kind == "frames":
                    chunk = wire.track_from_pb(p.fps, list(message.frames.frames), field="frames")
                    for weights, pose in zip(chunk.weights, chunk.head_pose):
                        self.pump.put((weights, pose))
                    received += len(chunk)
                elif kind == "audio_chunk":
                    if p.live_pcm is None:
                        raise InputError("audio_chunk", "needs header.live_audio_format")
                    p.audio.push(p.live_pcm.decode(message.audio_chunk))
                elif kind == "end":
                    ended = True
                    break
                else:
                    raise InputError("header", "only one header may be sent")
            if not ended:
                raise InputError("end", "the stream must end with an end message")
            if received == 0:
                raise InputError("frames", "no frames were sent")
            if p.live_pcm is not None:
                p.live_pcm.finish()
        except BaseException as exc:
            self._request_failure.append(exc)
        finally:
            if p.live_pcm is not None:
                p.audio.end()
            self.pump.end()
